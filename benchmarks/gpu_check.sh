#!/usr/bin/env bash
# GPU check: the "cupy" backend's tests and benchmarks on a machine with one NVIDIA GPU.
#
#   bash benchmarks/gpu_check.sh            # writes benchmarks/results/gpu.md (the only file it writes there)
#   QUICK=1 bash benchmarks/gpu_check.sh    # one shape per kernel
#
# 1. Exits 0 with "GPU: not available" when nvidia-smi sees no GPU.
# 2. Finds a Python with CuPy and a CUDA PyTorch ($PYTHON, python3, .venv/bin/python); failing that, makes
#    .venv-gpu and installs cupy-cuda<major>x (the CUDA major that nvidia-smi reports) and torch into it.
# 3. Runs the GPU cases of the test suite (`pytest tests -k cupy`, 4-minute cap), then benchmarks/gpu_bench.py
#    (3-minute cap), which checks every kernel against PyTorch CUDA before timing it and writes the report
#    with the tests' summary in it. Total well under 8 minutes; the first run adds NVRTC compile time.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=benchmarks/results/gpu.md

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "GPU: not available"
    exit 0
fi
nvidia-smi -L

has_stack() {  # does "$1" import CuPy (seeing a GPU) and a CUDA build of torch?
    "$1" - <<'PY' >/dev/null 2>&1
import cupy, torch
assert cupy.cuda.runtime.getDeviceCount() > 0 and torch.cuda.is_available()
PY
}

PY=""
for cand in ${PYTHON:-} python3 .venv/bin/python .venv-gpu/bin/python; do
    if command -v "$cand" >/dev/null 2>&1 && has_stack "$cand"; then PY=$cand; break; fi
done
if [ -z "$PY" ]; then
    CUDA_MAJOR=$(nvidia-smi | sed -n 's/.*CUDA Version: *\([0-9]*\).*/\1/p' | head -1)
    echo "No Python with CuPy + CUDA PyTorch found; installing into .venv-gpu (CUDA ${CUDA_MAJOR:-?})"
    python3 -m venv .venv-gpu || exit 1
    PY=.venv-gpu/bin/python
    "$PY" -m pip install -q --upgrade pip
    "$PY" -m pip install -q "cupy-cuda${CUDA_MAJOR:-13}x" torch numpy numba pytest hypothesis safetensors tqdm \
        matplotlib transformers || { echo "pip install failed: see above"; exit 1; }
    has_stack "$PY" || { echo "CuPy or torch still cannot see the GPU with $PY"; exit 1; }
fi
echo "Python: $PY"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # kernels/ and minillm/ from this checkout
export PYTHONUNBUFFERED=1

LOG=$(mktemp)
echo "== GPU tests (pytest tests -k cupy)"
timeout 240 "$PY" -m pytest tests -q -k cupy -p no:cacheprovider 2>&1 | tee "$LOG"
TEST_RC=${PIPESTATUS[0]}
[ "$TEST_RC" = 124 ] && echo "(pytest stopped at its 4-minute cap)" | tee -a "$LOG"

echo "== kernel benchmarks vs PyTorch CUDA"
timeout 180 "$PY" benchmarks/gpu_bench.py --out "$OUT" --tests-log "$LOG" ${QUICK:+--quick}
BENCH_RC=$?
rm -f "$LOG"
echo "tests rc=$TEST_RC, bench rc=$BENCH_RC; report: $OUT"
# pytest exit 5 = nothing selected (no cupy cases written yet): not a failure of this script
[ "$TEST_RC" = 0 ] || [ "$TEST_RC" = 5 ] || exit "$TEST_RC"
exit "$BENCH_RC"

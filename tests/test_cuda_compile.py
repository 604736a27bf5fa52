"""The GPU backend, checked on a machine without a GPU.

No GPU runs these tests, so they check everything that can be checked without one:

1. every `kernels/*/*.cu` compiles with nvcc for sm_80 (A100) and sm_90 (H100/H200), warnings as errors;
2. it also compiles with NVRTC -- what `cupy.RawModule` really uses at run time, and stricter than nvcc
   (no <math.h>: `INFINITY` compiles with nvcc and fails in NVRTC) -- when a libnvrtc can be found;
   a source lint catches the known NVRTC traps where it cannot;
3. every `kernels/<family>/gpu.py` imports without CuPy, exposes the contract names, and says how to
   install CuPy when called without it;
4. every launcher, run against a stand-in `cupy` backed by NumPy, passes each kernel exactly the argument
   list its `extern "C"` signature declares (count, pointer dtypes, 32- vs 64-bit scalars) and a legal
   launch configuration. No arithmetic happens here: the numbers are checked by the property tests'
   cupy cases, which skip without a GPU.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import glob
import importlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import types
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import kernels
from kernels import _cuda

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CU_FILES = sorted(glob.glob(os.path.join(ROOT, "kernels", "*", "*.cu")))
ARCHS = ("80", "90")
NVCC = shutil.which("nvcc")


def _rel(path):
    return os.path.relpath(path, ROOT)


def test_every_family_has_a_cu_file():
    assert sorted(os.path.basename(p) for p in CU_FILES) == sorted(f"{f}.cu" for f in kernels.FAMILIES)


# ---- 1. nvcc ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def nvcc_results():
    """Compile all (file, arch) pairs once, in parallel threads; {(file, arch): CompletedProcess}."""
    if NVCC is None:
        pytest.skip("nvcc is not on PATH; install the CUDA toolkit to compile-check the .cu files")
    with tempfile.TemporaryDirectory() as tmp:
        def compile_one(job):
            path, arch = job
            out = os.path.join(tmp, f"{os.path.basename(path)}.sm_{arch}.cubin")
            # --cubin: the device half only (front end + ptxas, which also rejects oversized shared memory),
            # as NVRTC does at run time; skipping the host compiler halves the time.
            cmd = [NVCC, "-std=c++17", f"-arch=sm_{arch}", "--cubin", "-Werror", "all-warnings", path, "-o", out]
            return job, subprocess.run(cmd, capture_output=True, text=True)

        jobs = [(p, a) for p in CU_FILES for a in ARCHS]
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            return dict(pool.map(compile_one, jobs))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("path", CU_FILES, ids=_rel)
def test_nvcc_compiles(nvcc_results, path, arch):
    result = nvcc_results[(path, arch)]
    assert result.returncode == 0, f"nvcc -arch=sm_{arch} failed on {_rel(path)}:\n{result.stderr}"


# ---- 2. NVRTC -----------------------------------------------------------------------------------------

def _find_nvrtc():
    """A loadable libnvrtc: $MINILLM_NVRTC, the system's, or the pip wheel nvidia-cuda-nvrtc's."""
    candidates = [os.environ.get("MINILLM_NVRTC"), ctypes.util.find_library("nvrtc")]
    for base in sys.path:
        candidates += glob.glob(os.path.join(base, "nvidia", "cu1*", "lib", "libnvrtc.so*"))
        candidates += glob.glob(os.path.join(base, "nvidia", "cuda_nvrtc", "lib", "libnvrtc.so*"))
    candidates += glob.glob("/usr/local/cuda*/lib64/libnvrtc.so*")
    for c in candidates:
        if c and "builtins" not in c:
            try:
                return ctypes.CDLL(c)
            except OSError:
                continue
    return None


def _nvrtc_compile(lib, path, arch):
    """Compile like cupy.RawModule(code=..., options=("-std=c++17",)); return (status, log)."""
    with open(path, "rb") as f:
        src = f.read()
    prog = ctypes.c_void_p()
    assert lib.nvrtcCreateProgram(ctypes.byref(prog), src, path.encode(), 0, None, None) == 0
    opts = [b"-std=c++17", f"-arch=compute_{arch}".encode()]
    status = lib.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    return status, log.value.decode(errors="replace")


NVRTC = _find_nvrtc()


@pytest.mark.skipif(NVRTC is None, reason="no libnvrtc found (pip install nvidia-cuda-nvrtc, or set MINILLM_NVRTC)")
@pytest.mark.parametrize("path", CU_FILES, ids=_rel)
def test_nvrtc_compiles(path):
    for arch in ARCHS:
        status, log = _nvrtc_compile(NVRTC, path, arch)
        assert status == 0, f"NVRTC (compute_{arch}) failed on {_rel(path)}:\n{log}"


@pytest.mark.parametrize("path", CU_FILES, ids=_rel)
def test_cu_avoids_what_nvrtc_lacks(path):
    """NVRTC has no host headers: no #include <...>, no INFINITY / NAN macros from <math.h>."""
    with open(path) as f:
        code = re.sub(r"//[^\n]*", "", f.read())  # comments may mention them
    assert not re.search(r"#\s*include\s*<", code), f"{_rel(path)}: NVRTC cannot include host headers"
    assert not re.search(r"\b(INFINITY|NAN|HUGE_VALF?)\b", code), (
        f"{_rel(path)}: NVRTC has no INFINITY/NAN; use __int_as_float(0x7f800000) like the other kernels"
    )


# ---- 3. importing without CuPy ------------------------------------------------------------------------

_NO_CUPY = r"""
import importlib, importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "cupy" or name.startswith("cupy."):
            raise ImportError("No module named 'cupy' (blocked by the test)")
sys.meta_path.insert(0, Block())
import kernels
for family, names in kernels.CONTRACT.items():
    module = importlib.import_module(f"kernels.{family}.gpu")
    for name in names:
        assert callable(getattr(module, name)), (family, name)
try:  # asking for the backend fails at once, with the install hint
    kernels.get("cupy")
except ImportError as e:
    assert "pip install -e .[gpu]" in str(e), str(e)
    print("OK")
"""


def test_gpu_modules_import_without_cupy():
    result = subprocess.run([sys.executable, "-c", _NO_CUPY], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0 and result.stdout.strip() == "OK", result.stderr


# ---- 4. launch arguments against the C signatures, with a NumPy stand-in for cupy ----------------------

_C_TYPES = {  # C parameter type -> what the launcher must pass
    "float*": np.float32, "unsigned char*": np.uint8, "long long*": np.int64,
    "int": np.int32, "long long": np.int64, "float": np.float32,
}


def _signatures(code):
    """{kernel name: [(c type, param name), ...]} of the extern "C" kernels, expanding one-arg macros."""
    code = code.replace("\\\n", " ")
    code = re.sub(r"//[^\n]*", "", code)
    for name, arg, body in re.findall(r"#define\s+(\w+)\((\w+)\)\s*(.*)", code):
        for value in re.findall(rf"^{name}\((\w+)\)\s*$", code, flags=re.M):
            code += "\n" + body.replace(f"##{arg}", value).replace(arg, value)
    sigs = {}
    for name, params in re.findall(
        r'extern "C" __global__ void\s+(?:__launch_bounds__\([^)]*\)\s+)?(\w+)\s*\(([^)]*)\)', code
    ):
        parsed = []
        for p in params.split(","):
            p = " ".join(p.replace("__restrict__", "").replace("const", "").split())
            ctype, pname = p.rsplit(" ", 1) if "*" not in p else (p[: p.index("*") + 1].replace(" *", "*"), p[p.index("*") + 1:].strip())
            parsed.append((ctype, pname))
        sigs[name] = parsed
    return sigs


class _FakeKernel:
    def __init__(self, name, params, launches):
        self.name, self.params, self.launches = name, params, launches

    def __call__(self, grid, block, args):
        where = f"kernel {self.name}"
        assert len(args) == len(self.params), f"{where}: {len(args)} arguments for {len(self.params)} parameters"
        for arg, (ctype, pname) in zip(args, self.params):
            want = _C_TYPES[ctype]
            if ctype.endswith("*"):
                # None would reach the kernel as 0xffffffff, not NULL (cupy/cupy#9046): NULL is np.uint64(0)
                assert arg is not None, f"{where}: None for {pname}; pass kernels._cuda.NULL for a NULL pointer"
                if type(arg) is np.uint64 and arg == 0:
                    assert "mask" in pname, f"{where}: only masks may be NULL, got NULL for {pname}"
                    continue
                assert isinstance(arg, np.ndarray), f"{where}: {pname} wants a device array, got {type(arg)}"
                assert arg.dtype == want, f"{where}: {pname} is {ctype} but the array is {arg.dtype}"
                assert arg.flags.c_contiguous, f"{where}: {pname} is not contiguous"
            else:
                # exact type: a Python int would reach the kernel as a 64-bit long long, a float as a double
                assert type(arg) is want, f"{where}: {pname} is C {ctype}, got {type(arg).__name__}"
        assert len(block) == 1 and 32 <= block[0] <= 1024 and block[0] % 32 == 0, f"{where}: block {block}"
        assert 1 <= len(grid) <= 2 and all(1 <= int(g) for g in grid), f"{where}: grid {grid}"
        assert len(grid) < 2 or grid[1] <= 65535, f"{where}: grid.y {grid[1]} over CUDA's limit"
        self.launches.append((self.name, tuple(grid), tuple(block)))


class _FakeRawModule:
    launches: list = []

    def __init__(self, code, options=()):
        assert "-std=c++17" in options
        self.sigs = _signatures(code)
        self.defines = dict(re.findall(r"#define\s+(\w+)\s+(\d+)\s", code))

    def get_function(self, name):
        assert name in self.sigs, f"no extern \"C\" kernel {name!r}; the file has {sorted(self.sigs)}"
        return _FakeKernel(name, self.sigs[name], _FakeRawModule.launches)


@pytest.fixture
def fake_cupy(monkeypatch):
    """A `cupy` whose arrays are NumPy arrays and whose RawModule checks launches instead of running them."""
    cp = types.ModuleType("cupy")
    for name in ("ndarray", "float32", "int64", "uint8", "bool_", "empty", "empty_like", "zeros", "zeros_like",
                 "asarray", "ascontiguousarray", "broadcast_to", "argmax"):
        setattr(cp, name, getattr(np, name))
    cp.count_nonzero = lambda a: np.asarray(np.count_nonzero(a))  # CuPy returns a 0-d array, NumPy an int
    cp.RawModule = _FakeRawModule
    monkeypatch.setitem(sys.modules, "cupy", cp)
    _cuda._module.cache_clear()
    _FakeRawModule.launches = []
    yield _FakeRawModule.launches
    _cuda._module.cache_clear()


def _gpu(family):
    return importlib.import_module(f"kernels.{family}.gpu")


def test_python_mirrors_of_cu_constants_agree():
    """Launch constants that gpu.py repeats from a .cu file's #defines must be equal."""
    mirrored = {"softmax": ["WARPS_PER_BLOCK"], "layernorm": ["WARPS_PER_BLOCK", "ROWS_PER_CHUNK", "COLS_PER_BLOCK"],
                "cross_entropy": ["THREADS"], "attention": ["NWARPS"]}
    for family, names in mirrored.items():
        with open(os.path.join(ROOT, "kernels", family, f"{family}.cu")) as f:
            defines = dict(re.findall(r"#define\s+(\w+)\s+(\d+)\s", f.read()))
        for name in names:
            assert int(defines[name]) == getattr(_gpu(family), name), f"{family}: {name} differs from {family}.cu"


def _f32(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("D", [16, 64, 100, 128])
@pytest.mark.parametrize("masked", [False, True])
def test_attention_launches_match_signatures(fake_cupy, D, masked):
    at = _gpu("attention")
    B, H, Tq, Tk = 2, 3, 5, 7
    q, k, v = _f32(B, H, Tq, D), _f32(B, H, Tk, D), _f32(B, H, Tk, D)
    key_mask = np.ones((B, Tk), bool) if masked else None
    out, lse = at.attention_fwd(q, k, v, key_mask=key_mask, causal=True)
    assert out.shape == q.shape and lse.shape == (B, H, Tq)
    dq, dk, dv = at.attention_bwd(out, q, k, v, out, lse, key_mask=key_mask, causal=True, scale=0.5)
    assert dq.shape == q.shape and dk.shape == dv.shape == k.shape
    dmax = 32 if D <= 32 else 64 if D <= 64 else 128
    names = [name for name, _, _ in fake_cupy]
    assert names == [f"attention_fwd_d{dmax}", "attention_bwd_delta", f"attention_bwd_dkdv_d{dmax}",
                     f"attention_bwd_dq_d{dmax}"]
    rows = 4 * (2 if dmax == 128 else 4)  # NWARPS * rows per warp, as Cfg<DMAX> in attention.cu
    assert fake_cupy[0][1] == (-(-Tq // rows), B * H) and fake_cupy[2][1] == (-(-Tk // rows), B * H)


def test_row_kernel_launches_match_signatures(fake_cupy):
    x = _f32(3, 5, 33)
    mask = np.random.default_rng(1).random((5, 33)) > 0.5  # broadcast over each leading axis
    sm, ln, ge = _gpu("softmax"), _gpu("layernorm"), _gpu("gelu")
    y = sm.softmax_fwd(x, mask=mask)
    sm.softmax_fwd(x)
    sm.softmax_bwd(y, x)
    w, b = _f32(33), _f32(33)
    y, mean, rstd = ln.layernorm_fwd(x, w, b, 1e-12)
    assert mean.shape == rstd.shape == (3, 5)
    dx, dw, db = ln.layernorm_bwd(x, x, w, mean, rstd)
    assert dx.shape == x.shape and dw.shape == db.shape == (33,)
    ge.gelu_bwd(x, ge.gelu_fwd(x))
    n = len(fake_cupy)
    assert sm.softmax_fwd(np.zeros((4, 0), np.float32)).shape == (4, 0)  # empty: nothing to launch
    assert ge.gelu_fwd(np.zeros((0,), np.float32)).shape == (0,)
    assert len(fake_cupy) == n
    assert fake_cupy[0][1] == (-(-15 // 4),)  # 15 rows, one warp each, 4 warps per block
    assert [n for n, _, _ in fake_cupy][-4:-2] == ["layernorm_bwd_params_partial", "layernorm_bwd_params_reduce"]


def test_gelu_tanh_launches_match_signatures(fake_cupy):
    """The tanh GELU (GPT-2's) launches its own two kernels of gelu.cu with their C argument lists."""
    ge = _gpu("gelu")
    x = _f32(3, 5, 33)
    assert ge.gelu_tanh_bwd(x, ge.gelu_tanh_fwd(x)).shape == x.shape
    assert ge.gelu_tanh_fwd(np.zeros((0,), np.float32)).shape == (0,)  # empty: nothing to launch
    assert [n for n, _, _ in fake_cupy] == ["gelu_tanh_fwd", "gelu_tanh_bwd"]


def test_cross_entropy_and_adamw_launches_match_signatures(fake_cupy):
    ce, ad = _gpu("cross_entropy"), _gpu("adamw")
    logits = _f32(6, 50)
    targets = np.array([1, -100, 3, 49, 0, -100], dtype=np.int32)  # int32 on purpose: the launcher widens
    loss, lse = ce.cross_entropy_fwd(logits, targets)
    assert lse.shape == (6,)
    assert ce.cross_entropy_bwd(logits, targets, lse, 1.0).shape == logits.shape
    p, g, m, v = _f32(10, 3), _f32(10, 3), np.zeros((10, 3), np.float32), np.zeros((10, 3), np.float32)
    ad.adamw_step(p, g, m, v, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, step=1)
    assert [n for n, _, _ in fake_cupy] == ["cross_entropy_fwd_rows", "cross_entropy_fwd_mean",
                                            "cross_entropy_bwd", "adamw_step"]


def test_launchers_convert_read_only_inputs_like_the_cpu_wrappers(fake_cupy):
    """float64 and strided inputs become contiguous float32 (the fake kernels assert what they receive)."""
    sm, ge = _gpu("softmax"), _gpu("gelu")
    assert sm.softmax_fwd(np.zeros((2, 3), np.float64)).dtype == np.float32
    assert ge.gelu_fwd(_f32(4, 6)[:, ::2]).shape == (4, 3)
    assert len(fake_cupy) == 2


def test_launchers_reject_bad_inputs_with_clear_errors(fake_cupy):
    sm, at, ln, ce, ad = (_gpu(f) for f in ("softmax", "attention", "layernorm", "cross_entropy", "adamw"))
    with pytest.raises(ValueError, match="softmax_fwd.*real numbers"):
        sm.softmax_fwd(np.array([["a", "b"]]))
    with pytest.raises(TypeError, match="CuPy array"):
        sm.softmax_fwd([[1.0, 2.0]])
    with pytest.raises(ValueError, match="larger than 128"):
        at.attention_fwd(_f32(1, 1, 2, 129), _f32(1, 1, 2, 129), _f32(1, 1, 2, 129))
    with pytest.raises(ValueError, match="layernorm_fwd.*weight"):
        ln.layernorm_fwd(_f32(2, 8), _f32(7), _f32(8), 1e-5)
    with pytest.raises(ValueError, match=r"cross_entropy_fwd.*targets\[1\] = 6"):
        ce.cross_entropy_fwd(_f32(4, 6), np.array([0, 6, 1, -100]))
    p = np.zeros(5, np.float32)
    with pytest.raises(ValueError, match="adamw_step.*float32"):  # in place: converting would lose the update
        ad.adamw_step(p.astype(np.float64), p, p.copy(), p.copy(), 1e-3, 0.9, 0.999, 1e-8, 0.0, 1)
    with pytest.raises(ValueError, match="adamw_step.*contiguous"):
        ad.adamw_step(p, p, np.zeros(10, np.float32)[::2], p.copy(), 1e-3, 0.9, 0.999, 1e-8, 0.0, 1)
    assert fake_cupy == []  # nothing was launched

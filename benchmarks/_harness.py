"""What every benchmark here shares: one process per engine, its settings, the machine's limits, timing, and
results files that start with the command that regenerates them.

The method (and why):

* **Each engine in its own process.** minillm (Numba's OpenMP pool + OpenBLAS) and PyTorch (its own OpenMP
  + MKL) each keep a thread pool per library. In one process the idle pools of one engine spin on the cores
  the other is using; on 2 cores that slowed PyTorch's BERT-mini step several-fold. So a parent process
  starts one worker per engine, alternating engines over several rounds, and takes medians across rounds.
* **Each engine with its own settings** (`engine_env`): the same thread count for all; minillm with the
  sleeping pools it sets for itself on import (OMP_WAIT_POLICY=PASSIVE, OPENBLAS_THREAD_TIMEOUT=4);
  PyTorch with its defaults (OMP_WAIT_POLICY unset) and a 1-thread OpenBLAS, because its NumPy only builds
  inputs and checks results. OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are removed together for both: when
  set they can force a slower OpenBLAS kernel than the one it would pick for this CPU. Which BLAS kernel
  runs is recorded (`blas_info`).
* **The machine's limits measured in the same run**, by each worker: memory bandwidth and a float32 matmul.

Nothing here asserts a speed. Workers print one JSON line (their last stdout line) for the parent.
"""
from __future__ import annotations

import ctypes
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH_DIR)
RESULTS = os.path.join(BENCH_DIR, "results")
ENGINES = ("minillm", "torch")
BLAS_OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")  # removed together, for both engines


# The C allocator's settings a worker runs with. "kept": freed memory stays in the process for reuse (glibc's
# mmap threshold 1 GiB, trim threshold 2 GiB): what `import minillm` sets itself (backend.keep_freed_memory).
# "glibc": glibc's own defaults. PyTorch runs under both and each case keeps its faster one: kept memory
# makes PyTorch's row-wise kernels and training steps faster (no page faults on fresh outputs) but some of
# its large-array cases slower and erratic (the cross-entropy backward over (2048, 30522) logits).
ALLOCATORS = {"minillm": ("kept",), "torch": ("kept", "glibc")}
KEPT_MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(2**31 - 1)}


def fastest(by_allocator: dict) -> dict:
    """{allocator: per-round lists of seconds} -> summarize() of the allocator with the lowest median, with
    "allocator" naming it."""
    runs = {a: summarize(rounds) for a, rounds in by_allocator.items()}
    best = min((a for a in runs if runs[a]), key=lambda a: runs[a]["median"])
    return {**runs[best], "allocator": best}


def engine_env(engine: str, threads: int, base: dict | None = None, allocator: str = "kept") -> dict:
    """The environment of one engine's worker process: thread counts, wait policies, no BLAS overrides, and
    the allocator setting (ALLOCATORS)."""
    env = dict(os.environ if base is None else base)
    for var in BLAS_OVERRIDES:
        env.pop(var, None)
    for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    if engine == "minillm":  # what `import minillm` sets for itself (see minillm/__init__.py)
        env.update(OPENBLAS_NUM_THREADS=str(threads), OMP_WAIT_POLICY="PASSIVE", OPENBLAS_THREAD_TIMEOUT="4")
    elif engine == "torch":  # PyTorch's own defaults; its NumPy only makes inputs and checks results
        env.pop("OMP_WAIT_POLICY", None)
        env.pop("OPENBLAS_THREAD_TIMEOUT", None)
        env["OPENBLAS_NUM_THREADS"] = "1"
    else:
        raise ValueError(f"unknown engine {engine!r}; known: {', '.join(ENGINES)}")
    if allocator not in ALLOCATORS[engine]:
        raise ValueError(f"allocator {allocator!r} is not one {engine} runs under: {ALLOCATORS[engine]}")
    for var in (*KEPT_MEMORY_ENV, "MINILLM_KEEP_FREED_MEMORY"):  # minillm sets "kept" itself at import;
        env.pop(var, None)                                          # PyTorch gets it from the environment
    if engine == "torch" and allocator == "kept":
        env.update(KEPT_MEMORY_ENV)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def settings_text(threads: int, torch_allocators: tuple = ALLOCATORS["torch"]) -> dict:
    """engine -> a one-line description of its process settings, for the results files (torch_allocators:
    the allocator settings the benchmark ran PyTorch under)."""
    kept = "minillm's kept memory (MALLOC_MMAP_THRESHOLD_=2^30, MALLOC_TRIM_THRESHOLD_=2^31-1)"
    allocators = (f"each case run under two allocator settings, glibc's defaults and {kept}, and the faster one "
                  "kept (the JSON names it per case)" if len(torch_allocators) > 1 else f"allocator: {kept}")
    return {
        "minillm": f"NUMBA_NUM_THREADS=OMP_NUM_THREADS=OPENBLAS_NUM_THREADS={threads}, OMP_WAIT_POLICY=PASSIVE, "
                   "OPENBLAS_THREAD_TIMEOUT=4, glibc malloc keeping freed memory (mmap threshold 1 GiB, trim "
                   "threshold 2 GiB; minillm's own defaults); no PyTorch imported",
        "torch": f"torch.set_num_threads({threads}), OMP_NUM_THREADS=MKL_NUM_THREADS={threads}, OMP_WAIT_POLICY "
                 "unset (PyTorch's default), OPENBLAS_NUM_THREADS=1 (NumPy only builds inputs); " + allocators + "; "
                 "gradients by torch.autograd.grad on fresh leaves (nothing accumulates into .grad)",
        "both": f"{', '.join(BLAS_OVERRIDES)} removed from the environment",
    }


def blas_overrides_seen() -> dict:
    """The BLAS override variables of the calling environment (removed in the workers)."""
    return {v: os.environ[v] for v in BLAS_OVERRIDES if v in os.environ}


def run_worker(script: str, argv: list, engine: str, threads: int, timeout: float | None = None,
               allocator: str = "kept") -> dict:
    """Run `python script argv` in the engine's environment; return the JSON of its last stdout line.

    The worker's stderr (its progress lines) goes straight to ours, so a long run shows where it is.
    """
    cmd = [sys.executable, script, *argv]
    res = subprocess.run(cmd, env=engine_env(engine, threads, allocator=allocator), stdout=subprocess.PIPE,
                         text=True, timeout=timeout, cwd=ROOT)
    if res.returncode:
        raise RuntimeError(f"worker {' '.join(argv)} failed with exit code {res.returncode}; "
                           f"its last output:\n{res.stdout[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def refresh_docs(out: str, no_docs: bool) -> None:
    """Re-render README's results block and the NOTES.md tables when the results went to benchmarks/results."""
    if not no_docs and os.path.abspath(out) == os.path.abspath(RESULTS):
        from benchmarks import render_docs

        try:
            render_docs.main(["--write"])
        except FileNotFoundError as e:  # the other benchmark has not written its results yet
            print(f"docs not refreshed: {e}")
    print(f"results in {out}")


def engine_order(round_index: int) -> tuple:
    """minillm first in even rounds, PyTorch first in odd ones: neither always runs on a cooler machine."""
    return ENGINES if round_index % 2 == 0 else ENGINES[::-1]


def log(*parts) -> None:
    print(*parts, file=sys.stderr, flush=True)


# ---- timing


def time_calls(fn, repeats: int, budget_s: float = float("inf"), min_repeats: int = 3, warmup: bool = True) -> list:
    """Seconds of `repeats` calls of fn (after one untimed warm-up call unless warmup=False); stops early,
    after min_repeats calls, once budget_s seconds have gone into timed calls."""
    if warmup:
        fn()
    ts, start = [], time.perf_counter()
    for i in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
        if i + 1 >= min_repeats and time.perf_counter() - start > budget_s:
            break
    return ts


def median(xs) -> float:
    xs = sorted(xs)
    n = len(xs)
    return float(xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2]))


def summarize(rounds: list) -> dict:
    """Per-round lists of seconds -> {"median": median of the per-round medians, "min", "max": over all calls}."""
    rounds = [r for r in rounds if r]
    if not rounds:
        return {}
    return {"median": median([median(r) for r in rounds]), "min": min(min(r) for r in rounds),
            "max": max(max(r) for r in rounds), "rounds": len(rounds), "calls": sum(len(r) for r in rounds)}


# ---- the machine, measured by each worker in its own process

COPY_N = 1 << 26  # 64 M floats = 256 MB per buffer: far beyond any cache
MATMUL_N = 2048


def numba_copy_gbs(repeats: int = 5) -> float:
    """Memory bandwidth (read + write GB/s) as minillm's kernels move memory: Numba prange loops over 256 MB.

    The best of two patterns: a copy into a second buffer, and an in-place update of one buffer. On x86 a
    store to a line not in cache first reads it (read-for-ownership), so the copy moves 3 bytes for every
    2 it counts; an in-place update (AdamW's pattern) does not. Kernels that write a fresh output pay the
    first pattern's cost and so stay below the line.
    """
    import numpy as np
    from numba import njit, prange

    @njit(parallel=True)
    def copy(a, b):
        chunk = 1 << 16
        for k in prange((a.shape[0] + chunk - 1) // chunk):
            for i in range(k * chunk, min(a.shape[0], (k + 1) * chunk)):
                b[i] = a[i]

    @njit(parallel=True)
    def update(a):
        chunk = 1 << 16
        for k in prange((a.shape[0] + chunk - 1) // chunk):
            for i in range(k * chunk, min(a.shape[0], (k + 1) * chunk)):
                a[i] = a[i] * np.float32(0.5)

    a = np.random.default_rng(0).standard_normal(COPY_N).astype(np.float32)
    b = np.empty_like(a)
    best = min(min(time_calls(lambda: copy(a, b), repeats)), min(time_calls(lambda: update(a), repeats)))
    return 2 * a.nbytes / best / 1e9


def numpy_matmul_gflops(repeats: int = 5) -> float:
    """float32 GFLOP/s of a 2048^3 matmul (2 n^3 FLOPs) in NumPy's BLAS."""
    import numpy as np

    a = np.random.default_rng(1).standard_normal((MATMUL_N, MATMUL_N)).astype(np.float32)
    return 2 * MATMUL_N**3 / min(time_calls(lambda: a @ a, repeats)) / 1e9


def torch_copy_gbs(repeats: int = 5) -> float:
    import torch

    a = torch.randn(COPY_N)
    b = torch.empty_like(a)
    return 2 * a.numel() * 4 / min(time_calls(lambda: b.copy_(a), repeats)) / 1e9


def torch_matmul_gflops(repeats: int = 5) -> float:
    import torch

    a = torch.randn(MATMUL_N, MATMUL_N)
    return 2 * MATMUL_N**3 / min(time_calls(lambda: a @ a, repeats)) / 1e9


def machine_lines(workers: list) -> dict:
    """The machine's lines from every worker's own measurements: a limit is the best rate seen (each worker
    reports its fastest of 5 calls; a busy machine only ever slows a call down), per engine, then overall."""
    out = {}
    for key in ("copy_gbs", "matmul_gflops"):
        per = {e: max(w["machine"][key] for w in workers if w["engine"] == e and key in w["machine"])
               for e in ENGINES if any(w["engine"] == e and key in w["machine"] for w in workers)}
        if per:
            out[key] = {"per_engine": per, "line": max(per.values())}
    return out


def blas_info() -> str:
    """Which BLAS, version and kernel (core) NumPy runs in this process: threadpoolctl if installed, else ctypes."""
    import numpy as np  # noqa: F401  (loads the BLAS)

    try:
        from threadpoolctl import threadpool_info

        libs = [i for i in threadpool_info() if i.get("user_api") == "blas"]
        if libs:
            i = libs[0]
            return (f"{i.get('internal_api')} {i.get('version')}, kernel {i.get('architecture')}, "
                    f"{i.get('num_threads')} threads")
    except ImportError:
        pass
    with open("/proc/self/maps") as f:
        paths = sorted({line.split()[-1] for line in f if "openblas" in line.lower() and ".so" in line})
    for path in paths:
        lib = ctypes.CDLL(path)
        for prefix, suffix in (("", ""), ("scipy_", "64_"), ("scipy_", "")):
            try:
                core = getattr(lib, f"{prefix}openblas_get_corename{suffix}")
                config = getattr(lib, f"{prefix}openblas_get_config{suffix}")
                threads = getattr(lib, f"{prefix}openblas_get_num_threads{suffix}")
            except AttributeError:
                continue
            core.restype = config.restype = ctypes.c_char_p
            return (f"{config().decode().split(' USE')[0].strip()}, kernel {core().decode()}, "
                    f"{threads()} threads")
    return "unknown (no OpenBLAS found; see numpy.show_config())"


def torch_blas_info() -> str:
    import torch

    cfg = torch.__config__.show()
    blas = "MKL" if torch.backends.mkl.is_available() else "BLAS"
    cap = next((line.split(":", 1)[1].strip() for line in cfg.splitlines() if "CPU capability" in line), "?")
    return f"{blas} (torch {torch.__version__}), CPU capability {cap}, {torch.get_num_threads()} threads"


def host() -> dict:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "loadavg": list(os.getloadavg()), "caches": caches()}


def caches() -> str:
    """This CPU's data caches as the kernel reports them, e.g. "L1d 48K, L2 2048K, L3 491520K"."""
    out = []
    base = "/sys/devices/system/cpu/cpu0/cache"
    for d in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        try:
            with open(f"{base}/{d}/level") as f1, open(f"{base}/{d}/type") as f2, open(f"{base}/{d}/size") as f3:
                level, kind, size = f1.read().strip(), f2.read().strip(), f3.read().strip()
        except OSError:
            continue
        if kind != "Instruction":
            out.append(f"L{level}{'d' if kind == 'Data' else ''} {size}")
    return ", ".join(out) or "unknown"


# ---- memory of this process


def vm_kb(field: str) -> int:
    """A field of /proc/self/status in kB (1024 bytes): VmRSS now, VmHWM the peak."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux: write 5 to /proc/self/clear_refs); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# ---- results files


def command(script: str, args: list) -> str:
    """The command that regenerates a results file, with relative paths."""
    return " ".join(["python", f"benchmarks/{script}", *[str(a) for a in args]])


def quick_out() -> str:
    """Where --quick runs write unless told otherwise: never over the committed results."""
    return os.path.join(tempfile.gettempdir(), "minillm-bench-quick")


def write_results(out_dir: str, stem: str, cmd: str, md_lines: list, data: dict) -> None:
    """<stem>.md (first line: the command) and <stem>.json (first key: the command) in out_dir."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, stem + ".md"), "w") as f:
        f.write(f"Regenerate: `{cmd}`\n\n" + "\n".join(md_lines).rstrip() + "\n")
    with open(os.path.join(out_dir, stem + ".json"), "w") as f:
        json.dump({"command": cmd, **data}, f, indent=1, sort_keys=False)
        f.write("\n")


def header_lines(title: str, data: dict, threads: int) -> list:
    """The common opening of a results file: machine, load, settings, BLAS, the machine's lines."""
    h, m, s = data["host"], data["machine"], data["settings"]
    lines = [f"# {title}", "",
             f"Machine: {h['cpu']}, {h['cores']} cores, caches {h.get('caches', 'unknown')} (per core, L3 "
             f"shared); load average (1 min) {h['loadavg_start'][0]:.2f} at the start, "
             f"{h['loadavg_end'][0]:.2f} at the end of the run. Threads: {threads} for every engine.", ""]
    lines += [f"- minillm process: {s['minillm']}; NumPy BLAS: {data['blas']['minillm']}.",
              f"- PyTorch process: {s['torch']}; {data['blas']['torch']}.",
              f"- Both: {s['both']}" + (f" (the calling environment had {data['blas_overrides_seen']})."
                                         if data.get("blas_overrides_seen") else " (neither was set)."), ""]
    parts = []
    if "copy_gbs" in m:
        cp = m["copy_gbs"]["per_engine"]
        parts.append(f"memory {m['copy_gbs']['line']:.1f} GB/s (read + write of 256 MB: Numba prange copy or "
                     f"in-place update, the faster, {cp.get('minillm', float('nan')):.1f}; torch copy_ "
                     f"{cp.get('torch', float('nan')):.1f})")
    mm = m["matmul_gflops"]["per_engine"]
    parts.append(f"float32 matmul {m['matmul_gflops']['line']:.0f} GFLOP/s (2048^3: NumPy "
                 f"{mm.get('minillm', float('nan')):.0f}, PyTorch {mm.get('torch', float('nan')):.0f})")
    lines += ["Machine lines, measured in this run by each engine's own processes (the best of 5 calls in each "
              "process, the best over the run's processes: a busy machine only slows a call down): "
              + "; ".join(parts) + ". Rates and percentages below are against the larger of each pair. A working "
              "set that fits in the last-level cache can be served from it, faster than the memory line: a rate "
              "above 100% of that line says so.", ""]
    return lines


def engine_versions(engine: str) -> str:
    """The library versions behind a worker's numbers ("torch": torch and transformers; else NumPy and Numba)."""
    import numba
    import numpy as np

    if engine == "torch":
        import torch
        import transformers

        return f"torch {torch.__version__}, transformers {transformers.__version__}, numpy {np.__version__}"
    return f"numpy {np.__version__}, numba {numba.__version__}"

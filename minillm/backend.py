"""The one seam between minillm and the array library, and the choice of kernel backend.

Every op in minillm asks `xp(array)` for the module that owns an array (NumPy on the CPU, CuPy on a GPU)
instead of calling `np.` directly, so the same autograd code runs on both. Which *kernels* run the fused
ops (softmax, layer norm, attention, ...) is chosen separately:

    mm.set_backend("numba")     # or "numpy" (the readable reference) or "cupy"; env MINILLM_BACKEND

CuPy arrays always use the "cupy" kernels; CPU arrays use "numpy" or "numba", whichever is set.

This module deliberately knows nothing about tensors or autograd.
"""
from __future__ import annotations

import os
import sys

import numpy as np

import kernels

_backend = os.environ.get("MINILLM_BACKEND", "numba")
if _backend not in kernels.BACKENDS:
    raise ValueError(
        f"MINILLM_BACKEND={_backend!r} is not a kernel backend; known backends: {', '.join(kernels.BACKENDS)}"
    )


def set_backend(name: str) -> None:
    """Choose the kernel backend for fused ops: "numpy" (reference), "numba" (CPU) or "cupy" (GPU)."""
    global _backend
    if name not in kernels.BACKENDS:
        raise ValueError(f"unknown backend {name!r}; known backends: {', '.join(kernels.BACKENDS)}")
    if name == "cupy":
        kernels.get("cupy")  # fail now, with the install hint, rather than inside the first forward pass
    _backend = name


def get_backend() -> str:
    """The name of the current kernel backend."""
    return _backend


def is_cupy(array) -> bool:
    return type(array).__module__.startswith("cupy")


def xp(array):
    """The array module (numpy or cupy) that owns `array`."""
    if is_cupy(array):
        import cupy

        return cupy
    return np


def kernels_for(array):
    """The kernel namespace that can run on `array`: cupy for GPU arrays, else the current CPU backend."""
    if is_cupy(array):
        return kernels.get("cupy")
    if _backend == "cupy":
        raise RuntimeError(
            "the kernel backend is 'cupy' but this tensor lives on the CPU; move the model and inputs "
            "with .to('cuda'), or call mm.set_backend('numba') to compute on the CPU"
        )
    return kernels.get(_backend)


def normalize_index(shape, index, op: str = "indexing", like=None):
    """`index` with every integer-array part made non-negative and checked against `shape`.

    NumPy reads -1 as the last entry of an axis, so one row can be spelled two ways (-1 and n - 1). Code
    that groups equal ids (scatter_add's fast path below) would take them for two rows and lose a
    gradient. After this function each entry has one spelling, in [0, n); an id outside [-n, n) raises an
    IndexError that names the op, the axis and the shape. Ints, slices, None, Ellipsis and bool masks pass
    through unchanged (they cannot spell one entry twice); a list of ints becomes an integer array (of
    the array module of `like`, the array being indexed, when given).
    """
    parts = index if isinstance(index, tuple) else (index,)
    parts = tuple(_as_index_array(p, like) for p in parts)

    def width(p):  # how many axes of `shape` an index part consumes
        if p is None or p is Ellipsis or isinstance(p, (bool, np.bool_)):
            return 0
        if hasattr(p, "dtype") and hasattr(p, "ndim") and p.dtype == bool:
            return p.ndim  # a mask covers as many axes as it has (a 0-d one, none)
        return 1

    in_ellipsis = len(shape) - sum(width(p) for p in parts)
    out, axis = [], 0
    for p in parts:
        if p is Ellipsis:
            axis += max(in_ellipsis, 0)
        elif (isinstance(p, np.ndarray) or is_cupy(p)) and p.dtype.kind in "iu":
            if axis >= len(shape):
                raise IndexError(f"{op}: too many indices for an array of shape {tuple(shape)}")
            n = shape[axis]
            if p.size:
                lo, hi = int(p.min()), int(p.max())
                if lo < -n or hi >= n:
                    raise IndexError(
                        f"{op}: index {lo if lo < -n else hi} is out of range for axis {axis} of an array of "
                        f"shape {tuple(shape)} (valid: {-n} .. {n - 1})"
                    )
                if lo < 0:
                    p = xp(p).where(p < 0, p + n, p)
        axis += 0 if p is Ellipsis else width(p)
        out.append(p)
    return tuple(out) if isinstance(index, tuple) else out[0]


def _as_index_array(p, like=None):
    """A list of ints (or bools) as an array, so that it is normalized like one; anything else unchanged."""
    if isinstance(p, list):
        a = np.asarray(p)
        return (a if like is None else xp(like).asarray(a)) if a.dtype.kind in "biu" else p
    return p


def scatter_add(target, index, values) -> None:
    """target[index] += values, adding repeated indices (the backward of a gather/embedding lookup)."""
    index = normalize_index(target.shape, index, "scatter_add", like=target)
    if is_cupy(target):
        import cupyx

        cupyx.scatter_add(target, index, values)
    elif isinstance(index, np.ndarray) and index.dtype.kind in "iu" and values.ndim == index.ndim + target.ndim - 1:
        # Rows gathered by an integer array (an embedding lookup): sort the ids, sum each run of equal ids
        # with one reduceat, and add once per distinct id. Far faster than np.add.at on (N, C) rows.
        ids = index.reshape(-1)
        if ids.size == 0:
            return
        rows = values.reshape(ids.size, *target.shape[1:])
        order = np.argsort(ids, kind="stable")
        sorted_ids = ids[order]
        starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
        target[sorted_ids[starts]] += np.add.reduceat(rows[order], starts, axis=0)
    else:
        np.add.at(target, index, values)


def to_device(array, device: str):
    """Copy `array` to "cpu" or "cuda" (a no-op when it is already there)."""
    if device == "cpu":
        return array.get() if is_cupy(array) else array
    if device in ("cuda", "gpu") or device.startswith("cuda:"):
        try:
            import cupy
        except ImportError as e:
            raise RuntimeError("device 'cuda' needs CuPy and a GPU: pip install -e '.[gpu]'") from e
        return array if is_cupy(array) else cupy.asarray(array)
    raise ValueError(f"unknown device {device!r}; use 'cpu' or 'cuda'")


# --------------------------------------------------------------------------------------------------
# thread pools that sleep when idle, whatever was imported first
#
# A training step alternates Numba's parallel kernels (OpenMP threads) with NumPy's matmuls (OpenBLAS
# threads) on the same cores. Left to their defaults, both pools spin after each call (OpenBLAS for 2^28
# cycles, about 0.1 s), each stealing the cores the other one needs. minillm/__init__.py asks both to sleep
# (OMP_WAIT_POLICY=PASSIVE, OPENBLAS_THREAD_TIMEOUT=4), but each library reads its variable once, when it
# loads: a script that imports NumPy before minillm has an OpenBLAS that never saw the setting. So after
# the imports, `settle_thread_pools` compares what each library actually holds with the environment and
# fixes what can still be fixed, warning (once, naming the variable) about what cannot.
THREAD_ENV = {"OMP_WAIT_POLICY": "PASSIVE", "OPENBLAS_THREAD_TIMEOUT": "4"}
_warned: set = set()


def warn_thread_setting(variable: str, why: str) -> None:
    """One RuntimeWarning per variable and process, saying how to set it so that it takes effect."""
    if variable in _warned:
        return
    _warned.add(variable)
    import warnings

    warnings.warn(f"{variable}={os.environ.get(variable, THREAD_ENV.get(variable))} is not in effect: {why}. "
                  f"Idle threads then spin and slow minillm's kernels down. Set {variable} in the environment "
                  "before Python starts (e.g. `export OMP_WAIT_POLICY=PASSIVE OPENBLAS_THREAD_TIMEOUT=4`), or "
                  "import minillm before NumPy, Numba and PyTorch.", RuntimeWarning, stacklevel=3)


def loaded_openblas() -> list:
    """ctypes handles of the OpenBLAS libraries this process has loaded (NumPy's among them), read from
    /proc/self/maps (Linux); [] elsewhere or when there is none (NumPy built on Accelerate or MKL)."""
    import ctypes

    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.rsplit("/", 1)[-1].lower()}
    except OSError:
        return []
    libs = []
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)   # already mapped: this only returns a handle to it
        except OSError:
            continue
        if hasattr(lib, "openblas_thread_timeout"):
            libs.append(lib)
    return libs


def openblas_timeout_in_effect(lib) -> int:
    """The OPENBLAS_THREAD_TIMEOUT value the library read (0: unset, i.e. its default of 2^28 cycles)."""
    return int(lib.openblas_thread_timeout())


def settle_openblas(lib, target: int) -> bool:
    """Make an already-loaded OpenBLAS use OPENBLAS_THREAD_TIMEOUT = `target` (already in the environment).
    True when it does.

    OpenBLAS reads its environment once, at load, into a variable that `openblas_read_env()` refills; its
    worker threads take the timeout when they start. So: re-read the environment, then stop the workers
    (`blas_thread_shutdown_`, the call OpenBLAS itself makes before a fork); the next multi-threaded BLAS
    call starts new ones, which sleep after 2^target cycles. Must not run while another thread is inside a
    BLAS call: at import time nothing is.
    """
    if openblas_timeout_in_effect(lib) == target:
        return True
    if not (hasattr(lib, "openblas_read_env") and hasattr(lib, "blas_thread_shutdown_")):
        return False
    lib.openblas_read_env()
    lib.blas_thread_shutdown_()
    return openblas_timeout_in_effect(lib) == target


def numba_pool_started() -> bool:
    """True when Numba's OpenMP thread pool is running: libgomp read OMP_WAIT_POLICY when it started, and
    cannot be told again. (Importing Numba starts nothing; the first parallel kernel call does.)"""
    parallel = sys.modules.get("numba.np.ufunc.parallel")
    return bool(getattr(parallel, "_is_initialized", False)) and getattr(parallel, "_threading_layer", None) == "omp"


def settle_thread_pools(user_set=frozenset(), numba_started_before: bool = False) -> dict:
    """Apply THREAD_ENV to libraries loaded before minillm set it; warn once for what cannot be applied.

    Args: user_set, the variables the user had set before minillm did (theirs win; they were in place
    when the libraries loaded); numba_started_before, `numba_pool_started()` when minillm began importing.
    Returns {variable: "in effect" | "fixed now" | "not in effect"} for the variables that apply here.
    """
    state = {}
    target = _int_or_none(os.environ.get("OPENBLAS_THREAD_TIMEOUT"))   # None: unset, or not a number OpenBLAS reads
    for lib in loaded_openblas() if target is not None else ():
        if openblas_timeout_in_effect(lib) == target:
            state.setdefault("OPENBLAS_THREAD_TIMEOUT", "in effect")
        elif settle_openblas(lib, target):
            state["OPENBLAS_THREAD_TIMEOUT"] = "fixed now"
        else:
            state["OPENBLAS_THREAD_TIMEOUT"] = "not in effect"
            warn_thread_setting("OPENBLAS_THREAD_TIMEOUT", "NumPy's OpenBLAS was loaded before minillm set it, and "
                                "this OpenBLAS cannot re-read its environment")
    if numba_started_before and "OMP_WAIT_POLICY" not in user_set:
        state["OMP_WAIT_POLICY"] = "not in effect"
        warn_thread_setting("OMP_WAIT_POLICY", "Numba's OpenMP thread pool was started before minillm was imported, "
                            "and OpenMP reads its wait policy only when it starts")
    elif "OMP_WAIT_POLICY" in os.environ:
        state["OMP_WAIT_POLICY"] = "in effect"
    return state


def _int_or_none(s):
    try:
        return int(s)
    except (TypeError, ValueError):
        return None


# --------------------------------------------------------------------------------------------------
# freed memory kept for the next step
#
# A training step allocates and frees the same large arrays every step (activations, gradients, the
# kernels' outputs). glibc's malloc serves an array above its mmap threshold (128 KiB, raised as such
# arrays are freed, but never past 32 MiB) with a mapping of its own, returns it to the system on free, and
# trims the top of its heap whenever more than twice that threshold lies free there. The next step then
# takes those pages again through page faults, one per 4 KiB page, each page zeroed by the operating system
# (benchmarks/results/allocator.md measures the faults and their cost; docs/design.md, "Memory between
# steps"). Raising both thresholds keeps freed memory in the process for reuse: the resident size stays at
# the step's high-water mark instead of going down between steps.
MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES")
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)
MMAP_THRESHOLD = 1 << 30   # arrays below 1 GiB come from the heap, where freed memory can be reused
TRIM_THRESHOLD = 2**31 - 1  # give the heap's free top back only past 2 GiB (mallopt takes a C int)


def keep_freed_memory() -> str:
    """Ask glibc's malloc to keep freed memory for reuse (see above). Returns what happened: "set", "user"
    (you set a MALLOC_* variable or GLIBC_TUNABLES: yours win), "off" (MINILLM_KEEP_FREED_MEMORY=0: glibc's
    defaults, e.g. to measure the difference, benchmarks/allocator.py), or "not glibc" (another C library,
    or not Linux: nothing to do)."""
    if any(name in os.environ for name in MALLOC_ENV):
        return "user"
    if os.environ.get("MINILLM_KEEP_FREED_MEMORY", "1") == "0":
        return "off"
    try:
        import ctypes

        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return "not glibc"
        libc = ctypes.CDLL("libc.so.6")
    except (AttributeError, ValueError, OSError):
        return "not glibc"
    ok = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    return "set" if ok else "not glibc"

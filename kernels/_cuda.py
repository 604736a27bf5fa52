"""Shared plumbing of the CuPy launchers: import CuPy lazily, compile a `.cu` file once, check inputs.

Every `kernels/<family>/gpu.py` is a thin layer over one `<family>.cu` file. What they all need lives here:

    require_cupy()          import CuPy, or raise an ImportError that says how to get it
    get_kernel(path, name)  the compiled `extern "C"` kernel `name` of the .cu file at `path`
    as_f32(...)             read-only inputs as contiguous float32 (converted like the CPU wrappers)
    check_array(...)        dtype / contiguity / shape checks with errors a learner can act on
    cdiv, i32, i64, f32     launch-config arithmetic and the exact C scalar types of kernel arguments
    NULL                    the argument for an absent optional pointer (never None, see below)

What this is not: a CUDA runtime wrapper. Compilation, caching of the binary on disk and launches are
CuPy's (`cupy.RawModule` runs NVRTC and caches under ~/.cupy/kernel_cache).

Why lazy: importing `kernels.<family>.gpu` must work on a machine without CuPy or a GPU (so the contract
names can be listed, documented and tested there); only the first *call* needs CUDA.

Why the scalar wrappers: CuPy passes a Python `int` as a 64-bit `long long` and a `float` as a `double`.
A kernel that declares `int n` or `float eps` would then read garbage, silently. Every scalar argument
therefore goes through `i32`, `i64` or `f32`, matching the C signature it feeds.
"""
from __future__ import annotations

import functools
import os

import numpy as np

WARP = 32  # threads per warp on every NVIDIA GPU so far
# A NULL pointer kernel argument (an optional mask). Not None: CuPy turns a None argument into the address
# 0xffffffff, not 0 (cupy/cupy#9046); an 8-byte unsigned zero is exactly a NULL device pointer.
NULL = np.uint64(0)
INSTALL_HINT = (
    "The 'cupy' kernel backend needs CuPy and an NVIDIA GPU with its driver. Install CuPy with "
    "`pip install -e .[gpu]` (or `pip install cupy-cuda13x` / `cupy-cuda12x`, matching the CUDA version "
    "that `nvidia-smi` prints), or use the 'numba' (CPU) backend instead."
)


def require_cupy():
    """Import and return the `cupy` module, or raise ImportError with install instructions."""
    try:
        import cupy
    except Exception as e:  # ImportError, or a broken CUDA runtime raising something else
        raise ImportError(f"{INSTALL_HINT} (import cupy failed: {type(e).__name__}: {e})") from e
    return cupy


def cu_path(gpu_module_file: str, family: str) -> str:
    """The path of `<family>.cu` next to the launcher module whose `__file__` is given."""
    return os.path.join(os.path.dirname(os.path.abspath(gpu_module_file)), f"{family}.cu")


@functools.lru_cache(maxsize=None)
def _module(path: str):
    """Compile the .cu file at `path` once per process (CuPy also caches the binary on disk)."""
    cupy = require_cupy()
    with open(path) as f:
        code = f.read()
    # -std=c++17 for `constexpr` / `if constexpr` in the templated attention kernels.
    return cupy.RawModule(code=code, options=("-std=c++17",))


def get_kernel(path: str, name: str):
    """The compiled `extern "C" __global__` function `name` of the .cu file at `path`."""
    try:
        return _module(path).get_function(name)
    except ImportError:
        raise
    except Exception as e:
        raise RuntimeError(
            f"could not compile or load CUDA kernel {name!r} from {path}: {type(e).__name__}: {e}. "
            "If this is a compile error, `pytest tests/test_cuda_compile.py` shows nvcc's message offline."
        ) from e


# ---- launch arithmetic and C scalar types --------------------------------------------------------------

def cdiv(a: int, b: int) -> int:
    """Ceiling division: how many blocks of size b cover a items."""
    return -(-int(a) // int(b))


def i32(x) -> np.int32:
    """A C `int` kernel argument (refuses values that would wrap)."""
    x = int(x)
    if not -(2**31) <= x < 2**31:
        raise OverflowError(f"{x} does not fit a 32-bit C int kernel argument")
    return np.int32(x)


def i64(x) -> np.int64:
    """A C `long long` kernel argument."""
    return np.int64(int(x))


def f32(x) -> np.float32:
    """A C `float` kernel argument."""
    return np.float32(float(x))


# ---- input checks -------------------------------------------------------------------------------------

def as_f32(op: str, name: str, a, ndim=None, min_ndim=None, shape=None):
    """An input that is only read, as a C-contiguous float32 CuPy array, as the CPU wrappers do it.

    Any real dtype is converted and a strided view copied (no copy when `a` is already float32 and
    contiguous); then the `ndim` / `shape` checks of `check_array`. Not for arrays updated in place:
    updating a converted copy would silently lose the update (use `check_array`).
    """
    cupy = require_cupy()
    _check_device(op, name, a, cupy)
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{op}: {name} must hold real numbers, got dtype {a.dtype}")
    a = cupy.ascontiguousarray(a, dtype=cupy.float32)
    return check_array(op, name, a, ndim=ndim, min_ndim=min_ndim, shape=shape)


def _check_device(op, name, a, cupy):
    if not isinstance(a, cupy.ndarray):
        raise TypeError(
            f"{op}: {name} must be a CuPy array for the 'cupy' backend, got {type(a).__name__}; "
            "move it to the GPU with cupy.asarray(x)"
        )


def check_array(op: str, name: str, a, ndim=None, min_ndim=None, shape=None, dtype=np.float32):
    """Check, without converting, that `a` is a C-contiguous CuPy array of `dtype` (and `ndim` / `shape`).

    `shape` may hold None for "any size". Raises TypeError / ValueError naming the op and argument.
    """
    cupy = require_cupy()
    _check_device(op, name, a, cupy)
    if dtype is not None and a.dtype != np.dtype(dtype):
        raise ValueError(f"{op}: {name} must be {np.dtype(dtype).name}, got {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{op}: {name} must have {ndim} dimensions, got shape {a.shape}")
    if min_ndim is not None and a.ndim < min_ndim:
        raise ValueError(f"{op}: {name} must have at least {min_ndim} dimension(s), got shape {a.shape}")
    if shape is not None and (len(shape) != a.ndim or any(s is not None and s != t for s, t in zip(shape, a.shape))):
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{op}: {name} has shape {a.shape}, expected {want}")
    if not a.flags.c_contiguous:
        raise ValueError(
            f"{op}: {name} must be C-contiguous (the kernels index it as a dense row-major block); "
            "pass cupy.ascontiguousarray(x)"
        )
    return a

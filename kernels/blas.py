"""float32 matrix products from inside Numba code: NumPy's own OpenBLAS, called by symbol.

    sgemm(trans_a, trans_b, alpha, a, b, beta, c)   c = alpha op(a) op(b) + beta c, 2-D float32 views
    transpose(alpha, a, b)                          b = alpha a^T (OpenBLAS's somatcopy), 2-D float32 views
    AVAILABLE, WHY_NOT                              whether the binding loaded, and if not, why
    single_threaded()                               a context: OpenBLAS runs on the calling thread only

Why this file exists. A Numba kernel that wants a matrix product has two choices: write the loops itself
(kernels/attention/cpu.py v1-v3: the loops reach ~20% of the machine's float32 matmul rate, because
LLVM cannot keep a register tile of accumulators across the reduction loop the way a BLAS micro-kernel
does) or call a BLAS. Numba's own `np.dot` inside `@njit` needs SciPy (it borrows SciPy's BLAS), which this
project does not depend on. But NumPy wheels ship OpenBLAS as a shared library beside the package
(`numpy.libs/libscipy_openblas64_-*.so` on Linux, `numpy/.dylibs/` on macOS), and its CBLAS entry points are
exported under a prefixed name with 64-bit integers: `scipy_cblas_sgemm64_` (check with `nm -D`). We load
that file into LLVM's symbol table (`llvmlite.binding.load_library_permanently`) and declare the symbol as a
Numba `ExternalFunction`: compiled code calls it by name, so `cache=True` keeps working (the address is
resolved when the cached code is linked, not baked into it).

Threads. The caller (a `prange` over (batch, head) pairs) is already parallel, so each product must run on
the thread that calls it. This OpenBLAS (a pthreads build) has no per-thread setting: its
`openblas_set_num_threads_local` sets the same global count as `openblas_set_num_threads` (disassembled:
it calls the global setter and stores to a plain global). So `single_threaded()` sets the global count to
1 around a parallel kernel and restores it after. Products with M*N*K <= 262,144 run single-threaded
anyway; larger ones would otherwise hand work to OpenBLAS's pool from both Numba threads at once.

When the library or a symbol is missing (a NumPy built against another BLAS, e.g. conda's MKL, or an
OpenBLAS with 32-bit integers) `AVAILABLE` is False, `WHY_NOT` says what was looked for, and callers keep
their pure-Numba kernels (kernels/attention/cpu.py binds its contract names to v3 then).

Not a general BLAS binding: one routine (sgemm), float32, row-major, views whose last axis is contiguous.
"""
from __future__ import annotations

import contextlib
import ctypes
import glob
import os

import numpy as np
from numba import njit, types
from numba.core import cgutils, config
from numba.extending import intrinsic

__all__ = ["AVAILABLE", "WHY_NOT", "LIBRARY", "sgemm", "transpose", "single_threaded"]

PREFIXES = ("scipy_", "")  # NumPy >= 2 wheels rename OpenBLAS's symbols with "scipy_"; a plain OpenBLAS has none
SGEMM, OMATCOPY = "cblas_sgemm64_", "cblas_somatcopy64_"  # "64_": the 64-bit-integer interface (INTERFACE64)
THREAD_NAMES = (("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
                ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
                ("openblas_get_num_threads", "openblas_set_num_threads"))
ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112  # CBLAS enum values (C ints)


def _candidates() -> list:
    """OpenBLAS files shipped inside the NumPy wheel (Linux: numpy.libs; macOS: numpy/.dylibs; Windows)."""
    pkg = os.path.dirname(np.__file__)
    patterns = [os.path.join(pkg, os.pardir, "numpy.libs", "*openblas*"), os.path.join(pkg, ".dylibs", "*openblas*")]
    return sorted(p for pattern in patterns for p in glob.glob(pattern))


def _load():
    """(library path, symbol prefix, (get, set) thread functions) or raise OSError saying what is missing."""
    files = _candidates()
    if not files:
        raise OSError("no OpenBLAS library inside the NumPy package (looked for numpy.libs/*openblas* and "
                      "numpy/.dylibs/*openblas*): this NumPy uses another BLAS")
    for path in files:
        lib = ctypes.CDLL(path)  # already loaded by NumPy: this only returns a handle
        prefix = next((p for p in PREFIXES if hasattr(lib, p + SGEMM) and hasattr(lib, p + OMATCOPY)), None)
        threads = next(((getattr(lib, g), getattr(lib, s)) for g, s in THREAD_NAMES
                        if hasattr(lib, g) and hasattr(lib, s)), None)
        if prefix is not None and threads:
            return path, prefix, threads
    raise OSError(f"{', '.join(os.path.basename(f) for f in files)}: none exports {SGEMM} and {OMATCOPY} "
                  "(with or without the scipy_ prefix) and a thread-count setter: an OpenBLAS with 32-bit "
                  "integers, or an older NumPy")


try:
    if config.DISABLE_JIT:
        raise OSError("NUMBA_DISABLE_JIT=1: compiled code cannot call the library by symbol")
    LIBRARY, _PREFIX, (_get_threads, _set_threads) = _load()
    import llvmlite.binding as llvm

    llvm.load_library_permanently(LIBRARY)
    AVAILABLE, WHY_NOT = True, ""
except OSError as err:
    LIBRARY, _PREFIX, _get_threads, _set_threads = None, PREFIXES[0], None, None
    AVAILABLE, WHY_NOT = False, str(err)

# void cblas_sgemm(order, transa, transb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc), 64-bit integers
_i32, _i64, _f32, _ptr = types.int32, types.int64, types.float32, types.voidptr
_cblas_sgemm = types.ExternalFunction(
    _PREFIX + SGEMM, types.void(_i32, _i32, _i32, _i64, _i64, _i64, _f32, _ptr, _i64, _ptr, _i64, _f32, _ptr, _i64))
# void cblas_somatcopy(order, trans, rows, cols, alpha, A, lda, B, ldb): B = alpha op(A)
_cblas_somatcopy = types.ExternalFunction(
    _PREFIX + OMATCOPY, types.void(_i32, _i32, _i64, _i64, _f32, _ptr, _i64, _ptr, _i64))


@intrinsic
def _data(typingctx, arr):
    """The address of a[0, 0] as a void pointer (a view's own start, offset included)."""
    if not isinstance(arr, types.Array):
        return None

    def codegen(context, builder, signature, args):
        ary = context.make_array(arr)(context, builder, args[0])
        return builder.bitcast(ary.data, cgutils.voidptr_t)

    return types.voidptr(arr), codegen


@njit(cache=True)
def _ld(x):
    """The row stride of a 2-D float32 view in elements (BLAS's leading dimension); its last axis must be
    contiguous and its rows must not overlap (a broadcast view, stride 0, would be misread)."""
    if x.strides[1] != 4:
        raise ValueError("blas: the last axis of every matrix must be contiguous float32")
    if x.shape[0] > 1 and x.strides[0] < 4 * x.shape[1]:
        raise ValueError("blas: rows of a matrix overlap (a broadcast view?): pass a contiguous copy")
    return max(x.strides[0] // 4, x.shape[1], 1)  # one row: its stride is arbitrary; BLAS wants >= row length


@njit(cache=True)
def sgemm(trans_a, trans_b, alpha, a, b, beta, c):
    """c = alpha * op(a) @ op(b) + beta * c, op(x) = x.T if trans_x else x; a, b, c 2-D float32 views.

    Shapes: op(a) (M, K), op(b) (K, N), c (M, N). Each view's last axis must be contiguous (stride 4
    bytes); its rows may be strided (a slice of a bigger array: the row stride becomes lda). beta = 0
    means c is only written (its old contents, even NaN, are ignored), as in BLAS.
    """
    M, N = c.shape
    K = a.shape[0] if trans_a else a.shape[1]
    a_rows = a.shape[1] if trans_a else a.shape[0]
    b_cols, b_rows = (b.shape[0], b.shape[1]) if trans_b else (b.shape[1], b.shape[0])
    if a_rows != M or b_rows != K or b_cols != N:
        raise ValueError("sgemm: shapes of a, b and c do not match")
    lda, ldb, ldc = _ld(a), _ld(b), _ld(c)
    if M == 0 or N == 0:
        return
    if K == 0:  # an empty sum: c = beta * c, done here (BLAS would also reject lda = 0)
        for i in range(M):
            for j in range(N):
                c[i, j] = beta * c[i, j] if beta != 0 else np.float32(0.0)
        return
    ta, tb = np.int32(TRANS if trans_a else NO_TRANS), np.int32(TRANS if trans_b else NO_TRANS)
    _cblas_sgemm(np.int32(ROW_MAJOR), ta, tb, M, N, K, np.float32(alpha), _data(a), lda, _data(b), ldb,
                 np.float32(beta), _data(c), ldc)


@njit(cache=True)
def transpose(alpha, a, b):
    """b = alpha * a.T for 2-D float32 views a (M, N), b (N, M) whose last axes are contiguous.

    OpenBLAS's somatcopy: 2x faster than a Numba loop (whose stores, one per row of b, do not vectorize).
    """
    M, N = a.shape
    if b.shape[0] != N or b.shape[1] != M:
        raise ValueError("transpose: b must have the shape of a.T")
    lda, ldb = _ld(a), _ld(b)
    if M == 0 or N == 0:
        return
    _cblas_somatcopy(np.int32(ROW_MAJOR), np.int32(TRANS), M, N, np.float32(alpha), _data(a), lda, _data(b), ldb)


@contextlib.contextmanager
def single_threaded():
    """OpenBLAS on one thread (the caller's) inside the block; the previous count restored after.

    The count is OpenBLAS's global one: a NumPy matmul started by another Python thread while the block runs
    would run single-threaded too. minillm computes from one Python thread, so nothing else runs then."""
    if not AVAILABLE:
        yield
        return
    before = _get_threads()
    if before == 1:
        yield
        return
    _set_threads(1)
    try:
        yield
    finally:
        _set_threads(before)

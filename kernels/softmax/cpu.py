"""Softmax over the last axis on the CPU, in Numba: the numbered versions and the winner.

Versions (each checked against reference.py by tests/test_kernels_rowwise.py and benchmarks/kernels.py):

    softmax_fwd
        v1  naive: per row a max pass, an exp-and-sum pass with `math.exp`, a scale pass; prange over rows.
            `math.exp` is a scalar libm call (no SVML here), so nothing vectorizes.
        v2  vectorized: the same three passes, but exp is kernels.fastexp (inlined, 8-wide AVX2) written
            into the output row, and the max/sum reductions use 8 lanes (max8/sum8).
        v3  online: one read pass keeps a running max m and a running sum s rescaled by exp(m_old - m_new)
            whenever the max grows (Milakov & Gimelshein 2018), then one write pass. Fewer passes over
            memory, but the running (m, s) pair is a serial dependency chain: it does not vectorize, and for
            rows of 128 (512 bytes, in L1) the saved pass is worth nothing. It lost; see NOTES.md.
            (-inf logits are skipped in the read pass: exp(-inf - -inf) would be NaN while m is still -inf.)
        v4  v2's passes with three changes: without a mask, a second compiled loop that reads x directly
            (no select pass, no mask row read); exp is kernels.fastexp's fast_exp_bounded (x - m <= 0, so
            its one-factor 2^n is valid; fast_exp_scalar's two factors, +inf select and int64 widening of
            n >> 1 cost 1.4x of the whole kernel, one thread); fastmath={"contract"} only, so the exp
            polynomial's a*b + c become FMAs (rounded once: no less accurate; 1.2x, one thread). Dropping
            the select pass alone measured nothing. With a mask, v2's select into the output row,
            then the same row code in place: an all-True mask gives the no-mask result bit for bit.
        v5  v4 with the row sum in a small non-inlined function compiled with fastmath={"reassoc"} only (as
            softmax_bwd v3's dot): four independent ymm accumulators instead of sum8's one chain. The
            winner: 2.30 ms against v2's 5.06 and v4's 2.77 at (49152, 128), PyTorch 2.32
            (benchmarks/results/kernels_softmax.md). Ideas that measured no faster are in NOTES.md.
    softmax_bwd
        v1  naive: per row dot = sum_j y_j dy_j (a serial float chain), then dx = y (dy - dot).
        v2  the dot product with 8 lanes (dot8). Its 8 lanes are one ymm register: one chain of dependent
            adds, 4 cycles per 8 products.
        v3  the dot product in a small non-inlined function compiled with fastmath={"reassoc"} (nothing else):
            LLVM keeps four independent ymm accumulators; each row's views indexed from 0. The winner.

`softmax_fwd`/`softmax_bwd` at the bottom are bound to the winners; `VERSIONS` lists every version.

Input handling (in Python, before any compiled code runs): any real dtype is converted to float32, arrays
are made C-contiguous, x is viewed as (N, L) rows of its last axis. The mask (broadcastable bool, True =
keep) is never broadcast to x's full shape: it is stored as its M distinct rows (M, L) plus, for each of the
N rows of x, the index of its mask row (an (N,) int array). An attention padding mask (B, 1, 1, T) over
scores (B, H, T, T) costs B*T bytes, not B*H*T*T. A fully masked row gives zeros. Without a mask, v4
and v5 run their own compiled loop and read no mask at all (v1-v3 share one all-True row).

Tip: NUMBA_DISABLE_JIT=1 runs these kernels as Python for stepping through in a debugger.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from kernels._inputs import as_float32
from kernels.fastexp import dot8, fast_exp_bounded, fast_exp_scalar, max8, sum8

NEG_INF = np.float32(-np.inf)
ZERO = np.float32(0.0)
ONE = np.float32(1.0)


# ---- compiled kernels. x, out: (N, L) float32; mask: (M, L) bool; row_of: (N,) index of x's row in mask.


@njit(cache=True, parallel=True)
def _fwd_v1(x, mask, row_of, out):
    N, L = x.shape
    for i in prange(N):
        keep = mask[row_of[i]]
        m = NEG_INF
        for j in range(L):
            if keep[j] and x[i, j] > m:
                m = x[i, j]
        if m == NEG_INF:  # fully masked (or all -inf): no distribution, zeros
            out[i, :] = ZERO
            continue
        s = ZERO
        for j in range(L):
            e = np.float32(math.exp(x[i, j] - m)) if keep[j] else ZERO
            out[i, j] = e
            s += e
        inv = ONE / s
        for j in range(L):
            out[i, j] *= inv


@njit(cache=True, parallel=True)
def _fwd_v2(x, mask, row_of, out):
    N, L = x.shape
    for i in prange(N):
        keep = mask[row_of[i]]
        xr, yr = x[i], out[i]  # (L,) views
        for j in range(L):  # masked logits -> -inf (a select, so the loop stays vectorized)
            yr[j] = xr[j] if keep[j] else NEG_INF
        m = max8(yr)
        if m == NEG_INF:
            yr[:] = ZERO
            continue
        for j in range(L):  # exp(-inf - m) = 0 exactly, by fast_exp's contract
            yr[j] = fast_exp_scalar(yr[j] - m)
        inv = ONE / sum8(yr)  # >= 1: the max element contributes exp(0) = 1
        for j in range(L):
            yr[j] *= inv


@njit(cache=True, parallel=True)
def _fwd_v3(x, mask, row_of, out):
    N, L = x.shape
    for i in prange(N):
        keep = mask[row_of[i]]
        xr, yr = x[i], out[i]
        m = NEG_INF
        s = ZERO
        for j in range(L):  # online: invariant s = sum_{k<=j} exp(x_k - m), m = max_{k<=j} x_k
            if keep[j] and xr[j] > NEG_INF:  # exp(-inf - m) = 0 adds nothing; exp(-inf - -inf) would be NaN
                v = xr[j]
                if v > m:
                    s = s * fast_exp_scalar(m - v) + ONE  # rescale the old sum to the new max
                    m = v
                else:
                    s += fast_exp_scalar(v - m)
        if m == NEG_INF:
            yr[:] = ZERO
            continue
        inv = ONE / s
        for j in range(L):
            yr[j] = fast_exp_scalar(xr[j] - m) * inv if keep[j] else ZERO


@njit(cache=True, inline="always")
def _row_v4(xr, yr):
    """yr = softmax(xr) for one row of L floats (yr may be xr): max8, exp into yr, sum8, scale.

    Inlined (Numba IR): compiled with the caller's fastmath={"contract"}. A +inf logit makes the row NaN
    (inf - inf), as in v2; a NaN logit too.
    """
    m = max8(xr)
    if m == NEG_INF:  # fully masked (or all -inf): no distribution, zeros
        yr[:] = ZERO
        return
    for j in range(xr.shape[0]):  # x - m <= 0 (or NaN): fast_exp_bounded's range; -inf -> exactly 0
        yr[j] = fast_exp_bounded(xr[j] - m)
    inv = ONE / sum8(yr)  # >= 1: the max element contributes exp(0) = 1
    for j in range(yr.shape[0]):
        yr[j] *= inv


@njit(cache=True, parallel=True, fastmath={"contract"})
def _fwd_v4_nomask(x, out):
    for i in prange(x.shape[0]):
        _row_v4(x[i], out[i])  # (L,) views; flat arrays indexed at i*L measured 3x slower (NOTES.md)


@njit(cache=True, parallel=True, fastmath={"contract"})
def _fwd_v4(x, mask, row_of, out):
    N, L = x.shape
    for i in prange(N):
        keep = mask[row_of[i]]
        xr, yr = x[i], out[i]
        for j in range(L):  # masked logits -> -inf, into the output row; then softmax in place
            yr[j] = xr[j] if keep[j] else NEG_INF
        _row_v4(yr, yr)


@njit(cache=True, fastmath={"reassoc"})
def _rsum(a):
    """sum_j a[j] in an order LLVM may choose (fixed per compiled binary); not inlined, see _rdot."""
    t = ZERO
    for j in range(a.shape[0]):
        t += a[j]
    return t


@njit(cache=True, inline="always")
def _row_v5(xr, yr):
    """_row_v4 with the sum by _rsum."""
    m = max8(xr)
    if m == NEG_INF:
        yr[:] = ZERO
        return
    for j in range(xr.shape[0]):
        yr[j] = fast_exp_bounded(xr[j] - m)
    inv = ONE / _rsum(yr)
    for j in range(yr.shape[0]):
        yr[j] *= inv


@njit(cache=True, parallel=True, fastmath={"contract"})
def _fwd_v5_nomask(x, out):
    for i in prange(x.shape[0]):
        _row_v5(x[i], out[i])


@njit(cache=True, parallel=True, fastmath={"contract"})
def _fwd_v5(x, mask, row_of, out):
    N, L = x.shape
    for i in prange(N):
        keep = mask[row_of[i]]
        xr, yr = x[i], out[i]
        for j in range(L):
            yr[j] = xr[j] if keep[j] else NEG_INF
        _row_v5(yr, yr)


@njit(cache=True, parallel=True)
def _bwd_v1(y, dy, dx):
    N, L = y.shape
    for i in prange(N):
        dot = ZERO
        for j in range(L):
            dot += y[i, j] * dy[i, j]
        for j in range(L):
            dx[i, j] = y[i, j] * (dy[i, j] - dot)


@njit(cache=True, parallel=True)
def _bwd_v2(y, dy, dx):
    N, L = y.shape
    for i in prange(N):
        dot = dot8(y[i], dy[i])
        for j in range(L):
            dx[i, j] = y[i, j] * (dy[i, j] - dot)


@njit(cache=True, fastmath={"reassoc"})
def _rdot(a, b):
    """sum_j a[j] b[j], an order LLVM may choose (fixed per compiled binary: deterministic, thread-independent).

    Not inlined on purpose: Numba-level inlining would compile the loop with the caller's flags, without
    reassoc, and the sum would be one serial chain again.
    """
    t = ZERO
    for j in range(a.shape[0]):
        t += a[j] * b[j]
    return t


@njit(cache=True, parallel=True)
def _bwd_v3(y, dy, dx):
    N, L = y.shape
    for i in prange(N):
        yr, dyr, dxr = y[i], dy[i], dx[i]  # (L,) views
        dot = _rdot(yr, dyr)
        for j in range(L):
            dxr[j] = yr[j] * (dyr[j] - dot)


# ---- thin Python wrappers: validate, convert, reshape; never let bad input reach compiled code


def _f32(a, op, name):
    a = as_float32(a, op, name)
    if a.ndim == 0:
        raise ValueError(f"{op}: {name} must have at least one axis (softmax runs over the last), got a scalar")
    return a


def _mask_rows(mask, shape, op):
    """(M, L) distinct mask rows and the (N,) row index for each row of x; see the module docstring."""
    L = shape[-1]
    lead = shape[:-1]
    N = math.prod(lead)
    if mask is None:  # one all-True row shared by everyone: L bytes + N indices, ~1% of x's traffic
        return np.ones((1, L), np.bool_), np.zeros(N, np.intp)
    mask = np.asarray(mask)
    if mask.dtype != np.bool_:
        raise ValueError(f"{op}: mask must be a bool array (True = keep), got dtype {mask.dtype}")
    try:
        if np.broadcast_shapes(mask.shape, shape) != tuple(shape):
            raise ValueError
    except ValueError:
        raise ValueError(f"{op}: mask of shape {mask.shape} does not broadcast to x of shape {tuple(shape)}") from None
    mask = mask.reshape((1,) * (len(shape) - mask.ndim) + mask.shape)
    mlead = mask.shape[:-1]
    rows = np.ascontiguousarray(np.broadcast_to(mask, mlead + (L,))).reshape(-1, L)  # (M, L)
    row_of = np.broadcast_to(np.arange(rows.shape[0]).reshape(mlead), lead).reshape(-1)  # (N,) copies N ints
    return rows, np.ascontiguousarray(row_of, dtype=np.intp)


def _make_fwd(kernel, nomask=None):
    """The Python wrapper of a forward kernel; `nomask(x, out)`, where given, serves mask=None."""
    def softmax_fwd(x, mask=None):
        """Softmax over the last axis of x (float32 result); mask broadcastable bool, True = keep."""
        x = _f32(x, "softmax_fwd", "x")
        x2 = x.reshape(-1, x.shape[-1])  # (..., L) -> (N, L)
        out = np.empty_like(x2)
        if mask is None and nomask is not None:
            nomask(x2, out)
        else:
            rows, row_of = _mask_rows(mask, x.shape, "softmax_fwd")
            kernel(x2, rows, row_of, out)
        return out.reshape(x.shape)

    return softmax_fwd


def _make_bwd(kernel):
    def softmax_bwd(y, dy):
        """dx = y * (dy - sum(y * dy, last axis)); y, dy of the same shape; float32 result."""
        y, dy = _f32(y, "softmax_bwd", "y"), _f32(dy, "softmax_bwd", "dy")
        if y.shape != dy.shape:
            raise ValueError(f"softmax_bwd: y has shape {y.shape} but dy has shape {dy.shape}; they must match")
        y2, dy2 = y.reshape(-1, y.shape[-1]), dy.reshape(-1, y.shape[-1])  # (N, L)
        dx = np.empty_like(y2)
        kernel(y2, dy2, dx)
        return dx.reshape(y.shape)

    return softmax_bwd


VERSIONS = {
    "softmax_fwd": {"v1": _make_fwd(_fwd_v1), "v2": _make_fwd(_fwd_v2), "v3": _make_fwd(_fwd_v3),
                    "v4": _make_fwd(_fwd_v4, _fwd_v4_nomask), "v5": _make_fwd(_fwd_v5, _fwd_v5_nomask)},
    "softmax_bwd": {"v1": _make_bwd(_bwd_v1), "v2": _make_bwd(_bwd_v2), "v3": _make_bwd(_bwd_v3)},
}
softmax_fwd = VERSIONS["softmax_fwd"]["v5"]
softmax_bwd = VERSIONS["softmax_bwd"]["v3"]

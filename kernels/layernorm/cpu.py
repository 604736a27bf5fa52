"""Layer norm over the last axis on the CPU, in Numba: the numbered versions and the winner.

Versions (each checked against reference.py by the tests and by benchmarks/kernels.py):

    layernorm_fwd
        v1  naive: per row a mean pass, a variance pass and a normalize pass with serial float sums
            (a chain of dependent adds: one every ~4 cycles).
        v2  the same two-pass statistics (two-pass is exact for a constant row, unlike E[x^2] - E[x]^2),
            with 8-lane reductions (sum8/dot8), so all three passes vectorize. But the 8 lanes are one ymm
            register: each reduction is one chain of dependent vaddps, 4 cycles per 8 floats.
        v3  reductions compiled with fastmath={"reassoc"} (and nothing else), in small non-inlined functions:
            LLVM may then reorder the sum and keeps four independent ymm accumulators (32 lanes), 4x the
            throughput of one chain; the variance pass only reads (no centred row parked in y); FMA
            contraction in the normalize pass. The winner.
    layernorm_bwd
        v1  naive: dx per row in prange with serial sums; dweight/dbias in a separate single-threaded loop
            over all rows (correct and deterministic but a second full read of dy and x, on one core).
        v2  fused: one pass over each row computes dx and accumulates dy*xhat and dy into per-chunk partial
            sums (chunks of CHUNK rows, fixed size, so the sums are identical whatever the thread count);
            then the (n_chunks, C) partials are reduced in a fixed order. No races, deterministic.
        v3  v2 with v3's reassociating reductions; the two row sums of g = dy w (sum g, sum g xhat) in one pass.
            No FMA contraction (it broke dx = 0 for one-column rows: tests/test_kernel_versions.py). The winner.

Numerics, in every version (see reference.py for the why): the forward takes its statistics of the row
shifted by its first element, d = x - x_0, so a constant row gives exactly xhat = 0 and y = bias even at
eps = 1e-12 (rstd = 1e6); the backward re-centres x - mean on its row average before forming xhat, which
removes the rounding of the float32 mean.

Inputs are converted to float32 C-contiguous arrays in the Python wrapper and viewed as (N, C) rows;
shape mismatches raise ValueError naming the op and the shapes. Outputs are float32.
Tip: NUMBA_DISABLE_JIT=1 runs these kernels as Python for stepping through in a debugger.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from kernels._inputs import as_float32

from kernels.fastexp import dot8, sum8

ZERO = np.float32(0.0)
ONE = np.float32(1.0)
CHUNK = 32  # rows per partial sum in the backward: fixed, so results do not depend on the thread count


@njit(cache=True, inline="always")
def _sum8_minus(a, s):
    """sum_c (a[c] - s) with 8 lanes (see kernels.fastexp.sum8): the sum of a row shifted by s."""
    n = a.shape[0]
    n8 = n - n % 8
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = ZERO
    for j in range(0, n8, 8):
        a0 += a[j] - s
        a1 += a[j + 1] - s
        a2 += a[j + 2] - s
        a3 += a[j + 3] - s
        a4 += a[j + 4] - s
        a5 += a[j + 5] - s
        a6 += a[j + 6] - s
        a7 += a[j + 7] - s
    for j in range(n8, n):
        a0 += a[j] - s
    return ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))


@njit(cache=True, parallel=True)
def _fwd_v1(x, w, b, eps, y, mean, rstd):
    N, C = x.shape
    for i in prange(N):
        x0 = x[i, 0]  # shift: statistics of d = x - x0, exact zeros for a constant row
        s = ZERO
        for c in range(C):
            s += x[i, c] - x0
        dmu = s / np.float32(C)
        ss = ZERO
        for c in range(C):
            d = (x[i, c] - x0) - dmu
            ss += d * d
        r = ONE / np.sqrt(ss / np.float32(C) + eps)
        for c in range(C):
            y[i, c] = ((x[i, c] - x0) - dmu) * r * w[c] + b[c]
        mean[i] = x0 + dmu
        rstd[i] = r


@njit(cache=True, parallel=True)
def _fwd_v2(x, w, b, eps, y, mean, rstd):
    N, C = x.shape
    for i in prange(N):
        xr, yr = x[i], y[i]  # (C,) views
        x0 = xr[0]  # shift: statistics of d = x - x0, exact zeros for a constant row
        dmu = _sum8_minus(xr, x0) / np.float32(C)
        for c in range(C):  # centred row, parked in y (in L1) for the variance
            yr[c] = (xr[c] - x0) - dmu
        r = ONE / np.sqrt(dot8(yr, yr) / np.float32(C) + eps)
        for c in range(C):
            yr[c] = yr[c] * r * w[c] + b[c]
        mean[i] = x0 + dmu
        rstd[i] = r


@njit(cache=True)
def _row_offset_v1(xr, mu):
    """mean_c(x - mu): the rounding error of the float32 mean mu, removed from x - mu before use."""
    s = ZERO
    for c in range(xr.shape[0]):
        s += xr[c] - mu
    return s / np.float32(xr.shape[0])


@njit(cache=True, parallel=True)
def _bwd_dx_v1(dy, x, w, mean, rstd, dx):
    N, C = x.shape
    for i in prange(N):
        off = _row_offset_v1(x[i], mean[i])
        sg = ZERO
        sgx = ZERO
        for c in range(C):
            g = dy[i, c] * w[c]
            sg += g
            sgx += g * ((x[i, c] - mean[i]) - off) * rstd[i]
        sg /= np.float32(C)
        sgx /= np.float32(C)
        for c in range(C):
            xhat = ((x[i, c] - mean[i]) - off) * rstd[i]
            dx[i, c] = rstd[i] * (dy[i, c] * w[c] - sg - xhat * sgx)


@njit(cache=True)
def _bwd_dwdb_v1(dy, x, mean, rstd, dw, db):
    N, C = x.shape
    for i in range(N):
        off = _row_offset_v1(x[i], mean[i])
        for c in range(C):
            dw[c] += dy[i, c] * ((x[i, c] - mean[i]) - off) * rstd[i]
            db[c] += dy[i, c]


def _bwd_v1(dy, x, w, mean, rstd, dx, dw, db):
    _bwd_dx_v1(dy, x, w, mean, rstd, dx)
    _bwd_dwdb_v1(dy, x, mean, rstd, dw, db)


@njit(cache=True, inline="always")
def _dot3(a, b, d):
    """sum_c a[c] * b[c] * d[c] with 8 lanes (see kernels.fastexp.sum8)."""
    n = a.shape[0]
    n8 = n - n % 8
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = ZERO
    for j in range(0, n8, 8):
        a0 += a[j] * b[j] * d[j]
        a1 += a[j + 1] * b[j + 1] * d[j + 1]
        a2 += a[j + 2] * b[j + 2] * d[j + 2]
        a3 += a[j + 3] * b[j + 3] * d[j + 3]
        a4 += a[j + 4] * b[j + 4] * d[j + 4]
        a5 += a[j + 5] * b[j + 5] * d[j + 5]
        a6 += a[j + 6] * b[j + 6] * d[j + 6]
        a7 += a[j + 7] * b[j + 7] * d[j + 7]
    for j in range(n8, n):
        a0 += a[j] * b[j] * d[j]
    return ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))


@njit(cache=True, parallel=True)
def _bwd_v2(dy, x, w, mean, rstd, dx, dw, db):
    N, C = x.shape
    n_chunks = (N + CHUNK - 1) // CHUNK
    dw_part = np.zeros((n_chunks, C), np.float32)  # one row of partial sums per chunk of rows: no sharing
    db_part = np.zeros((n_chunks, C), np.float32)
    for k in prange(n_chunks):
        dwk, dbk = dw_part[k], db_part[k]
        for i in range(k * CHUNK, min(N, (k + 1) * CHUNK)):
            xr, dyr, dxr = x[i], dy[i], dx[i]
            mu, r = mean[i], rstd[i]
            off = _sum8_minus(xr, mu) / np.float32(C)  # rounding of the float32 mean: re-centre x - mu
            for c in range(C):  # park xhat in dx's row (in L1) and accumulate the weight/bias partials
                xh = ((xr[c] - mu) - off) * r
                dxr[c] = xh
                dwk[c] += dyr[c] * xh
                dbk[c] += dyr[c]
            # mean_c(g) and mean_c(g * xhat) with g = dy * w, each with 8 lanes
            sg = dot8(dyr, w) / np.float32(C)
            sgx = _dot3(dyr, w, dxr) / np.float32(C)
            for c in range(C):
                dxr[c] = r * (dyr[c] * w[c] - sg - dxr[c] * sgx)
    for k in range(n_chunks):  # fixed-order reduction of the partials: deterministic
        for c in range(C):
            dw[c] += dw_part[k, c]
            db[c] += db_part[k, c]


# ---- v3: reductions LLVM may reorder. Each is its own (non-inlined) function, so that fastmath={"reassoc"}
# applies to its loop alone: Numba-level inlining would compile it with the caller's flags. The result is still
# deterministic (one fixed order per compiled binary, per row: independent of the thread count) and no less
# accurate than a serial sum (it is a 32-way partial pairwise sum); only the order is the compiler's choice.


@njit(cache=True, fastmath={"reassoc"})
def _rsum_minus(a, s):
    """sum_c (a[c] - s)."""
    t = ZERO
    for c in range(a.shape[0]):
        t += a[c] - s
    return t


@njit(cache=True, fastmath={"reassoc", "contract"})
def _rsumsq_minus(a, s, m):
    """sum_c ((a[c] - s) - m)^2: the variance numerator of the row shifted by s, centred by its mean m."""
    t = ZERO
    for c in range(a.shape[0]):
        d = (a[c] - s) - m
        t += d * d
    return t


@njit(cache=True, fastmath={"reassoc"})
def _rsums_g(dy, w, xh):
    """(sum_c g, sum_c g xhat) with g = dy * w, in one pass."""
    sg = ZERO
    sgx = ZERO
    for c in range(dy.shape[0]):
        g = dy[c] * w[c]
        sg += g
        sgx += g * xh[c]
    return sg, sgx


@njit(cache=True, parallel=True, fastmath={"contract"})
def _fwd_v3(x, w, b, eps, y, mean, rstd):
    N, C = x.shape
    for i in prange(N):
        xr, yr = x[i], y[i]  # (C,) views
        x0 = xr[0]  # shift: statistics of d = x - x0, exact zeros for a constant row
        dmu = _rsum_minus(xr, x0) / np.float32(C)
        r = ONE / np.sqrt(_rsumsq_minus(xr, x0, dmu) / np.float32(C) + eps)
        for c in range(C):
            yr[c] = ((xr[c] - x0) - dmu) * r * w[c] + b[c]
        mean[i] = x0 + dmu
        rstd[i] = r


@njit(cache=True, parallel=True)  # no FMA contraction here: see the last loop
def _bwd_v3(dy, x, w, mean, rstd, dx, dw, db):
    N, C = x.shape
    n_chunks = (N + CHUNK - 1) // CHUNK
    dw_part = np.zeros((n_chunks, C), np.float32)  # one row of partial sums per chunk of rows: no sharing
    db_part = np.zeros((n_chunks, C), np.float32)
    for k in prange(n_chunks):
        dwk, dbk = dw_part[k], db_part[k]
        for i in range(k * CHUNK, min(N, (k + 1) * CHUNK)):
            xr, dyr, dxr = x[i], dy[i], dx[i]
            mu, r = mean[i], rstd[i]
            off = _rsum_minus(xr, mu) / np.float32(C)  # rounding of the float32 mean: re-centre x - mu
            for c in range(C):  # park xhat in dx's row (in L1) and accumulate the weight/bias partials
                xh = ((xr[c] - mu) - off) * r
                dxr[c] = xh
                dwk[c] += dyr[c] * xh
                dbk[c] += dyr[c]
            sg, sgx = _rsums_g(dyr, w, dxr)
            sg, sgx = sg / np.float32(C), sgx / np.float32(C)
            for c in range(C):  # an FMA would form dy*w - sg with the exact product but a rounded sg: with
                # C = 1 (g - mean g = 0 exactly) that leaves the product's rounding error times rstd (1e6)
                dxr[c] = r * (dyr[c] * w[c] - sg - dxr[c] * sgx)
    for k in range(n_chunks):  # fixed-order reduction of the partials: deterministic
        for c in range(C):
            dw[c] += dw_part[k, c]
            db[c] += db_part[k, c]


# ---- thin Python wrappers: validate, convert, reshape; never let bad input reach compiled code


def _make_fwd(kernel):
    def layernorm_fwd(x, weight, bias, eps):
        """(y, mean, rstd) of layer norm over the last axis; see reference.py for the math."""
        x, w, b = (as_float32(a, "layernorm_fwd", n) for a, n in ((x, "x"), (weight, "weight"), (bias, "bias")))
        if x.ndim < 1 or w.shape != x.shape[-1:] or b.shape != x.shape[-1:]:
            raise ValueError(
                f"layernorm_fwd: x has shape {x.shape}, so weight and bias must be {x.shape[-1:]}; "
                f"got weight {w.shape}, bias {b.shape}"
            )
        C = x.shape[-1]
        if C == 0:
            raise ValueError(f"layernorm_fwd: x has shape {x.shape}: the normalized axis is empty (mean undefined)")
        x2 = x.reshape(-1, C)  # (..., C) -> (N, C)
        y = np.empty_like(x2)
        mean = np.empty(x2.shape[0], np.float32)
        rstd = np.empty(x2.shape[0], np.float32)
        kernel(x2, w, b, np.float32(eps), y, mean, rstd)
        return y.reshape(x.shape), mean.reshape(x.shape[:-1]), rstd.reshape(x.shape[:-1])

    return layernorm_fwd


def _make_bwd(kernel):
    def layernorm_bwd(dy, x, weight, mean, rstd):
        """(dx, dweight, dbias) of layer norm; see reference.py for the derivation."""
        names = ("dy", "x", "weight", "mean", "rstd")
        dy, x, w, mean, rstd = (as_float32(a, "layernorm_bwd", n) for a, n in zip((dy, x, weight, mean, rstd), names))
        if x.ndim < 1 or dy.shape != x.shape or w.shape != x.shape[-1:] or mean.shape != x.shape[:-1] \
                or rstd.shape != x.shape[:-1]:
            raise ValueError(
                f"layernorm_bwd: shapes do not fit together: dy {dy.shape}, x {x.shape}, weight {w.shape}, "
                f"mean {mean.shape}, rstd {rstd.shape} (want dy = x = (..., C), weight (C,), mean = rstd = (...))"
            )
        C = x.shape[-1]
        dx = np.empty((x.size // max(C, 1), C), np.float32)
        dw = np.zeros(C, np.float32)
        db = np.zeros(C, np.float32)
        kernel(dy.reshape(-1, C), x.reshape(-1, C), w, mean.reshape(-1), rstd.reshape(-1), dx, dw, db)
        return dx.reshape(x.shape), dw, db

    return layernorm_bwd


VERSIONS = {
    "layernorm_fwd": {"v1": _make_fwd(_fwd_v1), "v2": _make_fwd(_fwd_v2), "v3": _make_fwd(_fwd_v3)},
    "layernorm_bwd": {"v1": _make_bwd(_bwd_v1), "v2": _make_bwd(_bwd_v2), "v3": _make_bwd(_bwd_v3)},
}
layernorm_fwd = VERSIONS["layernorm_fwd"]["v3"]
layernorm_bwd = VERSIONS["layernorm_bwd"]["v3"]

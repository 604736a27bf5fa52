"""Fused softmax + cross-entropy over the vocabulary on the CPU, in Numba: versions and the winner.

The MLM head's loss: logits (N, V) with V = 30522, targets (N,). See reference.py for the math:
lse_i = log sum_j exp(z_ij), loss = mean over valid rows of lse_i - z_{i,t_i},
dz_ij = (exp(z_ij - lse_i) - [j == t_i]) * dloss / n_valid, zero on ignored rows.

Versions (each checked against reference.py by the tests and by benchmarks/kernels.py):

    cross_entropy_fwd
        v1  naive: per row a max pass and a sum of `math.exp` (scalar libm calls, serial sum).
        v2  vectorized: max8, then exp(z - max) written by the fast exp into a per-task scratch row and
            summed with sum8. One read of the logits (the row is re-read from L2: 122 KB). The winner.
    cross_entropy_bwd
        v1  one pass per row: dz = exp(z - lse) * scale, then subtract scale at the target; the
            probabilities are recomputed from the saved lse, never stored by the forward.
            Uses the fast exp: a single write pass, it is already the fused form. (Winner by default.)

Forward saves only lse (N floats); backward reads logits once and writes dlogits once: 2 N V floats of
traffic in total for the backward, N V for the forward.

The loss itself (the mean over valid rows) is summed in float64 from the per-row losses, in the wrapper;
all-ignored gives loss 0.0 and a zero gradient (documented in reference.py).
Tip: NUMBA_DISABLE_JIT=1 runs these kernels as Python for stepping through in a debugger.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from kernels.fastexp import fast_exp_scalar, max8, sum8

ZERO = np.float32(0.0)
NEG_INF = np.float32(-np.inf)
ROWS_PER_TASK = 8  # rows sharing one scratch buffer (one allocation per task, not per row)


@njit(cache=True, parallel=True)
def _fwd_v1(z, lse):
    N, V = z.shape
    for i in prange(N):
        m = NEG_INF
        for j in range(V):
            if z[i, j] > m:
                m = z[i, j]
        s = ZERO
        for j in range(V):
            s += np.float32(math.exp(z[i, j] - m))
        lse[i] = m + np.float32(math.log(s))


@njit(cache=True, parallel=True)
def _fwd_v2(z, lse):
    N, V = z.shape
    for k in prange((N + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        buf = np.empty(V, np.float32)  # (V,) scratch for exp(z - m): writing it lets the exp loop vectorize
        for i in range(k * ROWS_PER_TASK, min(N, (k + 1) * ROWS_PER_TASK)):
            zr = z[i]
            m = max8(zr)
            for j in range(V):
                buf[j] = fast_exp_scalar(zr[j] - m)
            lse[i] = m + np.float32(math.log(sum8(buf)))


@njit(cache=True, parallel=True)
def _bwd_v1(z, targets, lse, scale, ignore_index, dz):
    N, V = z.shape
    for i in prange(N):
        t = targets[i]
        if t == ignore_index:
            dz[i, :] = ZERO
            continue
        zr, dr, li = z[i], dz[i], lse[i]
        for j in range(V):
            dr[j] = fast_exp_scalar(zr[j] - li) * scale
        dr[t] -= scale


# ---- thin Python wrappers: validate, convert; never let bad input reach compiled code


def _check(op, logits, targets, ignore_index):
    logits = np.asarray(logits)
    targets = np.asarray(targets)
    if logits.dtype.kind not in "biuf":
        raise ValueError(f"{op}: logits must hold real numbers, got dtype {logits.dtype}")
    if logits.ndim != 2 or targets.shape != logits.shape[:1]:
        raise ValueError(
            f"{op}: want logits (N, V) and targets (N,); got logits {logits.shape}, targets {targets.shape}"
        )
    if targets.dtype.kind not in "iu":
        raise ValueError(f"{op}: targets must be integers (class ids), got dtype {targets.dtype}")
    V = logits.shape[1]
    bad = (targets != ignore_index) & ((targets < 0) | (targets >= V))
    if bad.any():  # an out-of-range id would be an out-of-bounds write inside the kernel
        i = int(np.argmax(bad))
        raise ValueError(
            f"{op}: targets[{i}] = {int(targets[i])} is not a class id in [0, {V}) nor ignore_index={ignore_index}"
        )
    return np.ascontiguousarray(logits, dtype=np.float32), np.ascontiguousarray(targets, dtype=np.int64)


def _make_fwd(kernel):
    def cross_entropy_fwd(logits, targets, ignore_index=-100):
        """(loss, lse): mean cross-entropy over non-ignored rows (0.0 if none) and lse (N,) float32."""
        z, t = _check("cross_entropy_fwd", logits, targets, ignore_index)
        lse = np.empty(z.shape[0], np.float32)
        kernel(z, lse)
        rows = np.nonzero(t != ignore_index)[0]
        if rows.size == 0:
            return 0.0, lse
        picked = z[rows, t[rows]]  # (n_valid,) gather of the target logits: N floats, not N*V
        return float((lse[rows].astype(np.float64) - picked).sum() / rows.size), lse

    return cross_entropy_fwd


def _make_bwd(kernel):
    def cross_entropy_bwd(logits, targets, lse, dloss, ignore_index=-100):
        """dlogits (N, V) float32 = dloss (softmax - onehot) / n_valid, zero on ignored rows."""
        z, t = _check("cross_entropy_bwd", logits, targets, ignore_index)
        lse = np.ascontiguousarray(lse, dtype=np.float32)
        if lse.shape != z.shape[:1]:
            raise ValueError(f"cross_entropy_bwd: lse must be ({z.shape[0]},), got {lse.shape}")
        n_valid = int((t != ignore_index).sum())
        dz = np.empty_like(z)
        scale = np.float32(float(dloss) / n_valid) if n_valid else np.float32(0.0)
        kernel(z, t, lse, scale, np.int64(ignore_index), dz)
        return dz

    return cross_entropy_bwd


VERSIONS = {
    "cross_entropy_fwd": {"v1": _make_fwd(_fwd_v1), "v2": _make_fwd(_fwd_v2)},
    "cross_entropy_bwd": {"v1": _make_bwd(_bwd_v1)},
}
cross_entropy_fwd = VERSIONS["cross_entropy_fwd"]["v2"]
cross_entropy_bwd = VERSIONS["cross_entropy_bwd"]["v1"]

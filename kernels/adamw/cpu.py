"""AdamW on the CPU, in Numba: one pass over each parameter, in place. Versions and the winner.

The math and its order follow torch.optim.AdamW exactly (see reference.py):
    p <- p (1 - lr wd);  m <- m + (1 - b1)(g - m);  v <- b2 v + (1 - b2) g^2;
    p <- p - (lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps),   bc1 = 1 - b1^step, bc2 = 1 - b2^step

Versions (each checked against reference.py by the tests and by benchmarks/kernels.py):

    adamw_step
        v1  fused: one prange loop over the flattened parameter reads p, g, m, v once and writes p, m, v
            once: 16 bytes read + 12 written per float32 parameter, the minimum. The reference makes ~10
            NumPy passes (one per operator, with temporaries). But it does not vectorize: its loop indexes the
            whole arrays with i in range(k * CHUNK, ...), which LLVM cannot prove >= 0, so Numba's
            negative-index wraparound stays in the loop, and with four arrays read and three written the
            vectorizer gives up (the asm has scalar vsqrtss / vdivss only; GELU v2 got gathers instead).
        v2  v1's arithmetic, operation for operation (so bit for bit the same results), over each chunk's
            own views indexed from 0: 8-wide vsqrtps / vdivps, plain vector loads and stores. The winner.
        v3  v2 with one divide instead of two (sqrt(v) / sqrt(bc2) becomes sqrt(v) * (1 / sqrt(bc2)), the
            reciprocal folded in Python) and FMA contraction: no longer PyTorch's exact operation order
            (a rounding's difference in the denominator, ~1e-7 of the update). A tie, so not the winner: the
            same time as v2 (within 2%, either way run to run): v2 is bound by memory, not by the divider,
            and keeps PyTorch's order.

Scalars (bias corrections, step size) are computed once in Python, in float64, then rounded to float32.
Arrays must be float32, C-contiguous and of one shape: updating a converted copy in place would silently
lose the update, so the wrapper raises instead of converting.
Tip: NUMBA_DISABLE_JIT=1 runs this kernel as Python for stepping through in a debugger.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

ONE = np.float32(1.0)
CHUNK = 65536  # parameters per prange task (256 KiB of each array)


@njit(cache=True, parallel=True)
def _step_v1(p, g, m, v, decay, b1, b2, step_size, bc2_sqrt, eps):
    n = p.shape[0]
    for k in prange((n + CHUNK - 1) // CHUNK):
        for i in range(k * CHUNK, min(n, (k + 1) * CHUNK)):
            gi = g[i]
            mi = m[i] + (ONE - b1) * (gi - m[i])
            vi = b2 * v[i] + (ONE - b2) * gi * gi
            m[i] = mi
            v[i] = vi
            p[i] = p[i] * decay - step_size * mi / (np.sqrt(vi) / bc2_sqrt + eps)


@njit(cache=True, parallel=True)
def _step_v2(p, g, m, v, decay, b1, b2, step_size, bc2_sqrt, eps):
    n = p.shape[0]
    for k in prange((n + CHUNK - 1) // CHUNK):
        lo, hi = k * CHUNK, min(n, (k + 1) * CHUNK)
        ps, gs, ms, vs = p[lo:hi], g[lo:hi], m[lo:hi], v[lo:hi]  # this chunk's views
        for i in range(ps.shape[0]):  # from 0: provably >= 0, so unit-stride vector loads and stores
            gi = gs[i]
            mi = ms[i] + (ONE - b1) * (gi - ms[i])
            vi = b2 * vs[i] + (ONE - b2) * gi * gi
            ms[i] = mi
            vs[i] = vi
            ps[i] = ps[i] * decay - step_size * mi / (np.sqrt(vi) / bc2_sqrt + eps)


@njit(cache=True, parallel=True, fastmath={"contract"})
def _step_v3(p, g, m, v, decay, b1, b2, step_size, bc2_sqrt, eps):
    n = p.shape[0]
    inv_bc2_sqrt = ONE / bc2_sqrt  # once per call, not per element
    for k in prange((n + CHUNK - 1) // CHUNK):
        lo, hi = k * CHUNK, min(n, (k + 1) * CHUNK)
        ps, gs, ms, vs = p[lo:hi], g[lo:hi], m[lo:hi], v[lo:hi]
        for i in range(ps.shape[0]):
            gi = gs[i]
            mi = ms[i] + (ONE - b1) * (gi - ms[i])
            vi = b2 * vs[i] + (ONE - b2) * gi * gi
            ms[i] = mi
            vs[i] = vi
            ps[i] = ps[i] * decay - step_size * mi / (np.sqrt(vi) * inv_bc2_sqrt + eps)


def _make_step(kernel):
    def adamw_step(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step):
        """In-place AdamW update of param, m, v (float32, C-contiguous, one shape); returns None."""
        for name, a in (("param", param), ("grad", grad), ("m", m), ("v", v)):
            if not isinstance(a, np.ndarray) or a.dtype != np.float32:
                raise ValueError(f"adamw_step: {name} must be a float32 ndarray, got {type(a).__name__} "
                                 f"{getattr(a, 'dtype', '')}; the update is in place, so it cannot convert")
            if a.shape != param.shape:
                raise ValueError(f"adamw_step: {name} has shape {a.shape} but param has shape {param.shape}")
            if not a.flags.c_contiguous and a is not grad:
                raise ValueError(f"adamw_step: {name} must be C-contiguous to be updated in place")
        if step < 1:
            raise ValueError(f"adamw_step: step is 1-based (the first update is step=1), got {step}")
        g = np.ascontiguousarray(grad).reshape(-1)  # grad is only read: a copy is fine
        f = np.float32
        kernel(param.reshape(-1), g, m.reshape(-1), v.reshape(-1), f(1.0 - lr * weight_decay), f(beta1), f(beta2),
               f(lr / (1.0 - beta1**step)), f(math.sqrt(1.0 - beta2**step)), f(eps))

    return adamw_step


VERSIONS = {"adamw_step": {"v1": _make_step(_step_v1), "v2": _make_step(_step_v2), "v3": _make_step(_step_v3)}}
adamw_step = VERSIONS["adamw_step"]["v2"]

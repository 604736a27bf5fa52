"""Softmax over the last axis, in plain NumPy: the ground truth that every faster backend is tested against.

    y_j = exp(x_j - m) / sum_k exp(x_k - m),   m = max_k x_k

Subtracting the row maximum m changes nothing mathematically (it cancels between numerator and denominator)
but keeps every exponent <= 0, so exp never overflows even for logits around 1e4.

Masking: `mask` is a bool array broadcastable to x, True = keep. Masked entries are treated as x_j = -inf,
so exp(x_j - m) = 0 and they get probability 0. A row with *every* entry masked has no distribution to
return: we return zeros there (never NaN), which is also what its gradient is (the output does not depend
on x at all).

What this is not: fast. It allocates several temporaries per call; see cpu.py for the fused kernels.
Works in float32 and float64 (the dtype of x is kept; integer input becomes float32).
"""
from __future__ import annotations

import numpy as np

from kernels._inputs import as_float


def softmax_fwd(x, mask=None):
    """Softmax over the last axis.

    Args:
        x: (..., N) float array (N = length of the last axis).
        mask: optional bool array broadcastable to x.shape; True = keep, False = probability 0.
    Returns:
        y: same shape and dtype as x; each row sums to 1, or is all zeros if fully masked.
    """
    x = as_float(x)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        try:
            mask = np.broadcast_to(mask, x.shape)
        except ValueError:
            raise ValueError(
                f"softmax_fwd: mask of shape {mask.shape} does not broadcast to x of shape {x.shape}"
            ) from None
        x = np.where(mask, x, -np.inf)  # masked logits -> -inf -> exp = 0
    m = x.max(axis=-1, keepdims=True)  # (..., 1)
    m = np.where(np.isfinite(m), m, 0.0).astype(x.dtype)  # a fully masked row has m = -inf: avoid -inf - -inf
    e = np.exp(x - m)  # (..., N), every exponent <= 0
    s = e.sum(axis=-1, keepdims=True)  # (..., 1), >= 1 unless the row is fully masked (then 0)
    return e / np.where(s > 0, s, 1.0).astype(x.dtype)


def softmax_bwd(y, dy):
    """Gradient of softmax given its output y and the upstream gradient dy (both (..., N)).

    The Jacobian is dy_i/dx_j = y_i (delta_ij - y_j), so

        dx_j = sum_i dy_i y_i (delta_ij - y_j) = y_j (dy_j - sum_i y_i dy_i)

    One reduction per row (the dot product y . dy) and one elementwise pass; the N x N Jacobian is never
    formed. Masked entries have y_j = 0 and therefore dx_j = 0, with no mask needed here.
    Property: sum_j dx_j = (sum_j y_j)(1 - 1) * ... = 0 for every row whose y sums to 1.
    """
    y, dy = as_float(y), as_float(dy)
    if y.shape != dy.shape:
        raise ValueError(f"softmax_bwd: y has shape {y.shape} but dy has shape {dy.shape}; they must match")
    dot = (y * dy).sum(axis=-1, keepdims=True)  # (..., 1)
    return y * (dy - dot)

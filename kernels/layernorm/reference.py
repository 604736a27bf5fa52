"""Layer normalization over the last axis, in plain NumPy: the ground truth for every faster backend.

    mean = (1/C) sum_c x_c
    var  = (1/C) sum_c (x_c - mean)^2          (biased, as BERT and torch.nn.LayerNorm use)
    rstd = 1 / sqrt(var + eps)
    xhat = (x - mean) * rstd
    y    = xhat * weight + bias

`mean` and `rstd` are returned so that the backward pass does not recompute them. A constant row has
var = 0, so rstd = 1/sqrt(eps) is finite (eps > 0) and xhat = 0: y = bias, never NaN.

What this is not: fast (it makes several passes and temporaries); see cpu.py. Works in float32 and float64.
"""
from __future__ import annotations

import numpy as np

from kernels._inputs import as_float


def layernorm_fwd(x, weight, bias, eps):
    """Layer norm of x over its last axis.

    Args:
        x: (..., C) float array; weight, bias: (C,); eps: small positive float (BERT: 1e-12).
    Returns:
        (y, mean, rstd): y like x; mean and rstd of shape x.shape[:-1].
    """
    x, weight, bias = as_float(x), as_float(weight), as_float(bias)
    C = x.shape[-1]
    if weight.shape != (C,) or bias.shape != (C,):
        raise ValueError(
            f"layernorm_fwd: x has shape {x.shape}, so weight and bias must be ({C},); "
            f"got weight {weight.shape}, bias {bias.shape}"
        )
    mean = x.mean(axis=-1)  # (...,)
    xc = x - mean[..., None]  # (..., C)
    var = (xc * xc).mean(axis=-1)  # (...,)
    rstd = (1.0 / np.sqrt(var + eps)).astype(x.dtype)  # (...,)
    y = xc * rstd[..., None] * weight + bias  # (..., C)
    return y.astype(x.dtype), mean.astype(x.dtype), rstd


def layernorm_bwd(dy, x, weight, mean, rstd):
    """Gradients of layer norm: (dx, dweight, dbias).

    Derivation, with g = dL/dxhat = dy * weight (elementwise) and xhat = (x - mean) * rstd:

        dbias   = sum over all rows of dy                          (C,)
        dweight = sum over all rows of dy * xhat                   (C,)
        xhat depends on x directly, through mean, and through rstd:
            d mean / d x_j = 1/C,   d rstd / d x_j = -rstd^3 (x_j - mean) / C = -rstd^2 xhat_j / C
        collecting the three paths:
        dx = rstd * (g - mean_c(g) - xhat * mean_c(g * xhat))      (per row; mean_c = average over C)

    Args:
        dy, x: (..., C); weight: (C,); mean, rstd: x.shape[:-1] (from layernorm_fwd).
    """
    dy, x, weight, mean, rstd = (as_float(a) for a in (dy, x, weight, mean, rstd))
    if dy.shape != x.shape or weight.shape != x.shape[-1:] or mean.shape != x.shape[:-1] or rstd.shape != mean.shape:
        raise ValueError(
            f"layernorm_bwd: shapes do not fit together: dy {dy.shape}, x {x.shape}, weight {weight.shape}, "
            f"mean {mean.shape}, rstd {rstd.shape} (want dy = x = (..., C), weight (C,), mean = rstd = (...))"
        )
    xhat = (x - mean[..., None]) * rstd[..., None]  # (..., C)
    g = dy * weight  # (..., C) dL/dxhat
    g_mean = g.mean(axis=-1, keepdims=True)  # (..., 1)
    gx_mean = (g * xhat).mean(axis=-1, keepdims=True)  # (..., 1)
    dx = rstd[..., None] * (g - g_mean - xhat * gx_mean)  # (..., C)
    lead = tuple(range(x.ndim - 1))
    dweight = (dy * xhat).sum(axis=lead)  # (C,)
    dbias = dy.sum(axis=lead)  # (C,)
    return dx.astype(x.dtype), dweight.astype(x.dtype), dbias.astype(x.dtype)

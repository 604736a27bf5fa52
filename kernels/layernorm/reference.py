"""Layer normalization over the last axis, in plain NumPy: the ground truth for every faster backend.

    mean = (1/C) sum_c x_c
    var  = (1/C) sum_c (x_c - mean)^2          (biased, as BERT and torch.nn.LayerNorm use)
    rstd = 1 / sqrt(var + eps)
    xhat = (x - mean) * rstd
    y    = xhat * weight + bias

`mean` and `rstd` are returned so that the backward pass does not recompute them.

Numerics: constant and near-constant rows. With BERT's eps = 1e-12, rstd of a (nearly) constant row is up
to 1/sqrt(eps) = 1e6, which multiplies any error in x - mean by a million. A float32 mean of a row of
3.3s is off by one ulp (2.4e-7), and xhat would come out as ~0.2 instead of 0. So every statistic is taken
of the row *shifted by its first element* s = x_0:

    d = x - s         exact when x_c is within a factor 2 of s (Sterbenz): a (nearly) constant row
    mean = s + (1/C) sum_c d_c       xc = d - (1/C) sum_c d_c       var = (1/C) sum_c xc^2

A constant row gives d = 0 exactly, hence xhat = 0 and y = bias exactly (rstd = 1/sqrt(eps), finite);
a near-constant row has its small deviations summed without the rounding error of its large mean. The
shift costs one subtraction per entry. The returned float32 `mean` is still rounded (its exact value may
not be representable), so the backward re-centres x - mean on its own mean before using it (see there).

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
    if C == 0:
        raise ValueError(f"layernorm_fwd: x has shape {x.shape}: the normalized axis is empty (mean undefined)")
    shift = x[..., :1]  # (..., 1) each row's first value: see "Numerics" above
    d = x - shift  # (..., C) exact for a (nearly) constant row
    d_mean = d.mean(axis=-1, keepdims=True)  # (..., 1)
    xc = d - d_mean  # (..., C) the centred row, x - mean
    var = (xc * xc).mean(axis=-1)  # (...,)
    rstd = (1.0 / np.sqrt(var + eps)).astype(x.dtype)  # (...,)
    y = xc * rstd[..., None] * weight + bias  # (..., C)
    mean = (shift + d_mean)[..., 0]  # (...,)
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

    xhat is recomputed from x, mean and rstd. `mean` is rounded to x's dtype, so x - mean is off by up to
    half an ulp of the mean, the same for the whole row; on a near-constant row, times rstd ~ 1e6, that
    offset would dominate xhat. Subtracting the row's own average of x - mean removes it (its exact value
    is 0), and x - mean itself is exact there (Sterbenz), so xhat is as accurate as in the forward pass.

    Args:
        dy, x: (..., C); weight: (C,); mean, rstd: x.shape[:-1] (from layernorm_fwd).
    """
    dy, x, weight, mean, rstd = (as_float(a) for a in (dy, x, weight, mean, rstd))
    if dy.shape != x.shape or weight.shape != x.shape[-1:] or mean.shape != x.shape[:-1] or rstd.shape != mean.shape:
        raise ValueError(
            f"layernorm_bwd: shapes do not fit together: dy {dy.shape}, x {x.shape}, weight {weight.shape}, "
            f"mean {mean.shape}, rstd {rstd.shape} (want dy = x = (..., C), weight (C,), mean = rstd = (...))"
        )
    xc = x - mean[..., None]  # (..., C)
    xc = xc - xc.mean(axis=-1, keepdims=True)  # (..., C) re-centred: removes the rounding of `mean`
    xhat = xc * rstd[..., None]  # (..., C)
    g = dy * weight  # (..., C) dL/dxhat
    g_mean = g.mean(axis=-1, keepdims=True)  # (..., 1)
    gx_mean = (g * xhat).mean(axis=-1, keepdims=True)  # (..., 1)
    dx = rstd[..., None] * (g - g_mean - xhat * gx_mean)  # (..., C)
    lead = tuple(range(x.ndim - 1))
    dweight = (dy * xhat).sum(axis=lead)  # (C,)
    dbias = dy.sum(axis=lead)  # (C,)
    return dx.astype(x.dtype), dweight.astype(x.dtype), dbias.astype(x.dtype)

"""One AdamW step, in plain NumPy: the ground truth for every faster backend.

Adam with decoupled weight decay (Loshchilov & Hutter), in exactly the order torch.optim.AdamW uses, so the
two agree to rounding:

    p  <- p * (1 - lr * wd)                          decoupled decay: not part of the gradient, so Adam's
                                                     per-coordinate scaling does not weaken it
    m  <- beta1 * m + (1 - beta1) * g                first moment (written m + (1-beta1)(g - m), torch's lerp)
    v  <- beta2 * v + (1 - beta2) * g^2              second moment
    bc1 = 1 - beta1^step,  bc2 = 1 - beta2^step      bias corrections (step is 1-based)
    p  <- p - (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps)

which is p -= lr * (mhat / (sqrt(vhat) + eps)) with mhat = m/bc1, vhat = v/bc2, plus the decay above.

Updates param, m, v in place (any shape, all the same shape) and returns None. Works in float32 and float64.
"""
from __future__ import annotations

import math

import numpy as np


def adamw_step(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step):
    """In-place AdamW update of `param` and its moment buffers `m`, `v` (see the module docstring)."""
    for name, a in (("param", param), ("grad", grad), ("m", m), ("v", v)):
        if not isinstance(a, np.ndarray) or a.dtype not in (np.float32, np.float64):
            raise ValueError(f"adamw_step: {name} must be a float32/float64 ndarray, got {type(a).__name__} "
                             f"{getattr(a, 'dtype', '')}")
        if a.shape != param.shape:
            raise ValueError(f"adamw_step: {name} has shape {a.shape} but param has shape {param.shape}")
    if step < 1:
        raise ValueError(f"adamw_step: step is 1-based (the first update is step=1), got {step}")
    param *= 1.0 - lr * weight_decay
    m += (1.0 - beta1) * (grad - m)
    v *= beta2
    v += (1.0 - beta2) * grad * grad
    bc1 = 1.0 - beta1**step
    bc2_sqrt = math.sqrt(1.0 - beta2**step)
    param -= (lr / bc1) * m / (np.sqrt(v) / bc2_sqrt + eps)

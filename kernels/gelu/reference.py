"""GELU in its exact erf form (as BERT uses), in plain NumPy: the ground truth for every faster backend.

    gelu(x)  = x * Phi(x),            Phi(x) = (1 + erf(x / sqrt 2)) / 2 = erfc(-x / sqrt 2) / 2  (normal CDF)
    gelu'(x) = Phi(x) + x * phi(x),   phi(x) = exp(-x^2 / 2) / sqrt(2 pi)  (the standard normal density)

(The tanh approximation 0.5 x (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3))) is GPT-2's; BERT's checkpoints were
trained with erf, and the two differ by up to ~5e-4, enough to show up in a parity test.)

erf: NumPy has none. We use Phi(x) = erfc(-x / sqrt 2) / 2, which keeps full relative accuracy in the
negative tail (1 + erf(x/sqrt 2) cancels to 0 for x < -8.3 in float64, while erfc does not), and map
Python's `math.erfc` (accurate to ~1 ulp in float64) over the array with `np.frompyfunc`. That is a
Python-level loop, ~0.15 us per element (~0.5 s for a (2048, 1536) array), but it is exact and obviously right, which is what a reference is for; a vectorized Chebyshev erf in NumPy
measured slower here (its 27-term recurrence makes 80 passes over the array). Fast erf: see cpu.py.

Works in float32 and float64 (the dtype of x is kept; erfc itself is always evaluated in float64).
"""
from __future__ import annotations

import math

import numpy as np

from kernels._inputs import as_float

_erfc = np.frompyfunc(math.erfc, 1, 1)  # elementwise erfc on object arrays; we cast back to float64
SQRT1_2 = 1.0 / math.sqrt(2.0)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _Phi(x):
    """Standard normal CDF in float64."""
    return 0.5 * _erfc(-x.astype(np.float64) * SQRT1_2).astype(np.float64)


def gelu_fwd(x):
    """y = x * Phi(x) elementwise; y has x's shape and dtype."""
    x = as_float(x)
    return (x * _Phi(x)).astype(x.dtype)


def gelu_bwd(x, dy):
    """dx = dy * (Phi(x) + x * phi(x)) elementwise; x and dy of the same shape."""
    x, dy = as_float(x), as_float(dy)
    if x.shape != dy.shape:
        raise ValueError(f"gelu_bwd: x has shape {x.shape} but dy has shape {dy.shape}; they must match")
    x64 = x.astype(np.float64)
    dgelu = _Phi(x) + x64 * INV_SQRT_2PI * np.exp(-0.5 * x64 * x64)
    return (dy * dgelu).astype(x.dtype)

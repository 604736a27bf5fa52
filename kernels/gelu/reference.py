"""GELU in its exact erf form (as BERT uses) and its tanh approximation (as GPT-2 uses), in plain NumPy: the
ground truth for every faster backend.

    gelu(x)  = x * Phi(x),            Phi(x) = (1 + erf(x / sqrt 2)) / 2 = erfc(-x / sqrt 2) / 2  (normal CDF)
    gelu'(x) = Phi(x) + x * phi(x),   phi(x) = exp(-x^2 / 2) / sqrt(2 pi)  (the standard normal density)

The tanh approximation (Hendrycks & Gimpel 2016, eq. 2; GPT-2's `gelu_new`, PyTorch's approximate="tanh"):

    gelu_tanh(x)  = x/2 (1 + tanh(u)),   u = sqrt(2/pi) (x + 0.044715 x^3)
                  = x s,                  s = sigmoid(2u) = 1 / (1 + exp(-2u))     (as (1 + tanh u)/2 = sigmoid(2u))
    gelu_tanh'(x) = s + x 2 s (1 - s) u',  u' = sqrt(2/pi) (1 + 3 * 0.044715 x^2)
                  = (1 + tanh u)/2 + x/2 (1 - tanh^2 u) u'

BERT's checkpoints were trained with erf, GPT-2's with tanh; the two differ by up to ~5e-4, enough to show
up in a parity test, so both are here under their own names. The sigmoid form is the one computed: in the
negative tail 1 + tanh(u) cancels to 0 (below x ~ -5.6 in float64) while 1 / (1 + exp(-2u)) keeps its
relative accuracy until exp overflows.

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


SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
GELU_TANH_A = 0.044715  # the cubic coefficient of the tanh approximation


def _sigmoid_2u(x64):
    """(s, u') of the tanh GELU in float64: s = sigmoid(2u) = (1 + tanh u)/2 and u' = du/dx."""
    u = SQRT_2_OVER_PI * (x64 + GELU_TANH_A * x64 ** 3)
    with np.errstate(over="ignore"):  # exp(-2u) = inf for u << 0 gives s = 0: the right limit
        s = 1.0 / (1.0 + np.exp(-2.0 * u))
    return s, u, SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_TANH_A * x64 * x64)


def gelu_tanh_fwd(x):
    """y = x/2 (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3))) = x sigmoid(2u) elementwise; x's shape and dtype."""
    x = as_float(x)
    x64 = x.astype(np.float64)
    s, _, _ = _sigmoid_2u(x64)
    return (x64 * s).astype(x.dtype)


def gelu_tanh_bwd(x, dy):
    """dx = dy (s + 2 x s (1 - s) u') elementwise, s = sigmoid(2u), u' = sqrt(2/pi)(1 + 3 * 0.044715 x^2)."""
    x, dy = as_float(x), as_float(dy)
    if x.shape != dy.shape:
        raise ValueError(f"gelu_tanh_bwd: x has shape {x.shape} but dy has shape {dy.shape}; they must match")
    x64 = x.astype(np.float64)
    s, u, du = _sigmoid_2u(x64)
    with np.errstate(over="ignore", invalid="ignore"):
        slope = 2.0 * x64 * du * s * (1.0 - s)
    # where |u| is so large that s is exactly 0 or 1, the slope term is 0 (it decays like exp(-2|u|)), but
    # x u' may have overflowed to inf and inf * 0 is NaN: take the limit instead.
    slope = np.where(np.abs(u) > 400.0, 0.0, slope)
    return (dy * (s + slope)).astype(x.dtype)

"""GELU (exact erf form, and GPT-2's tanh approximation) on the CPU, in Numba: the numbered versions and the
winner.

    gelu(x)  = x Phi(x),              Phi(x) = erfc(-x / sqrt 2) / 2
    gelu'(x) = Phi(x) + x phi(x),     phi(x) = exp(-x^2 / 2) / sqrt(2 pi)

    gelu_tanh(x)  = x/2 (1 + tanh u) = x s,   u = sqrt(2/pi)(x + 0.044715 x^3),  s = sigmoid(2u) = 1/(1 + exp(-2u))
    gelu_tanh'(x) = s + 2 x s (1 - s) u',     u' = sqrt(2/pi)(1 + 3 * 0.044715 x^2)

Versions (each checked against reference.py by the tests and by benchmarks/kernels.py):

    gelu_fwd / gelu_bwd
        v1  naive: `math.erf` (and `math.exp` in the backward) per element, prange over chunks. Both are
            scalar libm calls (no SVML on this platform), so the loop cannot vectorize.
        v2  vectorized: erfc from the Numerical Recipes rational-Chebyshev form
                erfc(z) ~= t exp(-z^2 - 1.26551223 + t (1.00002368 + t (0.37409196 + ... ))), t = 1/(1 + z/2)
            for z >= 0, relative error < 1.2e-7 everywhere (so the far negative tail, where Phi is tiny, is
            as accurate as the centre), with the exp from kernels.fastexp. Only multiplies, adds, one divide
            and the fast exp: the loop compiles to 8-wide AVX2. The winner.

    gelu_tanh_fwd / gelu_tanh_bwd
        v1  vectorized: tanh written as a sigmoid, (1 + tanh u)/2 = 1/(1 + exp(-2u)), with the exp from
            kernels.fastexp (a libm `math.tanh` call would keep the loop scalar, as erf does in gelu v1).
            Multiplies, adds, one divide and the fast exp; the backward reuses s for 1 - tanh^2 u = 4 s (1 - s)
            and takes 1 - s as e s (e = exp(-2u)): where s rounds to 1 in float32, 1 - s would be 0 and lose
            the slope term (2e-6 of the derivative at x = 5), e s keeps it.

Elementwise, so the array is flattened and split into fixed chunks of CHUNK elements, one prange task each.
Inputs are converted to float32 C-contiguous in the Python wrapper; outputs are float32.
Tip: NUMBA_DISABLE_JIT=1 runs these kernels as Python for stepping through in a debugger.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from kernels._inputs import as_float32

from kernels.fastexp import fast_exp_scalar

HALF = np.float32(0.5)
ONE = np.float32(1.0)
SQRT1_2 = np.float32(1.0 / math.sqrt(2.0))
INV_SQRT_2PI = np.float32(1.0 / math.sqrt(2.0 * math.pi))
SQRT_2_OVER_PI = np.float32(math.sqrt(2.0 / math.pi))
TWO = np.float32(2.0)
GELU_TANH_A = np.float32(0.044715)
GELU_TANH_3A = np.float32(3.0 * 0.044715)
# Beyond |u| = 44, exp(-2|u|) < 1e-38: s is exactly 0 or 1 in float32 and the backward's slope term
# 2 x s (1 - s) u' is below float32's smallest normal; there x u' may also overflow to inf (|x| > ~1e13),
# and inf * 0 would be NaN, so the slope is set to its limit, 0.
U_FLAT = np.float32(44.0)
CHUNK = 16384  # elements per prange task: 64 KiB, big enough to amortize scheduling, small enough to balance
# Numerical Recipes (2nd ed., sec. 6.2) erfcc coefficients, highest power last.
E0, E1, E2, E3, E4 = (np.float32(c) for c in (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806))
E5, E6, E7, E8, E9 = (np.float32(c) for c in (0.27886807, -1.13520398, 1.48851587, -0.82215223, 0.17087277))


@njit(cache=True, inline="always")
def _Phi(x):
    """Standard normal CDF of a float32 x via erfc(|x|/sqrt 2), accurate to ~1e-7 relative in both tails."""
    z = abs(x) * SQRT1_2
    t = ONE / (ONE + HALF * z)
    poly = E0 + t * (E1 + t * (E2 + t * (E3 + t * (E4 + t * (E5 + t * (E6 + t * (E7 + t * (E8 + t * E9))))))))
    half_erfc = HALF * t * fast_exp_scalar(-z * z + poly)  # = Phi(-|x|)
    return half_erfc if x < 0 else ONE - half_erfc


@njit(cache=True, parallel=True)
def _fwd_v1(x, y):
    n = x.shape[0]
    for k in prange((n + CHUNK - 1) // CHUNK):
        for i in range(k * CHUNK, min(n, (k + 1) * CHUNK)):
            v = x[i]
            y[i] = v * HALF * (ONE + np.float32(math.erf(v * SQRT1_2)))


@njit(cache=True, parallel=True)
def _bwd_v1(x, dy, dx):
    n = x.shape[0]
    for k in prange((n + CHUNK - 1) // CHUNK):
        for i in range(k * CHUNK, min(n, (k + 1) * CHUNK)):
            v = x[i]
            cdf = HALF * (ONE + np.float32(math.erf(v * SQRT1_2)))
            pdf = INV_SQRT_2PI * np.float32(math.exp(-HALF * v * v))
            dx[i] = dy[i] * (cdf + v * pdf)


@njit(cache=True, parallel=True)
def _fwd_v2(x, y):
    n = x.shape[0]
    for k in prange((n + CHUNK - 1) // CHUNK):
        for i in range(k * CHUNK, min(n, (k + 1) * CHUNK)):
            y[i] = x[i] * _Phi(x[i])


@njit(cache=True, parallel=True)
def _bwd_v2(x, dy, dx):
    n = x.shape[0]
    for k in prange((n + CHUNK - 1) // CHUNK):
        for i in range(k * CHUNK, min(n, (k + 1) * CHUNK)):
            v = x[i]
            dx[i] = dy[i] * (_Phi(v) + v * INV_SQRT_2PI * fast_exp_scalar(-HALF * v * v))


@njit(cache=True, parallel=True)
def _tanh_fwd_v1(x, y):
    n = x.shape[0]
    for k in prange((n + CHUNK - 1) // CHUNK):
        for i in range(k * CHUNK, min(n, (k + 1) * CHUNK)):
            v = x[i]
            u = SQRT_2_OVER_PI * (v + GELU_TANH_A * v * v * v)
            y[i] = v / (ONE + fast_exp_scalar(-TWO * u))  # x sigmoid(2u); exp = inf for u << 0 gives -0


@njit(cache=True, parallel=True)
def _tanh_bwd_v1(x, dy, dx):
    n = x.shape[0]
    for k in prange((n + CHUNK - 1) // CHUNK):
        for i in range(k * CHUNK, min(n, (k + 1) * CHUNK)):
            v = x[i]
            u = SQRT_2_OVER_PI * (v + GELU_TANH_A * v * v * v)
            e = fast_exp_scalar(-TWO * u)
            s = ONE / (ONE + e)                                               # sigmoid(2u) = (1 + tanh u)/2
            du = SQRT_2_OVER_PI * (ONE + GELU_TANH_3A * v * v)                 # u'
            slope = TWO * v * du * s * (e * s)                                # x/2 (1 - tanh^2 u) u'; 1 - s = e s
            dx[i] = dy[i] * (s + (slope if abs(u) < U_FLAT else np.float32(0.0)))


# ---- thin Python wrappers: validate, convert, flatten; never let bad input reach compiled code


def _make_fwd(kernel, name="gelu_fwd", doc="y = x Phi(x) elementwise (float32, x's shape)."):
    def gelu_fwd(x):
        x = as_float32(x, name, "x")
        y = np.empty_like(x)
        kernel(x.reshape(-1), y.reshape(-1))
        return y

    gelu_fwd.__name__, gelu_fwd.__doc__ = name, doc
    return gelu_fwd


def _make_bwd(kernel, name="gelu_bwd", doc="dx = dy (Phi(x) + x phi(x)) elementwise (float32, x's shape)."):
    def gelu_bwd(x, dy):
        x, dy = as_float32(x, name, "x"), as_float32(dy, name, "dy")
        if x.shape != dy.shape:
            raise ValueError(f"{name}: x has shape {x.shape} but dy has shape {dy.shape}; they must match")
        dx = np.empty_like(x)
        kernel(x.reshape(-1), dy.reshape(-1), dx.reshape(-1))
        return dx

    gelu_bwd.__name__, gelu_bwd.__doc__ = name, doc
    return gelu_bwd


VERSIONS = {
    "gelu_fwd": {"v1": _make_fwd(_fwd_v1), "v2": _make_fwd(_fwd_v2)},
    "gelu_bwd": {"v1": _make_bwd(_bwd_v1), "v2": _make_bwd(_bwd_v2)},
    "gelu_tanh_fwd": {"v1": _make_fwd(_tanh_fwd_v1, "gelu_tanh_fwd",
                                      "y = x sigmoid(2u) = x/2 (1 + tanh u) elementwise (float32, x's shape).")},
    "gelu_tanh_bwd": {"v1": _make_bwd(_tanh_bwd_v1, "gelu_tanh_bwd",
                                      "dx = dy (s + 2 x s (1 - s) u') elementwise (float32, x's shape).")},
}
gelu_fwd = VERSIONS["gelu_fwd"]["v2"]
gelu_bwd = VERSIONS["gelu_bwd"]["v2"]
gelu_tanh_fwd = VERSIONS["gelu_tanh_fwd"]["v1"]
gelu_tanh_bwd = VERSIONS["gelu_tanh_bwd"]["v1"]

"""Float32 building blocks that Numba's vectorizer can see through: a fast exp and lane-wise row reductions.

    fast_exp_scalar(x), exp_into(x, out)   exp without a libm call (this docstring)
    fast_exp_bounded(x)                    the same for x <= 88 only, a few instructions cheaper (below)
    sum8(r), max8(r), dot8(a, b)           reductions over a 1-D row with 8 independent accumulators (below)

Why this file exists. numba and llvmlite from PyPI ship without Intel's SVML vector math library
(`python -m numba -s` says "SVML State: False"), so `math.exp` / `np.exp` inside an `@njit` loop becomes a
call to the scalar libm `expf`. A call is opaque to LLVM: the loop around it cannot be turned into AVX2 code,
and a softmax over (384*128, 128) spends ~35 ms in those calls where PyTorch needs ~5 ms. The cure is to
write exp out of operations LLVM *can* vectorize: multiplies, adds, a floor, integer shifts and a bit cast.

The math (Cody-Waite range reduction plus a polynomial, as in Cephes `expf`):

    exp(x) = 2^n * exp(r),   n = round(x * log2(e)),   r = x - n * ln 2,   |r| <= ln(2)/2 ~= 0.347

    * n is an integer, so 2^n is built exactly from its IEEE-754 bits: the float32 with biased exponent
      field n + 127 and zero mantissa is `(n + 127) << 23` read as a float (a bit cast, no arithmetic).
    * r is computed as (x - n*C1) - n*C2 with ln 2 = C1 + C2 split so that n*C1 is exact in float32
      (C1 = 0.693359375 has only 9 significant bits); this keeps r accurate to ~1 ulp even for |x| ~ 88.
      (Computing f = x*log2(e) - n and then 2^f instead would lose ~|x| * 6e-8 absolute in f: ~6e-6 relative
      error at |x| ~ 88; the split costs one extra multiply-add and buys ~30x accuracy.)
    * exp(r) ~= 1 + r + r^2 * P(r), P of degree 5 (Cephes' minimax coefficients); on |r| <= 0.347 the
      polynomial error is below float32 rounding.

    2^n is applied as two factors 2^(n//2) * 2^(n - n//2) so that every factor is a normal float32 over the
    whole clamped range n in [-126, 128] (2^128 alone is not representable); power-of-two multiplies are exact.

Edge behaviour (documented contract, pinned by tests/test_fastexp.py):

    x <  -87.33654 (= ln FLT_MIN, incl. -inf)  ->  0.0 exactly: results that would be denormal are flushed,
                                                  so a masked score (-inf) gives a probability of exactly 0
    x >   88.72283 (= ln FLT_MAX, incl. +inf)  ->  +inf, as np.exp overflows
    x is NaN                                    ->  NaN (a NaN in a softmax input stays visible)

Accuracy: max relative error vs float64 exp, measured over 2^24 float32 inputs spread uniformly in
[-87.33, 88.72]: 8.1e-8 (~0.7 ulp of float32; np.exp in float32 is ~0.5 ulp). The hypothesis test in
tests/test_fastexp.py asserts < 2e-7 (~1.7 ulp) against np.exp in float64 over the whole float32 range.

What this is not: a drop-in for every exp. It is float32 only, flushes the last 0.3 of the exponent range
to zero instead of returning denormals, and makes no promise about the sign of zero. Used by the softmax,
cross-entropy, attention and GELU kernels, where exp is the hot operation.

Tip: `NUMBA_DISABLE_JIT=1` runs all of this as plain Python for stepping through in a debugger (the bit casts
then go through NumPy views).
"""
from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.core import config
from numba.extending import intrinsic

# ---- constants, as float32 so that Numba keeps the arithmetic in float32 (a bare 1.44 literal is float64
# and would silently promote every expression it touches)
LOG2E = np.float32(1.4426950408889634)  # log2(e) = 1 / ln 2
LN2_HI = np.float32(0.693359375)  # C1: ln 2 rounded to 9 significant bits, so n * C1 is exact for |n| < 2^15
LN2_LO = np.float32(-2.12194440e-4)  # C2 = ln 2 - C1
X_MIN = np.float32(-87.33654)  # ln(FLT_MIN): below this exp(x) would be denormal -> we return 0
X_MAX = np.float32(88.72283)  # ln(FLT_MAX): above this exp(x) overflows -> +inf
# Cephes expf minimax coefficients for exp(r) = 1 + r + r^2 * (P0 + P1 r + ... + P5 r^5) on |r| <= ln2/2.
P0 = np.float32(5.0000001201e-1)
P1 = np.float32(1.6666665459e-1)
P2 = np.float32(4.1665795894e-2)
P3 = np.float32(8.3334519073e-3)
P4 = np.float32(1.3981999507e-3)
P5 = np.float32(1.9875691500e-4)
ONE = np.float32(1.0)
ZERO = np.float32(0.0)
INF = np.float32(np.inf)


# ---- bit casts. LLVM's `bitcast` reinterprets the 32 bits of a float as an int32 without any instruction;
# Numba has no scalar bit cast in its API, so we ask for it through an intrinsic (a few lines of LLVM IR
# builder calls). Under NUMBA_DISABLE_JIT the pure-Python fallbacks below are used instead.
if config.DISABLE_JIT:

    def _int32_as_float32(i):
        return np.array([i], np.int32).view(np.float32)[0]

else:

    @intrinsic
    def _int32_as_float32(typingctx, i):
        """Reinterpret the bits of an int32 as a float32 (no conversion, no instruction)."""
        if i != types.int32:
            return None

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(types.float32))

        return types.float32(types.int32), codegen


@njit(cache=True, inline="always")
def _pow2(k):
    """2^k as float32 for an int32 k in [-126, 127], built from its bits: biased exponent k + 127."""
    return _int32_as_float32(np.int32((k + np.int32(127)) << np.int32(23)))


@njit(cache=True, inline="always")
def fast_exp_scalar(x):
    """exp(x) for a float32 x, branch-free and vectorizable; see the module docstring for math and edges.

    Call it from inside any @njit loop (it inlines); the loop then vectorizes where the loop body allows.
    """
    # Clamp first so that the integer conversion below never sees inf (NaN passes through both compares).
    xc = X_MAX if x > X_MAX else x
    xc = X_MIN if xc < X_MIN else xc
    nf = np.floor(xc * LOG2E + np.float32(0.5))  # n = round(x log2 e), still a float32
    r = (xc - nf * LN2_HI) - nf * LN2_LO  # r = x - n ln 2 in two exact-ish steps (Cody-Waite)
    p = ((((P5 * r + P4) * r + P3) * r + P2) * r + P1) * r + P0
    p = p * (r * r) + r + ONE  # exp(r) ~= 1 + r + r^2 P(r)
    n = np.int32(nf) if nf == nf else np.int32(0)  # NaN -> 0 so the int conversion is defined
    half = n >> np.int32(1)  # n = half + (n - half); both halves in [-63, 64]: always normal powers of two
    y = p * _pow2(half) * _pow2(n - half)
    y = ZERO if x < X_MIN else y  # flush would-be denormals (and -inf) to exactly 0
    y = INF if x > X_MAX else y  # overflow (and +inf) -> inf
    return y


# ---- a cheaper exp for callers whose arguments never exceed 88 ---------------------------------------------
# fast_exp_scalar builds 2^n as two factors because n = 128 (x in [88.38, 88.72]) has no float32 of its own,
# and it selects +inf above X_MAX. Its n >> 1 is also typed int64 by Numba (int32 op int32 -> int64), which
# shows up in the asm as a widening to 8 x 64-bit lanes and back. A caller whose argument is known to be
# <= 88 (GELU's -z^2 + c, at most ~1e-7) needs none of that: n <= 127, so 2^n is one normal float32.
X_BOUNDED_MAX = np.float32(88.0)  # below ln(FLT_MAX) - ln(2)/2, so n = round(x log2 e) <= 127


@njit(cache=True, inline="always")
def fast_exp_bounded(x):
    """exp(x) for a float32 x <= 88 (callers guarantee it): fast_exp_scalar's math with one 2^n factor.

    Edges as fast_exp_scalar below X_MIN (0.0 exactly, -inf included) and for NaN (NaN). The precondition is
    enforced by a clamp, not a check: x > 88 (a caller's bug) returns exp(88) ~ 1.65e38, finite and wrong.
    Pinned by tests/test_fastexp.py against np.exp, with fast_exp_scalar's error bound.
    """
    xc = X_BOUNDED_MAX if x > X_BOUNDED_MAX else x
    xc = X_MIN if xc < X_MIN else xc
    nf = np.floor(xc * LOG2E + np.float32(0.5))
    r = (xc - nf * LN2_HI) - nf * LN2_LO
    p = ((((P5 * r + P4) * r + P3) * r + P2) * r + P1) * r + P0
    p = p * (r * r) + r + ONE
    n = np.int32(nf) if nf == nf else np.int32(0)
    y = p * _int32_as_float32(np.int32((n + np.int32(127)) << np.int32(23)))  # 2^n, n in [-126, 127]
    return ZERO if x < X_MIN else y


@njit(cache=True)
def exp_bounded_into(x, out):
    """out[i] = fast_exp_bounded(x[i]) (for tests and for reading its asm); 1-D float32, `out` may be `x`."""
    for i in range(x.shape[0]):
        out[i] = fast_exp_bounded(x[i])


@njit(cache=True)
def exp_into(x, out):
    """out[i] = exp(x[i]) for 1-D float32 arrays of equal length; `out` may be `x` itself (in place).

    A plain loop over `fast_exp_scalar`, which LLVM unrolls into 8-wide AVX2 code. Returns nothing.
    """
    for i in range(x.shape[0]):
        out[i] = fast_exp_scalar(x[i])


def fast_exp(x):
    """Convenience for Python callers and tests: exp of any float32 array via `exp_into` (a new array)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty_like(x)
    exp_into(x.reshape(-1), out.reshape(-1))
    return out


# ---- vectorizable reductions -------------------------------------------------------------------------------
# Without fastmath, LLVM may not reorder float additions, so `s += r[j]` is a serial chain: one add every
# ~4 cycles (the add latency) instead of 8 lanes per cycle. Eight named accumulators make the order explicit
# (lane k sums r[k], r[k+8], ...) and the SLP vectorizer packs them into one AVX2 register. The result is
# deterministic (a fixed summation order, independent of threads) and no less accurate than the serial sum
# (it is a partial pairwise sum). The `max` version needs no such care for accuracy but has the same latency
# problem. Call these on a 1-D row view, e.g. `sum8(x[i])`.


@njit(cache=True, inline="always")
def sum8(r):
    """sum_j r[j] for a 1-D float32 array, 8 lanes then a fixed tree; the tail (len % 8) goes to lane 0."""
    n = r.shape[0]
    n8 = n - n % 8
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = ZERO
    for j in range(0, n8, 8):
        a0 += r[j]
        a1 += r[j + 1]
        a2 += r[j + 2]
        a3 += r[j + 3]
        a4 += r[j + 4]
        a5 += r[j + 5]
        a6 += r[j + 6]
        a7 += r[j + 7]
    for j in range(n8, n):
        a0 += r[j]
    return ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))


@njit(cache=True, inline="always")
def dot8(a, b):
    """sum_j a[j] * b[j] for two 1-D float32 arrays of equal length, with sum8's lane order."""
    n = a.shape[0]
    n8 = n - n % 8
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = ZERO
    for j in range(0, n8, 8):
        a0 += a[j] * b[j]
        a1 += a[j + 1] * b[j + 1]
        a2 += a[j + 2] * b[j + 2]
        a3 += a[j + 3] * b[j + 3]
        a4 += a[j + 4] * b[j + 4]
        a5 += a[j + 5] * b[j + 5]
        a6 += a[j + 6] * b[j + 6]
        a7 += a[j + 7] * b[j + 7]
    for j in range(n8, n):
        a0 += a[j] * b[j]
    return ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))


@njit(cache=True, inline="always")
def _fmax(a, b):
    return a if a > b else b


@njit(cache=True, inline="always")
def max8(r):
    """max_j r[j] for a 1-D float32 array (-inf for an empty row), 8 lanes as in sum8."""
    n = r.shape[0]
    n8 = n - n % 8
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = -INF
    for j in range(0, n8, 8):
        a0 = _fmax(r[j], a0)
        a1 = _fmax(r[j + 1], a1)
        a2 = _fmax(r[j + 2], a2)
        a3 = _fmax(r[j + 3], a3)
        a4 = _fmax(r[j + 4], a4)
        a5 = _fmax(r[j + 5], a5)
        a6 = _fmax(r[j + 6], a6)
        a7 = _fmax(r[j + 7], a7)
    for j in range(n8, n):
        a0 = _fmax(r[j], a0)
    return _fmax(_fmax(_fmax(a0, a1), _fmax(a2, a3)), _fmax(_fmax(a4, a5), _fmax(a6, a7)))

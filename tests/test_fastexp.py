"""kernels.fastexp: the vectorizable float32 exp, against np.exp in float64 over the whole float32 range."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from kernels.fastexp import X_BOUNDED_MAX, X_MAX, X_MIN, exp_bounded_into, exp_into, fast_exp, fast_exp_scalar

# ~1.7 ulp of float32 (ulp/2 = 6e-8): the Cody-Waite reduction + degree-7 polynomial measure 8.1e-8 worst
# case over 2^24 points (see the module docstring); 2e-7 leaves room for a different rounding order of the
# FMA contraction on another CPU but still fails an error as large as the naive 2^f reduction (~6e-6).
REL_TOL = 2e-7

FLOATS32 = st.floats(width=32, allow_nan=False)  # every float32 incl. +-inf and denormals
IN_RANGE = st.floats(min_value=float(X_MIN), max_value=float(X_MAX), width=32)


@given(st.lists(IN_RANGE, min_size=1, max_size=300))
def test_relative_error_in_range(xs):
    x = np.array(xs, np.float32)
    want = np.exp(x.astype(np.float64))
    got = fast_exp(x)
    rel = np.abs(got.astype(np.float64) - want) / want
    assert rel.max() < REL_TOL, (x[rel.argmax()], got[rel.argmax()], want[rel.argmax()])


@given(st.lists(FLOATS32, min_size=1, max_size=300))
def test_whole_float32_range_matches_contract(xs):
    """Below ln FLT_MIN exactly 0; above ln FLT_MAX inf; in between the relative bound; never NaN."""
    x = np.array(xs, np.float32)
    got = fast_exp(x)
    assert not np.isnan(got).any()
    assert (got[x < X_MIN] == 0.0).all()
    assert np.isposinf(got[x > X_MAX]).all()
    inside = (x >= X_MIN) & (x <= X_MAX)
    want = np.exp(x[inside].astype(np.float64))
    if want.size:
        assert (np.abs(got[inside] - want) / want).max() < REL_TOL


def test_edges():
    x = np.array([-np.inf, -1e30, -88.0, 0.0, -0.0, 1.0, 89.0, np.inf, np.nan], np.float32)
    got = fast_exp(x)
    assert got[0] == 0.0 and got[1] == 0.0 and got[2] == 0.0  # flushed, never denormal
    assert got[3] == 1.0 and got[4] == 1.0
    assert abs(got[5] - np.e) / np.e < REL_TOL
    assert np.isposinf(got[6]) and np.isposinf(got[7])
    assert np.isnan(got[8])  # NaN in, NaN out: a bug upstream stays visible


def test_in_place_and_scalar_agree():
    x = np.linspace(-100, 100, 1001, dtype=np.float32)
    y = fast_exp(x)
    exp_into(x, x)  # out aliases x
    np.testing.assert_array_equal(x, y)
    # the scalar entry point (what other kernels inline) is the very same function
    assert fast_exp_scalar(np.float32(-3.2)) == y[484]  # x[484] = -100 + 484 * 0.2 = -3.2


@pytest.mark.parametrize("n", [1, 7, 8, 9, 1000])  # around the 8-wide AVX2 vector and its remainder loop
def test_lengths_around_vector_width(n):
    x = np.random.default_rng(n).uniform(-20, 20, n).astype(np.float32)
    np.testing.assert_allclose(fast_exp(x), np.exp(x.astype(np.float64)), rtol=REL_TOL)


BOUNDED = st.floats(max_value=float(X_BOUNDED_MAX), width=32, allow_nan=False)  # incl. -inf and denormals


@given(st.lists(BOUNDED, min_size=1, max_size=300))
def test_bounded_exp_matches_contract_below_its_bound(xs):
    """fast_exp_bounded (one 2^n factor, for callers whose x <= 88): exactly 0 below ln FLT_MIN, else within
    fast_exp's relative bound REL_TOL of np.exp, and equal to fast_exp_scalar up to that bound (same polynomial,
    the same reduction; only the way 2^n is applied differs, an exact power-of-two multiply in both)."""
    x = np.array(xs, np.float32)
    got = np.empty_like(x)
    exp_bounded_into(x, got)
    assert (got[x < X_MIN] == 0.0).all()
    inside = x >= X_MIN
    want = np.exp(x[inside].astype(np.float64))
    if want.size:
        assert (np.abs(got[inside] - want) / want).max() < REL_TOL
    np.testing.assert_array_equal(got, fast_exp(x))


def test_bounded_exp_edges():
    x = np.array([-np.inf, -88.0, 0.0, -0.0, 1e-7, 88.0, np.nan], np.float32)
    got = np.empty_like(x)
    exp_bounded_into(x, got)
    assert got[0] == 0.0 and got[1] == 0.0 and got[2] == 1.0 and got[3] == 1.0
    assert abs(got[4] - 1.0000001) < 1e-7 and np.isfinite(got[5])  # 2^127 times exp(r): still a normal float32
    assert np.isnan(got[6])

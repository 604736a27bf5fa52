"""Row-wise kernels (softmax, layernorm, gelu, cross_entropy, adamw): every backend against the reference.

The reference (kernels/<family>/reference.py) runs in float64 on the same float32 inputs; each backend
runs on float32. Tolerances are stated where they are used. Mostly they are *norm-relative*: an error is
compared with rtol * max|want|, because float32 sums of C terms legitimately err by ~C * 6e-8 of the largest
term, not of each entry. Also: properties (rows sum to 1 / 0, shift invariance, mean 0 / var 1), every
numbered Numba version, the version registries against the docstrings, bad inputs, and finite-difference
checks of the reference backward passes.
"""
import importlib
import re

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from gradcheck import central_differences
from kernels.testing import assert_close
from tests.strategies import ODD_DIMS, SMALL_DIMS, arrays, layernorm_case, masks, rng_from

FAMILIES = ("softmax", "layernorm", "gelu", "cross_entropy", "adamw")
MODULE = {"numpy": "reference", "numba": "cpu", "cupy": "gpu"}


def ops(backend, family):
    """The module of one kernel family for one backend (not kernels.get, so attention is not needed here)."""
    return importlib.import_module(f"kernels.{family}.{MODULE[backend]}")


def host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def dev(backend, a):
    if backend == "cupy":
        import cupy

        return cupy.asarray(a)
    return a


def close(got, want, tol, name, floor=0.0):
    """Norm-relative comparison: |got - want| <= tol * (|want| + max(max|want|, floor)).

    `floor` is the size of the terms that were summed, for results that cancel to ~0 (e.g. a gradient
    that should vanish): rounding error is relative to the terms, not to their tiny sum.
    """
    got, want = host(got), np.asarray(want, np.float64)
    scale = max(float(np.abs(want).max(initial=0.0)), floor, 1e-30)
    assert_close(got, want, atol=tol * scale, rtol=tol, name=name)


def ref(family):
    return importlib.import_module(f"kernels.{family}.reference")


f64 = lambda a: np.asarray(a, np.float64)  # noqa: E731

# The `backend` fixture is only a name (a string): nothing to reset between hypothesis examples.
FIXTURE_OK = settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# ---------------------------------------------------------------- softmax

@FIXTURE_OK
@given(st.data(), SMALL_DIMS, ODD_DIMS, st.booleans())
def test_softmax_fwd_bwd_matches_reference(backend, data, n, L, use_mask):
    x = data.draw(arrays((n, L)))
    mask = data.draw(masks((n, L))) if use_mask else None
    k = ops(backend, "softmax")
    y = host(k.softmax_fwd(dev(backend, x), None if mask is None else dev(backend, mask)))
    want = ref("softmax").softmax_fwd(f64(x), mask)
    # 1e-5: fast exp (8e-8 rel) + float32 rounding of x - max (6e-8 * |x - max|, |x - max| <= ~17 where
    # a probability is above 1e-7) + the float32 row sum; y <= 1, so this is ~100 float32 ulps of 1.
    close(y, want, 1e-5, "softmax_fwd")
    kept = want.sum(-1) > 0  # rows with at least one kept entry sum to 1; fully masked rows are exactly 0
    np.testing.assert_allclose(y.sum(-1)[kept], 1.0, atol=L * 1e-7)  # L float32 roundings of terms <= 1
    assert (y[~kept] == 0).all() and not np.isnan(y).any()

    dy = rng_from(data.draw).standard_normal((n, L)).astype(np.float32)
    dx = host(k.softmax_bwd(dev(backend, y), dev(backend, dy)))
    # one dot of L float32 terms, each at most max|dy| (y <= 1)
    close(dx, ref("softmax").softmax_bwd(f64(y), f64(dy)), 1e-5, "softmax_bwd", floor=np.abs(dy).max())
    np.testing.assert_allclose(dx.sum(-1), 0.0, atol=1e-5 * max(1.0, np.abs(dy).max()) * (1 + L / 8))


@FIXTURE_OK
@given(st.data(), SMALL_DIMS, ODD_DIMS)
def test_softmax_shift_invariant(backend, data, n, L):
    x = data.draw(arrays((n, L), kind="normal"))
    c = rng_from(data.draw).uniform(-50, 50, (n, 1)).astype(np.float32)
    k = ops(backend, "softmax")
    # 2e-5: x + c is rounded in float32 (ulp of 50 is 4e-6 absolute), which moves each exp by up to ~4e-6
    close(k.softmax_fwd(dev(backend, x + c)), host(k.softmax_fwd(dev(backend, x))), 2e-5, "shifted softmax")


def test_softmax_broadcast_padding_mask(backend):
    """A (B, 1, 1, T) padding mask over (B, H, T, T) scores, including a sequence with no real token."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 2, 5, 7)).astype(np.float32)
    mask = np.ones((3, 1, 1, 7), bool)
    mask[1, ..., 4:] = False
    mask[2] = False
    y = host(ops(backend, "softmax").softmax_fwd(dev(backend, x), dev(backend, mask)))
    close(y, ref("softmax").softmax_fwd(f64(x), mask), 1e-5, "masked softmax")  # as above
    assert (y[2] == 0).all() and (y[1, ..., 4:] == 0).all()



def _with_neg_inf(draw, x):
    """x with some entries set to -inf (a logit that can never win), sometimes whole rows."""
    rng = rng_from(draw)
    x = x.copy()
    x[rng.random(x.shape) < draw(st.sampled_from([0.0, 0.2, 0.9]))] = -np.inf
    if draw(st.booleans()):
        x[rng.integers(0, x.shape[0])] = -np.inf
    return x


SOFTMAX_FWD_VERSIONS = sorted(ops("numba", "softmax").VERSIONS["softmax_fwd"])


@pytest.mark.parametrize("version", SOFTMAX_FWD_VERSIONS)
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), SMALL_DIMS, st.one_of(ODD_DIMS, st.sampled_from([128, 129])), st.booleans())
def test_softmax_fwd_version_with_masks_and_neg_inf(version, data, n, L, use_mask):
    """Every numbered forward version, both of its paths (mask None, and a mask), against the reference,
    with -inf logits (leading ones included: an online max starts at -inf) and fully -inf rows."""
    x = _with_neg_inf(data.draw, data.draw(arrays((n, L))))
    mask = data.draw(masks((n, L))) if use_mask else None
    y = ops("numba", "softmax").VERSIONS["softmax_fwd"][version](x, mask)
    want = ref("softmax").softmax_fwd(f64(x), mask)
    assert y.dtype == np.float32
    close(y, want, 1e-5, f"softmax_fwd {version}")  # the bound of test_softmax_fwd_bwd_matches_reference
    kept = want.sum(-1) > 0
    assert (y[~kept] == 0).all() and not np.isnan(y).any()


@pytest.mark.parametrize("version", SOFTMAX_FWD_VERSIONS)
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), SMALL_DIMS, st.one_of(ODD_DIMS, st.sampled_from([128, 129])))
def test_softmax_fwd_without_mask_equals_all_true_mask(version, data, n, L):
    """mask=None may take its own compiled loop (v4 on: no select pass, no mask row read); it must give the
    masked loop's result under an all-True mask bit for bit, so the two paths cannot drift apart."""
    x = _with_neg_inf(data.draw, data.draw(arrays((n, L))))
    f = ops("numba", "softmax").VERSIONS["softmax_fwd"][version]
    np.testing.assert_array_equal(f(x), f(x, np.ones((n, L), bool)))
    np.testing.assert_array_equal(f(x), f(x, np.ones(L, bool)))  # broadcast: one mask row for all

# ---------------------------------------------------------------- layer norm

@FIXTURE_OK
@given(st.data(), SMALL_DIMS, SMALL_DIMS, ODD_DIMS, st.sampled_from([1e-12, 1e-5]))
def test_layernorm_matches_reference(backend, data, a, b, C, eps):
    x, w, bias, dy = layernorm_case(data, (a, b, C))
    k, r = ops(backend, "layernorm"), ref("layernorm")
    y, mean, rstd = (host(t) for t in k.layernorm_fwd(*(dev(backend, t) for t in (x, w, bias)), eps))
    Y, M, R = r.layernorm_fwd(f64(x), f64(w), f64(bias), eps)
    # 2e-4 norm-relative: mean and variance are float32 sums of C <= 127 terms (~C * 6e-8 = 8e-6 relative);
    # xhat = (x - mean) * rstd then loses up to a few digits more when the row's spread is small versus
    # its mean ("tiny" rows with eps = 1e-12); y, dx stay finite and close at the row's scale.
    close(y, Y, 2e-4, "layernorm y")
    close(mean, M, 2e-4, "layernorm mean")
    close(rstd, R, 2e-4, "layernorm rstd")
    dx, dw, db = (host(t) for t in k.layernorm_bwd(*(dev(backend, t) for t in (dy, x, w, mean, rstd))))
    DX, DW, DB = r.layernorm_bwd(f64(dy), f64(x), f64(w), M, R)
    # the same error budget as y, through the same xhat; floors: the size of the summed terms
    xhat = (f64(x) - M[..., None]) * R[..., None]
    close(dx, DX, 2e-4, "layernorm dx", floor=R.max() * np.abs(dy * w).max())
    close(dw, DW, 2e-4, "layernorm dweight", floor=np.abs(dy * xhat).sum((0, 1)).max())  # + a*b <= 169 rows
    close(db, DB, 2e-4, "layernorm dbias", floor=np.abs(dy).sum((0, 1)).max())


@FIXTURE_OK
@given(st.data(), SMALL_DIMS, st.sampled_from([7, 64, 127]))
def test_layernorm_unit_weight_gives_mean0_var1(backend, data, n, C):
    x = data.draw(arrays((n, C), kind="normal"))
    ones, zeros = np.ones(C, np.float32), np.zeros(C, np.float32)
    y, _, _ = ops(backend, "layernorm").layernorm_fwd(*(dev(backend, t) for t in (x, ones, zeros)), 1e-12)
    y = host(y).astype(np.float64)
    if C > 1 and x.std(-1).min() > 1e-3:  # a (nearly) constant row has variance 0 by definition
        np.testing.assert_allclose(y.mean(-1), 0.0, atol=1e-5)  # float32 rounding of C values ~1
        np.testing.assert_allclose(y.var(-1), 1.0, rtol=1e-4)  # ditto, squared


def layernorm_f64(x, w, b, eps):
    """Layer norm straight from its definition in float64: an oracle independent of the kernels' numerics."""
    x = f64(x)
    xc = x - x.mean(-1, keepdims=True)  # (N, C)
    return xc / np.sqrt((xc * xc).mean(-1, keepdims=True) + eps) * f64(w) + f64(b)


CONSTANT_ROWS = np.array([3.3, 0.7, -1.1, 0.0, 1e-20, 123456.7, -3e5], np.float32)  # 3.3: float32 mean 1 ulp off


@pytest.mark.parametrize("eps", [1e-12, 1e-5])
def test_layernorm_constant_rows_give_the_bias_exactly(backend, eps):
    """A constant row has xhat = 0, so y = bias bit for bit, even at BERT's eps = 1e-12 where rstd = 1e6
    would turn a one-ulp error in the mean into an error of ~0.2 in y."""
    C = 384
    x = np.repeat(CONSTANT_ROWS[:, None], C, axis=1)  # (N, C), every row one value
    rng = np.random.default_rng(5)
    w, b = rng.standard_normal(C).astype(np.float32), rng.standard_normal(C).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    k = ops(backend, "layernorm")
    y, mean, rstd = (host(t) for t in k.layernorm_fwd(*(dev(backend, t) for t in (x, w, b)), eps))
    np.testing.assert_array_equal(y, np.broadcast_to(b, y.shape))
    np.testing.assert_array_equal(mean, CONSTANT_ROWS)
    np.testing.assert_allclose(rstd, 1 / np.sqrt(eps), rtol=3e-7)  # float32 sqrt and divide: 2 roundings
    dx, dw, db = (host(t) for t in k.layernorm_bwd(*(dev(backend, t) for t in (dy, x, w, mean, rstd))))
    np.testing.assert_array_equal(dw, 0.0)  # sum of dy * xhat with xhat = 0 exactly
    _, M, R = ref("layernorm").layernorm_fwd(f64(x), f64(w), f64(b), eps)
    DX, _, DB = ref("layernorm").layernorm_bwd(f64(dy), f64(x), f64(w), M, R)
    # dx = rstd * (g - mean_c(g)): one float32 sum of C = 384 terms |g| <~ 10, times rstd
    close(dx, DX, 1e-5, "layernorm dx, constant rows", floor=R.max() * np.abs(dy * w).max())
    close(db, DB, 1e-5, "layernorm dbias, constant rows", floor=np.abs(dy).sum(0).max())  # 7-term sums


@FIXTURE_OK
@given(st.data(), SMALL_DIMS, st.sampled_from([7, 64, 127, 384, 768]))
def test_layernorm_near_constant_rows_match_float64(backend, data, n, C):
    """Rows a few ulps to 1e-5 (relative) wide, at eps = 1e-12: the deviations from the mean are tiny next to
    the mean itself, so any rounding of the mean, times rstd (up to 1e6), shows up in y, dx and dweight."""
    x = data.draw(arrays((n, C), kind="near_constant"))
    rng = rng_from(data.draw)
    w, b = rng.standard_normal(C).astype(np.float32), rng.standard_normal(C).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    k = ops(backend, "layernorm")
    y, mean, rstd = (host(t) for t in k.layernorm_fwd(*(dev(backend, t) for t in (x, w, b)), 1e-12))
    # 1e-5 norm-relative: x - x_0 is exact here, so the only errors are float32 sums of C <= 768 deviations
    # (<= (C/8 + 3) roundings of ~6e-8 of the largest, 6e-6) and a few roundings of each product;
    # measured worst ~6e-7. Rounding the mean first (the old algorithm) gave errors of 1e-2 .. 1.
    close(y, layernorm_f64(x, w, b, 1e-12), 1e-5, "layernorm y, near-constant rows")
    _, M, R = ref("layernorm").layernorm_fwd(f64(x), f64(w), f64(b), 1e-12)
    close(rstd, R, 1e-5, "layernorm rstd, near-constant rows")  # the same sums
    dx, dw, db = (host(t) for t in k.layernorm_bwd(*(dev(backend, t) for t in (dy, x, w, mean, rstd))))
    DX, DW, _ = ref("layernorm").layernorm_bwd(f64(dy), f64(x), f64(w), M, R)
    # the same budget through xhat (the backward re-centres x - mean, whose float32 mean is rounded);
    # dweight sums n <= 13 rows of such products (floor: the size of its terms)
    close(dx, DX, 1e-5, "layernorm dx, near-constant rows")
    xhat = (f64(x) - M[:, None]) * R[:, None]
    close(dw, DW, 1e-5, "layernorm dweight, near-constant rows", floor=np.abs(dy * xhat).sum(0).max())


def test_layernorm_constant_and_near_constant_rows_vs_torch():
    """PyTorch, the oracle: the same y on constant rows (the bias), and on near-constant rows an error
    against float64 no larger than PyTorch's own (which rounds its float32 mean: measured ~3e-2 here)."""
    torch = pytest.importorskip("torch", reason="torch (the test oracle) is not installed")
    C, eps = 384, 1e-12
    rng = np.random.default_rng(11)
    w, b = rng.standard_normal(C).astype(np.float32), rng.standard_normal(C).astype(np.float32)
    const = np.repeat(CONSTANT_ROWS[:, None], C, axis=1)
    near = (3.3 * (1 + 2.0**-20 * rng.standard_normal((4, C)))).astype(np.float32)  # ~8 ulps of 3.3 wide
    tw, tb = torch.tensor(w), torch.tensor(b)
    want_const = torch.nn.functional.layer_norm(torch.tensor(const), (C,), tw, tb, eps).numpy()
    want_near = torch.nn.functional.layer_norm(torch.tensor(near), (C,), tw, tb, eps).numpy()
    torch_err = np.abs(want_near - layernorm_f64(near, w, b, eps)).max()
    for backend in ("numpy", "numba"):
        k = ops(backend, "layernorm")
        np.testing.assert_array_equal(k.layernorm_fwd(const, w, b, eps)[0], want_const)
        err = np.abs(k.layernorm_fwd(near, w, b, eps)[0] - layernorm_f64(near, w, b, eps)).max()
        # 1e-5: the near-constant test's bound (our error is ~1e-6; PyTorch's, ~1e-2, could be small by luck)
        assert err <= max(torch_err, 1e-5), (backend, err, torch_err)


def test_layernorm_bwd_is_deterministic():
    rng = np.random.default_rng(1)
    x, dy = rng.standard_normal((2, 1000, 96)).astype(np.float32)
    w = rng.standard_normal(96).astype(np.float32)
    k = ops("numba", "layernorm")
    _, mean, rstd = k.layernorm_fwd(x, w, w, 1e-5)
    first = k.layernorm_bwd(dy, x, w, mean, rstd)
    for _ in range(3):
        for a, b in zip(first, k.layernorm_bwd(dy, x, w, mean, rstd)):
            np.testing.assert_array_equal(a, b)  # bitwise: fixed chunks, fixed reduction order


# ---------------------------------------------------------------- gelu

@FIXTURE_OK
@given(st.data(), SMALL_DIMS, ODD_DIMS)
def test_gelu_matches_reference(backend, data, n, L):
    x = data.draw(arrays((n, L)))
    dy = rng_from(data.draw).standard_normal(x.shape).astype(np.float32)
    k, r = ops(backend, "gelu"), ref("gelu")
    # atol 1e-6 + rtol 2e-5: the erfc approximation is 1.2e-7 relative, but the float32 z*z in its exponent
    # costs ~6e-8 * z^2 relative (8e-6 at x = -12, where gelu ~ 1e-32 anyway); near x = 0 the product
    # x * Phi(x) is tiny, so an absolute floor of 1e-6 (float32 ulp of ~8) covers values of order 1.
    assert_close(host(k.gelu_fwd(dev(backend, x))), r.gelu_fwd(f64(x)), atol=1e-6, rtol=2e-5, name="gelu_fwd")
    want = r.gelu_bwd(f64(x), f64(dy))
    assert_close(host(k.gelu_bwd(dev(backend, x), dev(backend, dy))), want, atol=1e-6, rtol=2e-5, name="gelu_bwd")


@FIXTURE_OK
@given(st.data(), SMALL_DIMS, ODD_DIMS)
def test_gelu_tanh_matches_reference(backend, data, n, L):
    x = data.draw(arrays((n, L)))
    dy = rng_from(data.draw).standard_normal(x.shape).astype(np.float32)
    k, r = ops(backend, "gelu"), ref("gelu")
    # atol 1e-6 + rtol 2e-5, as for the erf form: in the negative tail y ~ x exp(2u) and the float32 u carries
    # ~6e-8 |u| relative rounding, so y is good to ~1.2e-7 |2u| relative (1.25e-5 measured at x = -12 over
    # 2M points); elsewhere errors stay below 5e-7 absolute (fwd) and 2.1e-7 (bwd), under the 1e-6 floor.
    assert_close(host(k.gelu_tanh_fwd(dev(backend, x))), r.gelu_tanh_fwd(f64(x)), atol=1e-6, rtol=2e-5,
                 name="gelu_tanh_fwd")
    want = r.gelu_tanh_bwd(f64(x), f64(dy))
    assert_close(host(k.gelu_tanh_bwd(dev(backend, x), dev(backend, dy))), want, atol=1e-6, rtol=2e-5,
                 name="gelu_tanh_bwd")


def test_gelu_tanh_at_huge_tiny_and_zero_inputs(backend):
    """Where x^3 or x u' overflow float32 (|x| > ~1e13) the tanh GELU is x or 0 and its derivative 1 or 0,
    never NaN; at tiny x it is x/2 with derivative 1/2; around x = 5, where sigmoid(2u) rounds to 1 in
    float32, the derivative keeps its 2e-6 excess over 1 (1 - s computed as e s, not as 1 - s)."""
    k, r = ops(backend, "gelu"), ref("gelu")
    x = np.array([0.0, -0.0, 1e-30, -1e-30, 1e-6, 4.96, 5.5, 9.0, -9.0, 1e4, -1e4, 1e20, -1e20, 3e38, -3e38],
                 np.float32)
    y, dx = host(k.gelu_tanh_fwd(dev(backend, x))), host(k.gelu_tanh_bwd(dev(backend, x), dev(backend, np.ones_like(x))))
    assert np.isfinite(y).all() and np.isfinite(dx).all(), (y, dx)
    np.testing.assert_array_equal(y[-6::2], x[-6::2])            # large positive x: y = x exactly
    np.testing.assert_array_equal(y[-5::2], 0.0)                 # large negative x: y underflows to (-)0
    np.testing.assert_array_equal(dx[-6:], [1, 0, 1, 0, 1, 0])
    # 1e-6 absolute, 2e-5 relative: the tolerances of the property test above
    assert_close(y, r.gelu_tanh_fwd(f64(x)), atol=1e-6, rtol=2e-5, name="gelu_tanh_fwd")
    # one float32 ulp at 1 (1.19e-7) where the derivative is 1 + 2e-6: dropping the slope term (17 ulps) fails
    assert_close(dx[5:7], r.gelu_tanh_bwd(f64(x[5:7]), np.ones(2)), atol=1.2e-7, rtol=0, name="gelu_tanh_bwd x~5")
    assert_close(dx, r.gelu_tanh_bwd(f64(x), np.ones(x.shape)), atol=1e-6, rtol=2e-5, name="gelu_tanh_bwd")


@pytest.mark.parametrize("version", sorted(ops("numba", "gelu").VERSIONS["gelu_fwd"]))
def test_gelu_version_at_infinities_and_nan_behaves_as_the_reference(version):
    """At -inf the reference's x Phi(x) is -inf * 0 = NaN, and its derivative at +-inf is NaN too (inf * 0 in
    x phi(x)); +inf gives +inf, NaN stays NaN. v5 and v6 select their results beyond the fit of the rational
    erf (|x| >= 4 sqrt 2) rather than compute them, so a select that returned 0 at -inf or dropped a NaN
    would show here (the property tests draw no infinities)."""
    k, r = ops("numba", "gelu"), ref("gelu")
    x = np.array([-np.inf, np.inf, np.nan], np.float32)
    fwd, bwd = k.VERSIONS["gelu_fwd"][version], k.VERSIONS["gelu_bwd"][version]
    with np.errstate(invalid="ignore"):
        want, dwant = r.gelu_fwd(x), r.gelu_bwd(f64(x), np.ones(x.shape))
    assert np.isnan(want[[0, 2]]).all() and want[1] == np.inf and np.isnan(dwant).all()  # what it claims
    np.testing.assert_array_equal(fwd(x), want, err_msg=f"gelu_fwd {version}")
    np.testing.assert_array_equal(bwd(x, np.ones_like(x)), dwant, err_msg=f"gelu_bwd {version}")


def test_gelu_tanh_reference_matches_torch():
    """The reference is PyTorch's gelu(approximate="tanh") (and so transformers' gelu_new), in float64."""
    torch = pytest.importorskip("torch", reason="torch is the oracle for the tanh GELU's formula")
    x = np.concatenate([np.linspace(-12, 12, 2001), [1e-8, -1e-8, 30.0, -30.0]])
    t = torch.tensor(x, requires_grad=True)
    y = torch.nn.functional.gelu(t, approximate="tanh")
    y.backward(torch.ones_like(y))
    r = ref("gelu")
    # float64 on both sides, two algebraically identical formulas (x (1 + tanh u)/2 vs x sigmoid(2u)): they
    # differ by rounding, 1.8e-15 (fwd) and 9.8e-15 (bwd, the 2 x u' term reaches ~10) at most measured;
    # absolute tolerances because torch's 1 + tanh u cancels to exactly 0 in the negative tail
    assert_close(r.gelu_tanh_fwd(x), y.detach().numpy(), atol=1e-14, rtol=0, name="gelu_tanh_fwd vs torch")
    assert_close(r.gelu_tanh_bwd(x, np.ones_like(x)), t.grad.numpy(), atol=1e-13, rtol=0, name="gelu_tanh_bwd vs torch")


# ---------------------------------------------------------------- cross-entropy

@FIXTURE_OK
@given(st.data(), st.sampled_from([1, 2, 5, 13]), st.sampled_from([1, 2, 7, 31, 1000]), st.booleans())
def test_cross_entropy_matches_reference(backend, data, N, V, ignore_some):
    z = data.draw(arrays((N, V), kind=data.draw(st.sampled_from(["normal", "extreme", "constant"]))))
    rng = rng_from(data.draw)
    t = rng.integers(0, V, N)
    if ignore_some:
        t[rng.random(N) < 0.5] = -100
    k, r = ops(backend, "cross_entropy"), ref("cross_entropy")
    loss, lse = k.cross_entropy_fwd(dev(backend, z), dev(backend, t))
    LOSS, LSE = r.cross_entropy_fwd(f64(z), t)
    assert isinstance(loss, float)
    # 1e-5 of max|lse|: lse = max + log(sum of V <= 1000 float32 exps, each 8e-8 relative); for the loss the
    # same absolute error against max|lse| (the loss is a difference lse - z_t and can be near 0).
    close(lse, LSE, 1e-5, "lse")
    assert abs(loss - LOSS) <= 1e-5 * max(1.0, np.abs(LSE).max()), (loss, LOSS)
    dz = k.cross_entropy_bwd(dev(backend, z), dev(backend, t), lse, 0.7)
    # probabilities as in softmax, plus: exp(z - lse) with lse rounded to float32 (ulp ~ 6e-8 * |lse|, i.e.
    # 6e-4 for logits ~ 1e4) moves every probability by that much relative; torch in float32 does the same
    # The error is absolute on the probability scale (p - 1 at the target cancels, leaving lse's rounding),
    # so the floor is the size of a probability times dloss / n_valid, not the largest entry of the result.
    tol = 1e-5 + 1.2e-7 * np.abs(LSE).max()
    n_valid = max(int((t != -100).sum()), 1)
    close(dz, r.cross_entropy_bwd(f64(z), t, LSE, 0.7), tol, "dlogits", floor=0.7 / n_valid)


@pytest.mark.parametrize("backend_name", ["numpy", "numba"])
def test_cross_entropy_at_bert_vocabulary_size(backend_name):
    """V = 30522, the vocabulary the MLM head runs at: lse, the loss and the probabilities recovered from
    dlogits against float64, on a handful of rows chosen to stress the float32 row sum."""
    V, u = 30522, 2.0**-24  # u: float32 unit roundoff
    rng = np.random.default_rng(27)
    z = rng.standard_normal((7, V))
    z[1] *= 5             # a few large terms and many tiny ones
    z[2, 123] += 15       # one term ~1 and 30521 terms of ~5e-7: the partial sum is rounded at every add
    z[3] = 2.5            # constant: exp(0) = 1 summed V times (exact in float32)
    z[4, V - 1] += 15     # the dominant term in the last column, where an 8-lane sum has its tail
    z[5] *= 0.01          # nearly uniform
    z = z.astype(np.float32)
    t = rng.integers(0, V, 7)
    t[2], t[4], t[6] = 123, V - 1, -100  # row 6 ignored
    n_valid = 6
    k, r = ops(backend_name, "cross_entropy"), ref("cross_entropy")
    loss, lse = k.cross_entropy_fwd(z, t)
    LOSS, LSE = r.cross_entropy_fwd(f64(z), t)
    # The sum of V exps in float32, 8 lanes of V/8 = 3815 serial adds each (NumPy's pairwise sum is more
    # accurate): the classic bound for a serial sum of n positive terms is (n - 1) u relative, 2.3e-4 here,
    # and it becomes an absolute error in lse = m + log(sum). Plus the fast exp (8e-8 relative) and the
    # rounding of log and of m + log (u each, relative to |lse| <= 40). Measured: <= 5.3e-5 (the z[2] row).
    tol = (V // 8 + 3) * u + 4 * u * max(1.0, float(np.abs(LSE).max()))
    assert_close(lse, LSE, atol=tol, rtol=0, name="lse at V = 30522")
    assert abs(loss - LOSS) <= tol, (loss, LOSS, tol)  # a float64 mean of lse_i - z_t: lse's error
    dz = f64(k.cross_entropy_bwd(z, t, lse, float(n_valid)))  # dloss = n_valid: dz = p - onehot(t)
    assert (dz[6] == 0).all()
    rows = np.flatnonzero(t != -100)
    p = dz[rows]
    p[np.arange(len(rows)), t[rows]] += 1.0  # the probabilities, back from dlogits
    P = np.exp(f64(z[rows]) - LSE[rows, None])
    # p = exp(z - lse): lse's error, plus z - lse rounded in float32 (|z - lse| < 32: 2e-6 relative) and the
    # fast exp; the subtraction of 1 at the target and its float32 rounding add u.
    tol_p = tol + 2.2e-6
    assert_close(p, P, atol=2 * u, rtol=tol_p, name="probabilities from dlogits")
    np.testing.assert_allclose(p.sum(1), 1.0, atol=tol_p)  # rows of p sum to 1: rows of dlogits to 0


def test_cross_entropy_all_ignored_is_zero(backend):
    z = np.random.default_rng(0).standard_normal((4, 9)).astype(np.float32)
    t = np.full(4, -100)
    k = ops(backend, "cross_entropy")
    loss, lse = k.cross_entropy_fwd(dev(backend, z), dev(backend, t))
    assert loss == 0.0
    assert (host(k.cross_entropy_bwd(dev(backend, z), dev(backend, t), lse, 1.0)) == 0).all()


# ---------------------------------------------------------------- adamw

@FIXTURE_OK
@given(st.data(), st.sampled_from([(1,), (7,), (3, 65), (1000, 13)]), st.sampled_from([0.0, 0.01]))
def test_adamw_matches_reference(backend, data, shape, wd):
    rng = rng_from(data.draw)
    p = rng.standard_normal(shape).astype(np.float32)
    m, v = np.zeros_like(p), np.zeros_like(p)
    P, M, Vv = f64(p).copy(), f64(m).copy(), f64(v).copy()
    pd, md, vd = dev(backend, p), dev(backend, m), dev(backend, v)
    for step in range(1, 4):
        g = rng.standard_normal(shape).astype(np.float32)
        ops(backend, "adamw").adamw_step(pd, dev(backend, g), md, vd, 1e-2, 0.9, 0.999, 1e-8, wd, step)
        ref("adamw").adamw_step(P, f64(g), M, Vv, 1e-2, 0.9, 0.999, 1e-8, wd, step)
    # 1e-6 absolute on |p| ~ 1: three updates of size <= lr = 1e-2, each exact to float32 rounding (~1e-9),
    # plus the rounding of p itself (6e-8 * |p|, |p| < 6)
    assert_close(host(pd), P, atol=1e-6, rtol=1e-6, name="param")
    assert_close(host(md), M, atol=1e-6, rtol=1e-6, name="m")
    assert_close(host(vd), Vv, atol=1e-6, rtol=1e-6, name="v")


def test_adamw_reference_matches_torch():
    torch = pytest.importorskip("torch", reason="torch (the test oracle) is not installed")
    rng = np.random.default_rng(3)
    p = rng.standard_normal((5, 6)).astype(np.float32)
    pt = torch.tensor(p.copy(), requires_grad=True)
    opt = torch.optim.AdamW([pt], lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1, foreach=False)
    m, v = np.zeros_like(p), np.zeros_like(p)
    for step in range(1, 6):
        g = rng.standard_normal(p.shape).astype(np.float32)
        pt.grad = torch.tensor(g)
        opt.step()
        ops("numba", "adamw").adamw_step(p, g, m, v, 1e-2, 0.9, 0.999, 1e-8, 0.1, step)
    # 1e-6: same formula in the same order, both float32; only the rounding of the scalar folding differs
    assert_close(p, pt.detach().numpy(), atol=1e-6, rtol=1e-6, name="param vs torch")


# ---------------------------------------------------------------- every numbered version, and the registries

def _cases(rng, N=37, L=65):
    x = rng.standard_normal((N, L)).astype(np.float32)
    mask = rng.random((N, L)) > 0.3
    mask[3] = False
    w, b = rng.standard_normal(L).astype(np.float32), rng.standard_normal(L).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    t = rng.integers(0, L, N)
    t[::4] = -100
    _, mean, rstd = ref("layernorm").layernorm_fwd(x, w, b, 1e-5)
    y = ref("softmax").softmax_fwd(x, mask)
    lse = ref("cross_entropy").cross_entropy_fwd(x, t)[1]
    return {
        "softmax_fwd": (x, mask),
        "softmax_bwd": (y, dy),
        "layernorm_fwd": (x, w, b, 1e-5),
        "layernorm_bwd": (dy, x, w, mean, rstd),
        "gelu_fwd": (x,),
        "gelu_bwd": (x, dy),
        "gelu_tanh_fwd": (x,),
        "gelu_tanh_bwd": (x, dy),
        "cross_entropy_fwd": (x, t),
        "cross_entropy_bwd": (x, t, lse, 1.5),
    }


@pytest.mark.parametrize("family", FAMILIES)
def test_every_version_matches_reference(family):
    cpu, r = ops("numba", family), ref(family)
    args = _cases(np.random.default_rng(7))
    for fn, versions in cpu.VERSIONS.items():
        for name, version in versions.items():
            if fn == "adamw_step":
                rng = np.random.default_rng(0)
                p, g = rng.standard_normal((2, 300)).astype(np.float32)
                m, v = np.zeros_like(p), np.zeros_like(p)
                P, M, V = f64(p), f64(m), f64(v)
                version(p, g, m, v, 1e-2, 0.9, 0.999, 1e-8, 0.01, 1)
                r.adamw_step(P, f64(g), M, V, 1e-2, 0.9, 0.999, 1e-8, 0.01, 1)
                got, want = (p, m, v), (P, M, V)
            else:
                a = args[fn]
                got = version(*a)
                want = getattr(r, fn)(*(f64(t) if isinstance(t, np.ndarray) and t.dtype == np.float32 else t for t in a))
            got = got if isinstance(got, tuple) else (got,)
            want = want if isinstance(want, tuple) else (want,)
            for i, (g_, w_) in enumerate(zip(got, want)):
                if isinstance(w_, float):
                    assert abs(g_ - w_) < 1e-5 * max(1, abs(w_)), (fn, name)  # loss: see the CE test
                else:
                    close(g_, w_, 5e-5, f"{family}.{fn}.{name}[{i}]")  # the loosest tolerance used above,
                    # naive versions (serial float32 sums) sit at the edge of it for 65-term rows


def _run_every_version(family, args):
    """{(function, version): outputs} of every numbered Numba version on the same inputs (fresh copies)."""
    out = {}
    for fn, versions in ops("numba", family).VERSIONS.items():
        for name, version in versions.items():
            if fn == "adamw_step":  # in place: p, m, v are the outputs
                p, g = (a.copy() for a in args["adamw"])
                m, v = np.full_like(p, 0.1), np.full_like(p, 0.2)
                version(p, g, m, v, 1e-2, 0.9, 0.999, 1e-8, 0.01, 3)
                got = (p, m, v)
            else:
                got = version(*args[fn])
            out[fn, name] = got if isinstance(got, tuple) else (got,)
    return out


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2,
                    reason="needs at least 2 Numba threads (NUMBA_NUM_THREADS, default: the CPU count) to vary them")
@pytest.mark.parametrize("family", FAMILIES)
def test_every_version_is_bitwise_identical_at_1_and_2_threads(family):
    """The Numba kernels promise results independent of the thread count (fixed per-row / per-chunk work and
    fixed reduction orders, e.g. layer norm's backward sums dweight over fixed chunks of 32 rows): run every
    version with 1 and with 2 threads and compare bit for bit. 1000 rows, so that prange really splits them."""
    rng = np.random.default_rng(3)
    args = _cases(rng, N=1000, L=129)
    args["adamw"] = rng.standard_normal((2, 200_000)).astype(np.float32)  # 4 tasks of CHUNK = 65536
    previous = numba.get_num_threads()
    try:
        results = {}
        for n in (1, 2):
            numba.set_num_threads(n)
            results[n] = _run_every_version(family, args)
    finally:
        numba.set_num_threads(previous)
    for key, one in results[1].items():
        for i, (a, b) in enumerate(zip(one, results[2][key])):
            np.testing.assert_array_equal(a, b, err_msg=f"{family} {key} output {i}: 1 vs 2 threads")


@pytest.mark.parametrize("family", FAMILIES)
def test_registry_matches_docstring(family):
    """The versions listed in cpu.py's docstring are exactly the keys of VERSIONS, per contract function."""
    cpu = ops("numba", family)
    listed, current = {}, []
    for line in cpu.__doc__.splitlines():
        names = [n.strip() for n in line.split("/")]
        if line.startswith("    ") and all(n in cpu.VERSIONS for n in names):  # heading, e.g. "gelu_fwd / gelu_bwd"
            current = names
        m = re.match(r"^ {8}(v\d+)  ", line)  # a version line under the current heading
        if m:
            for fn in current:
                listed.setdefault(fn, set()).add(m.group(1))
    assert listed == {fn: set(v) for fn, v in cpu.VERSIONS.items()}


# ---------------------------------------------------------------- bad input

def test_bad_inputs_numba():
    k = {f: ops("numba", f) for f in FAMILIES}
    x64 = np.random.default_rng(0).standard_normal((4, 6))
    y = k["softmax"].softmax_fwd(x64)  # float64 -> converted to float32
    assert y.dtype == np.float32
    close(y, ref("softmax").softmax_fwd(x64), 1e-5, "float64 input")
    close(k["softmax"].softmax_fwd(np.arange(6).reshape(2, 3)), ref("softmax").softmax_fwd(np.arange(6.0).reshape(2, 3)),
          1e-5, "int input")
    nc = np.asfortranarray(x64.astype(np.float32))[:, ::2]  # non-contiguous view
    close(k["gelu"].gelu_fwd(nc), ref("gelu").gelu_fwd(f64(nc)), 1e-5, "non-contiguous")
    with pytest.raises(ValueError, match="softmax_fwd.*mask"):
        k["softmax"].softmax_fwd(x64, np.ones((3, 6), bool))
    with pytest.raises(ValueError, match="softmax_fwd.*real numbers"):
        k["softmax"].softmax_fwd(np.array([["a", "b"]]))
    with pytest.raises(ValueError, match=r"softmax_bwd.*\(4, 6\).*\(4, 5\)"):
        k["softmax"].softmax_bwd(x64, x64[:, :5])
    with pytest.raises(ValueError, match="layernorm_fwd.*weight"):
        k["layernorm"].layernorm_fwd(x64, np.ones(5), np.ones(6), 1e-5)
    with pytest.raises(ValueError, match="layernorm_bwd"):
        k["layernorm"].layernorm_bwd(x64, x64, np.ones(6), np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="gelu_bwd"):
        k["gelu"].gelu_bwd(x64, x64.T)
    with pytest.raises(ValueError, match="gelu_tanh_bwd"):
        k["gelu"].gelu_tanh_bwd(x64, x64.T)
    close(k["gelu"].gelu_tanh_fwd(nc), ref("gelu").gelu_tanh_fwd(f64(nc)), 1e-5, "non-contiguous")
    with pytest.raises(ValueError, match=r"cross_entropy_fwd.*targets\[1\] = 6"):
        k["cross_entropy"].cross_entropy_fwd(x64, np.array([0, 6, 1, -100]))
    with pytest.raises(ValueError, match="cross_entropy_fwd.*integers"):
        k["cross_entropy"].cross_entropy_fwd(x64, np.zeros(4))
    with pytest.raises(ValueError, match="cross_entropy_bwd.*lse"):
        k["cross_entropy"].cross_entropy_bwd(x64, np.zeros(4, int), np.zeros(3), 1.0)
    p = np.zeros(5, np.float32)
    with pytest.raises(ValueError, match="adamw_step.*float32"):
        k["adamw"].adamw_step(p.astype(np.float64), p, p, p, 1e-3, 0.9, 0.999, 1e-8, 0.0, 1)
    with pytest.raises(ValueError, match="adamw_step.*shape"):
        k["adamw"].adamw_step(p, p[:4], p, p, 1e-3, 0.9, 0.999, 1e-8, 0.0, 1)
    with pytest.raises(ValueError, match="adamw_step.*1-based"):
        k["adamw"].adamw_step(p, p, p.copy(), p.copy(), 1e-3, 0.9, 0.999, 1e-8, 0.0, 0)


# ---------------------------------------------------------------- the comparison helper itself

def test_assert_close_treats_nan_and_inf_strictly():
    """NaN never matches unless asked for; an infinity matches only the same infinity."""
    nan, inf = np.nan, np.inf
    assert_close(np.array([1.0, -inf, inf]), np.array([1.0, -inf, inf]))  # equal infinities match
    assert_close(np.array([nan, 2.0]), np.array([nan, 2.0]), equal_nan=True)
    for got, want in [([nan], [nan]), ([nan], [1.0]), ([1.0], [nan]),
                      ([1.0], [inf]), ([inf], [1.0]), ([-inf], [inf]), ([inf], [nan])]:
        with pytest.raises(AssertionError, match="differ"):
            assert_close(np.array(got), np.array(want), atol=1e-3, rtol=1e-3, name=f"{got} vs {want}")
    with pytest.raises(AssertionError, match="equal_nan=True"):  # the message says what to do
        assert_close(np.array([nan, 1.0]), np.array([nan, 1.0]))
    assert_close(np.array([nan, 1.0]), np.array([0.0, 1.0]), mask=np.array([False, True]))  # masked: skipped


# ---------------------------------------------------------------- reference backward vs finite differences

def _fd(f, x, h=1e-6):
    """Central differences of the scalar f at x (float64): error O(h^2 f''') + O(eps / h) ~ 1e-9."""
    return central_differences(f, x, h)


FD_TOL = dict(atol=1e-7, rtol=1e-6)  # central differences with h = 1e-6 in float64 are good to ~1e-9


def test_finite_differences_reference():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 5))
    c = rng.standard_normal((3, 5))  # loss = sum(c * f(x)) so that dy = c
    mask = np.array([[1, 1, 0, 1, 1], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], bool)
    sm = ref("softmax")
    y = sm.softmax_fwd(x, mask)
    assert_close(sm.softmax_bwd(y, c), _fd(lambda: (c * sm.softmax_fwd(x, mask)).sum(), x), **FD_TOL, name="softmax")

    ln = ref("layernorm")
    w, b = rng.standard_normal(5), rng.standard_normal(5)
    _, mean, rstd = ln.layernorm_fwd(x, w, b, 1e-5)
    dx, dw, db = ln.layernorm_bwd(c, x, w, mean, rstd)
    loss = lambda: (c * ln.layernorm_fwd(x, w, b, 1e-5)[0]).sum()  # noqa: E731
    assert_close(dx, _fd(loss, x), **FD_TOL, name="layernorm dx")
    assert_close(dw, _fd(loss, w), **FD_TOL, name="layernorm dweight")
    assert_close(db, _fd(loss, b), **FD_TOL, name="layernorm dbias")

    ge = ref("gelu")
    assert_close(ge.gelu_bwd(x, c), _fd(lambda: (c * ge.gelu_fwd(x)).sum(), x), **FD_TOL, name="gelu")
    xt = 3 * x  # wider than N(0, 1), so the cubic term of u matters
    assert_close(ge.gelu_tanh_bwd(xt, c), _fd(lambda: (c * ge.gelu_tanh_fwd(xt)).sum(), xt), **FD_TOL, name="gelu_tanh")

    ce = ref("cross_entropy")
    t = np.array([4, -100, 0])
    _, lse = ce.cross_entropy_fwd(x, t)
    assert_close(ce.cross_entropy_bwd(x, t, lse, 2.5), _fd(lambda: 2.5 * ce.cross_entropy_fwd(x, t)[0], x),
                 **FD_TOL, name="cross_entropy")

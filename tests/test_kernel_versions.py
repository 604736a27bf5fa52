"""Every numbered Numba version of the elementwise and row-wise kernels, one by one, and how they compile.

tests/test_kernels_rowwise.py tests the version each family hands the engine (property tests over backends) and
runs every version once on one input. Here each numbered version gets the family's hypothesis test itself (odd
shapes, size 1, huge and tiny values), the GELU versions an exhaustive sweep of the float32 range where their
error is largest, and the engine's kernels a look at their machine code: a loop that was meant to vectorize
must not load through gathers (the way GELU v2 lost 80% of its speed without any test noticing).
"""
import importlib
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from kernels.testing import assert_close
from tests.strategies import ODD_DIMS, SMALL_DIMS, arrays, layernorm_case, masks, rng_from

FIXTURE_OK = settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
cpu = {f: importlib.import_module(f"kernels.{f}.cpu") for f in ("gelu", "layernorm", "softmax", "adamw")}
ref = {f: importlib.import_module(f"kernels.{f}.reference") for f in ("gelu", "layernorm", "softmax", "adamw")}
f64 = lambda a: np.asarray(a, np.float64)  # noqa: E731


def close(got, want, tol, name, floor=0.0):
    """Norm-relative, as in test_kernels_rowwise.py: |got - want| <= tol * (|want| + max(max|want|, floor))."""
    want = np.asarray(want, np.float64)
    scale = max(float(np.abs(want).max(initial=0.0)), floor, 1e-30)
    assert_close(np.asarray(got), want, atol=tol * scale, rtol=tol, name=name)


# ---------------------------------------------------------------- GELU


@pytest.mark.parametrize("form, version", [(form, v) for form in ("gelu", "gelu_tanh")
                                            for v in sorted(cpu["gelu"].VERSIONS[f"{form}_fwd"])])
@FIXTURE_OK
@given(data=st.data(), n=SMALL_DIMS, L=ODD_DIMS)
def test_gelu_version_matches_reference(form, version, data, n, L):
    x = data.draw(arrays((n, L)))
    dy = rng_from(data.draw).standard_normal(x.shape).astype(np.float32)
    fwd, bwd = cpu["gelu"].VERSIONS[f"{form}_fwd"][version], cpu["gelu"].VERSIONS[f"{form}_bwd"][version]
    ref_fwd, ref_bwd = getattr(ref["gelu"], f"{form}_fwd"), getattr(ref["gelu"], f"{form}_bwd")
    # The tolerances of test_kernels_rowwise.py's GELU tests (atol 1e-6 + rtol 2e-5; why, see there); v5's
    # rational erf uses 92% of them at worst, found by the sweep below.
    assert_close(fwd(x), ref_fwd(f64(x)), atol=1e-6, rtol=2e-5, name=f"{form}_fwd {version}")
    assert_close(bwd(x, dy), ref_bwd(f64(x), f64(dy)), atol=1e-6, rtol=2e-5, name=f"{form}_bwd {version}")


def _every_float32(lo, hi):
    """Every float32 in [lo, hi] for 0 < lo < hi, as an array (from their consecutive bit patterns)."""
    a, b = np.array([lo, hi], np.float32).view(np.int32)
    return np.arange(a, b + 1, dtype=np.int32).view(np.float32)


@pytest.mark.parametrize("version", [v for v in sorted(cpu["gelu"].VERSIONS["gelu_fwd"]) if v != "v1"])
def test_gelu_version_on_every_float32_of_the_negative_tail(version):
    """Every float32 x in [-5.7, -3.9]: where x Phi(x) is 1e-4 .. 1e-8, an absolute error in Phi is not
    scaled down by a small result, and the rational erf of v5 makes its largest error relative to the test's
    tolerance (92%). A sampled test can miss a narrow bad spot; these 3.8 M points cannot. (v1's libm erf is
    exact here but 1 + erf cancels; it is the accuracy baseline, not a candidate.)"""
    x = -_every_float32(3.9, 5.7)
    want, dwant = ref["gelu"].gelu_fwd(f64(x)), ref["gelu"].gelu_bwd(f64(x), np.ones(x.shape))
    assert np.abs(want).max() < 2e-4  # the range is the tail it claims to be
    fwd, bwd = cpu["gelu"].VERSIONS["gelu_fwd"][version], cpu["gelu"].VERSIONS["gelu_bwd"][version]
    # the property test's tolerances, atol 1e-6 + rtol 2e-5 (see test_kernels_rowwise.py)
    assert_close(fwd(x), want, atol=1e-6, rtol=2e-5, name=f"gelu_fwd {version}")
    assert_close(bwd(x, np.ones_like(x)), dwant, atol=1e-6, rtol=2e-5, name=f"gelu_bwd {version}")


@pytest.mark.parametrize("version", [v for v in sorted(cpu["gelu"].VERSIONS["gelu_fwd"]) if v != "v1"])
def test_gelu_version_edges(version):
    """Signed zeros, tiny, huge and infinite inputs, the clamp of v5's erf (|x| = 4 sqrt 2 = 5.657); NaN stays NaN."""
    x = np.array([0.0, -0.0, 1e-30, -1e-30, 5.65, -5.65, 5.66, -5.66, 40.0, -40.0, 1e30, -1e30, np.inf, np.nan],
                 np.float32)
    fwd, bwd = cpu["gelu"].VERSIONS["gelu_fwd"][version], cpu["gelu"].VERSIONS["gelu_bwd"][version]
    y, dx = fwd(x), bwd(x, np.ones_like(x))
    np.testing.assert_array_equal(y[[8, 10, 12]], x[[8, 10, 12]])  # large positive x: Phi = 1, y = x exactly
    np.testing.assert_array_equal(y[[9, 11]], 0.0)                  # large negative x: y = (-)0 exactly
    np.testing.assert_array_equal(dx[[8, 9, 10, 11]], [1, 0, 1, 0])  # (at +inf, x phi(x) = inf * 0: NaN, as in
    # the reference)
    assert np.isnan(y[13]) and np.isnan(dx[13])
    # the property test's tolerances, atol 1e-6 + rtol 2e-5 (see test_kernels_rowwise.py)
    assert_close(y[:12], ref["gelu"].gelu_fwd(f64(x[:12])), atol=1e-6, rtol=2e-5, name=f"gelu_fwd {version}")
    assert_close(dx[:12], ref["gelu"].gelu_bwd(f64(x[:12]), np.ones(12)), atol=1e-6, rtol=2e-5,
                 name=f"gelu_bwd {version}")


# ---------------------------------------------------------------- layer norm
# The property tests of test_kernels_rowwise.py, run on each numbered version (tolerances and their reasons:
# see there).


@pytest.mark.parametrize("version", sorted(cpu["layernorm"].VERSIONS["layernorm_fwd"]))
@FIXTURE_OK
@given(data=st.data(), a=SMALL_DIMS, b=SMALL_DIMS, C=ODD_DIMS, eps=st.sampled_from([1e-12, 1e-5]))
def test_layernorm_version_matches_reference(version, data, a, b, C, eps):
    x, w, bias, dy = layernorm_case(data, (a, b, C))
    fwd, bwd = cpu["layernorm"].VERSIONS["layernorm_fwd"][version], cpu["layernorm"].VERSIONS["layernorm_bwd"][version]
    y, mean, rstd = fwd(x, w, bias, eps)
    Y, M, R = ref["layernorm"].layernorm_fwd(f64(x), f64(w), f64(bias), eps)
    for got, want, name in ((y, Y, "y"), (mean, M, "mean"), (rstd, R, "rstd")):
        close(got, want, 2e-4, f"layernorm {name} {version}")  # 2e-4 norm-relative: see test_kernels_rowwise.py
    dx, dw, db = bwd(dy, x, w, mean, rstd)
    DX, DW, DB = ref["layernorm"].layernorm_bwd(f64(dy), f64(x), f64(w), M, R)
    xhat = (f64(x) - M[..., None]) * R[..., None]
    close(dx, DX, 2e-4, f"layernorm dx {version}", floor=R.max() * np.abs(dy * w).max())
    close(dw, DW, 2e-4, f"layernorm dweight {version}", floor=np.abs(dy * xhat).sum((0, 1)).max())
    close(db, DB, 2e-4, f"layernorm dbias {version}", floor=np.abs(dy).sum((0, 1)).max())


@pytest.mark.parametrize("version", sorted(cpu["layernorm"].VERSIONS["layernorm_fwd"]))
@FIXTURE_OK
@given(data=st.data(), n=SMALL_DIMS, C=st.sampled_from([1, 7, 64, 127, 384, 768]))
def test_layernorm_version_near_constant_rows_match_float64(version, data, n, C):
    """Rows a few ulps to 1e-5 wide at eps = 1e-12, where any rounding of the mean shows (see rowwise)."""
    x = data.draw(arrays((n, C), kind="near_constant"))
    rng = rng_from(data.draw)
    w, b = rng.standard_normal(C).astype(np.float32), rng.standard_normal(C).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    fwd, bwd = cpu["layernorm"].VERSIONS["layernorm_fwd"][version], cpu["layernorm"].VERSIONS["layernorm_bwd"][version]
    y, mean, rstd = fwd(x, w, b, 1e-12)
    _, M, R = ref["layernorm"].layernorm_fwd(f64(x), f64(w), f64(b), 1e-12)
    xc = f64(x) - f64(x).mean(-1, keepdims=True)  # layer norm from its definition, in float64
    want = xc / np.sqrt((xc * xc).mean(-1, keepdims=True) + 1e-12) * f64(w) + f64(b)
    close(y, want, 1e-5, f"layernorm y {version}")  # 1e-5 norm-relative: test_kernels_rowwise.py says why
    close(rstd, R, 1e-5, f"layernorm rstd {version}")
    dx, dw, _ = bwd(dy, x, w, mean, rstd)
    DX, DW, _ = ref["layernorm"].layernorm_bwd(f64(dy), f64(x), f64(w), M, R)
    close(dx, DX, 1e-5, f"layernorm dx {version}")
    xhat = (f64(x) - M[:, None]) * R[:, None]
    close(dw, DW, 1e-5, f"layernorm dweight {version}", floor=np.abs(dy * xhat).sum(0).max())


@pytest.mark.parametrize("version", sorted(cpu["layernorm"].VERSIONS["layernorm_fwd"]))
def test_layernorm_version_constant_rows_give_the_bias_exactly(version):
    C = 384
    x = np.repeat(np.array([3.3, 0.7, -1.1, 0.0, 1e-20, 123456.7, -3e5], np.float32)[:, None], C, axis=1)
    rng = np.random.default_rng(5)
    w, b = rng.standard_normal(C).astype(np.float32), rng.standard_normal(C).astype(np.float32)
    y, mean, rstd = cpu["layernorm"].VERSIONS["layernorm_fwd"][version](x, w, b, 1e-12)
    np.testing.assert_array_equal(y, np.broadcast_to(b, y.shape))
    _, dw, _ = cpu["layernorm"].VERSIONS["layernorm_bwd"][version](rng.standard_normal(x.shape), x, w, mean, rstd)
    np.testing.assert_array_equal(dw, 0.0)


# ---------------------------------------------------------------- softmax


@pytest.mark.parametrize("version", sorted(cpu["softmax"].VERSIONS["softmax_bwd"]))
@FIXTURE_OK
@given(data=st.data(), n=SMALL_DIMS, L=st.one_of(ODD_DIMS, st.sampled_from([128, 384, 769])), masked=st.booleans())
def test_softmax_bwd_version_matches_reference(version, data, n, L, masked):
    x = data.draw(arrays((n, L)))
    mask = data.draw(masks((n, L))) if masked else None
    y = ref["softmax"].softmax_fwd(f64(x), mask).astype(np.float32)  # rows of probabilities, some all 0
    dy = (rng_from(data.draw).standard_normal((n, L)) * data.draw(st.sampled_from([1e-6, 1.0, 1e4])))
    dy = dy.astype(np.float32)
    dx = cpu["softmax"].VERSIONS["softmax_bwd"][version](y, dy)
    # test_kernels_rowwise.py's bounds: one dot of L float32 terms, each at most max|dy| (y <= 1)
    close(dx, ref["softmax"].softmax_bwd(f64(y), f64(dy)), 1e-5, f"softmax_bwd {version}", floor=np.abs(dy).max())
    kept = y.sum(-1) > 0
    np.testing.assert_allclose(dx.sum(-1)[kept], 0.0, atol=1e-5 * max(1.0, np.abs(dy).max()) * (1 + L / 8))
    assert (dx[~kept] == 0).all()


# ---------------------------------------------------------------- AdamW


@pytest.mark.parametrize("version", sorted(cpu["adamw"].VERSIONS["adamw_step"]))
@FIXTURE_OK
@given(data=st.data(), shape=st.sampled_from([(1,), (7,), (3, 65), (1000, 13), (70001,)]),
       wd=st.sampled_from([0.0, 0.01]), scale=st.sampled_from([1e-6, 1.0, 1e4]))
def test_adamw_version_matches_reference(version, data, shape, wd, scale):
    """(70001,): two prange chunks of 65536, the second one short."""
    rng = rng_from(data.draw)
    p = rng.standard_normal(shape).astype(np.float32)
    m, v = np.zeros_like(p), np.zeros_like(p)
    P, M, V = f64(p), f64(m), f64(v)
    for step in range(1, 4):
        g = (rng.standard_normal(shape) * scale).astype(np.float32)
        cpu["adamw"].VERSIONS["adamw_step"][version](p, g, m, v, 1e-2, 0.9, 0.999, 1e-8, wd, step)
        ref["adamw"].adamw_step(P, f64(g), M, V, 1e-2, 0.9, 0.999, 1e-8, wd, step)
    # test_kernels_rowwise.py's AdamW tolerances (1e-6 absolute and relative, why: see there); m and v scale
    # with the gradient (v with its square), so their absolute floor is scaled with them
    assert_close(p, P, atol=1e-6, rtol=1e-6, name=f"param {version}")
    assert_close(m, M, atol=1e-6 * scale, rtol=1e-6, name=f"m {version}")
    assert_close(v, V, atol=1e-6 * scale**2, rtol=1e-6, name=f"v {version}")


# ---------------------------------------------------------------- machine code


def _host_has_avx2():
    try:
        import llvmlite.binding as ll

        return "+avx2" in ll.get_host_cpu_features().flatten()
    except Exception:  # an llvmlite without the query: treat as unknown
        return False


def _compiled_kernels(wrapper):
    """The Numba dispatchers a contract function's Python wrapper calls (found in its closure)."""
    from numba.core.registry import CPUDispatcher

    cells = [c.cell_contents for c in (wrapper.__closure__ or ())]
    return [c for c in cells if isinstance(c, CPUDispatcher)]


def _fresh_asm(dispatcher):
    """The assembly of a dispatcher's first signature, compiled anew: Numba shows no asm for code it loaded from
    its on-disk cache, so the Python function is compiled again here with the same options but no cache."""
    from numba import njit

    opts = {k: v for k, v in dispatcher.targetoptions.items() if k not in ("cache", "nopython")}
    sig = dispatcher.signatures[0]
    fresh = njit(**opts)(dispatcher.py_func)
    fresh.compile(sig)
    return fresh.inspect_asm(sig)


GATHER_SCATTER = re.compile(r"\bv(p?gather|p?scatter)\w*")
PACKED_ARITHMETIC = re.compile(r"\bv(mul|add|sub|div|sqrt|fn?m(add|sub)\d+)ps\s[^\n]*%[yz]mm")
_x = np.ones(100, np.float32)
ELEMENTWISE = [("gelu", "gelu_fwd", (_x,)), ("gelu", "gelu_bwd", (_x, _x)),
               ("gelu", "gelu_tanh_fwd", (_x,)), ("gelu", "gelu_tanh_bwd", (_x, _x)),
               ("adamw", "adamw_step", (_x.copy(), _x, _x.copy(), _x.copy(), 1e-3, 0.9, 0.999, 1e-8, 0.01, 1))]


@pytest.mark.skipif(not _host_has_avx2(), reason="gathers exist from AVX2 on; without AVX2 there is nothing to find")
@pytest.mark.parametrize("family,fn,args", ELEMENTWISE, ids=[e[1] for e in ELEMENTWISE])
def test_engine_elementwise_kernels_vectorize_without_gathers(family, fn, args):
    """A contiguous elementwise loop must compile to packed arithmetic with plain vector loads and stores. AdamW
    v1 did not vectorize at all; GELU v2 did, but an index LLVM cannot prove
    non-negative (e.g. `for i in range(k * CHUNK, ...)` over the whole array) keeps Numba's negative-index
    wraparound in the loop, and the vectorizer then falls back to vgatherqps / vscatterqps: GELU v2 ran at 20%
    of the copy bandwidth that way. Fails on GELU v2 and AdamW v1 (checked), passes on chunk views indexed from 0."""
    wrapper = getattr(cpu[family], fn)
    wrapper(*args)  # make sure each kernel has its signature
    kernels = _compiled_kernels(wrapper)
    assert kernels, f"{fn}: no Numba kernel found in the wrapper's closure"
    for k in kernels:
        asm = _fresh_asm(k)
        assert PACKED_ARITHMETIC.search(asm), f"{fn} ({k.py_func.__name__}) did not vectorize: no packed float " \
                                              "arithmetic on ymm/zmm registers"
        found = sorted(set(m.group(0) for m in GATHER_SCATTER.finditer(asm)))
        assert not found, f"{fn} ({k.py_func.__name__}) loads/stores through {found}: an index the vectorizer " \
                          "cannot prove >= 0? index a chunk's view from 0"

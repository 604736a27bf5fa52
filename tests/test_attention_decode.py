"""attention_decode_fwd (one query against a key/value cache) on every backend against the float64 reference,
and the reference against the contract's attention_fwd: the decode kernel is attention with Tq = 1, where
the causal mask, aligned bottom-right, hides nothing."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from kernels.attention import decode_kernel, reference
from kernels.testing import assert_close
from tests.strategies import rng_from
from tests.test_kernels_attention import device, host

# Cache lengths around the 8-wide partial sums of the dot product and odd ones; head sizes below, at and
# past 8 (the dot's tail loop) and GPT-2's 64.
CACHE = st.sampled_from([1, 2, 7, 8, 9, 33, 136, 257])
HEAD = st.sampled_from([1, 3, 8, 13, 64])
FIXTURE_OK = settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@st.composite
def decode_problems(draw):
    """q (B, H, 1, D), a cache k, v (B, H, Tk, D) and its mask: none, a written prefix (what a cache with
    capacity Tk holds after L < Tk positions), left padding plus a prefix (a padded batch), random holes, or
    a row that sees nothing."""
    rng = rng_from(draw)
    B, H, Tk, D = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(CACHE), draw(HEAD)
    s = draw(st.sampled_from([0.3, 1.0, 3.0]))    # 3.0: scores up to ~50 with D = 64, sharp rows
    q = (rng.standard_normal((B, H, 1, D)) * s).astype(np.float32)
    k, v = ((rng.standard_normal((B, H, Tk, D)) * s).astype(np.float32) for _ in range(2))
    kind = draw(st.sampled_from(["none", "prefix", "padded", "random", "empty_row"]))
    j = np.arange(Tk)[None, :]
    if kind == "none":
        mask = None
    elif kind == "prefix":
        mask = np.broadcast_to(j < draw(st.integers(1, Tk)), (B, Tk)).copy()
    elif kind == "padded":
        length = draw(st.integers(1, Tk))
        mask = (j < length) & (j >= rng.integers(0, length, (B, 1)))
    elif kind == "random":
        mask = rng.random((B, Tk)) < 0.6
    else:
        mask = rng.random((B, Tk)) < 0.6
        mask[rng.integers(0, B)] = False
    return q, k, v, mask


@FIXTURE_OK
@given(decode_problems())
def test_decode_kernel_matches_float64_reference(backend, problem):
    q, k, v, mask = problem
    out, lse = (host(a) for a in decode_kernel(backend)(*device(backend, q, k, v, mask)))
    want_out, want_lse = reference.attention_decode_fwd(*(a.astype(np.float64) for a in (q, k, v)), mask)
    assert out.dtype == np.float32 and out.shape == q.shape and lse.shape == q.shape[:3]
    # Norm-relative, as tests/test_kernels_attention.py argues: float32 sums of D <= 64 products and of
    # Tk <= 257 weighted values err by ~(D + Tk) * 6e-8 of the largest term, times the conditioning of rows
    # with scores up to ~50: below 2e-5 of the largest entry; 1e-4 leaves 5x, an indexing bug errs by O(1).
    for name, got, want in (("out", out, want_out), ("lse", lse, want_lse)):
        bound = 1e-4 * max(1.0, float(np.abs(want[np.isfinite(want)]).max(initial=0.0)))
        assert_close(got, want, atol=bound, rtol=0, name=f"{backend} {name}")


@given(decode_problems())
def test_decode_reference_is_attention_with_one_query(problem):
    """With one query, causal=True (bottom-right: query 0 sees keys j <= Tk - 1) hides nothing, so decode,
    the contract's attention_fwd without and with the causal mask all agree, in float64."""
    q, k, v = (a.astype(np.float64) for a in problem[:3])
    mask = problem[3]
    got = reference.attention_decode_fwd(q, k, v, mask)
    for causal in (False, True):
        want = reference.attention_fwd(q, k, v, mask, causal=causal)
        for g, w, name in zip(got, want, ("out", "lse")):
            # float64, the same operations in the same order: only the last bits may differ
            assert_close(g, w, atol=1e-12, rtol=1e-12, name=f"{name} (causal={causal})")


def test_a_query_that_sees_nothing_gives_zero_and_minus_inf(backend):
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal(s).astype(np.float32) for s in ((2, 2, 1, 8), (2, 2, 5, 8), (2, 2, 5, 8)))
    mask = np.array([[False] * 5, [True, False, True, False, False]])
    out, lse = (host(a) for a in decode_kernel(backend)(*device(backend, q, k, v, mask)))
    assert np.all(out[0] == 0) and np.all(lse[0] == -np.inf)
    assert np.all(np.isfinite(out[1])) and np.all(np.isfinite(lse[1]))


def test_the_numba_kernel_never_reads_a_masked_key():
    """NaN in masked positions (memory a cache has not written) must not reach the output. (The reference
    multiplies the whole matrix, where 0 * NaN is NaN: that is why a cache's buffers start as zeros.)"""
    backend = "numba"
    rng = np.random.default_rng(1)
    q = rng.standard_normal((1, 2, 1, 8)).astype(np.float32)
    k, v = (rng.standard_normal((1, 2, 6, 8)).astype(np.float32) for _ in range(2))
    mask = np.array([[True, True, True, False, False, False]])
    k[:, :, 3:], v[:, :, 3:] = np.nan, np.nan
    out, _ = (host(a) for a in decode_kernel(backend)(*device(backend, q, k, v, mask)))
    want, _ = reference.attention_decode_fwd(q, k[:, :, :3], v[:, :, :3])
    # float32, at most 3 keys: a few ulps of values of size ~1
    assert_close(out, want, atol=1e-6, rtol=1e-5, name="out")


def test_the_decode_kernel_refuses_several_queries_and_names_the_alternative(backend):
    q = np.zeros((1, 1, 2, 4), np.float32)
    k = np.zeros((1, 1, 3, 4), np.float32)
    with pytest.raises(ValueError, match=r"\(B, H, 1, D\).*attention_fwd"):
        decode_kernel(backend)(*device(backend, q, k, k))
    with pytest.raises(ValueError, match="unknown kernel backend"):
        decode_kernel("torch")

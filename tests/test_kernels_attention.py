"""Attention kernels: every backend and every numbered Numba version against the float64 reference.

The reference (kernels/attention/reference.py) runs in float64 on the same float32 inputs; backends run in
float32. Tolerances are norm-relative where stated: float32 sums of D products (scores) and of Tk weighted
values (outputs) err by ~(D + Tk) * 6e-8 of their largest term, not of each entry, so an error is compared
with rtol * max|want|. Also: properties (causal attention never reads the future; rows that see nothing
give 0 / -inf / zero gradients, never NaN), the reference against PyTorch's SDPA and against central
finite differences, the version registry against the docstring, bad inputs, and run-to-run determinism.
Last, what v4 stands on: kernels/blas.py (sgemm and transpose against NumPy, the thread count, the
fallback to v3 where it cannot load) and v4's Numba softmax pieces (against float64, and their asm).
"""
import importlib
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from gradcheck import central_differences
from kernels import blas
from kernels.attention import cpu, reference
from kernels.testing import assert_close
from tests.strategies import rng_from

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NEEDS_BLAS = pytest.mark.skipif(not blas.AVAILABLE, reason=f"v4 is not registered here: {blas.WHY_NOT}")

MODULE = {"numpy": "reference", "numba": "cpu", "cupy": "gpu"}
# Sequence lengths around the Numba tiles (64 keys, 128 query lanes): 1, odd, exact multiples and one past.
SEQ = st.sampled_from([1, 2, 5, 17, 63, 64, 65, 129])
HEAD = st.sampled_from([1, 3, 8, 32, 33])


def ops(backend):
    """The attention module of a backend (not kernels.get: the other families need not be importable)."""
    return importlib.import_module(f"kernels.attention.{MODULE[backend]}")


def host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def device(backend, *arrays):
    if backend != "cupy":
        return arrays
    import cupy

    return tuple(None if a is None else cupy.asarray(a) for a in arrays)


@st.composite
def problems(draw, max_b=2, max_h=2):
    """A random attention problem: float32 q, k, v, dout; an optional key mask (sometimes with a fully
    masked batch row); causal or not; Tq and Tk drawn independently so causal Tq != Tk is covered."""
    rng = rng_from(draw)
    B, H = draw(st.integers(1, max_b)), draw(st.integers(1, max_h))
    Tq, Tk, D = draw(SEQ), draw(SEQ), draw(HEAD)
    s = draw(st.sampled_from([0.3, 1.0, 3.0]))  # 3.0 makes scores up to ~50: sharp softmax rows
    q, k, v, dout = (
        (rng.standard_normal(shape) * s).astype(np.float32)
        for shape in [(B, H, Tq, D), (B, H, Tk, D), (B, H, Tk, D), (B, H, Tq, D)]
    )
    mask_kind = draw(st.sampled_from(["none", "random", "padding"]))
    key_mask = None
    if mask_kind == "random":
        key_mask = rng.random((B, Tk)) >= draw(st.sampled_from([0.3, 0.9, 1.0]))  # 1.0: nothing visible
    elif mask_kind == "padding":  # trailing padding as in a batch of sentences; one row may be all padding
        lengths = rng.integers(0, Tk + 1, B)
        key_mask = np.arange(Tk)[None, :] < lengths[:, None]
    return q, k, v, dout, key_mask, draw(st.booleans())


def run(mod, q, k, v, dout, key_mask, causal, backend="numpy"):
    """Forward and backward through one module; results on the host."""
    q, k, v, dout, key_mask = device(backend, q, k, v, dout, key_mask)
    out, lse = mod.attention_fwd(q, k, v, key_mask=key_mask, causal=causal)
    grads = mod.attention_bwd(dout, q, k, v, out, lse, key_mask=key_mask, causal=causal)
    return [host(a) for a in (out, lse, *grads)]


def want64(q, k, v, dout, key_mask, causal):
    return run(reference, *(a.astype(np.float64) for a in (q, k, v, dout)), key_mask, causal)


NAMES = ("out", "lse", "dq", "dk", "dv")
# `backend` is a parameter-only fixture with no state, so reusing it across hypothesis examples is safe.
FIXTURE_OK = settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def assert_matches(got, want, rtol=1e-4, label=""):
    """Norm-relative comparison: |got - want| <= rtol * max(1, max|want|) per array.

    rtol = 1e-4: float32 rounding (6e-8) accumulated over D <= 33 score terms and Tk <= 129 weighted
    values, times the condition of a softmax with scores up to ~50, stays below ~1e-5 of the largest entry;
    1e-4 leaves 10x headroom for summation order, while an indexing or masking bug errs by O(1).
    lse is compared with the same bound (its magnitude is that of the scores).
    """
    for name, g, w in zip(NAMES, got, want):
        assert g.dtype == np.float32, f"{label}{name} has dtype {g.dtype}, want float32"
        finite = np.isfinite(w)
        bound = rtol * max(1.0, float(np.abs(w[finite]).max(initial=0.0)))
        assert_close(g, w, atol=bound, rtol=0, name=f"{label}{name}")


# --------------------------------------------------------------------------------- backends vs reference
@FIXTURE_OK
@given(problems())
def test_backend_matches_float64_reference(backend, problem):
    q, k, v, dout, key_mask, causal = problem
    got = run(ops(backend), q, k, v, dout, key_mask, causal, backend)
    assert_matches(got, want64(q, k, v, dout, key_mask, causal), label=f"{backend} ")


@settings(max_examples=10)
@given(problems(max_b=1, max_h=2))
@pytest.mark.parametrize("version", sorted(cpu.VERSIONS["attention_fwd"]))
def test_every_numba_version_matches_reference(version, problem):
    q, k, v, dout, key_mask, causal = problem
    fwd, bwd = cpu.VERSIONS["attention_fwd"][version], cpu.VERSIONS["attention_bwd"][version]
    out, lse = fwd(q, k, v, key_mask=key_mask, causal=causal)
    grads = bwd(dout, q, k, v, out, lse, key_mask=key_mask, causal=causal)
    assert_matches([out, lse, *grads], want64(q, k, v, dout, key_mask, causal), label=f"{version} ")


def test_version_registry_matches_docstring():
    """Every listed version is registered, or named in UNAVAILABLE with the reason (v4 without BLAS)."""
    listed = re.findall(r"^\s{4}(v\d+)\s", cpu.__doc__, flags=re.M)
    assert listed, "the cpu.py docstring should list its versions as '    v1  ...'"
    for fn in ("attention_fwd", "attention_bwd"):
        known = sorted([*cpu.VERSIONS[fn], *cpu.UNAVAILABLE])
        assert known == sorted(listed), f"{fn}: VERSIONS + UNAVAILABLE and the docstring disagree"
    assert cpu.attention_fwd in cpu.VERSIONS["attention_fwd"].values()
    assert cpu.attention_bwd in cpu.VERSIONS["attention_bwd"].values()


def test_rows_that_see_nothing_give_zero_and_minus_inf(backend):
    """Batch 0 is all padding; with causal and Tq > Tk the first Tq - Tk queries of batch 1 see no key."""
    rng = np.random.default_rng(0)
    B, H, Tq, Tk, D = 2, 3, 70, 67, 8
    q, dout = (rng.standard_normal((B, H, Tq, D)).astype(np.float32) for _ in range(2))
    k, v = (rng.standard_normal((B, H, Tk, D)).astype(np.float32) for _ in range(2))
    key_mask = np.ones((B, Tk), bool)
    key_mask[0] = False
    out, lse, dq, dk, dv = run(ops(backend), q, k, v, dout, key_mask, True, backend)
    for name, a in zip(NAMES, (out, lse, dq, dk, dv)):
        assert not np.isnan(a).any(), f"{name} has NaN"
    blind = np.zeros((B, Tq), bool)
    blind[0] = True
    blind[1, : Tq - Tk] = True  # query i sees key j when j <= i + Tk - Tq < 0
    assert np.all(lse[blind[:, None, :].repeat(H, 1)] == -np.inf)
    assert np.all(np.isfinite(lse[~blind[:, None, :].repeat(H, 1)]))
    assert np.all(out[0] == 0) and np.all(out[1, :, : Tq - Tk] == 0)
    assert np.all(dq[0] == 0) and np.all(dq[1, :, : Tq - Tk] == 0)
    assert np.all(dk[0] == 0) and np.all(dv[0] == 0)  # padded keys get no gradient


@pytest.mark.parametrize("magnitude", [30.0, 300.0])
def test_extreme_scores_stay_finite(backend, magnitude):
    """Scores up to ~magnitude^2 * sqrt(D) (1e5 at 300) would overflow exp without the max subtraction."""
    rng = np.random.default_rng(1)
    q, k, v, dout = (rng.uniform(-1, 1, (1, 2, 65, 4)).astype(np.float32) for _ in range(4))
    q, k = q * magnitude, k * magnitude
    got = run(ops(backend), q, k, v, dout, None, False, backend)
    for name, a in zip(NAMES, got):
        assert np.all(np.isfinite(a)), f"{name} is not finite"
    want = want64(q, k, v, dout, None, False)
    # scores of size S carry a float32 rounding error of ~S * 6e-8 (6e-3 at S = 1e5), which moves the
    # nearly one-hot probabilities by that much relative: bound out and lse by 1e-3 of S_max, and the
    # gradients (which scale with q, k and the score errors) norm-relatively by 1e-2.
    s_max = float(np.abs(q[0] @ k[0].swapaxes(-1, -2)).max()) / 2  # scale = 1/sqrt(4)
    assert_close(got[0], want[0], atol=1e-3 * s_max * np.abs(v).max(), rtol=0, name="out")
    assert_close(got[1], want[1], atol=1e-6 * s_max + 1e-4, rtol=0, name="lse")
    for name, g, w in zip(NAMES[2:], got[2:], want[2:]):
        assert_close(g, w, atol=1e-2 * max(1.0, np.abs(w).max()), rtol=0, name=name)


# ------------------------------------------------------------------------------------------ properties
@FIXTURE_OK
@given(st.data())
def test_causal_never_reads_the_future(backend, data):
    """Changing key/value j leaves every query that cannot see j (i + Tk - Tq < j) bitwise unchanged."""
    rng = rng_from(data.draw)
    Tq, Tk, D = data.draw(SEQ), data.draw(SEQ), data.draw(HEAD)
    q = rng.standard_normal((1, 2, Tq, D)).astype(np.float32)
    k, v = (rng.standard_normal((1, 2, Tk, D)).astype(np.float32) for _ in range(2))
    j = data.draw(st.integers(0, Tk - 1))
    k2, v2 = k.copy(), v.copy()
    k2[..., j:, :] = rng.standard_normal(k2[..., j:, :].shape) * 10
    v2[..., j:, :] = rng.standard_normal(v2[..., j:, :].shape) * 10
    mod = ops(backend)
    out1, lse1 = (host(a) for a in mod.attention_fwd(*device(backend, q, k, v), causal=True))
    out2, lse2 = (host(a) for a in mod.attention_fwd(*device(backend, q, k2, v2), causal=True))
    blind = np.arange(Tq) + Tk - Tq < j  # queries that see no key at index >= j
    np.testing.assert_array_equal(out1[..., blind, :], out2[..., blind, :])
    np.testing.assert_array_equal(lse1[..., blind], lse2[..., blind])


def test_reference_matches_torch_sdpa():
    torch = pytest.importorskip("torch", reason="PyTorch is the oracle here; install torch (CPU) to run")
    F = torch.nn.functional
    rng = np.random.default_rng(2)
    for B, H, Tq, Tk, D, causal in [(2, 3, 17, 17, 8, True), (2, 2, 5, 19, 16, True), (3, 2, 33, 33, 7, False)]:
        q = rng.standard_normal((B, H, Tq, D))
        k, v = rng.standard_normal((B, H, Tk, D)), rng.standard_normal((B, H, Tk, D))
        dout = rng.standard_normal((B, H, Tq, D))
        key_mask = rng.random((B, Tk)) > 0.3
        key_mask[:, -1] = True  # every row sees at least the last key: SDPA gives NaN on empty rows
        out, lse = reference.attention_fwd(q, k, v, key_mask, causal)
        dq, dk, dv = reference.attention_bwd(dout, q, k, v, out, lse, key_mask, causal)
        tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
        # torch's is_causal aligns top-left; our contract aligns bottom-right, so pass the mask explicitly
        allowed = torch.tensor(reference.allowed_mask(B, Tq, Tk, key_mask, causal))
        tout = F.scaled_dot_product_attention(tq, tk, tv, attn_mask=allowed)
        tout.backward(torch.tensor(dout))
        # both in float64: agreement to ~1e-15 relative; 1e-10 only absorbs different summation orders
        for name, g, w in [("out", out, tout), ("dq", dq, tq.grad), ("dk", dk, tk.grad), ("dv", dv, tv.grad)]:
            assert_close(g, w.detach().numpy(), atol=1e-10, rtol=1e-10, name=f"{(B, H, Tq, Tk, D)} {name}")


@pytest.mark.parametrize("causal", [False, True])
def test_reference_backward_matches_finite_differences(causal):
    rng = np.random.default_rng(3)
    B, H, Tq, Tk, D = 2, 2, 3, 4, 3
    q = rng.standard_normal((B, H, Tq, D))
    k, v = rng.standard_normal((B, H, Tk, D)), rng.standard_normal((B, H, Tk, D))
    w = rng.standard_normal((B, H, Tq, D))  # loss = sum(out * w), so dL/dout = w
    key_mask = np.array([[True, False, True, True], [True, True, True, True]])
    inputs = [q, k, v]

    def loss():
        return float((reference.attention_fwd(*inputs, key_mask, causal)[0] * w).sum())

    out, lse = reference.attention_fwd(q, k, v, key_mask, causal)
    analytic = reference.attention_bwd(w, q, k, v, out, lse, key_mask, causal)
    h = 1e-6  # central differences in float64: truncation O(h^2) and rounding O(1e-16 / h) both ~1e-10
    for x, g, name in zip(inputs, analytic, "qkv"):
        num = central_differences(loss, x, h)
        # 1e-7: ~1000x the finite-difference error above; a wrong derivative is off by O(1)
        assert_close(g, num, atol=1e-7, rtol=1e-6, name=f"d{name}")


def test_numba_is_deterministic():
    """Each (b, h) is owned by one thread, no atomics: two runs are bitwise equal."""
    rng = np.random.default_rng(4)
    q, k, v, dout = (rng.standard_normal((3, 5, 150, 32)).astype(np.float32) for _ in range(4))
    key_mask = rng.random((3, 150)) > 0.2
    first = run(cpu, q, k, v, dout, key_mask, True)
    second = run(cpu, q, k, v, dout, key_mask, True)
    for name, a, b in zip(NAMES, first, second):
        np.testing.assert_array_equal(a, b, err_msg=name)


# ----------------------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("mod", [reference, cpu], ids=["numpy", "numba"])
def test_bad_inputs_get_clear_errors(mod):
    q = np.zeros((2, 3, 5, 4), np.float32)
    k = np.zeros((2, 3, 7, 4), np.float32)
    with pytest.raises(TypeError, match="attention_fwd: q has dtype int64"):
        mod.attention_fwd(q.astype(np.int64), k, k)
    with pytest.raises(ValueError, match=r"attention_fwd.*\(2, 3, 5, 4\).*\(2, 3, 7, 8\)"):
        mod.attention_fwd(q, np.zeros((2, 3, 7, 8), np.float32), np.zeros((2, 3, 7, 8), np.float32))
    with pytest.raises(ValueError, match="k and v must have the same shape"):
        mod.attention_fwd(q, k, np.zeros((2, 3, 6, 4), np.float32))
    with pytest.raises(ValueError, match=r"q must be \(B, H, Tq, D\)"):
        mod.attention_fwd(q[0], k, k)
    with pytest.raises(ValueError, match=r"key_mask must have shape \(B, Tk\) = \(2, 7\)"):
        mod.attention_fwd(q, k, k, key_mask=np.ones((2, 5), bool))
    with pytest.raises(ValueError, match="head size D must be at least 1"):
        mod.attention_fwd(q[..., :0], k[..., :0], k[..., :0])
    with pytest.raises(TypeError, match="key_mask must be bool"):
        mod.attention_fwd(q, k, k, key_mask=np.ones((2, 7), np.int32))
    out, lse = mod.attention_fwd(q, k, k)
    with pytest.raises(ValueError, match=r"attention_bwd: lse must have shape \(2, 3, 5\)"):
        mod.attention_bwd(q, q, k, k, out, lse[..., :4])
    with pytest.raises(ValueError, match=r"attention_bwd: dout must have shape"):
        mod.attention_bwd(q[:, :, :4], q, k, k, out, lse)


def test_numba_copies_strided_and_float64_inputs():
    """Non-contiguous views and float64 arrays are copied to contiguous float32, never misread."""
    rng = np.random.default_rng(5)
    base = rng.standard_normal((2, 9, 3, 6))  # (B, T, H, D) float64: the layout a projection produces
    q = base.transpose(0, 2, 1, 3)  # (B, H, T, D) view, not contiguous
    got = cpu.attention_fwd(q, q, q, causal=True)
    want = cpu.attention_fwd(*(np.ascontiguousarray(q, dtype=np.float32),) * 3, causal=True)
    assert got[0].dtype == np.float32
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


@NEEDS_BLAS
@settings(max_examples=15, deadline=None)
@given(problems(max_b=2, max_h=3), st.data())
def test_v4_reads_the_packed_layout_in_place(problem, data):
    """v4 takes q, k, v (and dout, out) as strided views: the packed projection output (B, T, 3, H, D) read
    as (B, H, T, D) per slice, rows 3C floats apart, handed to BLAS with that leading dimension. Same
    results as contiguous copies (the same products in the same order: equal to float32 rounding, 1e-6 of
    the largest entry), and no copy is made of such a view."""
    q, _, _, dout, _, causal = problem
    B, H, Tq, D = q.shape  # the packed layout holds Q, K, V of one sequence: Tk = Tq
    rng = rng_from(data.draw)
    k, v = rng.standard_normal((2, B, H, Tq, D)).astype(np.float32)
    key_mask = np.arange(Tq)[None, :] < rng.integers(0, Tq + 1, B)[:, None] if data.draw(st.booleans()) else None
    packed = np.empty((B, Tq, 3, H, D), np.float32)                 # the projection's layout
    views = [packed[:, :, i].transpose(0, 2, 1, 3) for i in range(3)]  # (B, H, T, D) views into it
    for view, a in zip(views, (q, k, v)):
        view[...] = a
    dout_btc = np.ascontiguousarray(dout.transpose(0, 2, 1, 3))     # as the output projection's gradient
    dout_view = dout_btc.transpose(0, 2, 1, 3)
    assert all(cpu._rows_f32(a) is a for a in (*views, dout_view)), "a strided view is read in place"
    fwd, bwd = cpu.VERSIONS["attention_fwd"]["v4"], cpu.VERSIONS["attention_bwd"]["v4"]
    out, lse = fwd(*views, key_mask=key_mask, causal=causal)
    got = [out, lse, *bwd(dout_view, *views, out, lse, key_mask=key_mask, causal=causal)]
    flat = [np.ascontiguousarray(a) for a in views]
    out_c, lse_c = fwd(*flat, key_mask=key_mask, causal=causal)
    want = [out_c, lse_c, *bwd(np.ascontiguousarray(dout_view), *flat, out_c, lse_c, key_mask=key_mask,
                               causal=causal)]
    assert_matches(got, want, rtol=1e-6, label="strided ")


def test_strided_views_that_blas_would_misread_are_copied():
    """A broadcast axis (stride 0) or a last axis that is not contiguous is copied, never read in place."""
    a = np.zeros((2, 3, 5, 4), np.float32)
    assert cpu._rows_f32(a) is a
    for odd in (np.broadcast_to(a[:1], a.shape), a[..., ::2], a.transpose(0, 1, 3, 2), a.astype(np.float64)):
        got = cpu._rows_f32(odd)
        assert got is not odd and got.flags.c_contiguous and got.dtype == np.float32
        np.testing.assert_array_equal(got, odd)


# ------------------------------------------------------------ v4: the BLAS binding and its Numba pieces
@NEEDS_BLAS
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_sgemm_matches_numpy(trans_a, trans_b):
    """c = alpha op(a) op(b) + beta c on strided views (row slices of bigger arrays), beta 0 and 1."""
    from numba import njit

    @njit
    def call(ta, tb, alpha, a, b, beta, c):
        blas.sgemm(ta, tb, alpha, a, b, beta, c)

    rng = np.random.default_rng(6)
    for M, N, K in [(1, 1, 1), (7, 5, 3), (33, 65, 17), (128, 32, 96)]:
        big_a = rng.standard_normal((K + 3, M + 5) if trans_a else (M + 3, K + 5)).astype(np.float32)
        big_b = rng.standard_normal((N + 2, K + 4) if trans_b else (K + 2, N + 4)).astype(np.float32)
        a = big_a[1:1 + K, 2:2 + M] if trans_a else big_a[1:1 + M, 2:2 + K]  # row stride > row length
        b = big_b[1:1 + N, 3:3 + K] if trans_b else big_b[1:1 + K, 3:3 + N]
        a64, b64 = (x.astype(np.float64) for x in (a, b))
        want = 0.5 * (a64.T if trans_a else a64) @ (b64.T if trans_b else b64)
        c = np.full((M, N), np.nan, np.float32)  # beta = 0 must ignore c, NaN included
        call(trans_a, trans_b, np.float32(0.5), a, b, np.float32(0.0), c)
        # float32 sums of K <= 96 products of O(1) numbers: rounding <= K * 6e-8 * sum|a||b| ~ 1e-4 here
        assert_close(c, want, atol=1e-4, rtol=1e-5, name=f"sgemm {M}x{N}x{K} beta 0")
        c0 = rng.standard_normal((M, N)).astype(np.float32)
        c = c0.copy()
        call(trans_a, trans_b, np.float32(0.5), a, b, np.float32(1.0), c)
        assert_close(c, want + c0, atol=1e-4, rtol=1e-5, name=f"sgemm {M}x{N}x{K} beta 1")


@NEEDS_BLAS
def test_transpose_matches_numpy():
    from numba import njit

    @njit
    def call(alpha, a, b):
        blas.transpose(alpha, a, b)

    rng = np.random.default_rng(7)
    big = rng.standard_normal((40, 50)).astype(np.float32)
    a = big[3:36, 5:22]  # (33, 17), row stride 50
    b = np.empty((17, 33), np.float32)
    call(np.float32(0.25), a, b)
    np.testing.assert_array_equal(b, 0.25 * a.T)  # multiplying by a power of two is exact


@NEEDS_BLAS
def test_single_threaded_restores_the_thread_count():
    before = blas._get_threads()
    with blas.single_threaded():
        assert blas._get_threads() == 1
    assert blas._get_threads() == before
    with pytest.raises(RuntimeError):
        with blas.single_threaded():
            raise RuntimeError("a kernel failed")
    assert blas._get_threads() == before, "an exception inside must restore the count too"


def test_missing_blas_leaves_v3_as_the_engine():
    """Where kernels/blas.py cannot load, v4 is not registered, UNAVAILABLE says why and v3 is the engine."""
    code = ("import kernels.blas as b; b.AVAILABLE = False; b.WHY_NOT = 'no OpenBLAS here'\n"
            "import kernels.attention.cpu as c\n"
            "assert 'v4' not in c.VERSIONS['attention_fwd'] and 'v4' not in c.VERSIONS['attention_bwd']\n"
            "assert c.attention_fwd is c.VERSIONS['attention_fwd']['v3'], 'v3 must be the engine'\n"
            "assert c.attention_bwd is c.VERSIONS['attention_bwd']['v3']\n"
            "print(c.UNAVAILABLE['v4'])\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "no OpenBLAS here" in result.stdout


def test_blas_load_says_what_is_missing(monkeypatch):
    monkeypatch.setattr(blas, "_candidates", lambda: [])
    with pytest.raises(OSError, match="numpy.libs"):
        blas._load()
    libm = next((p for p in ("/lib/x86_64-linux-gnu/libm.so.6", "/usr/lib/libm.dylib") if os.path.exists(p)), None)
    if libm is None:
        pytest.skip("no libm at a known path to stand in for an OpenBLAS without the symbols")
    monkeypatch.setattr(blas, "_candidates", lambda: [libm])
    with pytest.raises(OSError, match="cblas_sgemm64_"):
        blas._load()


@NEEDS_BLAS
@pytest.mark.parametrize("causal", [False, True])
def test_v4_softmax_tile_matches_float64(causal):
    """Pins fastmath={"contract"} in cpu_gemm._softmax_tile: the exp stays within fastexp's bound, masked
    scores give exactly 0, a lane that sees nothing gets l = 0 and no NaN."""
    from kernels.attention import cpu_gemm

    rng = np.random.default_rng(8)
    nk, nq, lo, q0, shift = 70, 37, 3, 10, -5  # causal: lane i sees key lo + j when lo + j <= q0 + i + shift
    st = (rng.standard_normal((nk, nq)) * 15).astype(np.float32)  # |s - m| up to ~80: exp near underflow
    key_mask = rng.random(lo + nk) > 0.2
    key_mask[lo + 60:] = False  # trailing padding
    key_mask[lo:lo + 6] = False  # causal: lanes 0..3 see only keys j <= 5 + i - 3, all masked: they see nothing
    key_mask[lo + 6:lo + 8] = True
    st[6:, 30], st[6, 30], st[7, 30] = -100.0, 0.0, -87.0  # lane 30: P = exp(-87) ~ 1.6e-38, just above 0
    want_s = st.astype(np.float64)
    visible = key_mask[lo:lo + nk, None] & np.ones((nk, nq), bool)
    if causal:
        visible &= (lo + np.arange(nk))[:, None] <= q0 + np.arange(nq)[None, :] + shift
    m, l = np.empty(nq, np.float32), np.empty(nq, np.float32)
    cpu_gemm._softmax_tile(st, key_mask, lo, True, causal, shift, q0, m, l)
    want_m = np.where(visible, want_s, -np.inf).max(axis=0)
    sees = np.isfinite(want_m)
    want_p = np.where(visible, np.exp(want_s - np.where(sees, want_m, 0)), 0.0)
    assert not np.isnan(st).any()
    assert np.all(st[~visible] == 0), "masked scores must give exactly 0"
    # fast exp: 2e-7 relative (tests/test_fastexp.py's bound, which contraction keeps: an FMA rounds once)
    # plus the float32 rounding of s - m, |s - m| * 6e-8 <= 5e-6 at |s - m| ~ 80
    assert_close(st, want_p, atol=1e-30, rtol=6e-6, name="P")
    assert np.all(l[~sees] == 0) and np.all(m[sees] == want_m[sees])
    # l: a float32 sum of up to 70 terms in [0, 1], each with the error above: 70 * 6e-8 + 6e-6 relative
    assert_close(l[sees], want_p.sum(axis=0)[sees], atol=0, rtol=1e-5, name="l")


@NEEDS_BLAS
def test_v4_long_keys_shrink_the_query_block():
    """Tk = 1100: the score tile caps the query block below Tq, and D = 40 cuts each product into several
    sgemm calls (beta = 1 after the first); both against the reference, causal with Tq != Tk and padding."""
    from kernels.attention import cpu_gemm

    B, H, Tq, Tk, D = 2, 1, 200, 1100, 40
    QB, KC = cpu_gemm.blocking(Tq, Tk, D)
    assert QB < Tq and KC < Tk, f"the shape should exercise both cuts: QB {QB}, KC {KC}"
    rng = np.random.default_rng(9)
    q, dout = (rng.standard_normal((B, H, Tq, D)).astype(np.float32) for _ in range(2))
    k, v = (rng.standard_normal((B, H, Tk, D)).astype(np.float32) for _ in range(2))
    key_mask = np.ones((B, Tk), bool)
    key_mask[1, 950:] = False  # trailing padding
    key_mask[1, 17] = False  # and a hole inside the visible span
    for causal in (False, True):
        fwd, bwd = cpu.VERSIONS["attention_fwd"]["v4"], cpu.VERSIONS["attention_bwd"]["v4"]
        out, lse = fwd(q, k, v, key_mask=key_mask, causal=causal)
        grads = bwd(dout, q, k, v, out, lse, key_mask=key_mask, causal=causal)
        # assert_matches' 1e-4 argument, with Tk = 1100 terms: ~1100 * 6e-8 = 7e-5 of the largest term
        assert_matches([out, lse, *grads], want64(q, k, v, dout, key_mask, causal), rtol=2e-4,
                       label=f"v4 causal={causal} ")


PACKED_FMA = re.compile(r"\bvfn?m(add|sub)\d+ps\s[^\n]*%[yz]mm")


@NEEDS_BLAS
def test_v4_softmax_loops_vectorize_with_fma():
    """The exp loops of _softmax_tile and _grad_tile compile to packed FMAs (vectorized, and contracted by
    fastmath={"contract"}) without gathers. Written `for i in range(cut, nq)` they compiled to scalar
    FMAs only (checked): an index LLVM cannot prove >= 0 keeps Numba's wraparound in the loop."""
    from numba import njit, types

    from kernels.attention import cpu_gemm
    from tests.test_kernel_versions import GATHER_SCATTER

    tile, row, mask = types.float32[:, ::1], types.float32[::1], types.boolean[::1]
    i64, flag = types.int64, types.boolean
    signatures = {cpu_gemm._softmax_tile: (tile, mask, i64, flag, flag, i64, i64, row, row),
                  cpu_gemm._grad_tile: (tile, tile, mask, i64, flag, flag, i64, i64, row, row)}
    for fn, sig in signatures.items():  # compiled anew: Numba shows no asm for code loaded from its cache
        fresh = njit(**{k: v for k, v in fn.targetoptions.items() if k not in ("cache", "nopython")})(fn.py_func)
        fresh.compile(sig)
        asm = fresh.inspect_asm(sig)
        assert PACKED_FMA.search(asm), f"{fn.py_func.__name__}: no packed FMA on ymm/zmm registers"
        assert not GATHER_SCATTER.search(asm), f"{fn.py_func.__name__}: gathers or scatters in the asm"


@NEEDS_BLAS
def test_sgemm_refuses_what_it_would_misread():
    from numba import njit

    @njit
    def call(a, b, c):
        blas.sgemm(False, False, np.float32(1.0), a, b, np.float32(0.0), c)

    a, b, c = np.ones((3, 4), np.float32), np.ones((4, 5), np.float32), np.zeros((3, 5), np.float32)
    with pytest.raises(ValueError, match="do not match"):
        call(a, b[:3], c)
    with pytest.raises(ValueError, match="contiguous"):
        call(np.ones((3, 8), np.float32)[:, ::2], b, c)
    with pytest.raises(ValueError, match="overlap"):
        call(np.broadcast_to(np.ones(4, np.float32), (3, 4)), b, c)
    call(a[:, :0], b[:0], c)  # K = 0: an empty sum, c = 0
    assert np.all(c == 0)

"""Attention kernels: every backend and every numbered Numba version against the float64 reference.

The reference (kernels/attention/reference.py) runs in float64 on the same float32 inputs; backends run in
float32. Tolerances are norm-relative where stated: float32 sums of D products (scores) and of Tk weighted
values (outputs) err by ~(D + Tk) * 6e-8 of their largest term, not of each entry, so an error is compared
with rtol * max|want|. Also: properties (causal attention never reads the future; rows that see nothing
give 0 / -inf / zero gradients, never NaN), the reference against PyTorch's SDPA and against central
finite differences, the version registry against the docstring, bad inputs, and run-to-run determinism.
"""
import importlib
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from gradcheck import central_differences
from kernels.attention import cpu, reference
from kernels.testing import assert_close
from tests.strategies import rng_from

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
    listed = re.findall(r"^\s{4}(v\d+)\s", cpu.__doc__, flags=re.M)
    assert listed, "the cpu.py docstring should list its versions as '    v1  ...'"
    for fn in ("attention_fwd", "attention_bwd"):
        assert sorted(cpu.VERSIONS[fn]) == sorted(listed), f"{fn}: VERSIONS and the docstring disagree"
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

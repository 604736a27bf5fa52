"""Fused ops: gradients against finite differences (float64, reference kernels), and the fast backends
against the reference through the autograd layer."""
import numpy as np
import pytest
from gradcheck import check_gradients

import minillm as mm
import minillm.functional as F
from kernels.testing import assert_close

rng = np.random.default_rng(0)


def test_softmax_gradient(reference_backend):
    mask = rng.random((2, 3, 5)) > 0.3
    check_gradients(lambda x: F.softmax(x), rng.standard_normal((2, 3, 5)))
    check_gradients(lambda x: F.softmax(x, mask=mask), rng.standard_normal((2, 3, 5)))
    check_gradients(lambda x: F.softmax(x, axis=1), rng.standard_normal((2, 3, 5)))


def test_layer_norm_gradient(reference_backend):
    check_gradients(lambda x, w, b: F.layer_norm(x, w, b, 1e-5),
                    rng.standard_normal((3, 4, 6)), rng.standard_normal(6), rng.standard_normal(6))


def test_gelu_gradient(reference_backend):
    check_gradients(F.gelu, rng.standard_normal((4, 7)) * 3)


def test_gelu_tanh_gradient(reference_backend):
    check_gradients(lambda x: F.gelu(x, approximate="tanh"), rng.standard_normal((4, 7)) * 3)


def test_gelu_approximate_picks_the_form():
    """approximate="tanh" is GPT-2's form, "none" (the default) BERT's erf form; they differ by up to ~5e-4
    (at x ~ -2.2 and 2.2), and anything else is refused."""
    x = mm.Tensor(np.linspace(-4, 4, 81).astype(np.float32))
    erf, tanh = F.gelu(x).data, F.gelu(x, approximate="tanh").data
    u = np.sqrt(2 / np.pi) * (x.data + 0.044715 * x.data ** 3)
    # 1e-6: float32 kernels against the float32 formula, values of O(1) (the kernel tests pin this closer)
    assert_close(tanh, 0.5 * x.data * (1 + np.tanh(u)), atol=1e-6, rtol=1e-6, name="gelu tanh")
    np.testing.assert_array_equal(erf, F.gelu(x, approximate="none").data)
    assert 1e-4 < np.abs(erf - tanh).max() < 1e-3  # the two forms really are different functions
    with pytest.raises(ValueError, match="approximate"):
        F.gelu(x, approximate="sigmoid")


@pytest.mark.parametrize("causal,tq,tk", [(False, 5, 5), (True, 5, 5), (True, 3, 6), (False, 1, 4)])
def test_attention_gradient(reference_backend, causal, tq, tk):
    key_mask = np.ones((2, tk), bool)
    key_mask[1, -2:] = False
    check_gradients(
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, key_mask=key_mask, causal=causal),
        rng.standard_normal((2, 2, tq, 4)), rng.standard_normal((2, 2, tk, 4)), rng.standard_normal((2, 2, tk, 4)),
    )


def test_packed_attention_gradient_and_values(reference_backend):
    key_mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], bool)
    qkv = rng.standard_normal((3, 2, 2, 4, 3))
    check_gradients(lambda t: F.packed_attention(t, key_mask=key_mask), qkv)
    packed = F.packed_attention(mm.Tensor(qkv), key_mask=key_mask).data
    split = F.scaled_dot_product_attention(*(mm.Tensor(a) for a in qkv), key_mask=key_mask).data
    np.testing.assert_array_equal(packed, split)  # the same kernel on the same numbers


def test_packed_attention_gradient_is_laid_out_as_the_projection_output(reference_backend, monkeypatch):
    """The (3, B, H, T, D) gradient of packed_attention is a view of a (B, T, 3, H, D) array, so the path
    back to the QKV projection's (B, T, 3C) output gradient (transpose, reshape) copies nothing. (Its values
    are pinned by the gradient check above.)"""
    B, T, H, D = 2, 5, 3, 4
    x = mm.Tensor(rng.standard_normal((B, T, 3 * H * D)), requires_grad=True)
    qkv = x.reshape(B, T, 3, H, D).transpose(2, 0, 3, 1, 4)               # (3, B, H, T, D), as in the models
    seen = []
    original = F.PackedAttention.backward
    monkeypatch.setattr(F.PackedAttention, "backward", lambda self, dout: seen.append(original(self, dout)[0])
                        or (seen[-1],))
    out = F.packed_attention(qkv, key_mask=np.array([[1, 1, 1, 1, 0], [1] * 5], bool))
    (out * mm.Tensor(rng.standard_normal(out.shape))).sum().backward()
    assert seen[0].transpose(1, 3, 0, 2, 4).flags.c_contiguous            # (B, T, 3, H, D) in memory
    assert x.grad.shape == x.shape


def test_cross_entropy_gradient(reference_backend):
    targets = np.array([[1, -100, 4], [0, 2, -100]])
    check_gradients(lambda z: F.cross_entropy(z, targets), rng.standard_normal((2, 3, 5)))


def test_linear_and_composite_transformer_block_gradient(reference_backend):
    """One attention + feed-forward block built from the fused ops, checked end to end."""
    B, T, C, H = 2, 3, 4, 2

    def block(x, wq, w1, g, b):
        q = F.linear(x, wq).reshape(B, T, H, C // H).transpose(0, 2, 1, 3)  # (B, T, C) -> (B, H, T, D)
        a = F.scaled_dot_product_attention(q, q, q).transpose(0, 2, 1, 3).reshape(B, T, C)
        h = F.layer_norm(x + a, g, b, 1e-6)
        return F.gelu(F.linear(h, w1))

    check_gradients(block, rng.standard_normal((B, T, C)), rng.standard_normal((C, C)) * 0.5,
                    rng.standard_normal((5, C)), 1 + rng.standard_normal(C) * 0.1, rng.standard_normal(C) * 0.1)


@pytest.mark.parametrize("name", ["numba"])
def test_fast_backend_matches_reference_through_autograd(name):
    """The same float32 graph under the reference and a fast backend: values and gradients agree."""
    x0 = rng.standard_normal((2, 4, 6)).astype(np.float32)
    w0, b0 = (1 + 0.1 * rng.standard_normal(6)).astype(np.float32), rng.standard_normal(6).astype(np.float32)
    t0 = np.array([[1, 2, -100, 0], [5, 5, 3, -100]])
    km = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], bool)
    results = {}
    for backend in ("numpy", name):
        mm.set_backend(backend)
        x, w, b = mm.Tensor(x0, requires_grad=True), mm.Tensor(w0, requires_grad=True), mm.Tensor(b0, requires_grad=True)
        h = F.gelu(F.layer_norm(x, w, b, 1e-12))                              # (B, T, C)
        q = h.reshape(2, 4, 2, 3).transpose(0, 2, 1, 3)                       # (B, T, C) -> (B, H, T, D)
        a = F.scaled_dot_product_attention(q, q, q, key_mask=km).transpose(0, 2, 1, 3).reshape(2, 4, 6)
        loss = F.cross_entropy(F.softmax(a) * 5.0, t0)
        loss.backward()
        results[backend] = (loss.data, x.grad, w.grad, b.grad)
    mm.set_backend("numba")
    # float32 through five kernels whose reductions are ordered differently: ~1e-6 relative per kernel,
    # compounded, stays well below 1e-4.
    for got, want, what in zip(results[name], results["numpy"], ("loss", "dx", "dw", "db")):
        assert_close(got, want, atol=1e-5, rtol=1e-4, name=what)


def test_functional_errors():
    x = mm.Tensor(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match="weight"):
        F.layer_norm(x, mm.Tensor(np.ones(4, np.float32)), mm.Tensor(np.ones(3, np.float32)))
    with pytest.raises(ValueError, match="targets"):
        F.cross_entropy(x, np.zeros(3, int))
    with pytest.raises(ValueError, match="q"):
        F.scaled_dot_product_attention(x, x, x)

"""Autograd: every primitive op gradient-checked in float64, broadcasting, graph semantics, errors."""
import numpy as np
import pytest
from gradcheck import check_gradients
from hypothesis import given, strategies as st

import minillm as mm
from minillm.tensor import dropout

rng = np.random.default_rng(0)


def r(*shape):
    return rng.standard_normal(shape)


def pos(*shape):
    return rng.uniform(0.5, 2.0, shape)


BINARY = [
    ("add", lambda a, b: a + b),
    ("sub", lambda a, b: a - b),
    ("mul", lambda a, b: a * b),
    ("div", lambda a, b: a / b),
]
BROADCAST_SHAPES = [((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((2, 3, 4), (3, 1)), ((1, 4), (5, 1)), ((3,), ())]


@pytest.mark.parametrize("name,op", BINARY)
@pytest.mark.parametrize("sa,sb", BROADCAST_SHAPES)
def test_binary_ops_and_broadcast_gradients(name, op, sa, sb):
    check_gradients(op, r(*sa), pos(*sb))


@pytest.mark.parametrize("name,op,make", [
    ("neg", lambda x: -x, r),
    ("pow3", lambda x: x ** 3, r),
    ("pow-half", lambda x: x ** -0.5, pos),
    ("exp", lambda x: x.exp(), r),
    ("log", lambda x: x.log(), pos),
    ("tanh", lambda x: x.tanh(), r),
    ("sqrt", lambda x: x.sqrt(), pos),
    ("rsub", lambda x: 2.0 - x, r),
    ("rdiv", lambda x: 1.0 / x, pos),
    ("sum-all", lambda x: x.sum(), r),
    ("sum-axis", lambda x: x.sum(axis=1), r),
    ("sum-keep", lambda x: x.sum(axis=(0, 2), keepdims=True), r),
    ("mean", lambda x: x.mean(axis=-1), r),
    ("mean-all", lambda x: x.mean(), r),
    ("max-axis", lambda x: x.max(axis=1), r),
    ("max-all", lambda x: x.max(), r),
    ("max-keep", lambda x: x.max(axis=0, keepdims=True), r),
    ("reshape", lambda x: x.reshape(4, 6) * 1.0, r),
    ("transpose", lambda x: x.transpose(2, 0, 1), r),
    ("swapaxes", lambda x: x.swapaxes(0, 2), r),
    ("T", lambda x: x.T, r),
    ("slice", lambda x: x[1:, ::2], r),
    ("fancy-repeat", lambda x: x[np.array([0, 1, 1, 0])], r),
    ("fancy-negative", lambda x: x[np.array([-2, 0, 1, -1])], r),           # row 0 spelled 0 and -2
    ("fancy-negative-axis2", lambda x: x[:, 1:, [3, -1, 0, -4]], r),        # a list, after a slice
    ("take-negative", lambda x: x.take(np.array([[-1, 3], [0, -4]]), axis=2), r),
    ("take-axis1", lambda x: x.take(np.array([[2, 0], [2, 2]]), axis=1), r),
    ("masked_fill", lambda x: x.masked_fill(np.array([True, False, True, False]), -3.0), r),
    ("astype32-64", lambda x: x.astype(np.float64), r),
])
def test_unary_op_gradients(name, op, make):
    check_gradients(op, make(2, 3, 4))


@pytest.mark.parametrize("sa,sb", [((3, 4), (4, 5)), ((2, 3, 4), (2, 4, 5)), ((2, 3, 4), (4, 5)),
                                   ((2, 1, 3, 4), (5, 4, 2)), ((1, 1), (1, 1))])
def test_matmul_gradients(sa, sb):
    check_gradients(lambda a, b: a @ b, r(*sa), r(*sb))


def test_where_concatenate_split_gradients():
    cond = r(3, 4) > 0
    check_gradients(lambda a, b: mm.where(cond, a, b), r(3, 4), r(1, 4))
    check_gradients(lambda a, b: mm.concatenate([a, b, a], axis=1), r(2, 3), r(2, 5))
    check_gradients(lambda a: mm.split(a, [1, 4], axis=1)[1] * 2 + mm.split(a, 5, axis=1)[0], r(2, 5))


def test_composite_graph_gradient():
    """A small MLP with a tanh, a shared weight (used twice) and a softmax-like normalisation."""
    def net(x, w1, w2):
        h = (x @ w1).tanh()
        h = h @ w2 @ w2.T          # w2 used twice
        e = (h - h.max(axis=-1, keepdims=True)).exp()
        return (e / e.sum(axis=-1, keepdims=True)).log().mean(axis=0)
    check_gradients(net, r(4, 3), r(3, 5), r(5, 2))


def test_reused_node_accumulates():
    x = mm.Tensor(np.array([2.0]), requires_grad=True)
    y = x * x + x  # dy/dx = 2x + 1 = 5
    y.sum().backward()
    assert x.grad[0] == 5.0


def test_gradients_accumulate_across_backward_calls():
    x = mm.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    (x * 3).sum().backward()
    (x * 3).sum().backward()
    np.testing.assert_array_equal(x.grad, [6.0, 6.0])


def test_second_backward_through_freed_graph_raises_and_retain_graph_allows_it():
    x = mm.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = (x.exp() * 2).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad, 4 * np.exp([1.0, 2.0]))
    with pytest.raises(RuntimeError, match="already freed"):
        y.backward()


def test_deep_graph_10000_ops_is_iterative():
    x = mm.Tensor(np.array([1.0]), requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 1.0001 + 0.0
    y.backward(np.ones(1))
    np.testing.assert_allclose(x.grad, [1.0001 ** 10_000], rtol=1e-9)


def test_negative_index_gradient_adds_up():
    """-1 and 3 are one row of a (4, C) tensor: its gradient is 2, not 1 (the fast scatter path grouped ids)."""
    w = mm.Tensor(np.ones((4, 3), np.float32), requires_grad=True)
    w[np.array([-1, 3])].sum().backward()
    np.testing.assert_array_equal(w.grad, [[0, 0, 0], [0, 0, 0], [0, 0, 0], [2, 2, 2]])
    e = mm.Tensor(np.ones((5, 2), np.float32), requires_grad=True)
    e.take(np.array([[0, -5], [4, -1]])).sum().backward()  # an embedding lookup with negative ids
    np.testing.assert_array_equal(e.grad[:, 0], [2, 0, 0, 0, 2])


@given(st.data())
def test_scatter_add_matches_np_add_at(data):
    """Every path of scatter_add (the fast sorted path, np.add.at) against NumPy's unbuffered np.add.at,
    with ids anywhere in [-n, n): negative and positive spellings of one row must add up."""
    from minillm.backend import scatter_add

    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    n, c = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 4))
    ids = rng.integers(-n, n, data.draw(st.sampled_from([(0,), (5,), (3, 4)])))
    index = data.draw(st.sampled_from(["rows", "columns", "pair"]))
    shape, index = {"rows": ((n, c), ids), "columns": ((c, n), (slice(None), ids)),
                    "pair": ((n, n), (ids, ids[::-1]))}[index]
    values = rng.standard_normal(np.zeros(shape)[index].shape)
    got, want = np.zeros(shape), np.zeros(shape)
    scatter_add(got, index, values)
    np.add.at(want, index, values)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)  # float64 sums in another order


def test_out_of_range_index_is_a_clear_error():
    w = mm.Tensor(np.ones((4, 3), np.float32), requires_grad=True)
    with pytest.raises(IndexError, match=r"index 4 .*axis 0.*shape \(4, 3\).*-4 \.\. 3"):
        w[np.array([0, 4])]
    with pytest.raises(IndexError, match=r"index -5 .*shape \(4, 3\)"):
        w.take(np.array([-5]))
    with pytest.raises(IndexError, match=r"index 3 .*axis 1.*shape \(4, 3\)"):
        w[:, [0, 3]]
    from minillm.backend import scatter_add

    with pytest.raises(IndexError, match=r"scatter_add.*shape \(4, 3\)"):
        scatter_add(np.zeros((4, 3)), np.array([7]), np.ones((1, 3)))


GRAPHS = [  # each one makes backward() hand a shared, read-only or strided array to the leaves
    ("sum", lambda a, b: a.sum() + b.sum()),                      # a read-only broadcast view each
    ("add-same-shape", lambda a, b: (a + b).sum()),               # one array for both operands
    ("broadcast-add", lambda a, b: (a + b[0]).sum()),             # b's gradient: summed, then a view
    ("reshape-view", lambda a, b: a.reshape(12).sum() + b.T.sum()),  # reshaped / transposed views
    ("expand-rows", lambda a, b: (a[:, None, :] + b[None]).sum()),  # (3, 1, 4) + (1, 3, 4) -> (3, 3, 4)
    ("indexing", lambda a, b: a[1:, ::2].sum() + b[np.array([0, -3, 2])].sum()),
    ("concatenate", lambda a, b: mm.concatenate([a, b], axis=1).sum()),  # split views of one array
    ("astype", lambda a, b: (a.astype(np.float64) * b.astype(np.float64)).sum()),
]


@pytest.mark.parametrize("name,graph", GRAPHS, ids=[g[0] for g in GRAPHS])
def test_leaf_gradients_are_fresh_writable_arrays(name, graph):
    """Whatever the graph, .grad is a writable, C-contiguous array that owns its memory, of the leaf's
    dtype and shape, shared with no other leaf; so clip_grad_norm can scale it in place."""
    from minillm.optim import clip_grad_norm

    a = mm.Tensor(rng.standard_normal((3, 4)).astype(np.float32), requires_grad=True)
    b = mm.Tensor(rng.standard_normal((3, 4)).astype(np.float32), requires_grad=True)
    for _ in range(2):  # the first gradient, then an accumulated one
        graph(a, b).backward()
        for t in (a, b):
            g = t.grad
            assert isinstance(g, np.ndarray) and g.shape == t.shape and g.dtype == t.dtype, name
            assert g.flags.writeable and g.flags.c_contiguous and g.flags.owndata, (name, g.flags)
        assert not np.shares_memory(a.grad, b.grad), name
    before = np.sqrt((a.grad.astype(np.float64) ** 2).sum() + (b.grad.astype(np.float64) ** 2).sum())
    norm = clip_grad_norm([a, b], 0.5)
    after = np.sqrt((a.grad.astype(np.float64) ** 2).sum() + (b.grad.astype(np.float64) ** 2).sum())
    # float32 norms of 24 entries: ~1e-7 relative; the 1e-6 in clip's scale factor is below that at norm >= 1
    np.testing.assert_allclose([norm, after], [before, 0.5], rtol=1e-5)


def test_root_gradient_is_copied_not_aliased():
    """backward(grad=G) on a leaf (or through a pass-through op) must not hand the caller's G to .grad."""
    G = np.ones(3, np.float32)
    x, y = (mm.Tensor(np.zeros(3, np.float32), requires_grad=True) for _ in range(2))
    x.backward(G)
    (y + 0.0).backward(G)
    x.grad *= 0.5
    y.grad *= 0.5
    np.testing.assert_array_equal(G, [1, 1, 1])
    np.testing.assert_array_equal(x.grad, [0.5, 0.5, 0.5])


def test_negative_indices_and_leaf_gradients_on_a_device(monkeypatch):
    """The same two guarantees on (stand-in) CuPy arrays: ids normalized on the device, .grad a fresh device
    array that clip_grad_norm can scale in place."""
    from device_standin import device_standin

    from minillm.optim import clip_grad_norm

    with device_standin(monkeypatch) as cp:
        w = mm.Tensor(cp.asarray(np.ones((4, 3), np.float32)), requires_grad=True)
        b = mm.Tensor(cp.asarray(np.ones((4, 3), np.float32)), requires_grad=True)
        (w[cp.asarray(np.array([-1, 3]))].sum() + (b + 1).sum()).backward()
        for t in (w, b):
            assert mm.backend.is_cupy(t.grad) and t.grad.flags.writeable and t.grad.flags.c_contiguous
        np.testing.assert_array_equal(w.grad.get(), [[0] * 3, [0] * 3, [0] * 3, [2] * 3])
        norm = clip_grad_norm([w, b], 1.0)
        assert norm == pytest.approx(np.sqrt(3 * 4 + 12))  # float32 sums of small integers: exact
        total = np.sqrt((w.grad.get() ** 2).sum() + (b.grad.get() ** 2).sum())
        np.testing.assert_allclose(total, 1.0, rtol=1e-6)  # scale 1 / (norm + 1e-6): 2e-7 below 1
        with pytest.raises(IndexError, match=r"shape \(4, 3\)"):
            w[cp.asarray(np.array([4]))]


def test_no_grad_and_detach():
    x = mm.Tensor(np.ones(3), requires_grad=True)
    with mm.no_grad():
        y = x * 2
    assert not y.requires_grad and y._backward is None
    z = (x * 2).detach()
    assert not z.requires_grad


def test_dtype_is_kept():
    assert mm.Tensor([1.0, 2.0]).dtype == np.float32          # Python floats -> float32
    assert mm.Tensor(np.zeros(2)).dtype == np.float64         # float64 arrays stay float64
    assert mm.Tensor([1, 2]).dtype.kind == "i"                # token ids stay ints
    x = mm.Tensor(np.ones(3, np.float32), requires_grad=True)
    y = (x * 0.5 + 1.0) / 3.0 - 2.0
    assert y.dtype == np.float32, "Python scalars must not upcast float32"
    y.sum().backward()
    assert x.grad.dtype == np.float32


def test_dropout_is_seeded_and_scaled():
    x = mm.Tensor(np.ones((200, 50)), requires_grad=True)
    a = dropout(x, 0.25, rng=np.random.default_rng(1)).data
    b = dropout(x, 0.25, rng=np.random.default_rng(1)).data
    np.testing.assert_array_equal(a, b)
    assert set(np.unique(a)) <= {0.0, 1 / 0.75}
    assert abs((a == 0).mean() - 0.25) < 0.02  # 10,000 Bernoulli(0.25): sigma = 0.0043, bound ~ 4.6 sigma
    y = dropout(x, 0.25, rng=np.random.default_rng(2))
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, y.data)  # d/dx of x * mask is the mask
    assert dropout(x, 0.25, training=False) is x


def test_clear_errors():
    with pytest.raises(RuntimeError, match="scalar"):
        (mm.Tensor(np.ones(3), requires_grad=True) * 2).backward()
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(4, 5\)"):
        mm.Tensor(np.ones((2, 3))) @ mm.Tensor(np.ones((4, 5)))
    with pytest.raises(ValueError, match="known backends"):
        mm.set_backend("tpu")
    with pytest.raises(ValueError, match="not divisible"):
        mm.split(mm.Tensor(np.ones((2, 5))), 2, axis=1)

"""Tensor: an n-d array that remembers how it was computed, and reverse-mode autograd over it.

The whole idea fits on a screen (after micrograd): every op computes its output array and, right under
it, a `backward` closure mapping the gradient of the output to the gradients of the inputs. `backward()`
orders the graph topologically and walks it from the loss to the leaves, *adding* each contribution into
the input's gradient, which is what makes a tensor used twice correct.

Conventions:
- Gradients accumulate into `.grad` of leaf tensors with `requires_grad=True` (as in PyTorch); call
  `model.zero_grad()` / `optimizer.zero_grad()` between steps. `.grad` is always an array of its own
  (writable, C-contiguous, the leaf's dtype and shape), so it may be changed in place.
- After `backward()` the graph is freed (closures and saved arrays released); a second `backward()` through
  the same graph raises a clear error unless the first one passed `retain_graph=True`.
- A tensor keeps the dtype it is given: float32 by default for Python numbers and lists, float64 when you
  give float64 (gradient checks), integers for token ids.
- Broadcasting works as in NumPy; the gradient of a broadcast operand is summed back to its own shape.

What this is not: no in-place ops on tensors that require grad, no higher-order gradients, no views that
share gradient storage. Fused ops (softmax, layer norm, attention, ...) live in `minillm.functional`.
"""
from __future__ import annotations

import contextlib
import threading

import numpy as np

from .backend import is_cupy, normalize_index, scatter_add, to_device, xp

_state = threading.local()


def is_grad_enabled() -> bool:
    return getattr(_state, "grad_enabled", True)


@contextlib.contextmanager
def no_grad():
    """Within this block no graph is recorded: outputs have requires_grad=False (inference, updates)."""
    previous = is_grad_enabled()
    _state.grad_enabled = False
    try:
        yield
    finally:
        _state.grad_enabled = previous


def _as_array(data, dtype=None):
    """An ndarray (NumPy or CuPy) from `data`; Python floats and lists of floats become float32."""
    if isinstance(data, Tensor):
        data = data.data
    if is_cupy(data) or isinstance(data, (np.ndarray, np.generic)):  # arrays, and NumPy scalars from reductions
        data = data if dtype is None else data.astype(dtype, copy=False)
        return np.asarray(data) if isinstance(data, np.generic) else data
    data = np.asarray(data, dtype=dtype)
    return data.astype(np.float32) if dtype is None and data.dtype == np.float64 else data


class Tensor:
    """An array with an optional gradient and the closure that computes its inputs' gradients."""

    __array_priority__ = 100  # so that ndarray + Tensor calls Tensor.__radd__

    def __init__(self, data, requires_grad: bool = False, dtype=None):
        self.data = _as_array(data, dtype)
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._parents: tuple[Tensor, ...] = ()
        self._backward = None  # g -> tuple of gradients, one per parent (None for "no gradient")

    # ----------------------------------------------------------------------------------------------
    # graph construction
    @staticmethod
    def _make(data, parents, backward) -> "Tensor":
        """The output of an op: records `parents` and `backward` when any parent needs a gradient."""
        out = Tensor(data)
        if is_grad_enabled() and any(p.requires_grad for p in parents):
            out.requires_grad = True
            out._parents = tuple(parents)
            out._backward = backward
        return out

    def _lift(self, other) -> "Tensor":
        """A Python number or array as a constant tensor of self's dtype (so float32 stays float32)."""
        if isinstance(other, Tensor):
            return other
        return Tensor(xp(self.data).asarray(other, dtype=self.data.dtype))

    # ----------------------------------------------------------------------------------------------
    # properties
    @property
    def shape(self) -> tuple:
        return self.data.shape

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def size(self) -> int:
        return self.data.size

    @property
    def device(self) -> str:
        return "cuda" if is_cupy(self.data) else "cpu"

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({self.data!r}{grad})"

    def numpy(self) -> np.ndarray:
        """The data as a NumPy array on the host (a copy from the GPU; the array itself on the CPU)."""
        return to_device(self.data, "cpu")

    def item(self) -> float:
        return self.data.item()

    def detach(self) -> "Tensor":
        """The same data, cut from the graph."""
        return Tensor(self.data)

    def to(self, device: str) -> "Tensor":
        """A copy on "cpu" or "cuda" that is a new leaf (use Module.to to move parameters)."""
        return Tensor(to_device(self.data, device), requires_grad=self.requires_grad)

    def astype(self, dtype) -> "Tensor":
        src = self.data.dtype
        return Tensor._make(self.data.astype(dtype), (self,), lambda g: (g.astype(src),))

    # ----------------------------------------------------------------------------------------------
    # backward
    def backward(self, grad=None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's `.grad`.

        Args:
            grad: the gradient of some scalar with respect to self; may be omitted only when self is a
                scalar (then it is 1).
            retain_graph: keep the graph so that backward can run through it again.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad (no graph was recorded)")
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"backward() without a gradient needs a scalar, but this tensor has shape {self.shape}; "
                    "reduce it first (e.g. loss.sum()) or pass grad= of the same shape"
                )
            grad = xp(self.data).ones_like(self.data)
        grad = _as_array(grad, self.data.dtype)
        if grad.shape != self.shape:
            raise ValueError(f"backward(): grad has shape {grad.shape}, tensor has shape {self.shape}")

        order = self._topological_order()
        grads = {id(self): grad}
        for node in order:  # from the output back to the leaves
            g = grads.pop(id(node), None)
            if g is None:
                continue
            if not node._parents:  # a leaf: accumulate, into an array the leaf owns
                _accumulate_grad(node, g)
                continue
            if node._backward is None:
                raise RuntimeError(
                    "backward() through a graph that was already freed: pass retain_graph=True to the "
                    "first backward() to run it twice"
                )
            for parent, pg in zip(node._parents, node._backward(g)):
                if pg is None or not parent.requires_grad:
                    continue
                if pg.shape != parent.shape:
                    raise RuntimeError(f"internal: gradient shape {pg.shape} != tensor shape {parent.shape}")
                if pg.dtype != parent.dtype:  # mixed float32/float64 graphs: each grad keeps its tensor's dtype
                    pg = pg.astype(parent.dtype)
                key = id(parent)
                grads[key] = pg if key not in grads else grads[key] + pg
            if not retain_graph:
                node._backward = None  # frees the closure and the arrays it saved

    def _topological_order(self) -> list["Tensor"]:
        """Tensors reachable from self, each after every tensor that uses it (iterative DFS)."""
        order, seen = [], set()
        stack = [(self, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            if id(node) in seen:
                continue
            seen.add(id(node))
            stack.append((node, True))
            for parent in node._parents:
                if parent.requires_grad and id(parent) not in seen:
                    stack.append((parent, False))
        return order[::-1]

    # ----------------------------------------------------------------------------------------------
    # elementwise arithmetic (broadcasting; gradients summed back to each operand's shape)
    def __add__(self, other):
        other = self._lift(other)
        return Tensor._make(
            self.data + other.data, (self, other),
            lambda g: (unbroadcast(g, self.shape), unbroadcast(g, other.shape)),
        )

    def __sub__(self, other):
        other = self._lift(other)
        return Tensor._make(
            self.data - other.data, (self, other),
            lambda g: (unbroadcast(g, self.shape), unbroadcast(-g, other.shape)),
        )

    def __mul__(self, other):
        other = self._lift(other)
        return Tensor._make(
            self.data * other.data, (self, other),
            lambda g: (unbroadcast(g * other.data, self.shape), unbroadcast(g * self.data, other.shape)),
        )

    def __truediv__(self, other):
        other = self._lift(other)
        a, b = self.data, other.data
        return Tensor._make(
            a / b, (self, other),
            lambda g: (unbroadcast(g / b, self.shape), unbroadcast(-g * a / (b * b), other.shape)),
        )

    def __neg__(self):
        return Tensor._make(-self.data, (self,), lambda g: (-g,))

    def __pow__(self, exponent):
        """x ** p for a constant number p: d/dx = p x^(p-1)."""
        if isinstance(exponent, Tensor):
            raise TypeError("Tensor ** Tensor is not supported; write exp(p * log(x))")
        p = exponent
        return Tensor._make(self.data**p, (self,), lambda g: (g * p * self.data ** (p - 1),))

    def __radd__(self, other):
        return self._lift(other) + self

    def __rsub__(self, other):
        return self._lift(other) - self

    def __rmul__(self, other):
        return self._lift(other) * self

    def __rtruediv__(self, other):
        return self._lift(other) / self

    # ----------------------------------------------------------------------------------------------
    # matrix multiply: (..., n, k) @ (..., k, m) -> (..., n, m), batch dims broadcast
    def __matmul__(self, other):
        other = self._lift(other)
        a, b = self.data, other.data
        if a.ndim < 2 or b.ndim < 2 or a.shape[-1] != b.shape[-2]:
            raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not fit (need (..., n, k) @ (..., k, m))")

        def backward(g):  # dA = G B^T, dB = A^T G
            da = g @ b.swapaxes(-1, -2)
            db = a.swapaxes(-1, -2) @ g
            return unbroadcast(da, a.shape), unbroadcast(db, b.shape)

        return Tensor._make(a @ b, (self, other), backward)

    def __rmatmul__(self, other):
        return self._lift(other) @ self

    # ----------------------------------------------------------------------------------------------
    # elementwise functions
    def exp(self):
        y = xp(self.data).exp(self.data)
        return Tensor._make(y, (self,), lambda g: (g * y,))

    def log(self):
        return Tensor._make(xp(self.data).log(self.data), (self,), lambda g: (g / self.data,))

    def tanh(self):
        y = xp(self.data).tanh(self.data)
        return Tensor._make(y, (self,), lambda g: (g * (1 - y * y),))

    def sqrt(self):
        y = xp(self.data).sqrt(self.data)
        return Tensor._make(y, (self,), lambda g: (g / (2 * y),))

    def relu(self):
        keep = self.data > 0
        return Tensor._make(self.data * keep, (self,), lambda g: (g * keep,))

    # ----------------------------------------------------------------------------------------------
    # reductions
    def sum(self, axis=None, keepdims: bool = False):
        def backward(g):
            if not keepdims and axis is not None:
                g = xp(g).expand_dims(g, axis)
            return (xp(g).broadcast_to(g, self.shape),)

        return Tensor._make(self.data.sum(axis=axis, keepdims=keepdims), (self,), backward)

    def mean(self, axis=None, keepdims: bool = False):
        axes = range(self.ndim) if axis is None else (axis,) if isinstance(axis, int) else axis
        n = int(np.prod([self.shape[a] for a in axes]))
        return self.sum(axis=axis, keepdims=keepdims) * (1.0 / n)

    def max(self, axis=None, keepdims: bool = False):
        """Max over `axis`; the gradient is shared equally among tied maxima."""
        m = self.data.max(axis=axis, keepdims=True)

        def backward(g):
            if not keepdims and axis is not None:
                g = xp(g).expand_dims(g, axis)
            elif not keepdims:
                g = g.reshape((1,) * self.ndim)
            winners = (self.data == m).astype(self.data.dtype)
            return (winners * (g / winners.sum(axis=axis, keepdims=True)),)

        out = m if keepdims else (m.squeeze(axis) if axis is not None else m.reshape(()))
        return Tensor._make(out, (self,), backward)

    # ----------------------------------------------------------------------------------------------
    # shapes
    def reshape(self, *shape):
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        src = self.shape
        return Tensor._make(self.data.reshape(shape), (self,), lambda g: (g.reshape(src),))

    view = reshape

    def transpose(self, *axes):
        """Permute axes (all of them, like np.transpose); no axes reverses them."""
        axes = axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes
        axes = tuple(axes) if axes else tuple(range(self.ndim))[::-1]
        inverse = tuple(np.argsort(axes))
        return Tensor._make(self.data.transpose(axes), (self,), lambda g: (g.transpose(inverse),))

    def swapaxes(self, a: int, b: int):
        axes = list(range(self.ndim))
        axes[a], axes[b] = axes[b], axes[a]
        return self.transpose(axes)

    @property
    def T(self):
        return self.transpose()

    def __getitem__(self, index):
        """Basic and advanced indexing; the backward scatters (adds) into a zero array.

        Integer-array indices are normalized first (negative ids to [0, n), out-of-range ids an IndexError
        naming the shape), so that the backward sees one spelling of each entry (see normalize_index).
        """
        if isinstance(index, tuple):
            index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
        index = index.data if isinstance(index, Tensor) else index
        index = normalize_index(self.shape, index, "Tensor indexing", like=self.data)
        basic = all(i is None or i is Ellipsis or isinstance(i, (int, slice))
                    for i in (index if isinstance(index, tuple) else (index,)))

        def backward(g):
            full = xp(g).zeros(self.shape, dtype=g.dtype)
            if basic:  # ints and slices select each entry at most once: plain assignment
                full[index] = g
            else:      # an index array may repeat entries: their gradients must add up
                scatter_add(full, index, g)
            return (full,)

        return Tensor._make(self.data[index], (self,), backward)

    def take(self, indices, axis: int = 0):
        """Rows of self picked by integer `indices` (an embedding lookup when axis=0)."""
        indices = indices.data if isinstance(indices, Tensor) else indices
        if axis != 0:
            return self.swapaxes(0, axis).take(indices, 0).swapaxes(0, axis)
        return self[indices]

    def masked_fill(self, mask, value):
        """Where mask (bool, broadcastable) is True, value; elsewhere self. No gradient through filled entries."""
        mask = mask.data if isinstance(mask, Tensor) else mask
        out = xp(self.data).where(mask, xp(self.data).asarray(value, dtype=self.dtype), self.data)
        return Tensor._make(
            out, (self,), lambda g: (unbroadcast(xp(g).where(mask, 0, g).astype(g.dtype), self.shape),)
        )


# --------------------------------------------------------------------------------------------------
# free functions over tensors
def _accumulate_grad(leaf: Tensor, g) -> None:
    """leaf.grad = leaf.grad + g (or g), always as a new array: writable, C-contiguous, of the leaf's dtype
    and shape, shared with nothing.

    Inside backward() gradient arrays are shared freely and never written: `x + y` hands the same array
    to both operands, sum's backward is a read-only broadcast view, reshape's a view, the root gradient is
    the caller's own array. What lands in `.grad` is the user's to change in place (clip_grad_norm scales
    it), so this one place, where every leaf gradient is stored, copies. The cost is one copy of each
    parameter per backward(), next to an optimizer step that reads and writes four such arrays.
    """
    m = xp(g)
    out = m.empty(leaf.shape, dtype=leaf.dtype)  # C order
    if leaf.grad is None:
        out[...] = g
    else:
        m.add(leaf.grad, g, out=out)
    leaf.grad = out


def unbroadcast(g, shape):
    """Sum `g` down to `shape`: the gradient of a broadcast operand (leading dims added, size-1 dims)."""
    if g.shape == tuple(shape):
        return g
    extra = g.ndim - len(shape)
    g = g.sum(axis=tuple(range(extra))) if extra > 0 else g
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    if stretched:
        g = g.sum(axis=stretched, keepdims=True)
    return g.reshape(shape)


def tensor(data, requires_grad: bool = False, dtype=None) -> Tensor:
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)


def where(condition, a: Tensor, b: Tensor) -> Tensor:
    """Elementwise `a` where condition else `b`; gradients flow to the chosen side only."""
    cond = condition.data if isinstance(condition, Tensor) else condition
    a = a if isinstance(a, Tensor) else b._lift(a)
    b = b if isinstance(b, Tensor) else a._lift(b)
    m = xp(a.data)
    return Tensor._make(
        m.where(cond, a.data, b.data), (a, b),
        lambda g: (unbroadcast(m.where(cond, g, 0).astype(g.dtype), a.shape),
                   unbroadcast(m.where(cond, 0, g).astype(g.dtype), b.shape)),
    )


def concatenate(tensors, axis: int = 0) -> Tensor:
    tensors = list(tensors)
    m = xp(tensors[0].data)
    sizes = [t.shape[axis] for t in tensors]
    bounds = np.cumsum(sizes)[:-1].tolist()
    return Tensor._make(
        m.concatenate([t.data for t in tensors], axis=axis), tensors,
        lambda g: tuple(m.split(g, bounds, axis=axis)),
    )


def split(x: Tensor, sections, axis: int = 0) -> list[Tensor]:
    """Split into equal `sections` (an int) or at the given sizes (a list of ints)."""
    n = x.shape[axis]
    if isinstance(sections, int):
        if n % sections:
            raise ValueError(f"split: axis {axis} of shape {x.shape} is not divisible into {sections} parts")
        sizes = [n // sections] * sections
    else:
        sizes = list(sections)
        if sum(sizes) != n:
            raise ValueError(f"split: sizes {sizes} do not add up to {n} (axis {axis} of shape {x.shape})")
    out, start = [], 0
    for size in sizes:
        index = [slice(None)] * x.ndim
        index[axis] = slice(start, start + size)
        out.append(x[tuple(index)])
        start += size
    return out


def dropout(x: Tensor, p: float, training: bool = True, rng=None) -> Tensor:
    """Inverted dropout: zero each entry with probability p and scale the rest by 1/(1-p).

    `rng` is a NumPy Generator (or CuPy RandomState) so that runs are reproducible; the default is the
    generator seeded by `minillm.manual_seed`.
    """
    if not training or p == 0.0:
        return x
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    rng = rng if rng is not None else default_rng()
    m = xp(x.data)
    if is_cupy(x.data):  # draw on the device: no host round-trip inside a training step
        keep = m.random.random(x.shape, dtype=m.float32) >= p
    else:
        keep = rng.random(x.shape, dtype=np.float32) >= p
    scale = m.asarray(1.0 / (1.0 - p), dtype=x.dtype)
    mask = keep * scale
    return Tensor._make(x.data * mask, (x,), lambda g: (g * mask,))


_rng = np.random.default_rng(0)


def manual_seed(seed: int) -> None:
    """Seed minillm's default generator (dropout, weight initialisation)."""
    global _rng
    _rng = np.random.default_rng(seed)


def default_rng() -> np.random.Generator:
    return _rng

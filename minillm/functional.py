"""Fused differentiable ops: each one a `Function` whose forward and backward are kernel calls.

Composing softmax from exp, sum and divide would work (and `minillm.tensor` has those ops), but it would
make four passes over memory and keep four intermediate arrays alive for the backward pass. A fused op
makes one pass forward, saves only what its backward needs, and calls a hand-written kernel both ways:

    op                              forward kernel          saved for backward          backward kernel
    linear(x, W, b)                 matmul (BLAS)           x, W                        two matmuls
    softmax(x)                      softmax_fwd             y                           softmax_bwd
    layer_norm(x, w, b)             layernorm_fwd           x, mean, rstd               layernorm_bwd
    gelu(x)                         gelu_fwd                x                           gelu_bwd
    gelu(x, approximate="tanh")     gelu_tanh_fwd           x                           gelu_tanh_bwd
    scaled_dot_product_attention    attention_fwd           q, k, v, out, lse           attention_bwd
    cross_entropy(logits, t)        cross_entropy_fwd       logits, lse                 cross_entropy_bwd

Which kernels run is `minillm.set_backend(...)`: "numpy" (the reference), "numba" or "cupy"
(`kernels.get(name)`; the math of each kernel is in its `reference.py`).
"""
from __future__ import annotations

from .backend import kernels_for, xp
from .tensor import Tensor, dropout  # noqa: F401  (dropout is part of the functional API)


class Function:
    """A differentiable op on raw arrays. Subclasses define forward(*arrays, **params) -> array and
    backward(grad) -> one gradient (or None) per input; `apply` wires the result into the graph."""

    @classmethod
    def apply(cls, *inputs: Tensor, **params) -> Tensor:
        fn = cls()
        fn.kernels = kernels_for(inputs[0].data)
        out = fn.forward(*(t.data for t in inputs), **params)
        return Tensor._make(out, inputs, fn.backward)


class Linear(Function):
    """y = x W^T + b over the last axis; leading axes are flattened to rows, (..., in) -> (N, in)."""

    def forward(self, x, weight, bias=None):
        self.x2 = x.reshape(-1, x.shape[-1])                 # (N, in)
        self.weight, self.lead, self.has_bias = weight, x.shape[:-1], bias is not None
        y = self.x2 @ weight.T                               # (N, in) @ (in, out) -> (N, out)
        if bias is not None:
            y += bias
        return y.reshape(*self.lead, weight.shape[0])

    def backward(self, dy):
        g = dy.reshape(-1, dy.shape[-1])                     # (N, out)
        dx = (g @ self.weight).reshape(*self.lead, self.weight.shape[1])   # dX = dY W
        dw = g.T @ self.x2                                   # dW = dY^T X, (out, in)
        return (dx, dw, g.sum(axis=0)) if self.has_bias else (dx, dw)


class Softmax(Function):
    def forward(self, x, mask=None):
        self.y = self.kernels.softmax_fwd(x, mask)
        return self.y

    def backward(self, dy):
        return (self.kernels.softmax_bwd(self.y, dy),)


class LayerNorm(Function):
    def forward(self, x, weight, bias, eps=1e-12):
        y, self.mean, self.rstd = self.kernels.layernorm_fwd(x, weight, bias, eps)
        self.x, self.weight = x, weight
        return y

    def backward(self, dy):
        return self.kernels.layernorm_bwd(dy, self.x, self.weight, self.mean, self.rstd)


class Gelu(Function):
    def forward(self, x):
        self.x = x
        return self.kernels.gelu_fwd(x)

    def backward(self, dy):
        return (self.kernels.gelu_bwd(self.x, dy),)


class GeluTanh(Function):
    def forward(self, x):
        self.x = x
        return self.kernels.gelu_tanh_fwd(x)

    def backward(self, dy):
        return (self.kernels.gelu_tanh_bwd(self.x, dy),)


class Attention(Function):
    def forward(self, q, k, v, key_mask=None, causal=False, scale=None):
        self.options = dict(key_mask=key_mask, causal=causal, scale=scale)
        self.out, self.lse = self.kernels.attention_fwd(q, k, v, **self.options)
        self.q, self.k, self.v = q, k, v
        return self.out

    def backward(self, dout):
        return self.kernels.attention_bwd(dout, self.q, self.k, self.v, self.out, self.lse, **self.options)


class PackedAttention(Attention):
    """Attention on Q, K, V packed in one (3, B, H, T, D) array, as the fused QKV projection makes them.

    Slicing q, k, v out of the packed tensor would give three graph nodes whose backward each allocates a
    zero array of the full packed size; here the backward writes dQ, dK, dV into one array instead. That
    array is laid out as the projection's output, (B, T, 3, H, D) in memory, and returned as the
    (3, B, H, T, D) view of it: the transpose and reshape that lead back to the projection's (B, T, 3C)
    gradient are then views, not copies (a stacked (3, B, H, T, D) array would be copied there).
    """

    def forward(self, qkv, key_mask=None, causal=False, scale=None):
        return super().forward(qkv[0], qkv[1], qkv[2], key_mask, causal, scale)

    def backward(self, dout):
        B, H, T, D = self.q.shape
        packed = xp(dout).empty((B, T, 3, H, D), dtype=dout.dtype)
        view = packed.transpose(2, 0, 3, 1, 4)                   # (3, B, H, T, D), as qkv
        for i, g in enumerate(super().backward(dout)):          # dQ, dK, dV, each (B, H, T, D)
            view[i] = g
        return (view,)


class CrossEntropy(Function):
    def forward(self, logits, targets, ignore_index=-100):
        self.logits, self.targets, self.ignore_index = logits, targets, ignore_index
        loss, self.lse = self.kernels.cross_entropy_fwd(logits, targets, ignore_index)
        return xp(logits).asarray(loss, dtype=logits.dtype)

    def backward(self, dloss):
        dlogits = self.kernels.cross_entropy_bwd(
            self.logits, self.targets, self.lse, float(dloss), self.ignore_index
        )
        return (dlogits,)


# --------------------------------------------------------------------------------------------------
# the public functions
def softmax(x: Tensor, axis: int = -1, mask=None) -> Tensor:
    """softmax(x)_i = exp(x_i - max x) / sum_j exp(x_j - max x) over `axis`.

    `mask` (bool, broadcastable to x, True = keep) excludes entries; a fully masked row gives zeros.
    """
    if mask is not None:
        mask = mask.data if isinstance(mask, Tensor) else mask
    if axis in (-1, x.ndim - 1):
        return Softmax.apply(x, mask=mask)
    moved = x.swapaxes(axis, -1)
    if mask is not None:
        mask = xp(mask).broadcast_to(mask, x.shape).swapaxes(axis, -1)
    return Softmax.apply(moved, mask=mask).swapaxes(axis, -1)


def layer_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-12) -> Tensor:
    """y = (x - mean) / sqrt(var + eps) * weight + bias over the last axis (biased variance)."""
    if weight.shape != (x.shape[-1],) or bias.shape != (x.shape[-1],):
        raise ValueError(
            f"layer_norm: weight {weight.shape} and bias {bias.shape} must both be ({x.shape[-1]},) "
            f"for input of shape {x.shape}"
        )
    return LayerNorm.apply(x, weight, bias, eps=eps)


def gelu(x: Tensor, approximate: str = "none") -> Tensor:
    """GELU, with PyTorch's spelling of its two forms.

    approximate="none": GELU(x) = x * Phi(x) = x/2 * (1 + erf(x / sqrt 2)), the exact form BERT uses.
    approximate="tanh": GELU(x) ~= x/2 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))), GPT-2's `gelu_new`.
    """
    if approximate == "none":
        return Gelu.apply(x)
    if approximate == "tanh":
        return GeluTanh.apply(x)
    raise ValueError(f"gelu: approximate must be 'none' (the exact erf form) or 'tanh', got {approximate!r}")


def scaled_dot_product_attention(q: Tensor, k: Tensor, v: Tensor, key_mask=None, causal: bool = False,
                                 scale: float | None = None) -> Tensor:
    """Attention(Q, K, V) = softmax(Q K^T * scale + mask) V, scale = 1/sqrt(D) by default.

    Args:
        q: (B, H, Tq, D); k, v: (B, H, Tk, D).
        key_mask: (B, Tk) bool (or 0/1 ints such as a tokenizer's attention_mask), True = may be attended to.
        causal: query i sees key j only when j <= i + Tk - Tq.
    Returns:
        (B, H, Tq, D)
    """
    if q.ndim != 4 or k.shape != v.shape or q.shape[:2] != k.shape[:2] or q.shape[3] != k.shape[3]:
        raise ValueError(
            f"scaled_dot_product_attention: expected q (B, H, Tq, D) and k, v (B, H, Tk, D); got "
            f"q {q.shape}, k {k.shape}, v {v.shape}"
        )
    if key_mask is not None:
        key_mask = key_mask.data if isinstance(key_mask, Tensor) else key_mask
        key_mask = xp(key_mask).asarray(key_mask).astype(bool, copy=False)
    return Attention.apply(q, k, v, key_mask=key_mask, causal=causal, scale=scale)


def packed_attention(qkv: Tensor, key_mask=None, causal: bool = False, scale: float | None = None) -> Tensor:
    """scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], ...) for qkv of shape (3, B, H, T, D)."""
    if qkv.ndim != 5 or qkv.shape[0] != 3:
        raise ValueError(f"packed_attention: expected qkv of shape (3, B, H, T, D), got {qkv.shape}")
    if key_mask is not None:
        key_mask = key_mask.data if isinstance(key_mask, Tensor) else key_mask
        key_mask = xp(key_mask).asarray(key_mask).astype(bool, copy=False)
    return PackedAttention.apply(qkv, key_mask=key_mask, causal=causal, scale=scale)


def biased_attention(q: Tensor, k: Tensor, v: Tensor, bias, key_mask=None, scale: float | None = None) -> Tensor:
    """softmax(Q K^T * scale + bias, masked) V, written out: two batched matmuls around the softmax kernel.

    For an additive, constant bias per (head, query, key) such as ALiBi's -m_h |i - j| (models/bert.py),
    which the fused kernel does not take. It materialises the (B, H, Tq, Tk) scores, so it costs
    O(B H Tq Tk) memory where the fused kernel keeps one row in registers; the gradient flows through
    matmul and the softmax kernel's own backward (the bias has none).

    Args:
        q: (B, H, Tq, D); k, v: (B, H, Tk, D).
        bias: array broadcastable to (B, H, Tq, Tk), on the same device as q.
        key_mask: (B, Tk) bool or 0/1 ints, True = may be attended to; a row with no key left gives zeros.
    Returns:
        (B, H, Tq, D)
    """
    if q.ndim != 4 or k.shape != v.shape or q.shape[:2] != k.shape[:2] or q.shape[3] != k.shape[3]:
        raise ValueError(f"biased_attention: expected q (B, H, Tq, D) and k, v (B, H, Tk, D); got "
                         f"q {q.shape}, k {k.shape}, v {v.shape}")
    scale = 1.0 / float(q.shape[3]) ** 0.5 if scale is None else scale
    scores = (q @ k.swapaxes(-1, -2)) * scale + bias                  # (B, H, Tq, Tk)
    mask = None
    if key_mask is not None:
        key_mask = key_mask.data if isinstance(key_mask, Tensor) else key_mask
        mask = xp(key_mask).asarray(key_mask).astype(bool, copy=False)[:, None, None, :]  # (B, 1, 1, Tk)
        mask = xp(mask).ascontiguousarray(xp(mask).broadcast_to(mask, scores.shape))
    return softmax(scores, mask=mask) @ v                             # (B, H, Tq, D)


def cross_entropy(logits: Tensor, targets, ignore_index: int = -100) -> Tensor:
    """Mean over non-ignored rows of -log softmax(logits)[target]; logits (..., V), targets (...) ints."""
    targets = targets.data if isinstance(targets, Tensor) else targets
    if logits.shape[:-1] != targets.shape:
        raise ValueError(
            f"cross_entropy: logits {logits.shape} need targets of shape {logits.shape[:-1]}, got {targets.shape}"
        )
    if logits.ndim != 2:
        logits = logits.reshape(-1, logits.shape[-1])  # (..., V) -> (N, V)
        targets = targets.reshape(-1)
    return CrossEntropy.apply(logits, targets=targets, ignore_index=ignore_index)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """y = x W^T + b with W of shape (out, in), as in PyTorch and the Hugging Face checkpoints.

    One graph node: its backward is two matmuls (dX = dY W, dW = dY^T X over all rows at once) and a
    column sum for the bias, instead of a batch of per-sample products summed afterwards.
    """
    if x.shape[-1] != weight.shape[1] or (bias is not None and bias.shape != (weight.shape[0],)):
        raise ValueError(
            f"linear: input (..., {x.shape[-1]}) does not fit weight {weight.shape}"
            + (f" and bias {bias.shape}" if bias is not None else "") + f"; input shape {x.shape}"
        )
    return Linear.apply(x, weight) if bias is None else Linear.apply(x, weight, bias)

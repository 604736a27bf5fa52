"""The layers a BERT is made of: Linear, Embedding, LayerNorm, Dropout.

Weights are initialised as BERT does (normal, std = initializer_range = 0.02; biases zero; LayerNorm
weight one), from minillm's seeded generator, so that `mm.manual_seed(s)` makes a model reproducible.
"""
from __future__ import annotations

import numpy as np

from .. import functional as F
from ..tensor import Tensor, default_rng
from .module import Module, Parameter


def normal_init(shape, std: float = 0.02, rng=None) -> np.ndarray:
    rng = rng if rng is not None else default_rng()
    return (rng.standard_normal(shape) * std).astype(np.float32)


class Linear(Module):
    """y = x W^T + b; W is (out_features, in_features) as in PyTorch and Hugging Face checkpoints."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, std: float = 0.02):
        self.weight = Parameter(normal_init((out_features, in_features), std))
        self.bias = Parameter(np.zeros(out_features, np.float32)) if bias else None

    def forward(self, x: Tensor) -> Tensor:  # (..., in) -> (..., out)
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        out_features, in_features = self.weight.shape
        return f"in_features={in_features}, out_features={out_features}, bias={self.bias is not None}"


class Embedding(Module):
    """A lookup table: row i of `weight` (num_embeddings, dim) is the vector of id i."""

    def __init__(self, num_embeddings: int, embedding_dim: int, std: float = 0.02):
        self.weight = Parameter(normal_init((num_embeddings, embedding_dim), std))

    def forward(self, ids) -> Tensor:  # (B, T) ints -> (B, T, C)
        ids = ids.data if isinstance(ids, Tensor) else ids
        n = self.weight.shape[0]
        if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= n):
            raise IndexError(f"Embedding: ids must be in [0, {n}), got min {int(ids.min())} max {int(ids.max())}")
        return self.weight.take(ids, axis=0)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, {self.weight.shape[1]}"


class LayerNorm(Module):
    """Normalise over the last axis, then scale and shift: (x - mean)/sqrt(var + eps) * weight + bias."""

    def __init__(self, dim: int, eps: float = 1e-12):
        self.weight = Parameter(np.ones(dim, np.float32))
        self.bias = Parameter(np.zeros(dim, np.float32))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class Dropout(Module):
    """Zero entries with probability p while training (scaled by 1/(1-p)); identity in eval mode."""

    def __init__(self, p: float = 0.1):
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"

"""minillm: a from-scratch deep-learning engine for learning how BERT-style language models work.

Shape legend, used in comments throughout the code (STYLE.md habit 5):

    B batch, T sequence length, C hidden channels, H heads, D head size (C = H * D), V vocabulary, N rows

Layers, from the top: cli -> train -> data -> models.bert -> tokenizer -> nn, optim -> functional ->
tensor -> kernels (NumPy reference, Numba CPU, CUDA via CuPy). Imports point downward only.
"""
from . import functional, nn, optim
from .backend import get_backend, set_backend
from .tensor import Tensor, concatenate, default_rng, manual_seed, no_grad, split, tensor, where

__version__ = "0.1.0"

__all__ = [
    "Tensor", "tensor", "no_grad", "concatenate", "split", "where", "manual_seed", "default_rng",
    "set_backend", "get_backend", "functional", "nn", "optim",
    "BertConfig", "BertModel", "BertForMaskedLM", "BertForSequenceClassification", "BertTokenizer",
]


def __getattr__(name):
    # The model and tokenizer are imported on first use, so `import minillm` stays light.
    if name in ("BertConfig", "BertModel", "BertForMaskedLM", "BertForSequenceClassification"):
        from .models import bert

        return getattr(bert, name)
    if name == "BertTokenizer":
        from .tokenizer import BertTokenizer

        return BertTokenizer
    raise AttributeError(f"module 'minillm' has no attribute {name!r}")

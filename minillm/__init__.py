"""minillm: a from-scratch deep-learning engine for learning how BERT-style language models work.

Shape legend, used in the shape comments on tensor lines throughout the code:

    B batch, T sequence length, C hidden channels, H heads, D head size (C = H * D), V vocabulary, N rows

Layers, from the top: cli -> train -> data -> models.bert -> tokenizer -> nn, optim -> functional ->
tensor -> kernels (NumPy reference, Numba CPU, CUDA via CuPy). Imports point downward only.
"""
import os
import sys

# A training step alternates Numba's parallel kernels (OpenMP threads) with NumPy's matmuls (OpenBLAS
# threads) on the same cores. By default both thread pools spin for a while after each call, each stealing
# the cores the other one needs: measured on 2 cores, a BERT-mini step ran 1.7x slower than with sleeping
# pools. Each library reads its variable when it loads, hence here, first; your own settings win. A library
# loaded before minillm (`import numpy` first) is fixed after the imports below, by
# backend.settle_thread_pools, or named in a warning when it cannot be.
_thread_env_set_by_user = {name for name in ("OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT") if name in os.environ}
_numba_pool_started = getattr(sys.modules.get("numba.np.ufunc.parallel"), "_is_initialized", False)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # spin 2^4 cycles, then sleep (OpenBLAS default 2^28)

from . import functional, nn, optim  # noqa: E402
from . import backend  # noqa: E402
from .backend import get_backend, set_backend  # noqa: E402
from .tensor import Tensor, concatenate, default_rng, manual_seed, no_grad, split, tensor, where  # noqa: E402

# {variable: "in effect" | "fixed now" | "not in effect"}: what minillm's import found and did
thread_settings = backend.settle_thread_pools(_thread_env_set_by_user,
                                              _numba_pool_started and backend.numba_pool_started())
# "set" | "user" | "off" | "not glibc": whether freed memory is kept for the next step (backend.keep_freed_memory)
malloc_setting = backend.keep_freed_memory()

__version__ = "0.1.0"

__all__ = [
    "Tensor", "tensor", "no_grad", "concatenate", "split", "where", "manual_seed", "default_rng",
    "set_backend", "get_backend", "functional", "nn", "optim",
    "BertConfig", "BertModel", "BertForMaskedLM", "BertForSequenceClassification", "BertTokenizer",
    "GPT2Config", "GPT2Model", "GPT2LMHeadModel",
    "GPT2Tokenizer", "ByteLevelBPETokenizer",
]


def __getattr__(name):
    # The model and tokenizer are imported on first use, so `import minillm` stays light.
    if name in ("BertConfig", "BertModel", "BertForMaskedLM", "BertForSequenceClassification"):
        from .models import bert

        return getattr(bert, name)
    if name in ("GPT2Config", "GPT2Model", "GPT2LMHeadModel"):
        from .models import gpt2

        return getattr(gpt2, name)
    if name == "BertTokenizer":
        from .tokenizer import BertTokenizer

        return BertTokenizer
    if name in ("GPT2Tokenizer", "ByteLevelBPETokenizer"):
        from . import bpe

        return getattr(bpe, name)
    raise AttributeError(f"module 'minillm' has no attribute {name!r}")

"""GPT-2 (Radford et al. 2019) on minillm's autograd: learned positions, pre-LN decoder blocks, tied LM head.

Every module and parameter carries the Hugging Face name and shape, so `named_parameters()` reads like the
key list of a GPT-2 `model.safetensors` (e.g. `transformer.h.0.attn.c_attn.weight`) and loading one is a
dictionary copy (see `checkpoint.py`, which knows no model family). One block, with x of shape (B, T, C):

    x = x + Dropout(CausalAttention(LayerNorm_1(x)) W_proj)               # ln_1, attn
    x = x + Dropout(GELU_tanh(LayerNorm_2(x) W_fc) W_proj)                # ln_2, mlp

and after the last block a final LayerNorm (`ln_f`); the logits are h E^T with E the token embeddings
(`wte`), the same matrix at both ends. Differences from BERT worth seeing side by side (bert.py): the
LayerNorm comes *before* each sublayer (pre-LN, so the residual stream is never normalised), attention is
causal (`scaled_dot_product_attention(..., causal=True)`: position i sees positions <= i), the activation
is GELU's tanh approximation (`gelu(x, approximate="tanh")`, as GPT-2 was trained), and the projections
are GPT-2's `Conv1D`: a linear layer whose weight is stored (in, out), the transpose of `nn.Linear`'s.

What this file is not: no key/value cache (every forward pass re-reads the whole sequence), no
cross-attention, no `scale_attn_by_inverse_layer_idx`; the float32 engine does not need
`reorder_and_upcast_attn`.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from .. import functional as F
from ..backend import xp
from ..nn import Dropout, Embedding, LayerNorm, Module, ModuleList, Parameter
from ..nn.layers import normal_init
from ..tensor import Tensor
from .checkpoint import CheckpointMixin, PretrainedConfig
from .outputs import Output, as_ids

# transformers' names for the activations GPT-2 style configs use -> functional.gelu's `approximate`
ACTIVATIONS = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu": "none"}


@dataclass
class GPT2Config(PretrainedConfig):
    """The hyper-parameters, with the field names of Hugging Face's GPT-2 config.json.

    GPT-2's names are older than BERT's; the BERT-style names are read-only aliases (as transformers'
    `attribute_map`): hidden_size = n_embd, num_hidden_layers = n_layer, num_attention_heads = n_head,
    max_position_embeddings = n_positions, intermediate_size = n_inner or 4 n_embd.
    """

    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None
    activation_function: str = "gelu_new"
    resid_pdrop: float = 0.1
    embd_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    scale_attn_weights: bool = True
    scale_attn_by_inverse_layer_idx: bool = False
    tie_word_embeddings: bool = True
    bos_token_id: int | None = 50256
    eos_token_id: int | None = 50256
    model_type: str = "gpt2"
    architectures: list | None = None
    extra: dict = field(default_factory=dict, repr=False)  # unknown config.json keys, kept for round trips

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the field for any value the model cannot be built or run with."""
        def fail(name, why):
            raise ValueError(f"GPT2Config: {name} = {getattr(self, name)!r} {why}")

        def is_int(v):
            return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

        def is_real(v):
            return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)

        for name in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 1:
                fail(name, "must be a positive integer")
        if self.n_inner is not None and (not is_int(self.n_inner) or self.n_inner < 1):
            fail("n_inner", "must be a positive integer, or null for 4 * n_embd")
        if self.n_embd % self.n_head:
            fail("n_embd", f"is not divisible by n_head = {self.n_head} (each head gets n_embd / n_head channels)")
        for name in ("resid_pdrop", "embd_pdrop", "attn_pdrop"):
            if not is_real(getattr(self, name)) or not 0.0 <= getattr(self, name) < 1.0:
                fail(name, "must be a probability in [0, 1)")
        for name in ("layer_norm_epsilon", "initializer_range"):
            if not is_real(getattr(self, name)) or not 0.0 < getattr(self, name) < float("inf"):
                fail(name, "must be a positive number")
        if self.activation_function not in ACTIVATIONS:
            fail("activation_function", f"is not supported (one of {', '.join(ACTIVATIONS)})")
        if self.scale_attn_weights is not True:
            fail("scale_attn_weights", "is not supported (attention scores are always scaled by 1/sqrt(D))")
        if self.scale_attn_by_inverse_layer_idx:
            fail("scale_attn_by_inverse_layer_idx", "is not supported")
        if self.tie_word_embeddings is not True:
            fail("tie_word_embeddings", "is not supported (the LM head is always the token embedding matrix)")

    @property
    def hidden_size(self) -> int:
        return self.n_embd

    @property
    def num_hidden_layers(self) -> int:
        return self.n_layer

    @property
    def num_attention_heads(self) -> int:
        return self.n_head

    @property
    def max_position_embeddings(self) -> int:
        return self.n_positions

    @property
    def intermediate_size(self) -> int:
        return self.n_inner if self.n_inner is not None else 4 * self.n_embd

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head


# --------------------------------------------------------------------------------------------------
# the blocks
class Conv1D(Module):
    """y = x W + b with W of shape (in, out): GPT-2's layout, kept from the original TensorFlow code.

    The name is historical (a 1x1 convolution is a linear layer); the point is the weight's orientation, the
    transpose of `nn.Linear`'s (out, in). Storing it as the checkpoint does means a GPT-2 state dict loads
    and saves unchanged; the transpose happens in forward, as a view: (in, out)^T is the (out, in) that
    `functional.linear` takes, and its backward transposes dW back.
    """

    def __init__(self, in_features: int, out_features: int, std: float = 0.02):
        self.weight = Parameter(normal_init((in_features, out_features), std))
        self.bias = Parameter(np.zeros(out_features, np.float32))

    def forward(self, x: Tensor) -> Tensor:  # (..., in) -> (..., out)
        return F.linear(x, self.weight.T, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.weight.shape[0]}, out_features={self.weight.shape[1]}"


class GPT2Attention(Module):
    """Causal multi-head self-attention: Q, K, V from one (C, 3C) projection, then the fused kernel."""

    def __init__(self, config: GPT2Config):
        C, std = config.n_embd, config.initializer_range
        self.num_heads = config.n_head
        self.c_attn = Conv1D(C, 3 * C, std)
        # GPT-2's scaled init of the projections into the residual stream (paper, sec. 2.3): 1/sqrt(2 n_layer)
        self.c_proj = Conv1D(C, C, std / math.sqrt(2 * config.n_layer))
        self.resid_dropout = Dropout(config.resid_pdrop)
        self.dropout_p = config.attn_pdrop

    def forward(self, x: Tensor, key_mask) -> Tensor:
        B, T, C = x.shape
        H = self.num_heads
        qkv = self.c_attn(x).reshape(B, T, 3, H, C // H).transpose(2, 0, 3, 1, 4)  # (B, T, 3C) -> (3, B, H, T, D)
        if self.training and self.dropout_p > 0:
            _warn_attention_dropout(self.dropout_p)
        out = F.packed_attention(qkv, key_mask=key_mask, causal=True)              # (B, H, T, D)
        out = out.transpose(0, 2, 1, 3).reshape(B, T, C)                           # (B, T, C)
        return self.resid_dropout(self.c_proj(out))


_warned_attention_dropout = False


def _warn_attention_dropout(p: float) -> None:
    global _warned_attention_dropout
    if not _warned_attention_dropout:  # once per process
        _warned_attention_dropout = True
        warnings.warn(
            f"attn_pdrop={p} is not applied: the fused attention kernel never materialises the probabilities it "
            "would drop. Residual and embedding dropout still apply.", stacklevel=3,
        )


class GPT2MLP(Module):
    def __init__(self, config: GPT2Config):
        C, std = config.n_embd, config.initializer_range
        self.c_fc = Conv1D(C, config.intermediate_size, std)
        self.c_proj = Conv1D(config.intermediate_size, C, std / math.sqrt(2 * config.n_layer))
        self.dropout = Dropout(config.resid_pdrop)
        self.approximate = ACTIVATIONS[config.activation_function]

    def forward(self, x: Tensor) -> Tensor:  # (B, T, C) -> (B, T, 4C) -> (B, T, C)
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate=self.approximate)))


class GPT2Block(Module):
    """Pre-LN: each sublayer reads a normalised copy of the residual stream and adds its result back."""

    def __init__(self, config: GPT2Config):
        self.ln_1 = LayerNorm(config.n_embd, config.layer_norm_epsilon)
        self.attn = GPT2Attention(config)
        self.ln_2 = LayerNorm(config.n_embd, config.layer_norm_epsilon)
        self.mlp = GPT2MLP(config)

    def forward(self, x: Tensor, key_mask) -> Tensor:
        x = x + self.attn(self.ln_1(x), key_mask)
        return x + self.mlp(self.ln_2(x))


# --------------------------------------------------------------------------------------------------
# the models
class GPT2PreTrainedModel(CheckpointMixin, Module):
    """What every GPT-2 class tells the (model-agnostic) checkpoint code: its config class, the attribute
    that holds the bare model in a task model, and the checkpoint keys that are copies, not parameters:
    `lm_head.weight` (tied to `wte`), and the causal-mask buffers `attn.bias` / `attn.masked_bias` that
    older GPT-2 checkpoints (the original `gpt2` on the Hub) carry."""

    config_class = GPT2Config
    base_model_prefix = "transformer"
    ignored_checkpoint_keys = ("lm_head.weight", ".attn.bias", ".attn.masked_bias")


class GPT2Model(GPT2PreTrainedModel):
    """The decoder stack: returns `.last_hidden_state` (B, T, C), after the final LayerNorm."""

    def __init__(self, config: GPT2Config):
        self.config = config
        self.wte = Embedding(config.vocab_size, config.n_embd, config.initializer_range)
        self.wpe = Embedding(config.n_positions, config.n_embd, config.initializer_range)
        self.drop = Dropout(config.embd_pdrop)
        self.h = ModuleList([GPT2Block(config) for _ in range(config.n_layer)])
        self.ln_f = LayerNorm(config.n_embd, config.layer_norm_epsilon)

    def forward(self, input_ids, attention_mask=None, position_ids=None, **unused) -> Output:
        """Args: input_ids (B, T) ints; attention_mask (B, T), 1 = a real token (padding is 0: no position
        attends to it); position_ids (B, T), default 0 .. T-1."""
        device = self.wte.weight.device
        ids = as_ids(input_ids, "input_ids", device=device)
        B, T = ids.shape
        if T > self.config.n_positions:
            raise ValueError(f"sequence length {T} exceeds n_positions {self.config.n_positions}")
        position_ids = xp(ids).broadcast_to(xp(ids).arange(T), (B, T)) if position_ids is None else \
            as_ids(position_ids, "position_ids", ids.shape, device)
        key_mask = None if attention_mask is None else \
            as_ids(attention_mask, "attention_mask", ids.shape, device).astype(bool)
        x = self.drop(self.wte(ids) + self.wpe(position_ids))   # (B, T, C)
        for block in self.h:
            x = block(x, key_mask)                                # (B, T, C)
        return Output(last_hidden_state=self.ln_f(x))


class GPT2LMHeadModel(GPT2PreTrainedModel):
    """GPT-2 with its language-model head: logits = h E^T over the vocabulary, E = `transformer.wte.weight`.

    With labels (B, T) it returns `.loss`, the mean next-token cross-entropy: the logits at position t are
    scored against labels[t + 1] (the shift happens here, as in transformers, so labels = input_ids is
    the usual call); -100 marks a label to ignore. The head has no parameter of its own: it is the
    embedding matrix (tied), which is why `named_parameters()` lists no `lm_head.weight`.
    """

    def __init__(self, config: GPT2Config):
        self.config = config
        self.transformer = GPT2Model(config)

    def forward(self, input_ids, attention_mask=None, position_ids=None, labels=None, **unused) -> Output:
        hidden = self.transformer(input_ids, attention_mask, position_ids).last_hidden_state  # (B, T, C)
        logits = F.linear(hidden, self.transformer.wte.weight)                              # (B, T, V)
        loss = None
        if labels is not None:
            labels = as_ids(labels, "labels", device=hidden.device)
            labels = labels[None, :] if labels.ndim == 1 else labels                      # (T,) -> (1, T)
            if tuple(labels.shape) != tuple(hidden.shape[:2]):
                raise ValueError(f"labels has shape {tuple(labels.shape)} but input_ids has shape "
                                 f"{tuple(hidden.shape[:2])}; GPT-2's labels are the (B, T) token ids, shifted here")
            loss = F.cross_entropy(logits[:, :-1], labels[:, 1:])   # position t predicts token t + 1
        return Output(logits=logits, loss=loss)

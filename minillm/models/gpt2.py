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

Two ways through the same blocks. `forward` builds the autograd graph (training, and anything that needs a
gradient); `infer`, beside it in every module, computes the same numbers on plain arrays (picoGPT-style),
with no graph nodes, no Tensor wrappers and dropout off. `GPT2Model.forward` takes the second way by
itself under `minillm.no_grad()` in eval mode: evaluation and generation run on it. At batch 1 with one
new token a block is a dozen small array operations, so the wrappers would cost more than the arithmetic.

Incremental decoding: with `use_cache=True` the forward pass also returns `past_key_values`, a `KVCache`
holding every layer's keys and values; handing it back with only the new token(s) computes just their
rows (see `KVCache`, docs/generation.md). `generate` (sampling in generation.py) is built on it.

What this file is not: no cross-attention, no `scale_attn_by_inverse_layer_idx`; the float32 engine does
not need `reorder_and_upcast_attn`.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from kernels.attention import decode_kernel

from .. import functional as F
from ..backend import kernels_for, xp
from ..nn import Dropout, Embedding, LayerNorm, Module, ModuleList, Parameter
from ..nn.layers import normal_init
from ..tensor import Tensor, is_grad_enabled
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
        if self.model_type != "gpt2":
            fail("model_type", "is not 'gpt2': this config describes another model family (a BERT checkpoint "
                               "says 'bert'); load it with that family's class")
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

    def infer(self, x):  # (..., in) -> (..., out), arrays: the products and sums of F.linear's forward
        y = x.reshape(-1, x.shape[-1]) @ self.weight.data     # (N, in) @ (in, out) -> (N, out)
        y += self.bias.data
        return y.reshape(*x.shape[:-1], y.shape[-1])

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

    def forward(self, x: Tensor, key_mask, cache: "KVCache | None" = None, layer: int = 0) -> Tensor:
        B, T, C = x.shape
        H = self.num_heads
        qkv = self.c_attn(x).reshape(B, T, 3, H, C // H).transpose(2, 0, 3, 1, 4)  # (B, T, 3C) -> (3, B, H, T, D)
        if self.training and self.dropout_p > 0:
            _warn_attention_dropout(self.dropout_p)
        if cache is None:
            out = F.packed_attention(qkv, key_mask=key_mask, causal=True)          # (B, H, T, D)
        else:  # (no_grad in training mode: dropout on) the new keys and values go into the cache
            keys, values, key_mask, causal = cache.update(layer, qkv.data[1], qkv.data[2])  # (B, H, Tk, D)
            out = F.scaled_dot_product_attention(qkv[0], Tensor(keys), Tensor(values), key_mask=key_mask,
                                                 causal=causal)
        out = out.transpose(0, 2, 1, 3).reshape(B, T, C)                           # (B, T, C)
        return self.resid_dropout(self.c_proj(out))

    def infer(self, x, key_mask, cache: "KVCache | None" = None, layer: int = 0):
        """forward on arrays (eval mode): x (B, T, C) -> (B, T, C). With a cache, one new token attends by
        `attention_decode_fwd` (kernels/attention: one query against the cache's buffers, read in place)."""
        B, T, C = x.shape
        H = self.num_heads
        q, k, v = self.c_attn.infer(x).reshape(B, T, 3, H, C // H).transpose(2, 0, 3, 1, 4)  # 3 x (B, H, T, D)
        ops = kernels_for(x)                                                       # this backend's kernels
        causal = True
        if cache is not None:
            k, v, key_mask, causal = cache.update(layer, k, v)                     # (B, H, Tk, D)
        if causal:  # the whole sequence, or several new tokens on top of a cache: the fused kernel
            out, _ = ops.attention_fwd(q, k, v, key_mask=key_mask, causal=True)       # (B, H, T, D)
        else:       # one new token against the cache
            out, _ = decode_kernel(ops.backend)(q, k, v, key_mask=key_mask)          # (B, H, 1, D)
        return self.c_proj.infer(out.transpose(0, 2, 1, 3).reshape(B, T, C))     # (B, T, C)


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

    def infer(self, x):  # (B, T, C) -> (B, T, 4C) -> (B, T, C), arrays
        ops = kernels_for(x)
        gelu = ops.gelu_tanh_fwd if self.approximate == "tanh" else ops.gelu_fwd
        return self.c_proj.infer(gelu(self.c_fc.infer(x)))


class GPT2Block(Module):
    """Pre-LN: each sublayer reads a normalised copy of the residual stream and adds its result back."""

    def __init__(self, config: GPT2Config):
        self.ln_1 = LayerNorm(config.n_embd, config.layer_norm_epsilon)
        self.attn = GPT2Attention(config)
        self.ln_2 = LayerNorm(config.n_embd, config.layer_norm_epsilon)
        self.mlp = GPT2MLP(config)

    def forward(self, x: Tensor, key_mask, cache: "KVCache | None" = None, layer: int = 0) -> Tensor:
        x = x + self.attn(self.ln_1(x), key_mask, cache, layer)
        return x + self.mlp(self.ln_2(x))

    def infer(self, x, key_mask, cache: "KVCache | None" = None, layer: int = 0):  # (B, T, C), arrays
        x = x + self.attn.infer(layer_norm(self.ln_1, x), key_mask, cache, layer)
        return x + self.mlp.infer(layer_norm(self.ln_2, x))


def layer_norm(ln: LayerNorm, x):
    """An nn.LayerNorm applied to an array: its kernel, without the graph node."""
    return kernels_for(x).layernorm_fwd(x, ln.weight.data, ln.bias.data, ln.eps)[0]


# --------------------------------------------------------------------------------------------------
# the key/value cache
class KVCache:
    """`past_key_values`: the keys and values of every position seen so far, for every layer.

    Decoding one token at a time, the token at position t needs the keys and values of positions 0..t in
    every layer. They never change once computed (the mask is causal: a later token never alters an
    earlier position), so each layer keeps them here and a step computes only the new token's row.

    Layout: per layer one preallocated buffer for keys and one for values, each (B, H, capacity, D), and
    one `mask` (B, capacity), True where a position holds a real token (False: padding, or not written
    yet). A forward pass over T new tokens writes their keys and values at positions [L, L + T) and
    attends over [0, L + T); then L = `get_seq_length()` grows by T.

    Why buffers and not concatenation (what transformers' DynamicCache does): appending by concatenating
    copies the whole cache and allocates a new array at every step, O(t) bytes at step t, O(T^2) over a
    generation; writing into a buffer costs only the new row. The caller chooses the capacity (generate
    knows prompt + max_new_tokens); a pass that would overflow it doubles the buffers (amortised O(1) per
    position, as a Python list grows), up to `max_length` (n_positions).

    A one-token step reads the whole buffer with the unwritten positions masked out, and no causal mask (a
    single query's keys are all in its past): the buffer is contiguous and is read in place, where a slice
    `[:, :, :L]` of it is not contiguous and would be copied at every step and layer. With one query the
    scores are a single row per head, (B, H, 1, Tk), so the attention module calls `attention_decode_fwd`
    (kernels/attention), which reads each written key once and skips the rest: the fused kernel's tiles
    hold 128 queries side by side in the vector lanes (kernels/attention/cpu.py, v3), and with one query
    its lanes sit empty (kernels/attention/NOTES.md has the times). Several tokens at once (the prompt)
    take the slice and the fused kernel with the causal mask aligned bottom-right (query i sees key j when
    j <= i + past; docs/design.md).

    Indexing follows transformers' caches: `len(cache)` layers, `cache[i]` -> (keys, values) of layer i as
    views (B, H, L, D), `to_legacy()` the tuple of those pairs, `from_legacy(pairs)` the other way.
    The cache holds plain arrays, so no gradient flows through it: models refuse one while autograd records.
    """

    def __init__(self, num_layers: int, capacity: int = 0, max_length: int | None = None):
        self.num_layers, self.capacity, self.max_length = num_layers, capacity, max_length
        self.keys: list = [None] * num_layers    # (B, H, capacity, D) each, allocated by the first update
        self.values: list = [None] * num_layers
        self.mask = None                         # (B, capacity) bool
        self.length = 0                          # positions written in every layer (L)
        self.start = 0                           # where the forward pass in progress writes

    @classmethod
    def from_legacy(cls, pairs, max_length: int | None = None) -> "KVCache":
        """A cache holding copies of transformers' legacy format: per layer a (keys, values) pair (B, H, L, D)."""
        pairs = [tuple(Tensor(a).data if not isinstance(a, Tensor) else a.data for a in pair) for pair in pairs]
        k0 = pairs[0][0]
        cache = cls(len(pairs), capacity=k0.shape[2], max_length=max_length)
        cache.extend(k0.shape[0], k0.shape[2], None, k0)
        for i, (k, v) in enumerate(pairs):
            cache.update(i, k, v)
        return cache

    def to_legacy(self) -> tuple:
        return tuple(self[i] for i in range(self.num_layers))

    def __len__(self) -> int:
        return self.num_layers

    def __getitem__(self, layer: int) -> tuple:
        L = self.length
        return self.keys[layer][:, :, :L], self.values[layer][:, :, :L]

    def get_seq_length(self) -> int:
        return self.length

    def extend(self, batch_size: int, T: int, attention_mask, like) -> None:
        """Make room for T new positions (before the layers run); attention_mask: None or (B, L + T) bool,
        the mask of every position so far, as transformers takes it. `like`: an array of the model's device."""
        L, xp_ = self.length, xp(like)
        if self.mask is not None and self.mask.shape[0] != batch_size:
            raise ValueError(f"past_key_values holds a batch of {self.mask.shape[0]} sequences, input_ids has "
                             f"{batch_size}")
        if self.mask is None or L + T > self.capacity:
            capacity = max(L + T, 2 * self.capacity)
            capacity = min(capacity, self.max_length) if self.max_length else capacity
            mask = xp_.zeros((batch_size, capacity), bool)
            if self.mask is not None:
                mask[:, :L] = self.mask[:, :L]
                for store in (self.keys, self.values):
                    for i, buf in enumerate(store):
                        if buf is not None:
                            store[i] = xp_.zeros(buf.shape[:2] + (capacity,) + buf.shape[3:], buf.dtype)
                            store[i][:, :, :L] = buf[:, :, :L]
            self.mask, self.capacity = mask, capacity
        if attention_mask is None:
            self.mask[:, L:L + T] = True
        else:
            self.mask[:, :L + T] = attention_mask
        self.start, self.length = L, L + T

    def update(self, layer: int, keys, values):
        """Write one layer's new keys and values (B, H, T, D) at [start, start + T); return what the
        attention reads: (keys, values, key_mask, causal) (see the class docstring for the two cases)."""
        B, H, T, D = keys.shape
        if self.keys[layer] is None:  # zeros, not empty: a masked key gets probability 0, and 0 * NaN is NaN
            self.keys[layer] = xp(keys).zeros((B, H, self.capacity, D), keys.dtype)
            self.values[layer] = xp(keys).zeros((B, H, self.capacity, D), keys.dtype)
        k_buf, v_buf = self.keys[layer], self.values[layer]
        k_buf[:, :, self.start:self.length] = keys
        v_buf[:, :, self.start:self.length] = values
        if T == 1:
            return k_buf, v_buf, self.mask, False                        # (B, H, capacity, D), unwritten masked
        L = self.length
        return k_buf[:, :, :L], v_buf[:, :, :L], self.mask[:, :L], True  # (B, H, L, D)


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

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=False,
                **unused) -> Output:
        """Args: input_ids (B, T) ints; attention_mask (B, T), 1 = a real token (padding is 0: no position
        attends to it); position_ids (B, T), default 0 .. T-1.

        Incremental decoding (transformers' arguments): use_cache=True returns `.past_key_values`, a
        `KVCache` (updated in place on later calls); pass it back as `past_key_values` with only the new
        tokens. Then attention_mask covers the past and the new tokens, (B, L + T), and position_ids
        default to L .. L+T-1. A legacy tuple of per-layer (keys, values) pairs is accepted too (copied).
        Only under `minillm.no_grad()`: the cache holds plain arrays, through which no gradient would flow.
        """
        device = self.wte.weight.device
        ids = as_ids(input_ids, "input_ids", device=device)
        B, T = ids.shape
        cache = None
        if use_cache or past_key_values is not None:
            if is_grad_enabled():
                raise RuntimeError("use_cache / past_key_values: run under `with minillm.no_grad():` (the cache "
                                   "holds plain arrays; no gradient would reach the past keys and values)")
            cache = past_key_values if isinstance(past_key_values, KVCache) else \
                KVCache(self.config.n_layer, max_length=self.config.n_positions) if past_key_values is None else \
                KVCache.from_legacy(past_key_values, max_length=self.config.n_positions)
        past = 0 if cache is None else cache.get_seq_length()
        if past + T > self.config.n_positions:
            raise ValueError(f"sequence length {past + T} ({past} cached + {T} new) exceeds n_positions "
                             f"{self.config.n_positions}" if past else
                             f"sequence length {T} exceeds n_positions {self.config.n_positions}")
        position_ids = xp(ids).broadcast_to(xp(ids).arange(past, past + T), (B, T)) if position_ids is None else \
            as_ids(position_ids, "position_ids", ids.shape, device)
        key_mask = None
        if attention_mask is not None:
            key_mask = as_ids(attention_mask, "attention_mask", device=device).astype(bool)
            if tuple(key_mask.shape) != (B, past + T):
                raise ValueError(f"attention_mask has shape {tuple(key_mask.shape)}, expected {(B, past + T)}: "
                                 f"one entry per position, {past} cached + {T} new" if past else
                                 f"attention_mask has shape {tuple(key_mask.shape)} but input_ids has shape {(B, T)}")
        if cache is not None:
            cache.extend(B, T, key_mask, ids)    # the cache's own mask now covers past + new positions
        if not is_grad_enabled() and not self.training:   # inference: the same blocks on arrays (infer)
            x = self.wte(ids).data + self.wpe(position_ids).data                       # (B, T, C)
            for layer, block in enumerate(self.h):
                x = block.infer(x, key_mask, cache, layer)                             # (B, T, C)
            hidden = Tensor(layer_norm(self.ln_f, x))
        else:
            x = self.drop(self.wte(ids) + self.wpe(position_ids))   # (B, T, C)
            for layer, block in enumerate(self.h):
                x = block(x, key_mask, cache, layer)                  # (B, T, C)
            hidden = self.ln_f(x)
        out = Output(last_hidden_state=hidden)
        if cache is not None:
            out["past_key_values"] = cache
        return out


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

    def forward(self, input_ids, attention_mask=None, position_ids=None, labels=None, past_key_values=None,
                use_cache=False, logits_to_keep=0, **unused) -> Output:
        """`logits_to_keep` (transformers' name): > 0 projects only the last that many positions onto the
        vocabulary (generation needs the last one; for GPT-2 small the projection is 768 x 50,257, more
        work per position than a block). past_key_values / use_cache: see GPT2Model.forward."""
        base = self.transformer(input_ids, attention_mask, position_ids, past_key_values, use_cache)
        hidden = base.last_hidden_state                                                     # (B, T, C)
        if logits_to_keep:
            if labels is not None:
                raise ValueError("labels score every position: pass logits_to_keep=0 with labels")
            hidden = hidden[:, -logits_to_keep:]                                            # (B, k, C)
        logits = F.linear(hidden, self.transformer.wte.weight)                              # (B, T, V)
        loss = None
        if labels is not None:
            labels = as_ids(labels, "labels", device=hidden.device)
            labels = labels[None, :] if labels.ndim == 1 else labels                      # (T,) -> (1, T)
            if tuple(labels.shape) != tuple(hidden.shape[:2]):
                raise ValueError(f"labels has shape {tuple(labels.shape)} but input_ids has shape "
                                 f"{tuple(hidden.shape[:2])}; GPT-2's labels are the (B, T) token ids, shifted here")
            loss = F.cross_entropy(logits[:, :-1], labels[:, 1:])   # position t predicts token t + 1
        out = Output(logits=logits, loss=loss)
        if "past_key_values" in base:
            out["past_key_values"] = base.past_key_values
        return out

    def generate(self, input_ids, max_new_tokens: int = 20, do_sample: bool = False, temperature: float = 1.0,
                 top_k: int = 0, top_p: float = 1.0, seed: int | None = None, eos_token_id: int | None = None,
                 use_cache: bool = True, streamer=None, attention_mask=None):
        """Continue `input_ids` (B, T) by up to max_new_tokens tokens; returns (B, T + n) int64 ids (NumPy).

        transformers' `generate`, for the options listed: greedy (argmax) by default; do_sample=True draws
        from softmax(processed logits) after temperature, top-k and top-p (nucleus) filtering, with a NumPy
        generator seeded by `seed` (None: minillm's default generator, see `minillm.manual_seed`). Stops
        once every sequence has produced eos_token_id (None: the config's); finished rows are padded with
        it. use_cache=False recomputes the whole sequence at every step (the slow reference).
        `streamer`: an object with put(ids)/end() (transformers' protocol: the prompt first, then each
        step's (B,) ids) or a callable given each step's (B,) ids. The steps, the formulas and the cache
        are in generation.py and docs/generation.md.
        """
        from .generation import generate

        return generate(self, input_ids, max_new_tokens=max_new_tokens, do_sample=do_sample,
                        temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, eos_token_id=eos_token_id,
                        use_cache=use_cache, streamer=streamer, attention_mask=attention_mask)

"""BERT (Devlin et al. 2018) on minillm's autograd: embeddings, post-LN encoder, pooler and the two heads.

Every module and parameter carries the Hugging Face name, so `named_parameters()` reads like the key list
of a `model.safetensors` from the Hub (e.g. `encoder.layer.0.attention.self.query.weight`), and loading a
checkpoint is a dictionary copy (see `checkpoint.py`).

One encoder layer, with x of shape (B, T, C):

    a = LayerNorm(x + Dropout(Attention(x) W_o))              # attention.output
    y = LayerNorm(a + Dropout(GELU(a W_1) W_2))               # intermediate, output

where Attention splits C into H heads of size D and computes softmax(Q K^T / sqrt(D) + mask) V per head
through `functional.scaled_dot_product_attention` (the fused kernel). What this file is not: no cross-
attention, no key/value cache; BERT-as-encoder only.

One option departs from BERT, and transformers cannot load a checkpoint that uses it: `attention_bias =
"alibi"` adds -m_h |i - j| to head h's attention scores (Press et al. 2022, "Train short, test long"),
with slopes m_h = 2^(1 - 2h), h = 1..H (0.5 and 0.125 for two heads: steeper than the paper's 2^(-8h/H),
for rows of 128 tokens). The learned positions stay. Why: a small BERT trained from scratch on a laptop
budget stalls on a plateau where its attention ignores word order (every query looks at the same few
keys, a bag of words) and masked-token accuracy stays near the unigram level; the bias makes a head look
at its neighbours from the first step, and the plateau is left within a few hundred steps (the
measurements are in benchmarks/results/pretraining.md). The biased scores take `functional.biased_attention`,
the attention written out around the softmax kernel, since the fused kernel takes no bias. Such a config
is saved with model_type "minillm-bert-alibi", which transformers' AutoConfig refuses by name.

A second option, for the classifier only: `classifier_pooling = "mean"` feeds the pooler the mean of the
final hidden states over the real tokens instead of the [CLS] token's. MLM pretraining never trains [CLS]
(there is no next-sentence task here), while every token's vector is what the masked-word task shaped; the
mean hands the classifier those at once (Reimers and Gurevych 2019 found the mean the better sentence
vector too). Measured against [CLS] in benchmarks/results/finetune_recipe_mean.md: higher on validation,
not on SST-2 dev, so the studies keep [CLS]. transformers would load such a checkpoint and silently pool
[CLS], so it is saved with model_type "minillm-bert-mean-pooling" (or the ALiBi name).

`output_attentions=True` (transformers' name) adds `.attentions` to the output: one (B, H, T, T) NumPy array
of probabilities per layer. The fused kernel never stores them, so they are recomputed on the side from each
layer's own Q and K with the reference softmax (`BertSelfAttention.attention_probs`); the forward pass itself
is the same fused one either way.
"""
from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field

import numpy as np

import kernels

from .. import functional as F
from ..nn import Dropout, Embedding, LayerNorm, Linear, Module, ModuleList, Parameter
from ..backend import to_device, xp
from ..tensor import Tensor, concatenate
from .checkpoint import CheckpointMixin, PretrainedConfig
from .outputs import Output, as_ids as _as_ids


ALIBI_MODEL_TYPE = "minillm-bert-alibi"
MEAN_POOLING_MODEL_TYPE = "minillm-bert-mean-pooling"


def alibi_slopes(num_heads: int) -> np.ndarray:
    """(H,) float32: m_h = 2^(1 - 2h) for h = 1..H (0.5, 0.125, 0.031, ...): head 1 looks at its immediate
    neighbours, the last ones almost anywhere."""
    return (2.0 ** (1 - 2 * np.arange(1, num_heads + 1))).astype(np.float32)


@functools.lru_cache(maxsize=16)
def alibi_bias(num_heads: int, t_q: int, t_k: int) -> np.ndarray:
    """(H, Tq, Tk) float32: -m_h |i - j|, query i and key j counted from the end (so Tq < Tk aligns
    the queries with the last keys, as the causal convention does). Made once per shape (every layer and
    step reuses it), so it is read-only."""
    i = np.arange(t_q)[:, None] + (t_k - t_q)   # (Tq, 1)
    j = np.arange(t_k)[None, :]                 # (1, Tk)
    bias = -alibi_slopes(num_heads)[:, None, None] * np.abs(i - j).astype(np.float32)[None]
    bias.setflags(write=False)
    return bias


@dataclass
class BertConfig(PretrainedConfig):
    """The hyper-parameters, with the field names of Hugging Face's config.json."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    num_labels: int = 2
    classifier_dropout: float | None = None
    model_type: str = "bert"                # another name for either departure: expected_model_type()
    attention_bias: str | None = None       # None (BERT) or "alibi"; see the module docstring
    classifier_pooling: str = "cls"         # "cls" (BERT) or "mean"; see the module docstring
    architectures: list | None = None
    id2label: dict | None = None
    extra: dict = field(default_factory=dict, repr=False)  # unknown config.json keys, kept for round trips

    def __post_init__(self):
        if self.model_type == "bert":
            self.model_type = self.expected_model_type()  # so that transformers refuses what it would drop
        if self.id2label is not None:
            self.id2label = {int(k): v for k, v in self.id2label.items()}
            self.num_labels = len(self.id2label)
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the field for any value the model cannot be built or run with.

        Checked at construction, so a bad config.json fails when it is read (from_json adds the file's
        name), not as a ZeroDivisionError or a shape error deep inside the first forward pass.
        """
        def fail(name, why):
            raise ValueError(f"BertConfig: {name} = {getattr(self, name)!r} {why}")

        def is_int(v):
            return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

        def is_real(v):
            return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)

        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                     "max_position_embeddings", "type_vocab_size", "num_labels"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                fail(name, "must be a positive integer")
        if self.hidden_size % self.num_attention_heads:
            fail("hidden_size", f"is not divisible by num_attention_heads = {self.num_attention_heads} "
                                "(each head gets hidden_size / num_attention_heads channels)")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout"):
            value = getattr(self, name)
            if value is None and name == "classifier_dropout":  # None: use hidden_dropout_prob
                continue
            if not is_real(value) or not 0.0 <= value < 1.0:
                fail(name, "must be a probability in [0, 1)")
        for name in ("initializer_range", "layer_norm_eps"):
            value = getattr(self, name)
            if not is_real(value) or not 0.0 < value < float("inf"):
                fail(name, "must be a positive number")
        if self.pad_token_id is not None and (not is_int(self.pad_token_id)
                                              or not 0 <= self.pad_token_id < self.vocab_size):
            fail("pad_token_id", f"must be a token id in [0, vocab_size = {self.vocab_size})")
        if self.hidden_act not in ("gelu",):
            fail("hidden_act", "is not supported (only 'gelu', the exact erf form BERT uses)")
        if self.attention_bias not in (None, "alibi"):
            fail("attention_bias", "is not supported (None, or 'alibi')")
        if self.classifier_pooling not in ("cls", "mean"):
            fail("classifier_pooling", "is not supported ('cls', or 'mean')")
        expected = self.expected_model_type()
        if self.model_type != expected:
            fail("model_type", f"does not go with attention_bias = {self.attention_bias!r} and classifier_pooling = "
                               f"{self.classifier_pooling!r} (expected {expected!r})")
        if self.extra.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"BertConfig: position_embedding_type = {self.extra['position_embedding_type']!r} is "
                             "not supported (only 'absolute' learned positions)")

    def expected_model_type(self) -> str:
        """"bert" for Hugging Face's BERT; a name transformers' AutoConfig refuses for either departure."""
        if self.attention_bias == "alibi":
            return ALIBI_MODEL_TYPE
        return MEAN_POOLING_MODEL_TYPE if self.classifier_pooling == "mean" else "bert"

    def to_dict(self) -> dict:
        """PretrainedConfig's, with id2label's keys as strings and label2id derived from it (as HF writes)."""
        d = super().to_dict()
        d.pop("label2id", None)  # an old label2id read into `extra` would contradict id2label
        if d.get("attention_bias") is None:  # a plain BERT's config.json stays exactly Hugging Face's
            d.pop("attention_bias", None)
        if d.get("classifier_pooling") == "cls":
            d.pop("classifier_pooling", None)
        if "id2label" in d:
            d["id2label"] = {str(k): v for k, v in d["id2label"].items()}
            d["label2id"] = {v: int(k) for k, v in d["id2label"].items()}
        return d

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads


# --------------------------------------------------------------------------------------------------
# the encoder
class BertEmbeddings(Module):
    def __init__(self, config: BertConfig):
        std = config.initializer_range
        self.word_embeddings = Embedding(config.vocab_size, config.hidden_size, std)
        self.position_embeddings = Embedding(config.max_position_embeddings, config.hidden_size, std)
        self.token_type_embeddings = Embedding(config.type_vocab_size, config.hidden_size, std)
        self.LayerNorm = LayerNorm(config.hidden_size, config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids, position_ids) -> Tensor:  # (B, T) ids -> (B, T, C)
        x = self.word_embeddings(input_ids) + self.position_embeddings(position_ids) \
            + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(Module):
    def __init__(self, config: BertConfig):
        C, std = config.hidden_size, config.initializer_range
        self.num_heads = config.num_attention_heads
        self.query = Linear(C, C, std=std)
        self.key = Linear(C, C, std=std)
        self.value = Linear(C, C, std=std)
        self.dropout_p = config.attention_probs_dropout_prob
        self.alibi = config.attention_bias == "alibi"

    def forward(self, x: Tensor, key_mask) -> Tensor:
        B, T, C = x.shape
        H = self.num_heads
        # Q, K and V in one matmul: (B, T, C) @ (C, 3C) uses the BLAS better than three (C, C) products.
        w = concatenate([self.query.weight, self.key.weight, self.value.weight], axis=0)  # (3C, C)
        b = concatenate([self.query.bias, self.key.bias, self.value.bias], axis=0)        # (3C,)
        qkv = F.linear(x, w, b).reshape(B, T, 3, H, C // H).transpose(2, 0, 3, 1, 4)     # (3, B, H, T, D)
        if self.training and self.dropout_p > 0:
            _warn_attention_dropout(self.dropout_p)
        if self.alibi:  # the bias -m_h |i - j| goes through the written-out attention
            bias = to_device(alibi_bias(H, T, T), x.device)                                # (H, T, T)
            out = F.biased_attention(qkv[0], qkv[1], qkv[2], bias, key_mask=key_mask)      # (B, H, T, D)
        else:
            out = F.packed_attention(qkv, key_mask=key_mask)                               # (B, H, T, D)
        return out.transpose(0, 2, 1, 3).reshape(B, T, C)                                # (B, T, C)

    def attention_probs(self, x: Tensor, key_mask) -> np.ndarray:
        """P = softmax(Q K^T / sqrt(D) + mask) per head: the (B, H, T, T) probabilities that the fused kernel
        never materialises, recomputed from this layer's own projections for `output_attentions=True`.

        Plain NumPy on the host (whatever the model's device) with the reference softmax, no gradient. A
        masked key is -inf before the softmax, as in the kernel's convention, so its probability is exactly
        0; a query row that sees no key at all is all zeros.
        """
        B, T, C = x.shape
        H = self.num_heads
        h = to_device(x.data, "cpu")                                                    # (B, T, C)

        def heads(lin):  # (B, T, C) -> (B, H, T, D)
            w, b = to_device(lin.weight.data, "cpu"), to_device(lin.bias.data, "cpu")
            return (h @ w.T + b).reshape(B, T, H, C // H).transpose(0, 2, 1, 3)

        q, k = heads(self.query), heads(self.key)                                       # (B, H, T, D)
        scores = (q @ k.transpose(0, 1, 3, 2)) * (1.0 / np.sqrt(C // H))               # (B, H, T, T)
        if self.alibi:
            scores = scores + alibi_bias(H, T, T)
        mask = None if key_mask is None else to_device(key_mask, "cpu")[:, None, None, :]  # (B, 1, 1, T)
        return kernels.get("numpy").softmax_fwd(scores.astype(h.dtype, copy=False), mask)


_warned_attention_dropout = False


def _warn_attention_dropout(p: float) -> None:
    global _warned_attention_dropout
    if not _warned_attention_dropout:  # once per process (warnings' own registry is reset by catch_warnings)
        _warned_attention_dropout = True
        warnings.warn(
            f"attention_probs_dropout_prob={p} is not applied: the fused attention kernel never materialises the "
            "probabilities it would drop. Hidden-state dropout still applies; minillm's presets set it to 0.",
            stacklevel=3,
        )


class BertSelfOutput(Module):
    """dense + dropout + residual + LayerNorm; the same shape serves attention.output and output."""

    def __init__(self, config: BertConfig, in_features: int):
        self.dense = Linear(in_features, config.hidden_size, std=config.initializer_range)
        self.LayerNorm = LayerNorm(config.hidden_size, config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, h: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dropout(self.dense(h)) + residual)


class BertAttention(Module):
    def __init__(self, config: BertConfig):
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config, config.hidden_size)

    def forward(self, x: Tensor, key_mask) -> Tensor:
        return self.output(self.self(x, key_mask), x)


class BertIntermediate(Module):
    def __init__(self, config: BertConfig):
        self.dense = Linear(config.hidden_size, config.intermediate_size, std=config.initializer_range)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, C) -> (B, T, 4C)
        return F.gelu(self.dense(x))


class BertLayer(Module):
    def __init__(self, config: BertConfig):
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertSelfOutput(config, config.intermediate_size)

    def forward(self, x: Tensor, key_mask, attentions: list | None = None) -> Tensor:
        if attentions is not None:  # output_attentions: this layer's probabilities, computed on the side
            attentions.append(self.attention.self.attention_probs(x, key_mask))        # (B, H, T, T)
        a = self.attention(x, key_mask)
        return self.output(self.intermediate(a), a)


class BertEncoder(Module):
    def __init__(self, config: BertConfig):
        self.layer = ModuleList([BertLayer(config) for _ in range(config.num_hidden_layers)])

    def forward(self, x: Tensor, key_mask, attentions: list | None = None) -> Tensor:
        for layer in self.layer:
            x = layer(x, key_mask, attentions)
        return x


class BertPooler(Module):
    """tanh(W h + b): the sentence vector the classification head reads, where h is the [CLS] token's final
    hidden state (BERT), or with `classifier_pooling = "mean"` the mean over the real (unpadded) tokens."""

    def __init__(self, config: BertConfig):
        self.dense = Linear(config.hidden_size, config.hidden_size, std=config.initializer_range)
        self.mean = config.classifier_pooling == "mean"

    def forward(self, hidden: Tensor, key_mask=None) -> Tensor:  # (B, T, C), (B, T) bool or None -> (B, C)
        if not self.mean:
            return self.dense(hidden[:, 0]).tanh()
        m = xp(hidden.data)
        keep = m.ones(hidden.shape[:2], np.float32) if key_mask is None else key_mask.astype(np.float32)
        weights = keep / m.maximum(keep.sum(axis=1, keepdims=True), 1.0)            # (B, T), rows sum to 1
        return self.dense((hidden * Tensor(weights[:, :, None])).sum(axis=1)).tanh()


class BertPreTrainedModel(CheckpointMixin, Module):
    """What every BERT class tells the (model-agnostic) checkpoint code: its config class, the attribute
    that holds the bare encoder in a task model, and the checkpoint keys that are copies (the decoder
    weight tied to the word embeddings, its bias shared with `cls.predictions.bias`, `position_ids`)."""

    config_class = BertConfig
    base_model_prefix = "bert"
    ignored_checkpoint_keys = ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias", "position_ids")


    def extend_positions(self, n: int) -> None:
        """Grow the learned position table to n rows, in place, by repeating the learned rows: position
        P + i starts as a copy of position i (P the old table's size). A model pretrained on rows of 128
        tokens can then be fine-tuned on longer ones; Longformer (Beltagy et al. 2020, sec. 5) grew RoBERTa's
        512 positions to 4,096 the same way, and found the copies a far better start than random rows.
        With ALiBi the attention already knows every distance, and the copies only repeat what the
        embeddings add. The first P rows are untouched: on inputs of at most P tokens nothing changes."""
        bert = getattr(self, self.base_model_prefix, self)
        table = bert.embeddings.position_embeddings
        old = table.weight.data
        if n <= old.shape[0]:
            raise ValueError(f"extend_positions({n}): the model already has {old.shape[0]} positions")
        repeats = -(-n // old.shape[0])
        table.weight = Parameter(xp(old).concatenate([old] * repeats)[:n].copy())
        self.config.max_position_embeddings = n


class BertModel(BertPreTrainedModel):
    """The encoder: returns `.last_hidden_state` (B, T, C) and `.pooler_output` (B, C); with
    `output_attentions=True` also `.attentions`, a tuple of one (B, H, T, T) NumPy array per layer."""

    def __init__(self, config: BertConfig, add_pooling_layer: bool = True):
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None,
                output_attentions: bool = False, **unused) -> Output:
        device = self.embeddings.word_embeddings.weight.device
        ids = _as_ids(input_ids, "input_ids", device=device)
        B, T = ids.shape
        if T > self.config.max_position_embeddings:
            raise ValueError(
                f"sequence length {T} exceeds max_position_embeddings {self.config.max_position_embeddings}"
            )
        m = xp(ids)
        token_type_ids = m.zeros_like(ids) if token_type_ids is None else \
            _as_ids(token_type_ids, "token_type_ids", ids.shape, device)
        if position_ids is None:
            position_ids = m.broadcast_to(m.arange(T), (B, T))
        key_mask = None if attention_mask is None else \
            _as_ids(attention_mask, "attention_mask", ids.shape, device).astype(bool)
        attentions = [] if output_attentions else None
        x = self.embeddings(ids, token_type_ids, position_ids)        # (B, T, C)
        x = self.encoder(x, key_mask, attentions)                     # (B, T, C)
        pooled = self.pooler(x, key_mask) if self.pooler is not None else None  # (B, C)
        out = Output(last_hidden_state=x, pooler_output=pooled)
        if output_attentions:
            out["attentions"] = tuple(attentions)                     # per layer (B, H, T, T)
        return out


def _attentions_of(base: Output) -> dict:
    """{"attentions": ...} when the encoder was asked for them, else {}: what a head passes on."""
    return {"attentions": base["attentions"]} if "attentions" in base else {}


# --------------------------------------------------------------------------------------------------
# the heads
class BertPredictionHeadTransform(Module):
    def __init__(self, config: BertConfig):
        self.dense = Linear(config.hidden_size, config.hidden_size, std=config.initializer_range)
        self.LayerNorm = LayerNorm(config.hidden_size, config.layer_norm_eps)

    def forward(self, h: Tensor) -> Tensor:
        return self.LayerNorm(F.gelu(self.dense(h)))


class BertLMPredictionHead(Module):
    """transform, then scores against every word: logits = transform(h) E^T + b, E the word embeddings."""

    def __init__(self, config: BertConfig, word_embeddings: Parameter):
        self.transform = BertPredictionHeadTransform(config)
        self.decoder_weight = word_embeddings  # tied: the same Parameter object as the input embeddings
        self.bias = Parameter(np.zeros(config.vocab_size, np.float32))

    def _named_parameters_all(self, prefix):
        # The tied decoder weight is the embedding matrix; it is listed (and saved) under its embedding name.
        for name, p in super()._named_parameters_all(prefix):
            if p is not self.decoder_weight:
                yield name, p

    def forward(self, h: Tensor) -> Tensor:  # (N, C) -> (N, V)
        return F.linear(self.transform(h), self.decoder_weight, self.bias)


class BertOnlyMLMHead(Module):
    def __init__(self, config: BertConfig, word_embeddings: Parameter):
        self.predictions = BertLMPredictionHead(config, word_embeddings)


class BertForMaskedLM(BertPreTrainedModel):
    """BERT with the masked-language-model head. With labels (-100 = not masked) it returns `.loss`.

    `sparse_head=True` scores only the positions that carry a label, as the original BERT code does:
    the vocabulary projection is then (M, C) @ (C, V) for M masked positions instead of (B*T, C) @ (C, V),
    and `.logits` holds only those M rows (in row-major order of the labelled positions).
    """

    def __init__(self, config: BertConfig, sparse_head: bool = False):
        self.config = config
        self.bert = BertModel(config, add_pooling_layer=False)
        self.cls = BertOnlyMLMHead(config, self.bert.embeddings.word_embeddings.weight)
        self.sparse_head = sparse_head

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None,
                output_attentions: bool = False, **unused) -> Output:
        base = self.bert(input_ids, attention_mask, token_type_ids, output_attentions=output_attentions)
        hidden = base.last_hidden_state                                                # (B, T, C)
        head = self.cls.predictions
        if labels is not None and self.sparse_head:
            labels = _as_ids(labels, "labels", device=hidden.device).reshape(-1)         # (B*T,)
            rows = xp(labels).flatnonzero(labels != -100)                              # (M,)
            logits = head(hidden.reshape(-1, hidden.shape[-1])[rows])                # (M, C) -> (M, V)
            return Output(logits=logits, loss=F.cross_entropy(logits, labels[rows]), **_attentions_of(base))
        logits = head(hidden)                                                          # (B, T, V)
        loss = None if labels is None else F.cross_entropy(logits, _as_ids(labels, "labels", device=hidden.device))
        return Output(logits=logits, loss=loss, **_attentions_of(base))


class BertForSequenceClassification(BertPreTrainedModel):
    """BERT with dropout + a linear layer on the pooled [CLS] vector; with labels it returns `.loss`."""

    def __init__(self, config: BertConfig):
        self.config = config
        self.bert = BertModel(config, add_pooling_layer=True)
        p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = Dropout(p)
        self.classifier = Linear(config.hidden_size, config.num_labels, std=config.initializer_range)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None,
                output_attentions: bool = False, **unused) -> Output:
        base = self.bert(input_ids, attention_mask, token_type_ids, output_attentions=output_attentions)
        pooled = base.pooler_output                                                  # (B, C)
        logits = self.classifier(self.dropout(pooled))                               # (B, num_labels)
        loss = None
        if labels is not None:
            labels = _as_ids(labels, "labels", device=logits.device)
            if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= self.config.num_labels):
                raise ValueError(
                    f"labels must be in [0, {self.config.num_labels}), got values {sorted(set(labels.tolist()))[:10]}"
                )
            loss = F.cross_entropy(logits, labels)
        return Output(logits=logits, loss=loss, **_attentions_of(base))

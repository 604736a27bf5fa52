"""Looking at a trained model: what its MLM head would put at a [MASK], and where each attention head looks.

Two views, each a function that returns plain data (tested against transformers) and a command that prints
or draws it (`minillm fill-mask`, `minillm attention`):

    fill_mask(model, tok, text, top_k)   for each [MASK]: the top-k tokens of softmax(logits at the mask)
                                         over the whole vocabulary, as transformers' fill-mask pipeline
    attention_maps(model, tok, text)     the tokens and, per layer, the (H, T, T) probabilities
                                         P = softmax(Q K^T / sqrt(D) + mask) (model(..., output_attentions=True))
    plot_attention(tokens, maps, ...)    a grid of heatmaps, one per (layer, head): query rows, key columns

What this is not: an explanation of the model. An attention map shows where a head reads from, not why the
output is what it is; fill-mask shows one position's guesses with the rest of the sentence given.

The module is named `look`, not `inspect`: a module of that name inside the package would shadow Python's
own `inspect` (which dataclasses and Numba import) for any script run from within minillm/.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from .functional import softmax
from .models.bert import ALIBI_MODEL_TYPE, MEAN_POOLING_MODEL_TYPE, BertConfig, BertForMaskedLM, BertModel
from .models.checkpoint import CONFIG_NAME, WEIGHTS_NAME
from .tensor import no_grad
from .tokenizer import BertTokenizer


# --------------------------------------------------------------------------------------------------
# loading

def _read_config(path: Path, command: str) -> BertConfig:
    if not path.is_dir():
        raise FileNotFoundError(f"{command}: model folder {path} does not exist (expected a folder written by "
                                f"save_pretrained, with {CONFIG_NAME}, {WEIGHTS_NAME} and vocab.txt)")
    config = BertConfig.from_json(path / CONFIG_NAME) if (path / CONFIG_NAME).is_file() else None
    if config is None:
        raise FileNotFoundError(f"{command}: {path / CONFIG_NAME} is missing; a model folder needs it")
    if config.model_type not in ("bert", ALIBI_MODEL_TYPE, MEAN_POOLING_MODEL_TYPE):  # BERT and its two variants
        raise ValueError(f"{command}: {path} holds a {config.model_type!r} model; this command reads BERT models")
    return config


def _checkpoint_keys(path: Path) -> list[str]:
    """The tensor names of a .safetensors file, read from its header only (no weights are loaded)."""
    from safetensors import safe_open

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        with safe_open(str(path), framework="np") as f:
            return list(f.keys())
    except Exception as e:  # safetensors raises its own error types for truncated or malformed files
        raise ValueError(f"{path}: cannot read safetensors file, it is truncated or corrupt ({e})") from e


def load_masked_lm(path, device: str = "cpu") -> tuple[BertForMaskedLM, BertTokenizer]:
    """A BertForMaskedLM and its tokenizer from a save_pretrained folder that has an MLM head.

    A fine-tuned classifier (or a bare encoder) has no `cls.predictions.*` weights: that is an error saying
    so, not a head of random weights whose guesses would look like the model's.
    """
    path = Path(path)
    config = _read_config(path, "fill-mask")
    if not any(k.startswith("cls.predictions") for k in _checkpoint_keys(path / WEIGHTS_NAME)):
        kind = ", ".join(config.architectures or []) or "a model"
        raise ValueError(f"fill-mask: {path} is {kind} without an MLM head (no cls.predictions.* weights): "
                         "fill-mask needs a masked-language model, such as the output of `minillm pretrain` "
                         "or the `pretrained` folder of `minillm demo`, not a fine-tuned classifier")
    model = BertForMaskedLM.from_pretrained(path).to(device)
    return model.eval(), BertTokenizer.from_pretrained(path)


def load_encoder(path, device: str = "cpu") -> tuple[BertModel, BertTokenizer]:
    """The encoder of any BERT folder (pretrained, fine-tuned or bare) and its tokenizer.

    The heads are not needed for attention maps and their weights are skipped quietly; an encoder weight
    that the checkpoint lacks is an error (its maps would be those of random weights).
    """
    path = Path(path)
    _read_config(path, "attention")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = BertModel.from_pretrained(path, add_pooling_layer=False)
    for w in caught:
        if "initialised fresh" in str(w.message):
            raise ValueError(f"attention: {path} lacks encoder weights, the maps would be of random weights: "
                             f"{w.message}")
        if "were not used" not in str(w.message):  # the heads' weights are expected to be left out
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return model.to(device).eval(), BertTokenizer.from_pretrained(path)


# --------------------------------------------------------------------------------------------------
# the input

def encode_one(tok: BertTokenizer, text: str, max_positions: int, command: str) -> np.ndarray:
    """`[CLS] text [SEP]` as a (T,) id array; clear errors for an empty text or one the model cannot read."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{command}: the text is empty; give a sentence, e.g. \"the movie was {tok.mask_token} .\"")
    ids = np.asarray(tok(text)["input_ids"], dtype=np.int64)                          # (T,)
    if len(ids) > max_positions:
        raise ValueError(f"{command}: the text is {len(ids)} tokens long ([CLS] and [SEP] included) but the model "
                         f"reads at most {max_positions} (max_position_embeddings in its config.json); "
                         "shorten the text")
    return ids


# --------------------------------------------------------------------------------------------------
# fill-mask

def fill_mask(model: BertForMaskedLM, tok: BertTokenizer, text: str, top_k: int = 5) -> list[list[dict]]:
    """For each [MASK] in `text` (left to right), the `top_k` most probable tokens at that position.

    p = softmax(logits at the mask) over the whole vocabulary, each mask read from the same single forward
    pass (the other masks stay [MASK] in the input). Each row is a dict with the keys of transformers'
    fill-mask pipeline: `score` (p of the token), `token` (its id), `token_str` (the token decoded alone,
    so a word piece keeps its `##`) and `sequence` (the text with the token in place of this mask, decoded;
    special tokens are dropped when there is one mask and kept, with the other masks, when there are
    several). Unlike the pipeline, the result is always one list per mask, also for a single mask.

    Args:
        top_k: at least 1; more than the vocabulary size gives the whole vocabulary.
    """
    if int(top_k) < 1:
        raise ValueError(f"fill-mask: top_k = {top_k}; it must be at least 1")
    ids = encode_one(tok, text, model.config.max_position_embeddings, "fill-mask")   # (T,)
    positions = np.flatnonzero(ids == tok.mask_token_id)                              # (M,)
    if not len(positions):
        raise ValueError(f"fill-mask: no {tok.mask_token} in the text {text!r}; write {tok.mask_token} where the "
                         f"model should fill in a word, e.g. \"the movie was {tok.mask_token} .\"")
    model.eval()
    with no_grad():
        logits = model(input_ids=ids[None], attention_mask=np.ones_like(ids)[None]).logits  # (1, T, V)
        at_masks = logits.reshape(-1, logits.shape[-1])[positions.tolist()]           # (M, V), on the model's device
        probs = softmax(at_masks).numpy()                                              # (M, V)
    k = min(int(top_k), probs.shape[-1])
    single = len(positions) == 1
    rows = []
    for position, p in zip(positions, probs):
        best = np.argsort(-p, kind="stable")[:k]                                       # (k,) most probable first
        row = []
        for token in best.tolist():
            filled = ids.copy()
            filled[position] = token
            filled = filled[filled != tok.pad_token_id]  # as the pipeline: padding never shows in the text
            row.append({"score": float(p[token]), "token": token, "token_str": tok.decode([token]),
                        "sequence": tok.decode(filled, skip_special_tokens=single)})
        rows.append(row)
    return rows


def format_fill_mask(text: str, rows: list[list[dict]]) -> str:
    """The rows of `fill_mask` as a table per mask: probability, token, the filled-in sentence."""
    lines = []
    for i, row in enumerate(rows, 1):
        lines.append(f"{text}" if len(rows) == 1 else f"{text}   ([MASK] {i} of {len(rows)})")
        width = max(len(r["token_str"]) for r in row)
        lines += [f"  {r['score']:.4f}  {r['token_str']:<{width}}  {r['sequence']}" for r in row]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# attention maps

def attention_maps(model, tok: BertTokenizer, text: str) -> tuple[list[str], list[np.ndarray]]:
    """The tokens of `[CLS] text [SEP]` and, for each layer, its attention probabilities (H, T, T).

    maps[l][h, i, j] is how much query token i of layer l, head h, reads from key token j: a row sums to 1.
    `model` is a BertModel or either head (anything that takes `output_attentions=True`).
    """
    config = model.config
    ids = encode_one(tok, text, config.max_position_embeddings, "attention")         # (T,)
    model.eval()
    with no_grad():
        out = model(input_ids=ids[None], attention_mask=np.ones_like(ids)[None], output_attentions=True)
    return tok.convert_ids_to_tokens(ids.tolist()), [a[0] for a in out.attentions]  # per layer (H, T, T)


def _pick(value, count: int, what: str) -> list[int]:
    if value is None:
        return list(range(count))
    if not 0 <= int(value) < count:
        raise ValueError(f"attention: --{what} {value} does not exist; the model has {count} {what}s, 0 to {count - 1}")
    return [int(value)]


def plot_attention(tokens: list[str], maps: list[np.ndarray], layer: int | None = None, head: int | None = None,
                   title: str = ""):
    """A matplotlib Figure (Agg canvas, no display) with one heatmap per (layer, head): a row of panels per
    layer, query tokens down the rows of each panel, key tokens along its columns, one shared colorbar.

    `layer`, `head`: None draws all of them; a number (from 0) draws only that one.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    layers = _pick(layer, len(maps), "layer")
    heads = _pick(head, maps[0].shape[0], "head")
    T = len(tokens)
    side = max(2.4, 0.22 * T + 1.0)              # inches per panel: room for T tick labels
    font = 8 if T <= 24 else max(4, int(190 / T))
    fig = Figure(figsize=(side * len(heads) + 1.2, side * len(layers) + 0.8), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(layers), len(heads), squeeze=False)
    image = None
    for r, l in enumerate(layers):
        for c, h in enumerate(heads):
            ax = axes[r][c]
            image = ax.imshow(maps[l][h], vmin=0.0, vmax=1.0, cmap="viridis", interpolation="nearest")
            ax.set_xticks(range(T), tokens, rotation=90, fontsize=font)
            ax.set_yticks(range(T), tokens, fontsize=font)
            ax.set_title(f"layer {l}, head {h}", fontsize=9)
            if r == len(layers) - 1:
                ax.set_xlabel("key", fontsize=8)
            if c == 0:
                ax.set_ylabel("query", fontsize=8)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="attention probability")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def draw_attention(model_path, text: str, out, layer: int | None = None, head: int | None = None,
                   device: str = "cpu"):
    """`minillm attention`: load the model in `model_path`, draw its maps for `text` into the file `out`."""
    out = Path(out)
    if not out.parent.is_dir():
        raise FileNotFoundError(f"attention: the folder of --out {out} does not exist; create {out.parent} first")
    if not isinstance(text, str) or not text.strip():
        raise ValueError("attention: the text is empty; give a sentence with --text")
    model, tok = load_encoder(model_path, device)
    tokens, maps = attention_maps(model, tok, text)
    c = model.config
    name = "/".join(Path(model_path).resolve().parts[-2:])  # e.g. demo/pretrained: no machine folders
    fig = plot_attention(tokens, maps, layer, head, title=f"{name}: attention probabilities\n"
                         f"({c.num_hidden_layers} layers x {c.num_attention_heads} heads; query rows, key columns)")
    fig.savefig(out)
    return fig

"""Zero-shot sentence classification with a causal language model: which label word would it write next?

The sentence is put in a prompt that ends where a verdict would follow, and the model's probability of each
label word as the continuation decides (Radford et al. 2019 scored GPT-2 this way):

    "<|endoftext|>" + sentence + " Overall, the movie was"  ->  P(" great") vs P(" terrible")

score(c) = sum over c's words w of P(w | prompt), where a word of several tokens w_1..w_k has
P(w | prompt) = prod_j P(w_j | prompt, w_1..w_{j-1}), read off one forward pass over prompt + w (the
logits at position t predict token t + 1). The scores are normalised over the labels. `<|endoftext|>`
opens the text because the model was trained with it before every document, so what follows it looks
like a document's beginning. Label words start with a space: in byte-level BPE " great" (after a word)
and "great" are different tokens.

Calibration, as for the MLM cloze classifier (finetune.zero_shot_scores; Zhao et al. 2021, "Calibrate
before use"): each label's score is divided by its score for the content-free input, the prompt with an
empty sentence, and the result normalised again, so that a label word the model simply writes more often
does not win every sentence. The prompt is never cut; a sentence too long for the model loses its first
tokens, so the words next to the prompt stay.

`evaluate_zero_shot_any` is what `minillm evaluate --zero-shot` calls: it reads the checkpoint's model_type
and hands a GPT-2 to this file's classifier, a BERT masked LM to the cloze classifier (finetune.py).

What this is not: prompt search (benchmarks/clm_study.py chooses among a few prompts on SST-2 train),
or in-context examples.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..data import read_tsv
from ..tensor import no_grad
from .device import device_of, on_device

DEFAULT_CLM_PROMPT = "{sentence} Overall, the movie was"
DEFAULT_CLM_LABEL_WORDS = ((" terrible", " bad"), (" great", " good"))  # label 0, label 1


def encode_prompts(tok, sentences, prompt: str = DEFAULT_CLM_PROMPT, max_length: int | None = None) -> list[list[int]]:
    """Ids of `<|endoftext|>` + the prompt with each sentence in place of {sentence}. The text before and
    after {sentence} and the sentence are tokenized apart (the same ids as the joined text when {sentence}
    meets the prompt at a space or punctuation); a sentence that does not fit in max_length tokens loses
    its first tokens."""
    if prompt.count("{sentence}") != 1:
        raise ValueError(f"prompt {prompt!r} must contain '{{sentence}}' once")
    before, after = (tok.encode(part) for part in prompt.split("{sentence}"))
    rows = []
    for s in sentences:
        ids = tok.encode(s.strip())
        if max_length is not None:
            room = max_length - 1 - len(before) - len(after)
            if room < 0:
                raise ValueError(f"prompt {prompt!r} takes {len(before) + len(after) + 1} tokens with "
                                 f"<|endoftext|>, more than max_length={max_length}")
            ids = ids[len(ids) - room:] if len(ids) > room else ids
        rows.append([tok.eos_token_id, *before, *ids, *after])
    return rows


def continuation_log_probs(model, contexts: list[list[int]], continuation: list[int], pad_id: int,
                           batch_size: int = 64) -> np.ndarray:
    """(N,) log P(continuation | context) for each context: the sum over the continuation's tokens of the
    log-probability the model gives each one after the context and the tokens before it.

    Rows are right-padded: causal attention never lets a real position see a later pad, so the padding
    changes nothing that is read."""
    k = len(continuation)
    if k == 0:
        raise ValueError("an empty continuation has no tokens to score")
    device = device_of(model)
    out = np.zeros(len(contexts), dtype=np.float64)
    for start in range(0, len(contexts), batch_size):
        chunk = contexts[start:start + batch_size]
        lengths = np.array([len(c) for c in chunk])
        width = int(lengths.max()) + k
        ids = np.full((len(chunk), width), pad_id, dtype=np.int64)     # (b, T)
        mask = np.zeros_like(ids)
        for i, c in enumerate(chunk):
            ids[i, :len(c) + k] = [*c, *continuation]
            mask[i, :len(c) + k] = 1
        # the logits at position len(c) - 1 + j predict continuation token j
        pos = lengths[:, None] - 1 + np.arange(k)[None, :]               # (b, k)
        logits = model(**on_device({"input_ids": ids, "attention_mask": mask}, device)).logits.numpy()  # (b, T, V)
        z = logits[np.arange(len(chunk))[:, None], pos].astype(np.float64)   # (b, k, V)
        z -= z.max(-1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(-1, keepdims=True))                 # log-softmax over V
        out[start:start + len(chunk)] = np.take_along_axis(
            log_p, np.broadcast_to(np.asarray(continuation)[None, :, None], (len(chunk), k, 1)), -1).sum((1, 2))
    return out


def zero_shot_clm_scores(model, tok, sentences, prompt: str = DEFAULT_CLM_PROMPT,
                         label_words=DEFAULT_CLM_LABEL_WORDS, calibrate: bool = True,
                         batch_size: int = 64) -> np.ndarray:
    """(N, num_labels) probabilities of each label: P(label c) proportional to the sum over c's words of
    P(word | prompt), divided (calibrate=True) by the same for the prompt with an empty sentence."""
    model.eval()
    max_length = model.config.n_positions - max(len(tok.encode(w)) for words in label_words for w in words)
    with no_grad():
        def scores(texts):
            contexts = encode_prompts(tok, texts, prompt, max_length)
            s = np.zeros((len(contexts), len(label_words)), dtype=np.float64)
            for c, words in enumerate(label_words):
                for w in words:
                    s[:, c] += np.exp(continuation_log_probs(model, contexts, tok.encode(w), tok.eos_token_id,
                                                             batch_size))
            return s / np.maximum(s.sum(-1, keepdims=True), 1e-300)

        out = scores(list(sentences))
        if calibrate:
            out = out / np.maximum(scores([""]), 1e-300)                  # (N, L) / (1, L)
            out = out / out.sum(-1, keepdims=True)
    return out


def evaluate_zero_shot_clm(path, data, prompt: str = DEFAULT_CLM_PROMPT, label_words=DEFAULT_CLM_LABEL_WORDS,
                           calibrate: bool = True, device: str = "cpu") -> dict:
    """Accuracy, macro-F1 and confusion matrix of the zero-shot classifier on a labelled TSV, for the causal
    LM saved in `path` (a `minillm pretrain --objective clm` run folder)."""
    from ..bpe import ByteLevelBPETokenizer
    from ..models.gpt2 import GPT2LMHeadModel
    from .finetune import classification_metrics

    model = GPT2LMHeadModel.from_pretrained(Path(path)).to(device)
    tok = ByteLevelBPETokenizer.from_pretrained(path)
    sentences, labels = read_tsv(data, num_labels=len(label_words))
    probs = zero_shot_clm_scores(model, tok, sentences, prompt, label_words, calibrate=calibrate)
    return {"loss": float(-np.log(np.maximum(probs[np.arange(len(labels)), labels], 1e-12)).mean()),
            **classification_metrics(probs.argmax(-1), labels, len(label_words))}


# model_type (config.json) -> how a zero-shot classifier reads that family
ZERO_SHOT_MODEL_TYPES = {"bert": "masked", "minillm-bert-alibi": "masked", "minillm-bert-mean-pooling": "masked",
                         "gpt2": "causal"}


def zero_shot_kind(path) -> str:
    """"masked" (a BERT MLM: cloze prompt) or "causal" (GPT-2: the next word), from `path`/config.json's
    model_type; FileNotFoundError / ValueError saying what is wrong otherwise."""
    config = Path(path) / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{config}: missing; --model must be a folder written by save_pretrained "
                                "(`minillm pretrain` writes one)")
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (json.JSONDecodeError, AttributeError) as e:
        raise ValueError(f"{config}: not a JSON object of config fields ({e})") from e
    if model_type not in ZERO_SHOT_MODEL_TYPES:
        known = ", ".join(f"{t!r} ({kind})" for t, kind in ZERO_SHOT_MODEL_TYPES.items())
        raise ValueError(f"{path} holds a {model_type!r} model (config.json's model_type); zero-shot scoring reads "
                         f"language models of these types: {known}")
    return ZERO_SHOT_MODEL_TYPES[model_type]


def evaluate_zero_shot_any(path, data, prompt: str | None = None, label_words=None, calibrate: bool = True,
                           device: str = "cpu") -> dict:
    """`minillm evaluate --zero-shot` on either family, chosen by the checkpoint's model_type.

    A BERT masked LM fills the [MASK] of a cloze prompt (finetune.evaluate_zero_shot, DEFAULT_PROMPT); a
    GPT-2 continues a prompt that ends where the verdict would follow (evaluate_zero_shot_clm,
    DEFAULT_CLM_PROMPT). prompt / label_words None take the family's defaults. A causal model scores each
    label word as it follows another word, with a leading space (" great", one byte-level BPE token), so a
    word given without one gets it.
    """
    kind = zero_shot_kind(path)
    if kind == "masked":
        from .finetune import DEFAULT_LABEL_WORDS, DEFAULT_PROMPT, evaluate_zero_shot

        return evaluate_zero_shot(path, data, prompt or DEFAULT_PROMPT, label_words or DEFAULT_LABEL_WORDS,
                                  calibrate=calibrate, device=device)
    if prompt is not None and "[MASK]" in prompt:
        raise ValueError(f"prompt {prompt!r} has a [MASK], but {path} is a causal language model: it continues the "
                         "prompt, so end the prompt where the label word would follow (e.g. "
                         f"{DEFAULT_CLM_PROMPT!r})")
    words = DEFAULT_CLM_LABEL_WORDS if label_words is None else tuple(
        tuple(w if w.startswith(" ") else " " + w for w in group) for group in label_words)
    return evaluate_zero_shot_clm(path, data, prompt or DEFAULT_CLM_PROMPT, words, calibrate=calibrate, device=device)

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

What this is not: prompt search (benchmarks/clm_study.py chooses among a few prompts on SST-2 train),
or in-context examples.
"""
from __future__ import annotations

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

"""Dynamic masking for the masked-language-model (MLM) objective, as in BERT (Devlin et al. 2018, 3.1).

For each batch, fresh:

1. choose positions: each eligible token (not special, not padding) independently with probability p
   (p = 0.15), i.e. chosen_i ~ Bernoulli(p). This is the rule of Hugging Face's
   DataCollatorForLanguageModeling. Per-token Bernoulli rather than an exact count per sequence: the
   rate is exactly p *in expectation* for every token, short rows included, and it vectorizes to one
   comparison. The price is that a row may get no chosen token at all (probability (1-p)^n, 1e-9 for
   n = 128), which only makes that row contribute nothing to the loss.
2. corrupt the chosen positions: 80% -> [MASK], 10% -> a random non-special token, 10% unchanged.
   The model cannot tell which inputs to trust, so it must keep a good representation of every token.
   (The random token may happen to equal the original, as in BERT and HF: probability 1/#non-special.)
3. labels: the original id at chosen positions, -100 (ignored by the loss) everywhere else, so

       L = - (1 / #chosen) * sum_{i chosen} log P(x_i | corrupted input).

Whole-word masking (BERT's later "wwm" models): with `word_starts`, a word is a start token plus the
`##` pieces after it. Words are chosen with probability p each and all their pieces are chosen together,
so the model cannot fill in "##ing" from "mask"; every token still has marginal probability p. The
80/10/10 rule is then applied per token, as Google's create_pretraining_data.py does.

What this is not: span masking (SpanBERT) or the static, precomputed masks of the original BERT data
pipeline (RoBERTa showed that fresh masks each epoch do at least as well).
"""
from __future__ import annotations

import numpy as np

IGNORE_INDEX = -100


def mask_tokens(input_ids, rng: np.random.Generator, mask_token_id: int, vocab_size: int, special_ids,
                mlm_probability: float = 0.15, word_starts=None, attention_mask=None):
    """Choose and corrupt MLM positions; returns (masked_ids, labels), input left untouched.

    Args:
        input_ids: (B, T) (or any shape) signed integer ids in [0, V).
        rng: np.random.Generator; the same generator state gives the same masks.
        mask_token_id: the id of [MASK].
        vocab_size: V; random replacements are drawn from range(V) minus `special_ids`.
        special_ids: ids never chosen (e.g. tok.all_special_ids: [CLS] [SEP] [PAD] [UNK] [MASK]).
            Padding must be among them, or be excluded through `attention_mask`.
        mlm_probability: p, the chance that an eligible token (or word) is chosen.
        word_starts: optional bool array shaped like input_ids, True where a token begins a word
            (see `find_word_starts`); turns on whole-word masking.
        attention_mask: optional, shaped like input_ids; positions where it is 0 are never chosen.

    Returns:
        masked_ids: same shape and dtype as input_ids, with the corruptions applied.
        labels: same shape and dtype; original id where chosen, -100 elsewhere.
    """
    ids = np.asarray(input_ids)
    _check(ids, vocab_size, mlm_probability, word_starts, attention_mask)
    special = np.zeros(vocab_size, dtype=bool)  # (V,) lookup table: is_special[id]
    special[np.asarray(list(special_ids), dtype=np.int64)] = True
    eligible = ~special[ids]  # same shape as ids
    if attention_mask is not None:
        eligible &= np.asarray(attention_mask).astype(bool)

    if word_starts is None:
        chosen = eligible & (rng.random(ids.shape) < mlm_probability)
    else:
        chosen = _choose_words(eligible, np.asarray(word_starts, dtype=bool), mlm_probability, rng)

    action = rng.random(ids.shape)  # one uniform per token decides mask / random / keep
    to_mask = chosen & (action < 0.8)
    to_random = chosen & (action >= 0.8) & (action < 0.9)
    candidates = np.flatnonzero(~special)  # non-special ids
    masked = ids.copy()
    masked[to_mask] = mask_token_id
    masked[to_random] = candidates[rng.integers(0, len(candidates), size=int(to_random.sum()))]
    labels = np.where(chosen, ids, IGNORE_INDEX).astype(ids.dtype)
    return masked, labels


def _choose_words(eligible, starts, p, rng):
    """Bernoulli(p) per word, spread to all the word's tokens; vectorized via a cumulative sum."""
    # A position opens a new "word" at a word start, at every ineligible token (so [CLS], padding ...
    # never join a word) and at the start of each row (a word never spans two rows).
    opens = starts | ~eligible
    opens[..., 0] = True
    word_id = np.cumsum(opens.ravel()) - 1  # (n,) index of the word each token belongs to
    picked = rng.random(int(word_id[-1]) + 1) < p  # (n_words,)
    return eligible & picked[word_id].reshape(eligible.shape)


def continuation_table(tok) -> np.ndarray:
    """(V,) bool: True for vocabulary entries that continue a word (WordPiece's "##" prefix)."""
    vocab = tok.get_vocab() if hasattr(tok, "get_vocab") else tok.vocab  # token -> id
    table = np.zeros(max(tok.vocab_size, max(vocab.values()) + 1), dtype=bool)
    pieces = [i for t, i in vocab.items() if t.startswith("##")]
    table[np.asarray(pieces, dtype=np.int64)] = True
    return table


def find_word_starts(input_ids, table: np.ndarray) -> np.ndarray:
    """Bool array shaped like input_ids: True where the token is not a "##" continuation piece.

    `table` comes from `continuation_table(tok)`; one gather, no loop over tokens.
    """
    return ~table[np.asarray(input_ids)]


def _check(ids, vocab_size, p, word_starts, attention_mask):
    if not np.issubdtype(ids.dtype, np.signedinteger):
        raise TypeError(f"mask_tokens: input_ids must be a signed integer array (labels use -100), "
                        f"got dtype {ids.dtype}")
    if ids.ndim == 0 or ids.size == 0:
        raise ValueError(f"mask_tokens: input_ids is empty (shape {ids.shape})")
    if ids.min() < 0 or ids.max() >= vocab_size:
        raise ValueError(f"mask_tokens: ids must lie in [0, {vocab_size}), found min {ids.min()} "
                         f"max {ids.max()}; is vocab_size the tokenizer's?")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"mask_tokens: mlm_probability={p} is not a probability")
    for name, a in (("word_starts", word_starts), ("attention_mask", attention_mask)):
        if a is not None and np.shape(a) != ids.shape:
            raise ValueError(f"mask_tokens: {name} has shape {np.shape(a)}, input_ids {ids.shape}")

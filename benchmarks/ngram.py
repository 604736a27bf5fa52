"""An n-gram baseline for the causal LM: interpolated Kneser-Ney over token ids, in vectorized NumPy.

Which Kneser-Ney: *interpolated* KN with one absolute discount D per order and count kind (Chen & Goodman
1998, "An empirical study of smoothing techniques for language modeling", eq. 17 and sec. 3.5), D estimated
as Ney et al.'s D = n1 / (n1 + 2 n2) from the number of n-grams seen once (n1) and twice (n2); not
*modified* KN (three discounts per order). With h a context of k - 1 tokens and h' the same without its
first token:

    P_k(w | h) = max(c(h w) - D_k, 0) / c(h .)  +  D_k N1+(h .) / c(h .) * P_{k-1}(w | h')      if c(h .) > 0
    P_k(w | h) = P_{k-1}(w | h')                                                                 otherwise
    P_0(w)     = 1 / V

c is the raw count for the highest order a prediction uses and the *continuation* count below it,
c(g) = N1+(. g) = the number of distinct tokens seen just before g (the KN idea: " Francisco" is frequent,
but only after " San", so as a backed-off guess it should be rare). c(h .) = sum_w c(h w) and N1+(h .) is
the number of distinct w with c(h w) > 0. Every seen count is >= 1 > D, so sum_w max(c(h w) - D, 0) =
c(h .) - D N1+(h .) and each P_k sums to 1 over the vocabulary (tests/test_ngram.py checks it).

Data, as the causal LM sees it: the model is fit on n-grams inside the training rows (N, T) and scores the
held-out rows (M, T) at positions 1 .. T - 1, each with the tokens before it in its row, at most n - 1 of
them; near a row's start the highest order with a full context is used, as the transformer there also sees
only what the row holds. So the two perplexities are over the same M (T - 1) predicted tokens.

Implementation: an n-gram is one int64 key, sum_i g_i V^(k-1-i) (so V^n must stay below 2^63: order 4 with
a vocabulary of 50,000 fits); counts come from np.unique over the keys, lookups from np.searchsorted; the
only Python loops are over orders and kinds of count, never over tokens.

    python benchmarks/ngram.py --selftest        # the hand-computed case of tests/test_ngram.py
"""
from __future__ import annotations

import argparse
import math

import numpy as np


def ngram_keys(windows: np.ndarray, vocab_size: int) -> np.ndarray:
    """(..., k) token ids -> (...,) int64 keys sum_i g_i V^(k-1-i) (Horner's rule; a loop over k only)."""
    windows = np.asarray(windows, dtype=np.int64)
    keys = np.zeros(windows.shape[:-1], dtype=np.int64)
    for i in range(windows.shape[-1]):
        keys = keys * vocab_size + windows[..., i]
    return keys


class CountTable:
    """The counts of one order and kind: sorted n-gram keys with counts; their contexts (the key without
    the last token) with c(h .) and N1+(h .); and the discount D."""

    def __init__(self, keys: np.ndarray, counts: np.ndarray, vocab_size: int, discount: float | None):
        order = np.argsort(keys, kind="stable")
        self.keys, self.counts = keys[order], counts[order].astype(np.float64)
        ctx = self.keys // vocab_size                         # sorted, since the keys are
        self.ctx_keys, start, self.ctx_types = np.unique(ctx, return_index=True, return_counts=True)
        self.ctx_total = np.add.reduceat(self.counts, start) if len(start) else np.zeros(0)
        if discount is None:
            n1, n2 = int((self.counts == 1).sum()), int((self.counts == 2).sum())
            # Ney's estimate; with no singletons or no doubletons (tiny data) it is 0 or 1: take 0.75 instead
            discount = n1 / (n1 + 2 * n2) if n1 and n2 else 0.75
        self.discount = float(discount)

    def lookup(self, sorted_keys: np.ndarray, values: np.ndarray, query: np.ndarray, missing=0.0) -> np.ndarray:
        i = np.minimum(np.searchsorted(sorted_keys, query), max(len(sorted_keys) - 1, 0))
        found = (sorted_keys[i] == query) if len(sorted_keys) else np.zeros(query.shape, bool)
        return np.where(found, values[i] if len(values) else missing, missing), found

    def interpolate(self, context_keys: np.ndarray, word: np.ndarray, vocab_size: int, lower: np.ndarray):
        """P_k(w | h) for arrays of context keys and words, given P_{k-1}(w | h') in `lower`."""
        total, seen = self.lookup(self.ctx_keys, self.ctx_total, context_keys)
        types, _ = self.lookup(self.ctx_keys, self.ctx_types.astype(np.float64), context_keys)
        count, _ = self.lookup(self.keys, self.counts, context_keys * vocab_size + word)
        total = np.where(seen, total, 1.0)                    # unseen contexts take `lower` below
        p = np.maximum(count - self.discount, 0.0) / total + self.discount * types / total * lower
        return np.where(seen, p, lower)


class KneserNey:
    """Interpolated Kneser-Ney of order n over ids 0 .. V-1 (see the module docstring).

    Args:
        order: n (1 = unigram).
        vocab_size: V.
        discount: one D for every order and kind, or None to estimate each (n1 / (n1 + 2 n2)).
    """

    def __init__(self, order: int, vocab_size: int, discount: float | None = None):
        if order < 1:
            raise ValueError(f"order must be >= 1, got {order}")
        if vocab_size ** order >= 2 ** 63:
            raise ValueError(f"V^n = {vocab_size}^{order} does not fit an int64 key; use a lower order")
        self.n, self.V, self.fixed_discount = order, vocab_size, discount
        self.raw: dict[int, CountTable] = {}
        self.cont: dict[int, CountTable] = {}

    def fit(self, rows: np.ndarray) -> "KneserNey":
        """Count the n-grams of every order k <= n inside each (N, T) row (none spans two rows)."""
        rows = np.asarray(rows)
        grams = {}
        for k in range(1, self.n + 1):
            windows = np.lib.stride_tricks.sliding_window_view(rows, k, axis=1)   # (N, T-k+1, k)
            grams[k] = np.unique(ngram_keys(windows, self.V).reshape(-1), return_counts=True)
            self.raw[k] = CountTable(*grams[k], self.V, self.fixed_discount)
        for k in range(1, self.n):
            # N1+(. g): each distinct (k+1)-gram adds 1 to the k-gram that ends it (its key mod V^k)
            suffixes = grams[k + 1][0] % (self.V ** k)
            self.cont[k] = CountTable(*np.unique(suffixes, return_counts=True), self.V, self.fixed_discount)
        return self

    def probs(self, contexts: np.ndarray, words: np.ndarray) -> np.ndarray:
        """P(w | context) for (K, L) contexts (the L tokens before each word, L <= n - 1) and (K,) words:
        the highest order is L + 1, with raw counts; the orders below use continuation counts."""
        contexts = np.asarray(contexts, dtype=np.int64).reshape(len(words), -1)
        words = np.asarray(words, dtype=np.int64)
        top = contexts.shape[1] + 1
        if top > self.n:
            raise ValueError(f"a context of {contexts.shape[1]} tokens needs order {top}; this model is order {self.n}")
        p = np.full(len(words), 1.0 / self.V)                      # P_0: uniform
        for k in range(1, top + 1):
            table = self.raw[k] if k == top else self.cont[k]
            ctx = ngram_keys(contexts[:, contexts.shape[1] - (k - 1):], self.V)  # the last k-1 tokens
            p = table.interpolate(ctx, words, self.V, p)
        return p

    def distribution(self, context) -> np.ndarray:
        """(V,) P(w | context) for every w: one context, every word (for checks)."""
        context = np.asarray(context, dtype=np.int64)[None, :]
        return self.probs(np.repeat(context, self.V, axis=0), np.arange(self.V))

    def log_probs(self, rows: np.ndarray) -> np.ndarray:
        """(M, T - 1) natural-log probability of rows[:, t] given the up to n - 1 tokens before it in its row."""
        rows = np.asarray(rows, dtype=np.int64)
        M, T = rows.shape
        out = np.zeros((M, T - 1))
        if self.n == 1:                                            # no context at all
            words = rows[:, 1:].reshape(-1)
            return np.log(self.probs(np.zeros((len(words), 0), np.int64), words)).reshape(M, T - 1)
        for t in range(1, min(self.n - 1, T)):                     # the row's first tokens: shorter contexts
            out[:, t - 1] = np.log(self.probs(rows[:, :t], rows[:, t]))
        if T >= self.n:                                            # every later position: the full n - 1
            windows = np.lib.stride_tricks.sliding_window_view(rows, self.n, axis=1)  # (M, T-n+1, n)
            flat = windows.reshape(-1, self.n)
            out[:, self.n - 2:] = np.log(self.probs(flat[:, :-1], flat[:, -1])).reshape(M, -1)
        return out

    def perplexity(self, rows: np.ndarray) -> float:
        return math.exp(-float(self.log_probs(rows).mean()))


def hand_case():
    """The worked example of tests/test_ngram.py: a bigram model, D = 0.5, on two rows over V = 3."""
    rows = np.array([[0, 1, 0, 1], [0, 2, 0, 1]])
    return KneserNey(2, 3, discount=0.5).fit(rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--selftest", action="store_true", help="print the worked example's probabilities")
    args = parser.parse_args()
    model = hand_case()
    for h in range(3):
        print(f"P(. | {h}) =", np.round(model.distribution([h]), 4).tolist())

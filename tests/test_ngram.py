"""The n-gram baseline of the causal-LM study (benchmarks/ngram.py): interpolated Kneser-Ney probabilities
form a distribution over the vocabulary for every context, and match a bigram case worked by hand."""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from ngram import KneserNey, hand_case  # noqa: E402


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_probabilities_sum_to_one_over_the_vocabulary(order):
    """Seen, unseen and partly seen contexts (token 9 never occurs in training), every length up to n - 1."""
    rng = np.random.default_rng(order)
    rows = rng.integers(0, 9, (20, 12)) ** 2 % 9              # a skewed distribution over 0..8
    model = KneserNey(order, 10).fit(rows)
    contexts = [rows[0, :order - 1], rows[3, 5:5 + order - 1], np.full(order - 1, 9), rows[1, :max(order - 2, 0)],
                np.array([9, *rows[2, :order - 2]])[:order - 1]]
    for ctx in contexts:
        p = model.distribution(ctx)
        assert (p > 0).all()                                    # the uniform floor: no token is impossible
        assert abs(p.sum() - 1.0) < 1e-12, (ctx, p.sum())       # float64 sums of 10 terms: rounding only


def test_a_bigram_case_worked_by_hand():
    """Rows [0 1 0 1], [0 2 0 1], V = 3, D = 0.5. Bigram counts: (0,1): 3, (1,0): 1, (0,2): 1, (2,0): 1.
    Continuation counts N1+(. w): w=0 follows 1 and 2 -> 2; w=1 -> 1 (after 0); w=2 -> 1; 4 bigram types.
      P1(w) = max(N1+(. w) - 0.5, 0) / 4 + 0.5 * 3 / 4 * 1/3  ->  P1 = (0.5, 0.25, 0.25)
      after 0: c(0 .) = 4, N1+(0 .) = 2, backoff weight 0.5 * 2 / 4 = 0.25:
        P(0|0) = 0 + 0.25 * 0.5 = 0.125; P(1|0) = 2.5 / 4 + 0.25 * 0.25 = 0.6875; P(2|0) = 0.5 / 4 + 0.0625 = 0.1875
      after 1: c(1 .) = 1, N1+(1 .) = 1, weight 0.5:  P(0|1) = 0.5 + 0.25 = 0.75; P(1|1) = P(2|1) = 0.125
    """
    model = hand_case()
    exact = 1e-15  # sums of a few binary fractions: exact in float64 but for the last bit
    np.testing.assert_allclose(model.distribution([0]), [0.125, 0.6875, 0.1875], atol=exact, rtol=0)
    np.testing.assert_allclose(model.distribution([1]), [0.75, 0.125, 0.125], atol=exact, rtol=0)
    # With no context the unigram level is the top one and uses raw counts: c = (4, 3, 1) of 8, 3 types,
    # (c - 0.5) / 8 + 0.5 * 3 / 8 * 1/3, as a unigram model gives
    want = [0.5, 0.375, 0.125]
    np.testing.assert_allclose(model.distribution([]), want, atol=exact, rtol=0)
    np.testing.assert_allclose(KneserNey(1, 3, 0.5).fit(hand_case_rows()).distribution([]), want, atol=exact, rtol=0)
    # scoring a held-out row: positions 1..3, each with the token before it
    lp = model.log_probs(np.array([[0, 1, 1, 0]]))
    np.testing.assert_allclose(np.exp(lp), [[0.6875, 0.125, 0.75]], atol=exact, rtol=0)


def hand_case_rows():
    return np.array([[0, 1, 0, 1], [0, 2, 0, 1]])


def test_row_starts_use_the_context_the_row_has():
    """A trigram model scores position 1 with one token of context (the bigram level, raw counts) and later
    positions with two, exactly as `probs` does for those contexts."""
    rows = np.random.default_rng(0).integers(0, 6, (30, 10))
    model = KneserNey(3, 6).fit(rows)
    held = np.random.default_rng(1).integers(0, 6, (4, 7))
    lp = model.log_probs(held)
    assert lp.shape == (4, 6)
    np.testing.assert_array_equal(lp[:, 0], np.log(model.probs(held[:, :1], held[:, 1])))
    np.testing.assert_array_equal(lp[:, 3], np.log(model.probs(held[:, 2:4], held[:, 4])))
    assert model.perplexity(held) == pytest.approx(np.exp(-lp.mean()), rel=1e-12)  # the same numbers, one exp

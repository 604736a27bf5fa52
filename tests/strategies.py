"""Hypothesis strategies made once and reused by every kernel test.

Shapes include size 1 and odd sizes on purpose (non-multiples of any tile size); values are bounded
floats, with separate strategies for extreme logits (around +-1e4), rows of equal values and rows that
differ by a few ulps of their mean (where a float32 mean's rounding matters).
"""
import numpy as np
from hypothesis import strategies as st

ODD_DIMS = st.sampled_from([1, 2, 3, 5, 7, 13, 17, 31, 33, 64, 65, 127])
SMALL_DIMS = st.sampled_from([1, 2, 3, 5, 7, 8, 13])


@st.composite
def arrays(draw, shape, dtype=np.float32, scale=None, kind=None):
    """A random array of `shape`.

    kind: None (drawn), "normal" (normal * scale), "extreme" (uniform in +-1e4), "tiny" (normal * 1e-6),
    "constant" (each row along the last axis one value), or "near_constant" (each row one value v, of
    magnitude 1e-3 .. 1e3, times 1 + r * normal with r from 2^-22 (a couple of ulps) to 1e-5; explicit only).
    """
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    kind = kind or draw(st.sampled_from(["normal", "normal", "normal", "extreme", "constant", "tiny"]))
    if kind == "normal":
        s = scale if scale is not None else draw(st.sampled_from([0.1, 1.0, 10.0]))
        x = rng.standard_normal(shape) * s
    elif kind == "extreme":
        x = rng.uniform(-1e4, 1e4, shape)
    elif kind == "tiny":
        x = rng.standard_normal(shape) * 1e-6
    elif kind == "near_constant":
        v = rng.choice([-1.0, 1.0], shape[:-1] + (1,)) * 10.0 ** rng.uniform(-3, 3, shape[:-1] + (1,))
        r = draw(st.sampled_from([2.0**-22, 2.0**-20, 1e-6, 1e-5]))
        x = v * (1 + r * rng.standard_normal(shape))
    else:  # every entry of a row equal
        x = np.broadcast_to(rng.standard_normal(shape[:-1] + (1,)) * 3, shape).copy()
    return x.astype(dtype)


@st.composite
def masks(draw, shape, p_masked=None):
    """A bool mask (True = keep), sometimes with fully masked rows."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    p = p_masked if p_masked is not None else draw(st.sampled_from([0.0, 0.3, 0.7, 1.0]))
    return rng.random(shape) >= p


def rng_from(draw):
    return np.random.default_rng(draw(st.integers(0, 2**32 - 1)))


def layernorm_case(data, shape):
    """(x, weight, bias, dy) float32 for a layer norm over shape's last axis: x of a drawn kind (normal,
    extreme, tiny, constant or near-constant rows), the rest standard normal from the drawn generator."""
    kind = data.draw(st.sampled_from(["normal", "extreme", "tiny", "constant", "near_constant"]))
    x = data.draw(arrays(shape, kind=kind))
    rng = rng_from(data.draw)
    C = shape[-1]
    w, bias = rng.standard_normal(C).astype(np.float32), rng.standard_normal(C).astype(np.float32)
    return x, w, bias, rng.standard_normal(x.shape).astype(np.float32)


# --- text for tokenizer tests --------------------------------------------------------------------------
# Pieces chosen to hit each rule of BERT's basic tokenizer: accents (composed and decomposed), CJK,
# emoji (with joiners and skin tones), control and format characters, zero-width and odd whitespace,
# punctuation runs and ASCII symbols, special tokens written in the text, mixed case. All are from
# Unicode <= 9 so that any Unicode database (Python's, the Rust `tokenizers`') classifies them alike;
# GREEK CAPITAL SIGMA is left out on purpose (its lower case depends on the position in the word).
HARD_TEXT_PIECES = (
    "café", "cafe\u0301", "Élan", "naïve", "Ångström", "\u212b", "ﬁne", "İstanbul", "straße", "ẞ", "Øre",
    "日本語", "中文字", "\uf900", "テキスト", "한국어", "😀", "👍🏽", "👩\u200d💻", "🇫🇷",
    "\x00", "\x07", "\x7f", "\ufffd", "\u200b", "\u200d", "\ufeff", "\u00ad",
    " ", "\t", "\n", "\r\n", "\u00a0", "\u2003", "\u3000", "\u2028", "\x1c",
    "...", "?!", "--", "«»", "“quoted”", "$^`|~+<=>", "¿¡", "#", "##", "@user", "e-mail", "don't",
    "[MASK]", "[CLS]", "[mask]", "[SEP][PAD]", "[UNK", "HeLLo", "WORLD", "iPhone", "x1y2", "123,456.7",
    "a\u1fefb", "\u037e", "Ǆ",
)


@st.composite
def hard_texts(draw, any_unicode=True):
    """A string glued from HARD_TEXT_PIECES, words of 95-160 letters, and (if any_unicode) arbitrary text."""
    word = [st.sampled_from(HARD_TEXT_PIECES), st.text("abcXYZé", min_size=95, max_size=160),
            st.text("abcdefghij", min_size=1, max_size=8)]
    if any_unicode:
        word.append(st.text(st.characters(exclude_categories=("Cs",)), max_size=10))
    parts = draw(st.lists(st.tuples(st.one_of(*word), st.sampled_from(["", " ", "  ", "\t", "\u00a0"])),
                          max_size=10))
    return "".join(w + sep for w, sep in parts)

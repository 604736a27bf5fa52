"""Byte-level BPE (minillm/bpe.py): the pre-tokenization pattern, the trainer and parity with transformers.

Oracles:
- transformers' `GPT2Tokenizer` loaded from the files *we* trained and saved (in transformers 5 it is the
  Rust `tokenizers` one; transformers 4 also has the slow Python one, checked as well when present);
- OpenAI's own encoding algorithm (`src/encoder.py` of OpenAI's gpt-2 repository, a dozen lines, written out below
  with the `regex` module it uses), so the Python algorithm is checked even where transformers has none;
- for the trainer, a naive trainer that recounts every pair at every step.
Hard strings draw only characters that Python's Unicode database has assigned: a character from a later
Unicode version is a letter for `regex` and `tokenizers` but not for `unicodedata` (see the module docstring).
"""
import csv
import doctest
import os
import random
import re
import unicodedata
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minillm.bpe import (ENDOFTEXT, GPT2_PATTERN, WHITE_SPACE, ByteLevelBPETokenizer, _category_ranges,
                         bytes_to_unicode, count_chunks, pretokenize, pretokenize_pattern, train_bpe,
                         train_bpe_from_counts)
from strategies import HARD_TEXT_PIECES, hard_texts

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("MINILLM_DATA", REPO.parent / "shared" / "data"))
SST2_TRAIN, SST2_DEV = DATA_DIR / "sst2" / "train.tsv", DATA_DIR / "sst2" / "dev.tsv"
IMDB = DATA_DIR / "imdb" / "unsup.txt"
needs_sst2 = pytest.mark.skipif(not SST2_DEV.is_file(), reason=f"SST-2 dev set not found at {SST2_DEV} (MINILLM_DATA)")
needs_imdb = pytest.mark.skipif(not IMDB.is_file(), reason=f"IMDb reviews not found at {IMDB} (MINILLM_DATA)")

# Pieces that exercise GPT-2's pattern in particular: each contraction (and ones it does not know),
# whitespace runs before words and at the end, digits, symbol runs, the special token written in the text.
GPT2_PIECES = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL", "''", "o'clock", "   ", "\n\n", " \n ",
               "\t\t", "2024", " 3.14", "!!!", " ...", ENDOFTEXT, "<|endoftext", "<|endoftext|>" * 2, "\x1c\x1d",
               "\x85", "Ⅻ", "½", "²", " 𝐀𝐁", "𠀀", "𝟏𝟐", "🙂x")   # the last four: above U+FFFF


def assigned_text(max_size=12):
    # Characters Python's unicodedata knows (no surrogates, no unassigned code points).
    return st.text(st.characters(exclude_categories=("Cs", "Cn")), max_size=max_size)


@st.composite
def gpt2_hard_texts(draw):
    parts = draw(st.lists(st.one_of(hard_texts(any_unicode=False), st.sampled_from(GPT2_PIECES), assigned_text()),
                          max_size=8))
    return "".join(parts)


def _read_tsv_sentences(path, limit=None):
    with open(path, encoding="utf-8", newline="") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(rows)
        return [row[0] for _, row in zip(range(limit or 10**9), rows)]


def _training_texts():
    """SST-2 *train* sentences (if present) and text made from the hard pieces, so that merges exist over
    multi-byte characters, whitespace runs and contractions too. Never the dev set."""
    rng = random.Random(0)
    pieces = HARD_TEXT_PIECES + GPT2_PIECES + ("the", " movie", " is", " good", " bad", " film", "n't")
    made = ["".join(rng.choice(pieces) + rng.choice(["", " ", "  "]) for _ in range(12)) for _ in range(3000)]
    return (_read_tsv_sentences(SST2_TRAIN, 20000) if SST2_TRAIN.is_file() else []) + made


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Our tokenizer trained to 1,000 ids, saved, and loaded back from its files."""
    tok = train_bpe(_training_texts(), vocab_size=1000)
    folder = tmp_path_factory.mktemp("bpe")
    tok.save_pretrained(folder)
    return ByteLevelBPETokenizer.from_pretrained(folder), folder


@pytest.fixture(scope="module")
def ours(trained):
    return trained[0]


@pytest.fixture(scope="module")
def hf_tokenizers(trained, transformers):
    """transformers' tokenizers on our files: GPT2Tokenizer, and the slow one where it exists (transformers 4)."""
    folder = trained[1]
    toks = [transformers.GPT2Tokenizer.from_pretrained(folder)]
    if hasattr(transformers, "GPT2TokenizerFast") and transformers.GPT2TokenizerFast is not transformers.GPT2Tokenizer:
        toks.append(transformers.GPT2TokenizerFast.from_pretrained(folder))
    return toks


@pytest.fixture(scope="module")
def regex():
    """The third-party `regex` module (it comes with transformers): the oracle for \\p{L}, \\p{N} and \\s."""
    return pytest.importorskip("regex", reason="the `regex` module is a test oracle only (it comes with transformers)")


class OpenAIEncoder:
    """src/encoder.py of OpenAI's gpt-2 repository: the algorithm as OpenAI wrote it."""

    def __init__(self, ours, regex):
        self.regex = regex
        self.encoder, self.ranks = ours.vocab, {pair: i for i, pair in enumerate(ours.merges)}
        self.byte_encoder = bytes_to_unicode()
        self.pat = self.regex.compile(GPT2_PATTERN)

    def bpe(self, token):
        word = tuple(token)
        while len(word) > 1:
            bigram = min(zip(word, word[1:]), key=lambda pair: self.ranks.get(pair, float("inf")))
            if bigram not in self.ranks:
                break
            first, second = bigram
            new_word, i = [], 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    new_word.extend(word[i:])
                    break
                new_word.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
        return word

    def encode(self, text):
        ids = []
        for k, piece in enumerate(re.split("(" + re.escape(ENDOFTEXT) + ")", text)):
            if k % 2:
                ids.append(self.encoder[piece])
                continue
            for token in self.regex.findall(self.pat, piece):
                token = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
                ids.extend(self.encoder[t] for t in self.bpe(token))
        return ids


@pytest.fixture(scope="module")
def openai(ours, regex):
    return OpenAIEncoder(ours, regex)


# --- the pieces -------------------------------------------------------------------------------------------

def test_bytes_to_unicode_is_gpt2s_table():
    table = bytes_to_unicode()
    assert sorted(table) == list(range(256))
    chars = list(table.values())
    assert len(set(chars)) == 256 and all(c.isprintable() and not c.isspace() for c in chars)
    assert (table[ord(" ")], table[ord("\n")], table[0], table[173]) == ("Ġ", "Ċ", "Ā", "Ń")
    assert chars[:3] == ["!", '"', "#"]       # GPT-2's vocab.json starts {"!": 0, "\"": 1, "#": 2, ...}


def test_pattern_classes_equal_regex_on_every_code_point(regex):
    """\\p{L}, \\p{N} and \\s as `regex` reads them, against our `re` classes, for all 1,114,112 code points.

    The only differences allowed are code points unassigned in Python's Unicode version (newer characters).
    `re`'s own \\s would not pass: it also matches U+001C..U+001F."""
    everything = "".join(map(chr, range(0x110000)))
    classes = {r"\p{L}": "[" + _category_ranges("L") + "]", r"\p{N}": "[" + _category_ranges("N") + "]",
               r"\s": "[" + re.escape(WHITE_SPACE) + "]"}
    for prop, ours in classes.items():
        want, got = set(regex.findall(prop, everything)), set(re.findall(ours, everything))
        differ = sorted(ord(c) for c in want ^ got if unicodedata.category(c) != "Cn")
        assert not differ, f"{prop}: {len(differ)} code points differ, e.g. {[hex(c) for c in differ[:10]]}"
    for prefix in "LN":   # the classes `pretokenize` uses for a text without code points above U+FFFF
        bmp = set(re.findall("[" + _category_ranges(prefix, 0x10000) + "]", everything))
        assert bmp == {c for c in re.findall("[" + _category_ranges(prefix) + "]", everything) if ord(c) < 0x10000}


@settings(max_examples=200)
@given(text=gpt2_hard_texts())
def test_pretokenize_equals_regex(regex, text):
    want = regex.findall(GPT2_PATTERN, text)
    assert pretokenize_pattern().findall(text) == want
    assert pretokenize(text) == want                    # the pattern without U+10000.. when the text has none


def test_pretokenize_examples():
    pat = pretokenize_pattern()
    assert pat.findall("Hello  world!") == ["Hello", " ", " world", "!"]
    assert pat.findall("I'll pay $3.50, won't I?\n\n") == ["I", "'ll", " pay", " $", "3", ".", "50", ",", " won",
                                                          "'t", " I", "?", "\n\n"]


# --- parity with transformers and with OpenAI's algorithm --------------------------------------------------

def check_parity(ours, openai, hf_tokenizers, text):
    ids = ours.encode(text)
    assert ids == openai.encode(text), text
    for hf in hf_tokenizers:
        assert hf(text)["input_ids"] == ids, (type(hf).__name__, text)
        assert hf.decode(ids) == text
    assert ours.decode(ids) == text


def test_parity_corpus_has_merges_over_the_hard_parts(ours):
    """The parity tests only mean something if the vocabulary merges multi-byte characters, whitespace
    runs and contractions, which a vocabulary trained on plain English alone might not."""
    byte_of = {c: b for b, c in bytes_to_unicode().items()}
    tokens = [t for t in ours.vocab if t not in ours.special_tokens]
    several_high_bytes = [t for t in tokens if sum(byte_of[c] >= 0x80 for c in t) >= 2]
    assert len(several_high_bytes) >= 20, several_high_bytes         # "Ã©" (é), "ðŁ" (emoji lead bytes), ...
    assert {"ĠĠ", "ĉĉ", "ĠĊ", "'s", "'t"} <= set(tokens)


@settings(max_examples=100)
@given(data=st.data())
def test_decoding_any_ids_matches_transformers(ours, hf_tokenizers, data):
    # Any id sequence, so also bytes cut inside a UTF-8 character: both replace them with U+FFFD alike.
    ids = data.draw(st.lists(st.integers(0, len(ours) - 1), max_size=12))
    for hf in hf_tokenizers:
        assert ours.decode(ids) == hf.decode(ids), ids


@needs_sst2
def test_sst2_dev_sentences_match_transformers(ours, openai, hf_tokenizers):
    sentences = _read_tsv_sentences(SST2_DEV)      # dev is read for tokenizer parity only; never trained on
    assert len(sentences) == 872
    for sentence in sentences:
        check_parity(ours, openai, hf_tokenizers, sentence)


@needs_imdb
def test_imdb_reviews_match_transformers(ours, openai, hf_tokenizers):
    with open(IMDB, encoding="utf-8") as f:
        reviews = [line.rstrip("\n") for _, line in zip(range(200), f)]
    assert len(reviews) == 200
    for review in reviews:
        check_parity(ours, openai, hf_tokenizers, review)


@settings(max_examples=200)
@given(text=gpt2_hard_texts())
def test_hard_strings_match_transformers(ours, openai, hf_tokenizers, text):
    check_parity(ours, openai, hf_tokenizers, text)


@settings(max_examples=300)
@given(text=st.text(st.characters(exclude_categories=("Cs",)), max_size=40) | gpt2_hard_texts())
def test_decode_encode_is_identity(ours, text):
    # Any code point Python can encode as UTF-8, assigned or not: byte-level BPE has no unknown token.
    assert ours.decode(ours.encode(text)) == text


def test_decode_cut_inside_a_character_replaces_not_raises(ours):
    ids = ours.encode("日")                          # three UTF-8 bytes, no merge over them in a 1,000 vocab
    assert ours.decode(ids[:1]) == "\ufffd"


# --- the trainer ------------------------------------------------------------------------------------------

def naive_train(chunk_counts, n_merges):
    """BPE as in Sennrich et al.'s pseudo-code: recount every pair of every word at every step."""
    words = {w: list(w) for w in chunk_counts}
    merges = []
    for _ in range(n_merges):
        pairs = Counter()
        for w, syms in words.items():
            for pair in zip(syms, syms[1:]):
                pairs[pair] += chunk_counts[w]
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))     # most frequent, then the smallest pair
        if pairs[best] < 2:
            break
        merges.append(best)
        for w, syms in words.items():
            out, i = [], 0
            while i < len(syms):
                if i + 1 < len(syms) and (syms[i], syms[i + 1]) == best:
                    out.append(syms[i] + syms[i + 1])
                    i += 2
                else:
                    out.append(syms[i])
                    i += 1
            words[w] = out
    return merges


@settings(max_examples=60)
@given(words=st.lists(st.text("abcaab é", min_size=1, max_size=8), min_size=1, max_size=30),
       n_merges=st.integers(1, 40))
def test_trainer_equals_naive_bpe(words, n_merges):
    counts = count_chunks([" ".join(words)])
    tok = train_bpe_from_counts(counts, 256 + n_merges + 1)
    want = naive_train(counts, n_merges)
    # Merges can make a token twice (("a", "bc") and ("ab", "c")); the vocabulary then holds fewer ids.
    assert tok.merges[:len(want)] == want and len(tok.merges) == len(want)


def test_trainer_is_deterministic_and_vocab_is_laid_out_as_gpt2():
    texts = _training_texts()[-2000:]
    tok = train_bpe(texts, 400)
    shuffled = list(texts)
    random.Random(1).shuffle(shuffled)
    assert train_bpe(shuffled, 400).merges == tok.merges
    assert len(tok) == 400 and tok.vocab[ENDOFTEXT] == 399
    assert [tok.ids_to_tokens[i] for i in range(256)] == list(bytes_to_unicode().values())
    assert all(tok.vocab[a + b] >= 256 for a, b in tok.merges)


def test_trainer_refuses_a_vocab_without_room_for_the_bytes():
    with pytest.raises(ValueError, match="too small"):
        train_bpe(["abc"], 200)


# --- files and the transformers-shaped API ---------------------------------------------------------------

def test_save_pretrained_layout_round_trip(trained, tmp_path):
    tok, folder = trained
    merges = (folder / "merges.txt").read_text(encoding="utf-8").split("\n")
    assert merges[0] == "#version: 0.2" and merges[-1] == "" and len(merges) == len(tok.merges) + 2
    tok.save_pretrained(tmp_path)
    again = ByteLevelBPETokenizer.from_pretrained(tmp_path)
    assert again.vocab == tok.vocab and again.merges == tok.merges and again.eos_token == ENDOFTEXT


def test_loads_what_transformers_saves(trained, transformers, tmp_path):
    tok, folder = trained
    transformers.GPT2Tokenizer.from_pretrained(folder).save_pretrained(tmp_path)   # tokenizer.json (transformers 5)
    again = ByteLevelBPETokenizer.from_pretrained(tmp_path)
    assert again.vocab == tok.vocab and again.merges == tok.merges and again.special_tokens == [ENDOFTEXT]
    text = "Byte-level BPE, 日本語 😀  <|endoftext|>"
    assert again.encode(text) == tok.encode(text)


def test_call_pads_and_stacks(ours):
    with pytest.raises(ValueError, match="pad_token"):
        ours(["a", "a b c"], padding=True)
    tok = ByteLevelBPETokenizer(ours.vocab, ours.merges, pad_token=ENDOFTEXT)
    out = tok(["a", "a b c"], padding=True, return_tensors="np")
    lengths = [len(tok.encode(t)) for t in ("a", "a b c")]
    assert out["input_ids"].shape == (2, max(lengths)) and out["input_ids"].dtype == np.int64
    assert out["attention_mask"].sum(axis=1).tolist() == lengths
    assert out["input_ids"][0, lengths[0]:].tolist() == [tok.eos_token_id] * (max(lengths) - lengths[0])
    assert tok("a b c", max_length=2)["input_ids"] == tok.encode("a b c")[:2]


def test_docs_bpe_worked_example():
    """Every `>>>` example of docs/bpe.md runs and prints what the page says (long outputs wrapped)."""
    page = (REPO / "docs" / "bpe.md").read_text(encoding="utf-8")
    test = doctest.DocTestParser().get_doctest(page, {}, "docs/bpe.md", str(REPO / "docs" / "bpe.md"), 0)
    assert len(test.examples) >= 10, "docs/bpe.md lost its worked example"
    result = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE).run(test)
    assert result.failed == 0, f"{result.failed} of the examples in docs/bpe.md print something else (see above)"


def test_call_matches_transformers(trained, transformers):
    folder = trained[1]
    ours = ByteLevelBPETokenizer.from_pretrained(folder, pad_token=ENDOFTEXT)
    hf = transformers.GPT2Tokenizer.from_pretrained(folder, pad_token=ENDOFTEXT)
    texts = ["a first sentence", "and a second, longer one  \n", "é😀"]
    for kwargs in ({}, {"padding": True}, {"padding": "max_length", "max_length": 20},
                   {"truncation": True, "max_length": 3}, {"max_length": 4}):
        tensors = {"return_tensors": "np"} if kwargs.get("padding") else {}    # ragged rows stay lists
        want, got = hf(texts, **kwargs, **tensors), ours(texts, **kwargs, **tensors)
        for name in ("input_ids", "attention_mask"):
            lists = [x.tolist() if isinstance(x, np.ndarray) else list(x) for x in (got[name], want[name])]
            assert lists[0] == lists[1], (kwargs, name)

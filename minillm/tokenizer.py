"""The BERT tokenizer: text -> word pieces -> ids, identical to Hugging Face's `BertTokenizer`.

Two stages, as in the BERT paper (Devlin et al. 2019, sec. 3 and appendix A):

1. `BasicTokenizer` cuts raw text into words. It removes control characters, turns every kind of
   whitespace into a space, puts spaces around CJK ideographs (Chinese has no spaces between words),
   lower-cases and strips accents (``"Élan" -> "elan"``: Unicode NFD decomposition, then drop the
   combining marks, category Mn), and splits off every punctuation character as a word of its own.
2. `WordpieceTokenizer` cuts each word into vocabulary pieces, greedily taking the longest prefix that is
   in the vocabulary, then the longest continuation written with a ``##`` prefix:
   ``"embeddings" -> ["em", "##bed", "##ding", "##s"]`` (uncased BERT vocab). A word that cannot be covered, or
   that is longer than 100 characters, becomes one ``[UNK]``.

`BertTokenizer` glues the two together and adds what a model needs: ``[CLS] A [SEP] B [SEP]`` framing,
``token_type_ids`` (0 for sentence A, 1 for B), truncation, padding, ``attention_mask`` and NumPy
output, with the call signature of transformers so that habits carry over::

    tok = BertTokenizer.from_pretrained("path/to/dir")          # a folder with vocab.txt
    inputs = tok(["a first sentence", "a second one"], padding=True, return_tensors="np")
    inputs["input_ids"]                                        # (B, T) int64

Speed: plain Python, made fast by one observation: the ids of a whitespace-separated word depend on that
word alone, and word frequencies are Zipfian (a few thousand distinct words make up most of any text). So
the per-character work (clean-up, NFC) runs in C over the whole text (`str.translate`, `unicodedata`), the
text is split on whitespace, and each distinct word is tokenized once: a dict with `__missing__`
(`_WordCache`) maps word -> ids, and `map` + `itertools.chain` walk the words without a Python-level loop.
`text_to_ids` and `batch_text_to_ids` (a flat int32 array + offsets, for corpora) use it. Measured on the
65 MB of IMDb reviews (50,000 documents, 14.8M ids, one core): 4.4 s, 15 MB/s; a loop of
``convert_tokens_to_ids(tokenize(doc))`` with per-word caches on pieces only took 8.4 s (7.8 MB/s). What is
left is mostly the first sight of each of the 470k distinct whitespace words.

What this is not: a general tokenizer (no offsets mapping, no added tokens beyond the five specials, no
left padding).
Its reference is transformers' slow Python tokenizer (`BertTokenizerLegacy` in transformers 5); the Rust
"fast" one differs in two corners noted in tests/test_tokenizer.py (final sigma; which sequence of a pair
keeps the odd token when both must be truncated).

Training a new vocabulary from a corpus: `minillm.wordpiece_train.train_wordpiece` (also importable from
here), then `BertTokenizer.from_vocab_list(tokens)`.
"""
from __future__ import annotations

import json
import os
import re
from array import array
from itertools import chain
import tempfile
import unicodedata
from collections.abc import Mapping
from pathlib import Path

import numpy as np

SPECIAL_TOKEN_ROLES = ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token")
# The constructor arguments tokenizer_config.json carries (written by save_pretrained, read by from_pretrained).
SAVED_SETTINGS = frozenset({"do_lower_case", "do_basic_tokenize", "never_split", "tokenize_chinese_chars",
                            "strip_accents", "model_max_length", "clean_up_tokenization_spaces",
                            *SPECIAL_TOKEN_ROLES})
_PADDING = {False: None, "do_not_pad": None, True: "longest", "longest": "longest", "max_length": "max_length"}
_TRUNCATION = {False: None, "do_not_truncate": None, True: "longest_first", "longest_first": "longest_first",
               "only_first": "only_first", "only_second": "only_second"}


# --- character classes (the same definitions as the original BERT code and transformers) -----------------

def write_files_atomically(directory: Path, files: dict) -> tuple:
    """Write each {name: text} into `directory` through a temporary file renamed over the target, so an
    interrupted save never leaves a half-written vocabulary behind; returns the paths written."""
    for name, content in files.items():
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
                f.write(content)
            os.replace(tmp, directory / name)
        except BaseException:
            os.unlink(tmp)
            raise
    return tuple(str(directory / name) for name in files)


def _is_whitespace(ch):
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_control(ch):
    # \t \n \r are Cc but count as whitespace; every other C* (Cc, Cf such as zero-width joiners, Co, Cn) goes.
    return ch not in "\t\n\r" and unicodedata.category(ch).startswith("C")


def _is_punctuation(ch):
    cp = ord(ch)
    # Every non-alphanumeric printable ASCII character counts, even "$ ^ ` + < = > |", which Unicode
    # files under symbols (S*), not punctuation (P*): BERT was trained that way.
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp):
    # The CJK Unified Ideographs blocks (not Hiragana, Katakana or Hangul, which are written with spaces).
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


class _CharMap(dict):
    """A `str.translate` table that computes each character's replacement on first sight and remembers it.

    `str.translate` runs in C and looks each code point up in this dict; `__missing__` fills a new entry,
    so the Python-level classification runs once per distinct character, not once per character of text.
    """

    def __init__(self, rule):
        super().__init__()
        self.rule = rule

    def __missing__(self, cp):
        out = self[cp] = self.rule(chr(cp))
        return out


class _WordCache(dict):
    """word -> its pieces (or ids), computed by `compute` on first sight; at most `limit` entries are kept.

    Text is Zipfian: most words of a corpus are seen many times, so after a warm-up nearly every lookup
    hits. A dict subclass with `__missing__` lets `map(cache.__getitem__, words)` run the lookups in C;
    only a miss calls back into Python. The limit bounds the memory an endless stream of new words
    (IMDb has 470k distinct whitespace words in 65 MB) can take: past it, new words are computed, not kept.
    """

    def __init__(self, compute, limit=500_000):
        super().__init__()
        self.compute = compute
        self.limit = limit

    def __missing__(self, word):
        out = self.compute(word)
        if len(self) < self.limit:
            self[word] = out
        return out


def _clean_rule(ch, split_cjk):
    cp = ord(ch)
    if cp == 0 or cp == 0xFFFD or _is_control(ch):
        return ""                       # NUL, the replacement character, control and format characters
    if _is_whitespace(ch):
        return " "
    if split_cjk and _is_cjk(cp):
        return f" {ch} "
    return ch


def _punct_rule(ch):
    return f" {ch} " if _is_punctuation(ch) else ch


class BasicTokenizer:
    """Raw text -> list of words: clean-up, CJK split, lower-casing + accent stripping, punctuation split.

    The steps, in order (each one matters for exact parity with the original BERT):
    clean (drop NUL, U+FFFD and category C*, whitespace -> " ") -> spaces around CJK ideographs -> NFC ->
    split on whitespace -> per word: lower-case, strip accents (NFD, drop category Mn), split punctuation.
    Accent stripping runs after lower-casing and before the punctuation split because it can create
    punctuation: U+1FEF GREEK VARIA decomposes to the ASCII backtick.

    Args:
        do_lower_case: lower-case, and (unless `strip_accents` is False) strip accents.
        never_split: words (after whitespace splitting) to leave exactly as they are.
        tokenize_chinese_chars: put each CJK ideograph in a word of its own.
        strip_accents: None follows `do_lower_case`; True / False forces it on / off.
    """

    def __init__(self, do_lower_case=True, never_split=None, tokenize_chinese_chars=True, strip_accents=None):
        self.do_lower_case = do_lower_case
        self.never_split = set(never_split or ())
        self.tokenize_chinese_chars = tokenize_chinese_chars
        self.strip_accents = strip_accents
        self._clean = _CharMap(lambda ch: _clean_rule(ch, tokenize_chinese_chars))
        self._punct = _CharMap(_punct_rule)
        self._word_cache = _WordCache(self.split_word)  # whitespace word -> its words

    def tokenize(self, text):
        """Split `text` into words. ``"Héllo, WORLD!" -> ["hello", ",", "world", "!"]``."""
        return list(chain.from_iterable(map(self._word_cache.__getitem__, self.split_whitespace(text))))

    def split_whitespace(self, text):
        """The text-wide steps: clean-up and CJK spacing (one `str.translate`), NFC, split on whitespace.

        Everything after this depends on one whitespace-separated word at a time (see `split_word`).
        """
        return unicodedata.normalize("NFC", text.translate(self._clean)).split()

    def split_word(self, word):
        """One whitespace-separated word -> its words (lower-cased, accents stripped, punctuation split off).
        ``"Héllo," -> ("hello", ",")``. Not cached (`tokenize` caches it)."""
        if word in self.never_split:
            return (word,)
        if self.do_lower_case:
            word = word.lower()
        if (self.do_lower_case and self.strip_accents is not False) or self.strip_accents:
            word = self._strip_accents(word)
        return tuple(word.translate(self._punct).split())

    @staticmethod
    def _strip_accents(word):
        if word.isascii():  # NFD leaves ASCII unchanged and ASCII has no combining marks
            return word
        return "".join(ch for ch in unicodedata.normalize("NFD", word) if unicodedata.category(ch) != "Mn")


class WordpieceTokenizer:
    """Word -> word pieces by greedy longest-match-first over the vocabulary.

    From position 0, take the longest prefix ``w[0:e]`` in the vocabulary; then from ``e`` the longest
    ``"##" + w[e:e2]``; and so on. If some position has no match, or the word has more than
    `max_input_chars_per_word` characters, the whole word becomes `unk_token`.
    Greedy is not optimal (it can miss a cover that exists) but it is what BERT's vocabulary was built for.
    """

    def __init__(self, vocab, unk_token="[UNK]", max_input_chars_per_word=100):
        self.vocab = vocab
        self.unk_token = unk_token
        self.max_input_chars_per_word = max_input_chars_per_word
        # No piece is longer than this, so longer candidates need not be tried (same result, less work).
        self._longest = max((len(t) - 2 if t.startswith("##") else len(t) for t in vocab), default=0)
        self._cache = _WordCache(self._greedy)

    def tokenize(self, word):
        """One word (no whitespace inside) -> list of pieces."""
        return list(self._cache[word])

    def _greedy(self, word):
        if len(word) > self.max_input_chars_per_word:
            return (self.unk_token,)
        pieces, start = [], 0
        while start < len(word):
            for end in range(min(len(word), start + self._longest), start, -1):
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    break
            else:
                return (self.unk_token,)
            pieces.append(piece)
            start = end
        return tuple(pieces)


class BatchEncoding(dict):
    """What `BertTokenizer.__call__` returns: a dict (so ``model(**inputs)`` works) with attribute access."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"BatchEncoding has no field {name!r}; it has {list(self)}") from None


def load_vocab(path):
    """vocab.txt -> list of tokens, one per line; the line number (from 0) is the id."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"vocabulary file not found: {path} (expected a vocab.txt, one token per line)")
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


class BertTokenizer:
    """BERT's WordPiece tokenizer with the transformers API (`from_pretrained`, `__call__`, `decode`, ...).

    Args:
        vocab: path of a vocab.txt, a list of tokens (index = id) or a dict token -> id (ids 0..V-1).
        do_lower_case, never_split, tokenize_chinese_chars, strip_accents: see `BasicTokenizer`.
        unk_token, sep_token, pad_token, cls_token, mask_token: the special tokens; all must be in the vocab.
        model_max_length: the length `truncation=True` / `padding="max_length"` use when no max_length is given.
        clean_up_tokenization_spaces: `decode` glues " ," -> "," and " n't" -> "n't" like transformers.
    """

    def __init__(self, vocab, do_lower_case=True, do_basic_tokenize=True, never_split=None,
                 unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]",
                 tokenize_chinese_chars=True, strip_accents=None, model_max_length=512,
                 clean_up_tokenization_spaces=True):
        if isinstance(vocab, (str, os.PathLike)):
            tokens = load_vocab(vocab)
        elif isinstance(vocab, Mapping):
            tokens = sorted(vocab, key=vocab.__getitem__)
            if sorted(vocab.values()) != list(range(len(vocab))):
                raise ValueError(f"vocab dict ids must be exactly 0..{len(vocab) - 1} with no gaps or repeats")
        else:
            tokens = list(vocab)
        self.ids_to_tokens = tokens                                    # id -> token
        self.vocab = {tok: i for i, tok in enumerate(tokens)}          # token -> id (a repeated line: last wins)
        self.unk_token, self.sep_token, self.pad_token = unk_token, sep_token, pad_token
        self.cls_token, self.mask_token = cls_token, mask_token
        missing = [t for t in self.all_special_tokens if t not in self.vocab]
        if missing:
            raise ValueError(f"the vocabulary ({len(tokens)} tokens) lacks the special tokens {missing}; "
                             "BERT needs [PAD], [UNK], [CLS], [SEP] and [MASK] (put them first in vocab.txt)")
        self.do_lower_case = do_lower_case
        self.do_basic_tokenize = do_basic_tokenize
        self.tokenize_chinese_chars = tokenize_chinese_chars
        self.strip_accents = strip_accents
        self.model_max_length = model_max_length
        self.clean_up_tokenization_spaces = clean_up_tokenization_spaces
        self.basic_tokenizer = BasicTokenizer(do_lower_case, never_split, tokenize_chinese_chars, strip_accents)
        self.wordpiece_tokenizer = WordpieceTokenizer(self.vocab, unk_token)
        # Special tokens written in the text ("a [MASK] b") stay whole: split the text around them first,
        # longest alternative first so that one special token that prefixes another cannot win.
        specials = sorted(set(self.all_special_tokens), key=len, reverse=True)
        self._special_re = re.compile("(" + "|".join(map(re.escape, specials)) + ")")
        # The per-word pipeline, memoized at two levels: a word after the basic split ("movie") -> its
        # pieces / ids, and a whitespace-separated word of the text ("Movie,") -> its pieces / ids. The
        # second level has more distinct keys (case, punctuation attached) but saves the basic split.
        self._basic_pieces = _WordCache(self._pieces_of_basic_word)
        self._basic_ids = _WordCache(self._ids_of_basic_word)
        self._pieces_cache = _WordCache(lambda word: self._per_basic_word(word, self._basic_pieces))
        self._ids_cache = _WordCache(lambda word: self._per_basic_word(word, self._basic_ids))
        self._special_pieces = {t: (t,) for t in specials}
        self._special_ids = {t: (self.vocab[t],) for t in specials}

    # --- construction and files -------------------------------------------------------------------------

    @classmethod
    def from_vocab_list(cls, tokens, do_lower_case=True, **kwargs):
        """A tokenizer over `tokens` (index = id), e.g. the list `train_wordpiece` returns."""
        return cls(list(tokens), do_lower_case=do_lower_case, **kwargs)

    @classmethod
    def from_pretrained(cls, directory, **kwargs):
        """Load `directory/vocab.txt` and, if present, the settings in `directory/tokenizer_config.json`.

        Keyword arguments override the file's settings (e.g. ``do_lower_case=False``).
        """
        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"tokenizer folder not found: {directory} (expected a folder with vocab.txt)")
        settings = {}
        config = directory / "tokenizer_config.json"
        if config.is_file():
            raw = json.loads(config.read_text(encoding="utf-8"))
            for key in SAVED_SETTINGS & raw.keys():
                value = raw[key]
                if isinstance(value, dict) and "content" in value:  # transformers' serialized AddedToken
                    value = value["content"]
                settings[key] = value
            limit = settings.get("model_max_length")
            if limit is not None and limit > 10**9:  # transformers writes 1e30 for "no limit"; we write null
                settings["model_max_length"] = None
        settings.update(kwargs)
        return cls(directory / "vocab.txt", **settings)

    def save_pretrained(self, directory):
        """Write vocab.txt, tokenizer_config.json and special_tokens_map.json (transformers reads all three).

        Each file is written to a temporary file in the same folder and then renamed over the target,
        so an interrupted save never leaves a half-written vocab.txt behind.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        specials = {role: getattr(self, role) for role in SPECIAL_TOKEN_ROLES}
        # Every key of SAVED_SETTINGS, and only those: from_pretrained reads back exactly what is written here.
        settings = {"do_lower_case": self.do_lower_case, "do_basic_tokenize": self.do_basic_tokenize,
                    "never_split": sorted(self.basic_tokenizer.never_split) or None,
                    "tokenize_chinese_chars": self.tokenize_chinese_chars, "strip_accents": self.strip_accents,
                    "model_max_length": self.model_max_length,  # None (no limit) is written as null
                    "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces, **specials}
        assert settings.keys() == SAVED_SETTINGS, "save_pretrained and SAVED_SETTINGS disagree"
        config = {"tokenizer_class": "BertTokenizer", **settings}
        files = {"vocab.txt": "".join(t + "\n" for t in self.ids_to_tokens),
                 "tokenizer_config.json": json.dumps(config, indent=2, ensure_ascii=False) + "\n",
                 "special_tokens_map.json": json.dumps(specials, indent=2) + "\n"}
        return write_files_atomically(directory, files)

    # --- text <-> tokens <-> ids ------------------------------------------------------------------------

    def tokenize(self, text):
        """Text -> word pieces. ``"Hello, my dog is cute" -> ["hello", ",", "my", "dog", "is", "cute"]``."""
        return list(self._walk(text, self._pieces_cache, self._special_pieces))

    def text_to_ids(self, text):
        """Text -> ids, no [CLS] / [SEP]; the same as ``convert_tokens_to_ids(tokenize(text))``, faster."""
        return list(self._walk(text, self._ids_cache, self._special_ids))

    def batch_text_to_ids(self, texts, progress=False):
        """Many texts -> one flat id array and offsets: text i has ids ``ids[offsets[i]:offsets[i + 1]]``.

        The ids are gathered in an `array` of C ints, never in a Python list over the whole batch, so a
        corpus of millions of tokens costs 4 bytes a token.

        Args:
            texts: a sequence (or iterable) of strings.
            progress: show a tqdm bar (one tick per text).
        Returns:
            (ids (S,) int32, offsets (n + 1,) int64), S = total number of ids, n = number of texts.
        """
        if progress:
            from tqdm.auto import tqdm

            texts = tqdm(texts, desc="tokenizing", unit="doc", unit_scale=True)
        ids, ends = array("i"), array("q", [0])
        for text in texts:
            # Line by line: "\n" is whitespace to BERT, so cutting there changes no id, and a long text
            # (a book as one document) never becomes one list of millions of word strings.
            for line in text.split("\n"):
                ids.extend(self._walk(line, self._ids_cache, self._special_ids))
            ends.append(len(ids))
        return np.frombuffer(ids, dtype=np.int32), np.frombuffer(ends, dtype=np.int64)  # no copy

    def _walk(self, text, cache, specials):
        """An iterator over the pieces (or ids) of `text`: special tokens written in the text stay whole
        (`specials` maps each to its output), everything between them goes word by word through `cache`."""
        # Five substring searches (C) are much cheaper than the regex on a long text that has none.
        has_special = any(t in text for t in specials)
        chunks = self._special_re.split(text) if has_special else (text,)
        parts = []
        for i, chunk in enumerate(chunks):
            if i % 2:                       # re.split puts the captured special tokens at odd positions
                parts.append(specials[chunk])
            else:
                words = self.basic_tokenizer.split_whitespace(chunk) if self.do_basic_tokenize else chunk.split()
                parts.append(chain.from_iterable(map(cache.__getitem__, words)))
        return chain.from_iterable(parts)

    def _per_basic_word(self, word, cache):
        """A whitespace-separated word -> the pieces (or ids) of the words the basic split makes of it."""
        if not self.do_basic_tokenize:
            return cache[word]
        words = self.basic_tokenizer.split_word(word)
        if len(words) == 1:             # most words: no punctuation attached
            return cache[words[0]]
        return tuple(chain.from_iterable(map(cache.__getitem__, words)))

    def _pieces_of_basic_word(self, word):
        if self.do_basic_tokenize and word in self.basic_tokenizer.never_split:
            return (word,)
        return self.wordpiece_tokenizer._greedy(word)

    def _ids_of_basic_word(self, word):
        unk = self.unk_token_id
        return tuple(self.vocab.get(t, unk) for t in self._basic_pieces[word])

    def convert_tokens_to_ids(self, tokens):
        """A token or list of tokens -> id(s); unknown tokens give `unk_token_id`."""
        unk = self.unk_token_id
        if isinstance(tokens, str):
            return self.vocab.get(tokens, unk)
        return [self.vocab.get(t, unk) for t in tokens]

    def convert_ids_to_tokens(self, ids, skip_special_tokens=False):
        """An id or list of ids -> token(s). Ids outside 0..V-1 give `unk_token`, as in transformers
        (a model whose embedding table was padded beyond the vocabulary can emit them)."""
        if isinstance(ids, (int, np.integer)):
            return self._id_to_token(int(ids))
        special = set(self.all_special_ids) if skip_special_tokens else ()
        return [self._id_to_token(int(i)) for i in np.asarray(ids).reshape(-1) if int(i) not in special]

    def _id_to_token(self, i):
        return self.ids_to_tokens[i] if 0 <= i < len(self.ids_to_tokens) else self.unk_token

    def convert_tokens_to_string(self, tokens):
        """Join pieces back into words: ``["em", "##bed", "##ding", "##s"] -> "embeddings"``."""
        return " ".join(tokens).replace(" ##", "").strip()

    def encode(self, text, text_pair=None, add_special_tokens=True, truncation=None, max_length=None):
        """Text (and optional second text) -> list of ids, ``[CLS] A [SEP] (B [SEP])``."""
        return self(text, text_pair, add_special_tokens=add_special_tokens, truncation=truncation,
                    max_length=max_length)["input_ids"]

    def decode(self, ids, skip_special_tokens=False, clean_up_tokenization_spaces=None):
        """Ids -> text. Lower-casing, accents and spacing around punctuation do not come back:
        ``decode(encode("Héllo , World!")) == "[CLS] hello, world! [SEP]"``."""
        text = self.convert_tokens_to_string(self.convert_ids_to_tokens(ids, skip_special_tokens))
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = self.clean_up_tokenization_spaces
        if clean_up_tokenization_spaces:
            for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"),
                                  (" n't", "n't"), (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
                text = text.replace(before, after)
        return text

    def batch_decode(self, sequences, **kwargs):
        return [self.decode(ids, **kwargs) for ids in sequences]

    # --- model inputs -----------------------------------------------------------------------------------

    def __call__(self, text, text_pair=None, add_special_tokens=True, padding=False, truncation=None,
                 max_length=None, return_tensors=None):
        """Text(s) -> `BatchEncoding` with input_ids, token_type_ids (0 = A, 1 = B) and attention_mask.

        Args:
            text: a string, or a list of strings (a batch).
            text_pair: None, or a second string (a list for a batch) for sentence-pair tasks.
            padding: False (none), True / "longest" (to the longest in the batch) or "max_length".
            truncation: None / False (none, but None with a `max_length` and no padding truncates, as in
                transformers), True / "longest_first" (cut the longer of A and B one token at a time),
                "only_first", "only_second".
            max_length: target length including [CLS] and [SEP]; defaults to `model_max_length` when
                truncating or padding to "max_length".
            return_tensors: None (lists; one flat list per field for a single string) or "np"
                (int64 arrays of shape (B, T); (1, T) for a single string).
        """
        if padding not in _PADDING:
            raise ValueError(f"padding={padding!r} is not one of {list(_PADDING)}")
        if max_length is not None and padding is False and truncation is None:
            truncation = "longest_first"    # transformers' rule: a max_length alone means "truncate to it"
        if truncation is None:
            truncation = False
        if truncation not in _TRUNCATION:
            raise ValueError(f"truncation={truncation!r} is not one of {list(_TRUNCATION)}")
        if return_tensors not in (None, "np"):
            raise ValueError(f"return_tensors={return_tensors!r}: minillm returns NumPy arrays; use "
                             "return_tensors='np' (or None for Python lists)")
        padding, truncation = _PADDING[padding], _TRUNCATION[truncation]
        if max_length is None and (truncation or padding == "max_length"):
            max_length = self.model_max_length

        single = isinstance(text, str)
        texts = [text] if single else list(text)
        if text_pair is None:
            pairs = [None] * len(texts)
        else:
            pairs = [text_pair] if isinstance(text_pair, str) else list(text_pair)
            if isinstance(text_pair, str) != single or len(pairs) != len(texts):
                raise ValueError(f"text_pair must match text: a string for a string, a list of {len(texts)} "
                                 f"strings for a list of {len(texts)}")
        rows = [self._encode_one(a, b, add_special_tokens, truncation, max_length) for a, b in zip(texts, pairs)]

        if padding:
            longest = max((len(r[0]) for r in rows), default=0)
            width = max_length if padding == "max_length" and max_length is not None else longest
            pad = self.pad_token_id
            rows = [(ids + [pad] * (width - len(ids)), tt + [0] * (width - len(ids)),
                     [1] * len(ids) + [0] * (width - len(ids))) for ids, tt in rows]
        else:
            rows = [(ids, tt, [1] * len(ids)) for ids, tt in rows]
        out = BatchEncoding({name: [r[k] for r in rows]
                             for k, name in enumerate(("input_ids", "token_type_ids", "attention_mask"))})
        if return_tensors == "np":
            lengths = {len(r[0]) for r in rows}
            if len(lengths) > 1:
                raise ValueError(f"cannot stack sequences of lengths {sorted(lengths)} into one array; "
                                 "pass padding=True (or padding='max_length')")
            for name in out:
                out[name] = np.array(out[name], dtype=np.int64).reshape(len(rows), -1)  # (B, T)
        elif single:
            for name in out:
                out[name] = out[name][0]
        return out

    def _encode_one(self, text, pair, add_special_tokens, truncation, max_length):
        """One example -> (input_ids, token_type_ids), truncated to max_length if asked; no padding."""
        a = self.text_to_ids(text)
        b = None if pair is None else self.text_to_ids(pair)
        n_special = (2 if b is None else 3) if add_special_tokens else 0
        excess = len(a) + len(b or ()) + n_special - (max_length or 0)
        if truncation and max_length is not None and excess > 0:  # model_max_length=None: no limit
            a, b = self._truncate(a, b, excess, truncation, max_length, n_special)
        if add_special_tokens:
            cls, sep = [self.cls_token_id], [self.sep_token_id]
            ids, types = cls + a + sep, [0] * (len(a) + 2)
            if b is not None:
                ids, types = ids + b + sep, types + [1] * (len(b) + 1)
        else:
            ids = a + (b or [])
            types = [0] * len(ids)     # as transformers: without [SEP] there is no segment boundary to mark
        return ids, types

    @staticmethod
    def _truncate(a, b, excess, strategy, max_length, n_special):
        """Drop `excess` ids from the ends of a and b (transformers' slow-tokenizer arithmetic)."""
        if n_special >= max_length:
            raise ValueError(f"max_length={max_length} leaves no room for text: the special tokens alone take "
                             f"{n_special}")
        if strategy == "longest_first" and b is None:
            return a[:len(a) - excess], b   # excess <= len(a): the specials fit, checked above
        if strategy in ("only_first", "only_second"):
            which = 0 if strategy == "only_first" else 1
            seq = (a, b)[which]
            if seq is None or excess > len(seq):
                have = "no second sequence" if seq is None else f"{len(seq)} ids"
                raise ValueError(f"truncation={strategy!r} must remove {excess} ids but that sequence has "
                                 f"{have}; use truncation='longest_first' or a larger max_length")
            seq = seq[:len(seq) - excess]
            return (seq, b) if which == 0 else (a, seq)
        # longest_first: first cut the longer one down to the shorter's length, then split the rest evenly;
        # an odd leftover id is taken from B (so A keeps the extra one).
        first = min(abs(len(a) - len(b)), excess)
        rest = excess - first
        cut_a = (first if len(a) > len(b) else 0) + rest // 2
        cut_b = excess - cut_a
        return a[:len(a) - cut_a], b[:len(b) - cut_b]

    # --- special tokens ---------------------------------------------------------------------------------

    @property
    def all_special_tokens(self):
        """In transformers' order: [UNK], [SEP], [PAD], [CLS], [MASK]."""
        return [self.unk_token, self.sep_token, self.pad_token, self.cls_token, self.mask_token]

    @property
    def all_special_ids(self):
        return [self.vocab[t] for t in self.all_special_tokens]

    def get_special_tokens_mask(self, token_ids_0, token_ids_1=None, already_has_special_tokens=False):
        """1 where a special token is (or, for ids without specials, would be added), 0 elsewhere."""
        if already_has_special_tokens:
            special = set(self.all_special_ids)
            return [1 if int(i) in special else 0 for i in token_ids_0]
        mask = [1] + [0] * len(token_ids_0) + [1]
        return mask if token_ids_1 is None else mask + [0] * len(token_ids_1) + [1]

    def get_vocab(self):
        return dict(self.vocab)

    def __len__(self):
        return len(self.ids_to_tokens)

    @property
    def vocab_size(self):
        return len(self.ids_to_tokens)

    pad_token_id = property(lambda self: self.vocab[self.pad_token])
    unk_token_id = property(lambda self: self.vocab[self.unk_token])
    cls_token_id = property(lambda self: self.vocab[self.cls_token])
    sep_token_id = property(lambda self: self.vocab[self.sep_token])
    mask_token_id = property(lambda self: self.vocab[self.mask_token])

    def __repr__(self):
        return (f"BertTokenizer(vocab_size={self.vocab_size}, do_lower_case={self.do_lower_case}, "
                f"model_max_length={self.model_max_length})")


def __getattr__(name):
    # train_wordpiece lives in its own file, which imports BasicTokenizer from this one; re-exporting it
    # lazily here (PEP 562) lets `from minillm.tokenizer import train_wordpiece` work without an import cycle.
    if name == "train_wordpiece":
        from minillm.wordpiece_train import train_wordpiece
        return train_wordpiece
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

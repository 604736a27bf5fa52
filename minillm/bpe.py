"""GPT-2's tokenizer: byte-level BPE, and the trainer that learns its merges from a corpus.

Three stages turn text into ids (Radford et al. 2019, sec. 2.2; ``src/encoder.py`` of OpenAI's gpt-2 repository):

1. **Pre-tokenization** cuts the text into chunks with one regular expression, `GPT2_PATTERN`::

       's|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+

   English contractions, then a run of letters, of digits, or of other symbols, each with at most one
   space in front (the space belongs to the word that follows it: ``"Hello world" -> "Hello", " world"``),
   then whitespace. ``\\s+(?!\\S)`` leaves the last space of a run for the next word. No merge ever crosses
   a chunk boundary, so "dog." and "dog!" share the token " dog".
2. **Bytes as characters.** Each chunk is encoded as UTF-8 and each byte written as one printable
   character (`bytes_to_unicode`): the 188 bytes that are already printable Latin-1 characters stand for
   themselves, the other 68 (control bytes, the space, ...) are moved to U+0100 and up, so the space
   becomes "Ġ" and the newline "Ċ". Every string is some sequence of the 256 byte characters, which are all
   in the vocabulary: there is no unknown token, and ``decode(encode(s)) == s`` for every string.
3. **Merges.** `merges.txt` lists pairs of symbols in the order the trainer learned them (rank 0 first).
   A chunk starts as its byte characters; repeatedly, the adjacent pair with the lowest rank is merged
   everywhere in the chunk (left to right), until no adjacent pair has a rank. Each symbol is then looked
   up in `vocab.json`. ``" lowest"`` might go ``Ġ l o w e s t -> Ġl o w e s t -> Ġlo w e s t -> ... ->
   Ġlow est`` (docs/bpe.md works through an example, and a test checks it).

Training (`train_bpe`) is the same story backwards: count the chunks of a corpus, start from the 256 byte
characters, and repeatedly add the most frequent adjacent pair (weighting each chunk by its count) as a
merge. Ties go to the smallest pair in string order, so the result is deterministic. The merge loop is
`minillm.wordpiece_train.most_frequent_merges`, shared with WordPiece training: it works on distinct chunks
with their counts and updates only the pairs beside each merge, with a lazily updated heap to find the most
frequent pair.

**Why Python's `re` and not the `regex` module.** ``\\p{L}`` (any letter) and ``\\p{N}`` (any number) are
Unicode properties that `re` does not know, and OpenAI's code uses the third-party `regex` module for
them. Here the two classes are written out as character ranges built from `unicodedata` (categories
L* and N*, `_category_ranges`, built once, about 0.3 s), and ``\\s`` as the Unicode White_Space list: `re`'s own
``\\s`` would also match U+001C..U+001F (``str.isspace`` counts them; Unicode's White_Space, `regex` and
the Rust `tokenizers` do not), which would change how a text with those characters is cut. One dependency
fewer, and the classes are there to read. tests/test_bpe.py checks the pattern against `regex` on every
code point and on hypothesis-made strings. The classes follow the Unicode version of Python's
`unicodedata`; a character assigned in a later version is, here, not a letter.

Speed: the ids of a chunk depend on that chunk alone, and chunks are Zipfian, so each distinct chunk is
encoded once and remembered (`_WordCache`, as in the BERT tokenizer); byte mapping is one `str.translate`;
the regular expression, the largest cost left, skips the classes' ranges above U+FFFF when it can (`pretokenize`).
Measured on IMDb reviews (one core of a 2-core machine that was also running a training job): encoding
5.0 MB (1.24M ids, 8,000-id vocabulary) took 0.80 s with an empty cache (6.3 MB/s) and 0.22 s once its
chunks had been seen (22 MB/s, median of 3); transformers' Rust `GPT2Tokenizer` took 1.4 s for the same
documents in one call (ids returned as Python lists). Training 8,000 ids on all 65 MB: counting 2.6 s
(164k distinct chunks) + merges 3.9 s.

What this is not: the `add_prefix_space` option, offsets mapping, BPE dropout, or added tokens beyond the
special tokens it is built with. `__call__` adds no special tokens (GPT-2 adds none either).
"""
from __future__ import annotations

import functools
import json
import re
import unicodedata
from collections import Counter
from itertools import chain
from pathlib import Path

import numpy as np

from minillm.tokenizer import BatchEncoding, _WordCache, write_files_atomically
from minillm.wordpiece_train import most_frequent_merges

ENDOFTEXT = "<|endoftext|>"
# The pattern as OpenAI wrote it (for the `regex` module); `pretokenize_pattern` is its `re` translation.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# Unicode's White_Space property (PropList.txt), which `regex` and `tokenizers` mean by \s.
WHITE_SPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a" \
              "\u2028\u2029\u202f\u205f\u3000"
MERGES_HEADER = "#version: 0.2"


@functools.cache
def bytes_to_unicode():
    """{byte: character}: the printable Latin-1 bytes map to themselves, the other 68 to U+0100 and up.

    Printable: "!".."~" (33-126), "¡".."¬" (161-172), "®".."ÿ" (174-255). The rest, in byte order, get
    chr(256), chr(257), ...: 0 -> "Ā", 32 (space) -> "Ġ", 10 (newline) -> "Ċ", 173 (soft hyphen) -> "Ń".
    The order of the dict is GPT-2's vocabulary order for the 256 byte tokens (printable ones first).
    """
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    rest = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + n) for n, b in enumerate(rest)}}


@functools.cache
def _category_ranges(prefix, end=0x110000):
    """The code points below `end` whose Unicode category starts with `prefix` ("L", "N"), as a `re` class body."""
    ranges, start = [], None
    for cp in range(end + 1):
        inside = cp < end and unicodedata.category(chr(cp)).startswith(prefix)
        if inside and start is None:
            start = cp
        elif not inside and start is not None:
            ranges.append(f"\\U{start:08x}-\\U{cp - 1:08x}" if cp - 1 > start else f"\\U{start:08x}")
            start = None
    return "".join(ranges)


@functools.cache
def pretokenize_pattern(bmp_only=False):
    """`GPT2_PATTERN` for Python's `re`: \\p{L}, \\p{N} and \\s spelled out as character classes.

    bmp_only: leave out the code points above U+FFFF, for texts that have none (see `pretokenize`).
    """
    end = 0x10000 if bmp_only else 0x110000
    L, N = _category_ranges("L", end), _category_ranges("N", end)
    s = "".join(f"\\U{ord(c):08x}" for c in WHITE_SPACE)
    return re.compile(rf"""'s|'t|'re|'ve|'m|'ll|'d| ?[{L}]+| ?[{N}]+| ?[^{s}{L}{N}]+|[{s}]+(?![^{s}])|[{s}]+""")


_ASTRAL = re.compile("[\U00010000-\U0010ffff]")   # a code point outside the Basic Multilingual Plane


def pretokenize(text):
    """Text -> chunks by `GPT2_PATTERN`: ``"Hello  world!" -> ["Hello", " ", " world", "!"]``.

    Speed: `re` stores a class's code points up to U+FFFF as a bitmap (one lookup) but those above as a
    list of ranges that it scans one by one, so with all of \\p{L} a character that is not a letter costs
    hundreds of comparisons. A text with no character above U+FFFF (one C-level search finds out) gets the
    same pattern without those ranges, which matches exactly the same there: on 5 MB of IMDb reviews 0.24 s
    instead of 0.66 s.
    """
    return pretokenize_pattern(bmp_only=_ASTRAL.search(text) is None).findall(text)


class ByteLevelBPETokenizer:
    """GPT-2's byte-level BPE tokenizer with the transformers API (`from_pretrained`, `__call__`, `decode`).

    Args:
        vocab: {token: id}, as in vocab.json; must hold the 256 byte characters and every merge's result.
        merges: list of (a, b) pairs, rank 0 first, as in merges.txt.
        special_tokens: strings that are never cut (found in the text before pre-tokenization) and each
            map to one id; GPT-2 has one, ``<|endoftext|>``, which is also its bos, eos and unk token.
        pad_token: None (GPT-2 has none: set ``tok.pad_token = tok.eos_token`` to pad a batch).
        model_max_length: the length ``truncation=True`` cuts to when no max_length is given.
        errors: how `decode` treats ids whose bytes are not valid UTF-8 (a sequence cut inside a
            character); "replace" (U+FFFD), as in GPT-2.
    """

    def __init__(self, vocab, merges, special_tokens=(ENDOFTEXT,), pad_token=None, model_max_length=1024,
                 errors="replace"):
        self.vocab = dict(vocab)
        self.ids_to_tokens = {i: t for t, i in self.vocab.items()}
        self.merges = [tuple(m) for m in merges]
        self.bpe_ranks = {pair: rank for rank, pair in enumerate(self.merges)}
        missing = [c for c in bytes_to_unicode().values() if c not in self.vocab]
        missing += [a + b for a, b in self.merges if a + b not in self.vocab]
        missing += [t for t in special_tokens if t not in self.vocab]
        if missing:
            raise ValueError(f"the vocabulary ({len(self.vocab)} tokens) lacks {len(missing)} tokens that the byte "
                             f"alphabet, the merges and the special tokens need, e.g. {missing[:5]}")
        self.special_tokens = list(special_tokens)
        self.eos_token = self.bos_token = self.unk_token = self.special_tokens[0] if special_tokens else None
        self.pad_token = pad_token
        self.model_max_length = model_max_length
        self.errors = errors
        self._byte_table = dict(bytes_to_unicode())                                 # for str.translate
        self._unbyte_table = {ord(c): b for b, c in bytes_to_unicode().items()}
        # Special tokens written in the text stay whole: split around them first, longest alternative first.
        specials = sorted(self.special_tokens, key=len, reverse=True)
        self._special_split = re.compile("(" + "|".join(map(re.escape, specials)) + ")") if specials else None
        self._cache = _WordCache(self._ids_of_chunk)

    # --- files ------------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, directory, **kwargs):
        """Load a folder in HF layout: vocab.json + merges.txt, or else tokenizer.json (what transformers 5
        writes), and the settings in tokenizer_config.json if present. Keyword arguments override them."""
        directory = Path(directory)
        specials = []
        if (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file():
            vocab = json.loads((directory / "vocab.json").read_text(encoding="utf-8"))
            lines = (directory / "merges.txt").read_text(encoding="utf-8").split("\n")
            merges = [tuple(line.split(" ")) for line in lines if line and not line.startswith("#version")]
        elif (directory / "tokenizer.json").is_file():
            raw = json.loads((directory / "tokenizer.json").read_text(encoding="utf-8"))
            model, pre = raw.get("model") or {}, raw.get("pre_tokenizer") or {}
            if model.get("type") != "BPE" or pre.get("type") != "ByteLevel" or pre.get("add_prefix_space"):
                raise ValueError(f"{directory / 'tokenizer.json'} is not GPT-2's byte-level BPE (model "
                                 f"{model.get('type')!r}, pre-tokenizer {pre.get('type')!r}); this class reads "
                                 "only that")
            vocab = model["vocab"]
            merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
            specials = [t["content"] for t in raw.get("added_tokens", []) if t.get("special")]
        else:
            raise FileNotFoundError(f"{directory} has neither vocab.json + merges.txt nor tokenizer.json "
                                    "(a byte-level BPE folder in HF layout)")
        settings = {}
        config = directory / "tokenizer_config.json"
        if config.is_file():
            raw = json.loads(config.read_text(encoding="utf-8"))
            settings = {k: raw[k] for k in ("pad_token", "model_max_length", "errors") if k in raw}
            if isinstance(settings.get("pad_token"), dict):       # transformers' serialized AddedToken
                settings["pad_token"] = settings["pad_token"]["content"]
            eos = raw.get("eos_token")
            eos = eos["content"] if isinstance(eos, dict) else eos
            if eos:     # the first special token is the eos (and bos, unk) token
                specials = [eos] + [t for t in specials if t != eos]
        if specials:
            settings["special_tokens"] = tuple(specials)
        settings.update(kwargs)
        return cls(vocab, merges, **settings)

    def save_pretrained(self, directory):
        """Write vocab.json, merges.txt (a "#version: 0.2" line, then one "a b" pair per line, rank order)
        and tokenizer_config.json; each through a temporary file renamed over the target."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        eos = self.eos_token
        config = {"tokenizer_class": "GPT2Tokenizer", "bos_token": eos, "eos_token": eos, "unk_token": eos,
                  "pad_token": self.pad_token, "model_max_length": self.model_max_length, "errors": self.errors,
                  "add_prefix_space": False, "add_bos_token": False, "clean_up_tokenization_spaces": False}
        files = {"vocab.json": json.dumps(self.vocab, ensure_ascii=False) + "\n",
                 "merges.txt": "".join(f"{line}\n" for line in [MERGES_HEADER, *(f"{a} {b}" for a, b in self.merges)]),
                 "tokenizer_config.json": json.dumps(config, indent=2, ensure_ascii=False) + "\n"}
        return write_files_atomically(directory, files)

    # --- text -> ids ------------------------------------------------------------------------------------

    def to_byte_chars(self, chunk):
        """A chunk -> its UTF-8 bytes written as byte characters: ``" é" -> "ĠÃ©"`` (all in C)."""
        return chunk.encode("utf-8").decode("latin-1").translate(self._byte_table)

    def bpe(self, symbols):
        """Byte characters of one chunk -> its tokens: merge the lowest-ranked adjacent pair until none is left.

        ``bpe("Ġlowest")`` with merges [(Ġ, l), (Ġl, o), (Ġlo, w), (e, s), (es, t)] -> ["Ġlow", "est"].
        """
        word = list(symbols)
        ranks = self.bpe_ranks
        while len(word) > 1:
            a, b = min(zip(word, word[1:]), key=lambda pair: ranks.get(pair, float("inf")))
            if (a, b) not in ranks:
                break
            out, i = [], 0
            while i < len(word):            # every occurrence, left to right: "a a a" -> "aa a"
                if i < len(word) - 1 and word[i] == a and word[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            word = out
        return word

    def _ids_of_chunk(self, chunk):
        return tuple(self.vocab[t] for t in self.bpe(self.to_byte_chars(chunk)))

    def _pieces(self, text):
        """Text -> list of (is_special, string): the special tokens written in it, and the text between."""
        if self._special_split is None:
            return [(False, text)]
        parts = self._special_split.split(text)   # odd positions are the special tokens matched
        return [(k % 2 == 1, p) for k, p in enumerate(parts) if p]

    def pretokenize(self, text):
        """Text (no special tokens in it) -> chunks (`pretokenize`)."""
        return pretokenize(text)

    def encode(self, text):
        """Text -> list of ids (no special tokens are added; those written in the text are kept whole)."""
        ids = []
        for special, piece in self._pieces(text):
            if special:
                ids.append(self.vocab[piece])
            else:   # chunk -> ids lookups run in C (`map`); only a chunk seen for the first time calls `bpe`
                ids += chain.from_iterable(map(self._cache.__getitem__, pretokenize(piece)))
        return ids

    def tokenize(self, text):
        """Text -> tokens (byte characters): ``"Hello world" -> ["Hello", "Ġworld"]`` with a big enough vocab."""
        return [self.ids_to_tokens[i] for i in self.encode(text)]

    def convert_tokens_to_ids(self, tokens):
        return self.vocab[tokens] if isinstance(tokens, str) else [self.vocab[t] for t in tokens]

    def convert_ids_to_tokens(self, ids):
        return self.ids_to_tokens[int(ids)] if np.ndim(ids) == 0 else [self.ids_to_tokens[int(i)] for i in ids]

    # --- ids -> text ------------------------------------------------------------------------------------

    def decode(self, ids, skip_special_tokens=False):
        """Ids -> text: join the tokens, map byte characters back to bytes, decode UTF-8.

        Special tokens are written as themselves (or left out). Bytes that are not valid UTF-8 (a sequence
        cut inside a character) follow `errors`; ``decode(encode(s)) == s`` for every string s.
        """
        out, run = [], []
        specials = set(self.special_tokens)
        for i in ids:
            token = self.ids_to_tokens[int(i)]
            if token in specials:
                out.append(self._bytes_to_text(run))
                run = []
                if not skip_special_tokens:
                    out.append(token)
            else:
                run.append(token)
        out.append(self._bytes_to_text(run))
        return "".join(out)

    def _bytes_to_text(self, tokens):
        return "".join(tokens).translate(self._unbyte_table).encode("latin-1").decode("utf-8", self.errors)

    def batch_decode(self, sequences, **kwargs):
        return [self.decode(ids, **kwargs) for ids in sequences]

    # --- model inputs -----------------------------------------------------------------------------------

    def __call__(self, text, padding=False, truncation=None, max_length=None, return_tensors=None):
        """Text(s) -> `BatchEncoding` with input_ids and attention_mask (1 = a real token, 0 = padding).

        Args:
            text: a string or a list of strings.
            padding: False, True / "longest" or "max_length" (right padding with `pad_token`).
            truncation: True cuts each sequence to max_length (default `model_max_length`) from the right;
                None with a max_length and no padding also cuts, as in transformers.
            return_tensors: None (lists; flat for a single string) or "np" (int64 arrays (B, T)).
        """
        if padding not in (False, True, "longest", "max_length", "do_not_pad"):
            raise ValueError(f"padding={padding!r} is not one of False, True, 'longest', 'max_length'")
        if return_tensors not in (None, "np"):
            raise ValueError(f"return_tensors={return_tensors!r}: minillm returns NumPy arrays; use 'np' or None")
        padding = {True: "longest", "do_not_pad": False}.get(padding, padding)
        if truncation is None:
            truncation = max_length is not None and not padding
        if max_length is None and (truncation or padding == "max_length"):
            max_length = self.model_max_length
        single = isinstance(text, str)
        rows = [self.encode(t) for t in ([text] if single else text)]
        if truncation and max_length is not None:
            rows = [r[:max_length] for r in rows]
        masks = [[1] * len(r) for r in rows]
        if padding:
            if self.pad_token is None:
                raise ValueError("this tokenizer has no pad_token (GPT-2 has none); set one first, e.g. "
                                 "tok.pad_token = tok.eos_token, or call it without padding")
            width = max_length if padding == "max_length" else max((len(r) for r in rows), default=0)
            pad = self.vocab[self.pad_token]
            masks = [m + [0] * (width - len(r)) for r, m in zip(rows, masks)]
            rows = [r + [pad] * (width - len(r)) for r in rows]
        out = BatchEncoding(input_ids=rows, attention_mask=masks)
        if return_tensors == "np":
            lengths = {len(r) for r in rows}
            if len(lengths) > 1:
                raise ValueError(f"cannot stack sequences of lengths {sorted(lengths)} into one array; "
                                 "pass padding=True (with a pad_token set)")
            for name in out:
                out[name] = np.array(out[name], dtype=np.int64).reshape(len(rows), -1)  # (B, T)
        elif single:
            for name in out:
                out[name] = out[name][0]
        return out

    def get_vocab(self):
        return dict(self.vocab)

    def __len__(self):
        return len(self.vocab)

    @property
    def vocab_size(self):
        return len(self.vocab)

    eos_token_id = property(lambda self: self.vocab[self.eos_token])
    bos_token_id = property(lambda self: self.vocab[self.bos_token])
    pad_token_id = property(lambda self: None if self.pad_token is None else self.vocab[self.pad_token])

    def __repr__(self):
        return f"ByteLevelBPETokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)})"


GPT2Tokenizer = ByteLevelBPETokenizer   # transformers' name for it


# --- training -----------------------------------------------------------------------------------------

def count_chunks(texts, special_tokens=(ENDOFTEXT,), progress=False) -> Counter:
    """How often each pre-tokenized chunk, written in byte characters, occurs in `texts`.

    The regex runs in C and `Counter.update` counts in C; the byte mapping runs once per distinct chunk.
    Special tokens written in the text are not counted (they are never merged).
    """
    split = re.compile("|".join(map(re.escape, special_tokens))) if special_tokens else None
    if progress:
        from tqdm.auto import tqdm

        texts = tqdm(texts, desc="counting chunks", unit="doc", unit_scale=True)
    raw = Counter()
    for text in texts:
        for piece in (split.split(text) if split else (text,)):
            raw.update(pretokenize(piece))
    table = bytes_to_unicode()
    out = Counter()
    for chunk, n in raw.items():
        out[chunk.encode("utf-8").decode("latin-1").translate(table)] += n
    return out


def train_bpe(texts, vocab_size, min_frequency=2, special_tokens=(ENDOFTEXT,), progress=False):
    """Learn byte-level BPE merges from `texts`; returns a `ByteLevelBPETokenizer` with at most `vocab_size` ids.

    Args:
        texts: an iterable of strings (lines, sentences or documents).
        vocab_size: the vocabulary to reach: 256 byte tokens + merged tokens + special tokens (GPT-2: 50,257
            = 256 + 50,000 + 1). Fewer when no pair occurs `min_frequency` times any more.
        min_frequency: stop when the most frequent pair occurs fewer times than this.
        special_tokens: given the last ids, in this order (GPT-2's ``<|endoftext|>`` is its last id).
        progress: tqdm bars.

    Vocabulary order: the byte tokens in `bytes_to_unicode` order (ids 0-255, as GPT-2), then each merge's
    result in the order learned, then the special tokens.
    """
    return train_bpe_from_counts(count_chunks(texts, special_tokens, progress), vocab_size, min_frequency,
                                 special_tokens, progress)


def train_bpe_from_counts(chunk_counts, vocab_size, min_frequency=2, special_tokens=(ENDOFTEXT,), progress=False):
    """`train_bpe` on chunk counts ({chunk in byte characters: count}, from `count_chunks`)."""
    alphabet = list(bytes_to_unicode().values())
    if vocab_size < len(alphabet) + len(special_tokens):
        raise ValueError(f"vocab_size={vocab_size} is too small: the 256 byte tokens and {len(special_tokens)} "
                         f"special tokens already make {len(alphabet) + len(special_tokens)}")
    words = sorted(chunk_counts)    # sorted: nothing below depends on the order the counts came in
    symbols = [list(w) for w in words]
    freqs = [chunk_counts[w] for w in words]
    vocab = {c: i for i, c in enumerate(alphabet)}
    merges = []
    target = vocab_size - len(special_tokens)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=target - len(vocab), desc="learning merges", unit="tok")
    for a, b, merged in most_frequent_merges(symbols, freqs, lambda a, b: a + b, min_frequency):
        if len(vocab) >= target:
            break
        merges.append((a, b))
        if merged not in vocab:         # ("a", "bc") and ("ab", "c") both make "abc": one id
            vocab[merged] = len(vocab)
            if bar is not None:
                bar.update()
    if bar is not None:
        bar.close()
    for token in special_tokens:
        vocab[token] = len(vocab)
    return ByteLevelBPETokenizer(vocab, merges, special_tokens=special_tokens)

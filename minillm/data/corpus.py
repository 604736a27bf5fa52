"""Plain-text corpora for MLM pretraining: read, tokenize once (cached), split by document, pack into rows.

The path from text files to pretraining rows:

    read_corpus(path)                   -> documents (str), WikiText markup undone
    tokenize_corpus(paths, tok)         -> TokenizedCorpus: one flat int32 id array + int64 document offsets,
                                           cached on disk per file as .npz
    split_documents(corpus, f, seed)    -> (train, held-out) TokenizedCorpus: whole documents on each side
    pack_sequences(corpus, T, ...)      -> (N, T) rows "[CLS] tokens ... [SEP]", documents joined by [SEP]

Representation: a corpus of n documents and S tokens is two arrays, ``ids (S,) int32`` and
``offsets (n + 1,) int64`` with document i = ``ids[offsets[i]:offsets[i + 1]]``. Splitting, packing and
the cache work on these arrays with NumPy, never with a Python loop per token. The 65 MB of IMDb reviews
become 14.8M ids, 59 MB as int32; Python lists of them would need 8-byte pointers (twice that) and
50,000 separate objects to pack and split.

Formats (`fmt="auto"` picks one from the file):

* "wikitext": WikiText's one-paragraph-per-line text. A level-1 heading ` = Title = ` starts a new
  document (an article); deeper headings ` = = Section = = ` are dropped (they are not prose); the
  tokenizer-splitting markup ` @-@ `, ` @,@ `, ` @.@ ` is joined back to `-`, `,`, `.` ("1 @,@ 000" ->
  "1,000"), so the text looks like what a WordPiece tokenizer expects.
* "lines": one paragraph per line, blank lines separate documents (the BERT pretraining-data convention).
  Auto-detected when a blank line stands between two lines of text.
* "doc_per_line": one document per line, e.g. `imdb/unsup.txt` (one review per line). Auto-detected
  for a file with no heading and no blank line between lines of text: read as "lines", such a file would
  be a single document, and a document-level held-out split would be impossible.
* "tsv": a GLUE-style TSV (e.g. SST-2 train); each sentence is a document.

`<unk>`: WikiText replaced rare words by `<unk>`. We map each one to the tokenizer's [UNK] id instead of
tokenizing the five characters (which would teach the model a fake word "< un ##k >"). [UNK] is a special
token, so MLM masking never asks the model to predict it, yet it still stands in the context as "some rare
word", which is what it means.

What this is not: a streaming reader. The texts of a corpus are held in memory while it is tokenized
(65 MB for IMDb); the ids after that are compact.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from array import array
from pathlib import Path

import numpy as np

from ._text import decode_utf8, read_bytes_checked, split_lines

UNK_MARK = "<unk>"
_HEADING = re.compile(r"((?:= )+)\S.*?((?: =)+)")  # on a stripped line: "= = Title = =" ; level = # of "="
_DETOKENIZE = ((" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."))
FORMATS = ("auto", "wikitext", "lines", "doc_per_line", "tsv")
CACHE_VERSION = 2  # bump when the reading or encoding rules change: old cache files then no longer match
# 2: "auto" reads a file without blank lines as one document per line (it was one document in all).


class TokenizedCorpus:
    """Documents of token ids, stored flat: document i is ``ids[offsets[i]:offsets[i + 1]]``.

    Behaves like a read-only sequence of (n_i,) int32 arrays (``len``, indexing, iteration), so code
    written for a list of per-document arrays keeps working, while the data stay two NumPy arrays.

    Args:
        ids: (S,) integer token ids (stored as int32).
        offsets: (n + 1,) non-decreasing integers with offsets[0] = 0 and offsets[-1] = S (stored as int64).
    """

    def __init__(self, ids, offsets):
        ids = np.ascontiguousarray(ids, dtype=np.int32).reshape(-1)          # (S,)
        offsets = np.ascontiguousarray(offsets, dtype=np.int64).reshape(-1)  # (n + 1,)
        if len(offsets) == 0 or offsets[0] != 0 or offsets[-1] != len(ids) or (np.diff(offsets) < 0).any():
            raise ValueError(f"TokenizedCorpus: offsets must rise from 0 to len(ids)={len(ids)}, got "
                             f"{len(offsets)} offsets from {offsets[:1]} to {offsets[-1:]}")
        self.ids, self.offsets = ids, offsets

    @classmethod
    def from_arrays(cls, docs) -> "TokenizedCorpus":
        """From a sequence of 1-D id arrays (one per document); a TokenizedCorpus is returned as it is."""
        if isinstance(docs, TokenizedCorpus):
            return docs
        docs = [np.asarray(d).reshape(-1) for d in docs]
        lengths = np.array([len(d) for d in docs], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        ids = np.concatenate(docs).astype(np.int32) if docs else np.zeros(0, np.int32)
        return cls(ids, offsets)

    @classmethod
    def concat(cls, corpora) -> "TokenizedCorpus":
        """The documents of several corpora, in order, as one corpus."""
        corpora = [cls.from_arrays(c) for c in corpora]
        if not corpora:
            return cls(np.zeros(0, np.int32), np.zeros(1, np.int64))
        starts = np.cumsum([0] + [c.n_tokens for c in corpora[:-1]])
        offsets = np.concatenate([[0]] + [c.offsets[1:] + s for c, s in zip(corpora, starts)])
        return cls(np.concatenate([c.ids for c in corpora]), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i) -> np.ndarray:
        """Document i as a read-only view of `ids`."""
        n = len(self)
        if not isinstance(i, (int, np.integer)):
            raise TypeError(f"TokenizedCorpus indices are document numbers (int), not {type(i).__name__}; "
                            "use .subset(mask) to select documents")
        if not -n <= i < n:
            raise IndexError(f"document {i} of a corpus of {n}")
        i = int(i) % n
        view = self.ids[self.offsets[i]:self.offsets[i + 1]]
        view.flags.writeable = False
        return view

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    @property
    def lengths(self) -> np.ndarray:
        """(n,) tokens per document."""
        return np.diff(self.offsets)

    @property
    def n_tokens(self) -> int:
        return len(self.ids)

    def subset(self, keep) -> "TokenizedCorpus":
        """The documents where the (n,) bool mask `keep` is True, in their original order."""
        keep = np.asarray(keep, dtype=bool)
        if keep.shape != (len(self),):
            raise ValueError(f"subset: the mask has shape {keep.shape}, the corpus {len(self)} documents")
        lengths = self.lengths[keep]
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        return TokenizedCorpus(self.ids[np.repeat(keep, self.lengths)], offsets)  # (S,) bool mask over tokens

    def __repr__(self):
        return f"TokenizedCorpus({len(self)} documents, {self.n_tokens} tokens)"


def heading_level(line: str) -> int:
    """1 for " = Title = ", 2 for " = = Section = = " ..., 0 for a line that is not a WikiText heading."""
    m = _HEADING.fullmatch(line.strip())
    if not m or m.group(1).count("=") != m.group(2).count("="):
        return 0
    return m.group(1).count("=")


def detect_format(path, lines: list[str]) -> str:
    if str(path).endswith(".tsv"):
        return "tsv"
    head = [line for line in lines[:200] if line.strip()]
    if any(heading_level(line) for line in head):
        return "wikitext"
    seen_text = blank_after_text = False
    for line in lines:
        if line.strip():
            if blank_after_text:
                return "lines"          # a blank line between two lines of text: documents are paragraphs
            seen_text = True
        elif seen_text:
            blank_after_text = True
    return "doc_per_line"


def read_corpus(path, fmt: str = "auto") -> list[str]:
    """Read one corpus file into documents.

    Args:
        path: a UTF-8 text file (or .tsv).
        fmt: "auto", "wikitext", "lines", "doc_per_line" or "tsv" (see the module docstring).

    Returns:
        list of documents, each its paragraphs joined by "\\n". `<unk>` is kept (see `encode_document`).

    Raises:
        ValueError naming the file for an empty file, non-UTF-8 bytes (with the byte offset), or a file
        with no text left after dropping headings.
    """
    return _documents(path, decode_utf8(read_bytes_checked(path), path), fmt)


def _documents(path, text: str, fmt: str) -> list[str]:
    if fmt not in FORMATS:
        raise ValueError(f"unknown corpus format {fmt!r}; use one of {', '.join(map(repr, FORMATS))}")
    lines = split_lines(text)
    fmt = detect_format(path, lines) if fmt == "auto" else fmt
    if fmt == "tsv":
        from .glue import read_tsv

        return read_tsv(path, label_column=None)[0]
    if fmt == "doc_per_line":
        docs = [line.strip() for line in lines if line.strip()]
    else:
        docs, current = [], []
        for line in lines:
            level = heading_level(line) if fmt == "wikitext" else 0
            boundary = level == 1 if fmt == "wikitext" else not line.strip()
            if boundary and current:
                docs.append("\n".join(current))
                current = []
            if level or not line.strip():
                continue
            if fmt == "wikitext":  # before stripping: the markup's spaces may be the line's own
                for marked, plain in _DETOKENIZE:
                    line = line.replace(marked, plain)
            current.append(line.strip())
        if current:
            docs.append("\n".join(current))
    if not docs:
        raise ValueError(f"{path}: no text in the file (only headings and blank lines)")
    return docs


def encode_document(doc: str, tok) -> np.ndarray:
    """Token ids of one document, (n,) int32; each `<unk>` becomes `tok.unk_token_id`.

    The ids are gathered in an `array` of C ints: a long document (a whole book in "lines" format) never
    becomes a Python list of millions of ints (36 bytes each instead of 4)."""
    ids = array("i")
    for paragraph in doc.split("\n"):
        for i, piece in enumerate(paragraph.split(UNK_MARK)):
            if i:
                ids.append(tok.unk_token_id)
            if piece.strip():
                ids.extend(tok.convert_tokens_to_ids(tok.tokenize(piece)))
    return np.frombuffer(ids, dtype=np.int32) if ids else np.zeros(0, np.int32)


def encode_documents(docs, tok) -> TokenizedCorpus:
    """Token ids of many documents as one flat corpus; the same ids as `encode_document` on each.

    With minillm's BertTokenizer this is its `batch_text_to_ids` (one pass, ids gathered as C ints): each
    `<unk>` is first written as the tokenizer's own [UNK] token, which the tokenizer keeps whole, exactly
    as `encode_document` puts the [UNK] id between separately tokenized pieces. Any other tokenizer (duck
    typing: tokenize + convert_tokens_to_ids) goes document by document through `encode_document`.

    A byte-level BPE tokenizer (GPT-2's, `minillm.bpe`; recognised by its `merges`) encodes each document
    whole with its own `encode`: to it, whitespace is text (" word" and "word" are different tokens, a
    newline is a token of its own) and every string has ids, so it has no unknown token to put for `<unk>`,
    which stays the five characters WikiText wrote. Cutting the document at newlines and at `<unk>`, as
    `encode_document` does for WordPiece (whose basic tokenizer drops whitespace anyway), would lose the
    newlines and the spaces beside each `<unk>`.

    Args:
        docs: an iterable of documents (str); may be a tqdm-wrapped list.
    """
    if encodes_whole_text(tok):
        ids, ends = array("i"), array("q", [0])
        for d in docs:
            ids.extend(tok.encode(d))
            ends.append(len(ids))
        return TokenizedCorpus(np.frombuffer(ids, np.int32), np.frombuffer(ends, np.int64))
    if hasattr(tok, "batch_text_to_ids") and hasattr(tok, "unk_token"):
        unk = tok.unk_token
        ids, offsets = tok.batch_text_to_ids(d.replace(UNK_MARK, unk) for d in docs)
        return TokenizedCorpus(ids, offsets)
    ids, ends = array("i"), array("q", [0])
    for d in docs:
        ids.extend(encode_document(d, tok))
        ends.append(len(ids))
    return TokenizedCorpus(np.frombuffer(ids, np.int32), np.frombuffer(ends, np.int64))


def encodes_whole_text(tok) -> bool:
    """True for a byte-level BPE tokenizer (it has `merges`): see `encode_documents`."""
    return getattr(tok, "merges", None) is not None and hasattr(tok, "encode")


def tokenizer_digest(tok) -> str:
    """SHA-256 of what decides a tokenizer's output: its vocabulary (token -> id), its lower-casing /
    accent-stripping flags when it has them, and, for a BPE tokenizer, its merges in rank order and its
    special tokens: two BPE tokenizers with the same vocabulary can still cut a word differently
    (("a", "bc") and ("ab", "c") both make "abc"), so the vocabulary alone would let one read the other's
    cached ids."""
    vocab = tok.get_vocab() if hasattr(tok, "get_vocab") else getattr(tok, "vocab", None)
    if vocab is None:
        raise TypeError(f"{type(tok).__name__} has neither get_vocab() nor .vocab; cannot key the cache")
    flags = {k: getattr(tok, k, None) for k in ("do_lower_case", "strip_accents", "tokenize_chinese_chars")}
    parts = [sorted(vocab.items(), key=lambda kv: kv[1]), flags, type(tok).__name__]
    if encodes_whole_text(tok):  # appended only here, so a WordPiece digest (recorded by runs) is unchanged
        parts.append({"merges": [list(m) for m in tok.merges],
                      "special_tokens": list(getattr(tok, "special_tokens", []))})
    blob = json.dumps(parts)
    return hashlib.sha256(blob.encode()).hexdigest()


def tokenize_corpus(paths, tok, cache_dir=None, use_cache: bool = True, fmt: str = "auto",
                    progress: bool = False) -> TokenizedCorpus:
    """Tokenize corpus files once and cache the ids; later calls read the cache.

    Every file is read and checked (empty, non-UTF-8, no text) before anything is tokenized. A file's
    cache entry is `<cache_dir>/<stem>-<key>.npz` (its ids and offsets) where key = SHA-256 of (file bytes
    digest, tokenizer digest, fmt, CACHE_VERSION): editing the file or changing the vocabulary misses the
    cache, renaming or moving the file does not. Entries are written to a temporary file and renamed, so a
    killed run never leaves a truncated cache file.

    Args:
        paths: a path or a list of paths.
        tok: minillm's BertTokenizer (fast path, see `encode_documents`), or any tokenizer with tokenize,
            convert_tokens_to_ids, unk_token_id and get_vocab() or .vocab.
        cache_dir: where cached ids go; default `<cache root>/tokens` (see datasets.cache_root).
        use_cache: False tokenizes afresh and writes nothing.
        progress: a tqdm bar per file, one tick per document.

    Returns:
        TokenizedCorpus: the documents of all files, in file order then document order.
    """
    from .datasets import cache_root

    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not paths:
        raise ValueError("tokenize_corpus: no corpus files given")
    raw = [(Path(p), read_bytes_checked(p)) for p in paths]
    texts = [decode_utf8(data, p) for p, data in raw]  # all files validated before any work
    cache = Path(cache_dir) if cache_dir is not None else cache_root() / "tokens"
    tok_digest = tokenizer_digest(tok) if use_cache else ""
    parts: list[TokenizedCorpus] = []
    for (path, data), text in zip(raw, texts):
        key = hashlib.sha256(json.dumps(
            [hashlib.sha256(data).hexdigest(), tok_digest, fmt, CACHE_VERSION]).encode()).hexdigest()[:24]
        entry = cache / f"{path.stem}-{key}.npz"
        if use_cache and entry.is_file():
            with np.load(entry, allow_pickle=False) as z:
                parts.append(TokenizedCorpus(z["ids"], z["offsets"]))  # (S,), (n_docs + 1,)
            continue
        docs = _documents(path, text, fmt)
        if progress:
            from tqdm.auto import tqdm

            docs = tqdm(docs, desc=f"tokenizing {path.name}", unit="doc", unit_scale=True)
        encoded = encode_documents(docs, tok)
        if use_cache:
            _save_atomic(entry, encoded)
        parts.append(encoded)
    return parts[0] if len(parts) == 1 else TokenizedCorpus.concat(parts)


def _save_atomic(entry: Path, corpus: TokenizedCorpus) -> None:
    entry.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=entry.parent, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, ids=corpus.ids, offsets=corpus.offsets)
        os.replace(tmp, entry)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def split_documents(corpus, eval_fraction: float, seed: int, min_eval_tokens: int = 0):
    """Split a corpus into (train, held-out) by whole documents, so every held-out token is in a text
    the model never trains on.

    The non-empty documents are put in a random order (seeded); the held-out side takes documents from
    the front of that order until it holds at least max(eval_fraction * S, min_eval_tokens) of the S
    tokens; at least one document goes to each side. Both sides keep the original document order.
    Split *before* packing: a packed row may span two documents, so splitting rows would put the tail
    of a training document in the held-out set.

    Args:
        corpus: a TokenizedCorpus (or a sequence of id arrays, one per document).
        eval_fraction: the held-out share of the tokens, strictly between 0 and 1.
        seed: the same seed gives the same split.
        min_eval_tokens: e.g. seq_len - 2, so that the held-out side fills at least one packed row.
    Returns:
        (train, held_out): two TokenizedCorpus. Empty documents stay on the training side.
    Raises:
        ValueError when the corpus has fewer than 2 non-empty documents.
    """
    corpus = TokenizedCorpus.from_arrays(corpus)
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"split_documents: eval_fraction={eval_fraction} must lie strictly between 0 and 1")
    lengths = corpus.lengths
    candidates = np.flatnonzero(lengths > 0)
    if len(candidates) < 2:
        raise ValueError(
            f"split_documents: the corpus has {len(candidates)} non-empty document(s); a held-out split by "
            "document needs at least 2. Give a corpus with document boundaries: one document per line, "
            "blank lines between documents, or WikiText ` = Title = ` headings (see minillm.data.corpus).")
    order = np.random.default_rng(seed).permutation(candidates)
    target = max(eval_fraction * corpus.n_tokens, min_eval_tokens)
    n_eval = int(np.searchsorted(np.cumsum(lengths[order]), target)) + 1  # first prefix reaching the target
    n_eval = min(max(n_eval, 1), len(candidates) - 1)
    held_out = np.zeros(len(corpus), dtype=bool)
    held_out[order[:n_eval]] = True
    return corpus.subset(~held_out), corpus.subset(held_out)


def pack_sequences(doc_ids_list, seq_len: int, cls_id: int, sep_id: int, drop_last: bool = True,
                   pad_id: int | None = None, dtype=np.int32) -> np.ndarray:
    """Pack token streams into fixed-length pretraining rows.

    The documents are joined into one stream with a [SEP] between consecutive documents (so the model
    can see where one text stops), the stream is cut into chunks of T - 2 tokens, and each chunk is framed
    as `[CLS] chunk [SEP]`. Every row is therefore full, with no padding to waste compute on, as in
    RoBERTa's FULL-SENTENCES packing. A chunk may span two documents, or begin just after a boundary.

    The short leftover at the end is dropped (`drop_last=True`, the default: at most T - 3 tokens lost);
    with `drop_last=False` it becomes a last row `[CLS] rest [SEP] pad ...` padded with `pad_id`.

    Args:
        doc_ids_list: a TokenizedCorpus, or a sequence of 1-D integer arrays (one per document); empty
            documents are skipped.
        seq_len: T, tokens per row including [CLS] and [SEP] (>= 3).
    Returns:
        (N, T) array of `dtype`.
    """
    if seq_len < 3:
        raise ValueError(f"pack_sequences: seq_len={seq_len} leaves no room between [CLS] and [SEP]")
    if not drop_last and pad_id is None:
        raise ValueError("pack_sequences: drop_last=False pads the last row and needs pad_id")
    corpus = TokenizedCorpus.from_arrays(doc_ids_list)
    starts = corpus.offsets[:-1][corpus.lengths > 0]          # where each non-empty document begins
    stream = np.insert(corpus.ids.astype(dtype, copy=False), starts[1:], sep_id)  # (S,): [SEP] between docs
    body = seq_len - 2
    n_full, rest = divmod(len(stream), body)
    n_rows = n_full + (1 if rest and not drop_last else 0)
    if n_rows == 0:
        raise ValueError(f"pack_sequences: the corpus has {len(stream)} tokens, one row of seq_len="
                         f"{seq_len} needs {body}; use a shorter seq_len, more text, or drop_last=False")
    out = np.empty((n_rows, seq_len), dtype=dtype)  # (N, T)
    out[:n_full, 0] = cls_id
    out[:n_full, 1:-1] = stream[:n_full * body].reshape(n_full, body)
    out[:n_full, -1] = sep_id
    if n_rows > n_full:
        out[-1] = pad_id
        out[-1, 0] = cls_id
        out[-1, 1:1 + rest] = stream[n_full * body:]
        out[-1, 1 + rest] = sep_id
    return out


def train_eval_split(array, eval_fraction: float, seed: int):
    """Split rows (axis 0) into (train, eval) at random, each keeping the original row order.

    n_eval = round(eval_fraction * N), at least 1 and at most N - 1. Deterministic given `seed`. Works on
    arrays and on lists. For held-out MLM loss use `split_documents` before packing instead: a packed row
    may span two documents, so a split of rows can put part of a training document on the held-out side.
    """
    n = len(array)
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"train_eval_split: eval_fraction={eval_fraction} must lie strictly between 0 and 1")
    if n < 2:
        raise ValueError(f"train_eval_split: need at least 2 rows to split, got {n}")
    n_eval = min(max(1, int(round(eval_fraction * n))), n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    eval_idx, train_idx = np.sort(perm[:n_eval]), np.sort(perm[n_eval:])
    if isinstance(array, np.ndarray):
        return array[train_idx], array[eval_idx]
    return [array[i] for i in train_idx], [array[i] for i in eval_idx]

"""Plain-text corpora for MLM pretraining: read, tokenize once (cached), pack into fixed-length blocks.

The path from a text file to a batch of pretraining rows:

    read_corpus(path)            -> documents (str), WikiText markup undone
    tokenize_corpus(paths, tok)  -> one int32 id array per document, cached on disk as .npz of .npy arrays
    pack_sequences(docs, T, ...) -> (N, T) rows "[CLS] tokens ... [SEP]", documents joined by [SEP]
    train_eval_split(rows, f, s) -> held-out rows for the MLM evaluation

Formats (`fmt="auto"` picks one from the file):

* "wikitext": WikiText's one-paragraph-per-line text. A level-1 heading ` = Title = ` starts a new
  document (an article); deeper headings ` = = Section = = ` are dropped (they are not prose); the
  tokenizer-splitting markup ` @-@ `, ` @,@ `, ` @.@ ` is joined back to `-`, `,`, `.` ("1 @,@ 000" ->
  "1,000"), so the text looks like what a WordPiece tokenizer expects.
* "lines": one paragraph per line, blank lines separate documents (the BERT pretraining-data convention).
* "tsv": a GLUE-style TSV (e.g. SST-2 train); each sentence is a document.

`<unk>`: WikiText replaced rare words by `<unk>`. We map each one to the tokenizer's [UNK] id instead of
tokenizing the five characters (which would teach the model a fake word "< un ##k >"). [UNK] is a special
token, so MLM masking never asks the model to predict it, yet it still stands in the context as "some rare
word", which is what it means.

What this is not: a streaming reader. Corpora here are a few MB; everything is held in memory.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

import numpy as np

from ._text import decode_utf8, read_bytes_checked, split_lines

UNK_MARK = "<unk>"
_HEADING = re.compile(r"((?:= )+)\S.*?((?: =)+)")  # on a stripped line: "= = Title = =" ; level = # of "="
_DETOKENIZE = ((" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."))
CACHE_VERSION = 1  # bump when the reading or encoding rules change: old cache files then no longer match


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
    return "wikitext" if any(heading_level(line) for line in head) else "lines"


def read_corpus(path, fmt: str = "auto") -> list[str]:
    """Read one corpus file into documents.

    Args:
        path: a UTF-8 text file (or .tsv).
        fmt: "auto", "wikitext", "lines" or "tsv" (see the module docstring).

    Returns:
        list of documents, each its paragraphs joined by "\\n". `<unk>` is kept (see `encode_document`).

    Raises:
        ValueError naming the file for an empty file, non-UTF-8 bytes (with the byte offset), or a file
        with no text left after dropping headings.
    """
    return _documents(path, decode_utf8(read_bytes_checked(path), path), fmt)


def _documents(path, text: str, fmt: str) -> list[str]:
    lines = split_lines(text)
    fmt = detect_format(path, lines) if fmt == "auto" else fmt
    if fmt == "tsv":
        from .glue import read_tsv

        return read_tsv(path, label_column=None)[0]
    if fmt not in ("wikitext", "lines"):
        raise ValueError(f"unknown corpus format {fmt!r}; use 'auto', 'wikitext', 'lines' or 'tsv'")
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
    """Token ids of one document, (n,) int32; each `<unk>` becomes `tok.unk_token_id`."""
    ids: list[int] = []
    for paragraph in doc.split("\n"):
        for i, piece in enumerate(paragraph.split(UNK_MARK)):
            if i:
                ids.append(tok.unk_token_id)
            if piece.strip():
                ids.extend(tok.convert_tokens_to_ids(tok.tokenize(piece)))
    return np.asarray(ids, dtype=np.int32)


def tokenizer_digest(tok) -> str:
    """SHA-256 of what decides a tokenizer's output: its vocabulary (token -> id) and its lower-casing /
    accent-stripping flags when it has them."""
    vocab = tok.get_vocab() if hasattr(tok, "get_vocab") else getattr(tok, "vocab", None)
    if vocab is None:
        raise TypeError(f"{type(tok).__name__} has neither get_vocab() nor .vocab; cannot key the cache")
    flags = {k: getattr(tok, k, None) for k in ("do_lower_case", "strip_accents", "tokenize_chinese_chars")}
    blob = json.dumps([sorted(vocab.items(), key=lambda kv: kv[1]), flags, type(tok).__name__])
    return hashlib.sha256(blob.encode()).hexdigest()


def tokenize_corpus(paths, tok, cache_dir=None, use_cache: bool = True, fmt: str = "auto",
                    progress: bool = False) -> list[np.ndarray]:
    """Tokenize corpus files once and cache the ids; later calls read the cache.

    Every file is read and checked (empty, non-UTF-8, no text) before anything is tokenized. A file's
    cache entry is `<cache_dir>/<stem>-<key>.npz` where key = SHA-256 of (file bytes digest, tokenizer
    digest, fmt, CACHE_VERSION): editing the file or changing the vocabulary misses the cache, renaming or
    moving the file does not. Entries are written to a temporary file and renamed, so a killed run never
    leaves a truncated cache file.

    Args:
        paths: a path or a list of paths.
        tok: any tokenizer with tokenize, convert_tokens_to_ids, unk_token_id and get_vocab() or .vocab.
        cache_dir: where cached ids go; default `<cache root>/tokens` (see datasets.cache_root).
        use_cache: False tokenizes afresh and writes nothing.

    Returns:
        list of (n_i,) int32 arrays, one per document, in file order then document order.
    """
    from .datasets import cache_root

    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not paths:
        raise ValueError("tokenize_corpus: no corpus files given")
    raw = [(Path(p), read_bytes_checked(p)) for p in paths]
    texts = [decode_utf8(data, p) for p, data in raw]  # all files validated before any work
    cache = Path(cache_dir) if cache_dir is not None else cache_root() / "tokens"
    tok_digest = tokenizer_digest(tok) if use_cache else ""
    out: list[np.ndarray] = []
    for (path, data), text in zip(raw, texts):
        key = hashlib.sha256(json.dumps(
            [hashlib.sha256(data).hexdigest(), tok_digest, fmt, CACHE_VERSION]).encode()).hexdigest()[:24]
        entry = cache / f"{path.stem}-{key}.npz"
        if use_cache and entry.is_file():
            with np.load(entry, allow_pickle=False) as z:
                ids, offsets = z["ids"], z["offsets"]  # (total,), (n_docs + 1,)
            out.extend(np.split(ids, offsets[1:-1]))
            continue
        docs = _documents(path, text, fmt)
        if progress:
            from tqdm.auto import tqdm

            docs = tqdm(docs, desc=f"tokenizing {path.name}", unit="doc")
        encoded = [encode_document(d, tok) for d in docs]
        if use_cache:
            _save_atomic(entry, encoded)
        out.extend(encoded)
    return out


def _save_atomic(entry: Path, encoded: list[np.ndarray]) -> None:
    entry.parent.mkdir(parents=True, exist_ok=True)
    offsets = np.concatenate([[0], np.cumsum([len(e) for e in encoded])]).astype(np.int64)
    ids = np.concatenate(encoded).astype(np.int32) if encoded else np.zeros(0, np.int32)
    fd, tmp = tempfile.mkstemp(dir=entry.parent, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, ids=ids, offsets=offsets)
        os.replace(tmp, entry)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
        doc_ids_list: sequence of 1-D integer arrays (one per document); empty ones are skipped.
        seq_len: T, tokens per row including [CLS] and [SEP] (>= 3).
    Returns:
        (N, T) array of `dtype`.
    """
    if seq_len < 3:
        raise ValueError(f"pack_sequences: seq_len={seq_len} leaves no room between [CLS] and [SEP]")
    if not drop_last and pad_id is None:
        raise ValueError("pack_sequences: drop_last=False pads the last row and needs pad_id")
    docs = [np.asarray(d).ravel() for d in doc_ids_list if len(d)]
    sep = np.array([sep_id], dtype=np.int64)
    parts = [x for d in docs for x in (sep, d)][1:]  # [SEP] between documents, none before the first
    stream = np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)  # (S,)
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
    arrays and on lists (e.g. documents: split documents *before* packing to keep every eval token in
    text the model never trained on; splitting packed rows is simpler but a document can sit on both sides).
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

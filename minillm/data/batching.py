"""Batches for fine-tuning: length bucketing, dynamic padding, and a small epoch iterator.

Why bucket: attention costs O(T^2) and every layer O(T) per row, and a padded batch pays for its longest
row. SST-2 sentences run from 1 to ~60 tokens, so padding random batches to their maximum wastes most of
the compute; grouping similar lengths makes the padding small while keeping the order random enough:

    shuffle all indices -> cut into chunks of `chunk_batches` batches -> sort each chunk by length ->
    cut into batches -> shuffle the batch order

(the "sortish" sampler of fastai and of HF's group_by_length). Sorting the whole data set instead would
give the smallest padding but the same batches every epoch.

What this is not: a data loader with worker processes. Tokenization happens once up front; a batch is
then one NumPy gather and one padding step.
"""
from __future__ import annotations

import numpy as np


def bucket_batches(lengths, batch_size: int, rng: np.random.Generator | None = None, shuffle: bool = True,
                   chunk_batches: int = 50) -> list[np.ndarray]:
    """Length-bucketed batches of indices; every index in range(N) appears in exactly one batch.

    Args:
        lengths: (N,) sequence lengths.
        batch_size: rows per batch (the last batch of each chunk may be smaller).
        rng: np.random.Generator, required when shuffle=True; same state -> same batches.
        shuffle: False sorts the whole data set by length (stable) and keeps that order: least padding,
            deterministic, for evaluation.
        chunk_batches: how many batches' worth of random indices are sorted together.

    Returns:
        list of 1-D int64 index arrays.
    """
    lengths = np.asarray(lengths)  # (N,)
    n = len(lengths)
    if batch_size < 1:
        raise ValueError(f"bucket_batches: batch_size={batch_size} must be at least 1")
    if shuffle and rng is None:
        raise ValueError("bucket_batches: shuffle=True needs rng (np.random.default_rng(seed))")
    order = rng.permutation(n) if shuffle else np.arange(n)
    chunk = batch_size * chunk_batches if shuffle else max(n, 1)
    batches = []
    for start in range(0, n, chunk):
        idx = order[start:start + chunk]
        idx = idx[np.argsort(lengths[idx], kind="stable")]
        batches.extend(idx[i:i + batch_size] for i in range(0, len(idx), batch_size))
    if shuffle:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def pad_batch(sequences, pad_id: int, dtype=np.int64):
    """Pad variable-length id sequences to the longest one in the batch (dynamic padding).

    Args:
        sequences: list of B 1-D integer arrays.
    Returns:
        input_ids (B, T) with T = max length, pad_id after each sequence's end;
        attention_mask (B, T) int64, 1 on real tokens and 0 on padding.
    """
    if len(sequences) == 0:
        raise ValueError("pad_batch: empty batch")
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))  # (B,)
    t = int(lengths.max())
    mask = np.arange(t)[None, :] < lengths[:, None]  # (B, T) True on real tokens, row-major = token order
    input_ids = np.full((len(sequences), t), pad_id, dtype=dtype)  # (B, T)
    input_ids[mask] = np.concatenate([np.asarray(s).ravel() for s in sequences])
    return input_ids, mask.astype(np.int64)


class Batches:
    """Re-iterable classification batches: each pass is one epoch, in a fresh but reproducible order.

    Yields dicts {input_ids, token_type_ids, attention_mask, labels} of (B, T) int64 arrays (labels (B,)),
    ready for `model(**batch)`. Epoch e uses rng = default_rng([seed, e]), so its order depends only on
    (seed, e): a resumed run can ask for `iter_epoch(e)` and get exactly the batches it would have had.

    Args:
        sequences: list of N 1-D token-id arrays ([CLS] ... [SEP], no padding).
        labels: (N,) ints, or None for unlabelled data (no "labels" key).
        batch_size, pad_id: as in bucket_batches / pad_batch.
        shuffle: new random order every epoch (training) or a fixed one (evaluation).
        bucket: group similar lengths (see the module docstring); with shuffle=False and bucket=True the
            batches follow the sorted lengths, so use `iter_epoch(e, with_indices=True)` to map outputs
            back to rows.
    """

    def __init__(self, sequences, labels=None, batch_size: int = 32, pad_id: int = 0, shuffle: bool = True,
                 bucket: bool = True, seed: int = 0):
        self.sequences = [np.asarray(s) for s in sequences]
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        if self.labels is not None and len(self.labels) != len(self.sequences):
            raise ValueError(f"Batches: {len(self.sequences)} sequences but {len(self.labels)} labels")
        if not self.sequences:
            raise ValueError("Batches: no sequences")
        self.lengths = np.array([len(s) for s in self.sequences])  # (N,)
        self.batch_size, self.pad_id = batch_size, pad_id
        self.shuffle, self.bucket, self.seed = shuffle, bucket, seed
        self.epoch = 0  # the epoch the next plain iteration will produce

    @classmethod
    def from_texts(cls, texts, labels, tok, max_length: int = 128, **kwargs) -> "Batches":
        """Tokenize `texts` once with `tok` (truncating to max_length) and wrap them."""
        enc = tok(list(texts), padding="longest", truncation=True, max_length=max_length, return_tensors="np")
        n_tokens = np.asarray(enc["attention_mask"]).sum(axis=1)  # (N,) real tokens per row
        seqs = [row[:n] for row, n in zip(np.asarray(enc["input_ids"]), n_tokens)]
        return cls(seqs, labels, pad_id=tok.pad_token_id, **kwargs)

    def __len__(self) -> int:
        return -(-len(self.sequences) // self.batch_size)

    def batch_indices(self, epoch: int) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch])
        if self.bucket:
            return bucket_batches(self.lengths, self.batch_size, rng, shuffle=self.shuffle)
        order = rng.permutation(len(self.sequences)) if self.shuffle else np.arange(len(self.sequences))
        return [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def iter_epoch(self, epoch: int, with_indices: bool = False):
        for idx in self.batch_indices(epoch):
            input_ids, attention_mask = pad_batch([self.sequences[i] for i in idx], self.pad_id)
            batch = {"input_ids": input_ids, "token_type_ids": np.zeros_like(input_ids),
                     "attention_mask": attention_mask}
            if self.labels is not None:
                batch["labels"] = self.labels[idx]
            yield (idx, batch) if with_indices else batch

    def __iter__(self):
        epoch, self.epoch = self.epoch, self.epoch + 1
        return self.iter_epoch(epoch)

"""minillm.data: everything between files on disk and the (B, T) id arrays a model eats.

    datasets  finding SST-2 / WikiText-2 / IMDb (MINILLM_DATA -> cache -> verified, capped download)
    glue      GLUE-style TSV: sentences and labels, bad rows reported as file:line
    corpus    plain-text corpora: read, tokenize once (cached) into a flat TokenizedCorpus, split by
              document, pack into [CLS] ... [SEP] rows
    masking   dynamic MLM masking (15%; 80/10/10), optional whole-word masking
    batching  length-bucketed batches, dynamic padding, the classification Batches iterator

NumPy and the standard library only; the tokenizer is duck-typed (tokenize, convert_tokens_to_ids,
special-token ids, get_vocab, __call__), so this layer never imports the model or training code.
"""
from .batching import Batches, bucket_batches, pad_batch
from .corpus import (TokenizedCorpus, encode_document, encode_documents, pack_sequences, read_corpus,
                     split_documents, tokenize_corpus, tokenizer_digest, train_eval_split)
from .datasets import (DATASETS, ChecksumError, DataNotFoundError, UnsafeArchiveError, cache_root, data_dir,
                       download_dataset, missing_files)
from .glue import read_tsv
from .masking import IGNORE_INDEX, continuation_table, find_word_starts, mask_tokens

__all__ = [
    "Batches", "bucket_batches", "pad_batch",
    "TokenizedCorpus", "encode_document", "encode_documents", "pack_sequences", "read_corpus",
    "split_documents", "tokenize_corpus", "tokenizer_digest", "train_eval_split",
    "DATASETS", "ChecksumError", "DataNotFoundError", "UnsafeArchiveError", "cache_root", "data_dir",
    "download_dataset", "missing_files",
    "read_tsv",
    "IGNORE_INDEX", "continuation_table", "find_word_starts", "mask_tokens",
]

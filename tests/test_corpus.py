"""The corpus layer at pretraining scale: one-document-per-line files, the flat TokenizedCorpus, the
document-level held-out split, packing from flat arrays, and the tokenizer's fast path into them.

Everything compared is integer ids, so every comparison is exact: no tolerances.
"""
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minillm.data import (TokenizedCorpus, encode_document, encode_documents, pack_sequences, read_corpus,
                          split_documents, tokenize_corpus)
from minillm.tokenizer import BertTokenizer
from strategies import hard_texts
from test_data import FakeTokenizer, write

SHARED = Path(os.environ.get("MINILLM_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
IMDB = SHARED / "imdb" / "unsup.txt"
needs_imdb = pytest.mark.skipif(not IMDB.is_file(), reason=f"no IMDb copy at {IMDB} (set MINILLM_DATA)")


def numbered_docs(lengths):
    """Document k holds the ids 1000 k + 5, 1000 k + 6, ...: every id names its document (id // 1000)."""
    return [np.arange(1000 * k + 5, 1000 * k + 5 + n, dtype=np.int32) for k, n in enumerate(lengths)]


# --- reading: one document per line --------------------------------------------------------------------

def test_a_file_without_blank_lines_is_one_document_per_line(tmp_path):
    # imdb/unsup.txt has one review per line and no blank line; read as BERT's blank-line format it was
    # one 15M-token document, which no held-out split by document could cut.
    reviews = "Great film.<br /><br />Loved it!\nTerrible... just terrible.\nMeh.\n"
    assert read_corpus(write(tmp_path, "r.txt", reviews)) == ["Great film.<br /><br />Loved it!",
                                                              "Terrible... just terrible.", "Meh."]
    assert read_corpus(write(tmp_path, "t.txt", "a b\nc\n\n\n")) == ["a b", "c"]  # trailing blank lines
    assert read_corpus(write(tmp_path, "p.txt", "a b\nc\n\nd\n")) == ["a b\nc", "d"]  # paragraphs: "lines"
    assert read_corpus(write(tmp_path, "f.txt", "a b\nc\n"), fmt="lines") == ["a b\nc"]  # asked for
    with pytest.raises(ValueError, match="unknown corpus format 'book'"):
        read_corpus(write(tmp_path, "b.txt", "a\n"), fmt="book")


@needs_imdb
def test_real_imdb_unsup_is_50000_documents():
    assert len(read_corpus(IMDB)) == 50_000  # the count in the data README


# --- TokenizedCorpus -----------------------------------------------------------------------------------

@given(lengths=st.lists(st.integers(0, 30), max_size=20), cut=st.integers(0, 20))
def test_tokenized_corpus_is_a_list_of_arrays_stored_flat(lengths, cut):
    docs = numbered_docs(lengths)
    corpus = TokenizedCorpus.from_arrays(docs)
    assert corpus.ids.dtype == np.int32 and corpus.offsets.dtype == np.int64
    assert len(corpus) == len(docs) and corpus.n_tokens == sum(lengths)
    assert corpus.lengths.tolist() == lengths
    assert [d.tolist() for d in corpus] == [d.tolist() for d in docs]
    if docs:
        assert corpus[-1].tolist() == docs[-1].tolist()
        with pytest.raises(ValueError):  # documents are views of the shared ids: read-only
            corpus[0][:1] = 7
    joined = TokenizedCorpus.concat([docs[:cut], TokenizedCorpus.from_arrays(docs[cut:])])
    assert [d.tolist() for d in joined] == [d.tolist() for d in docs]
    keep = np.arange(len(docs)) % 3 == 1
    assert [d.tolist() for d in corpus.subset(keep)] == [d.tolist() for d, k in zip(docs, keep) if k]


def test_tokenized_corpus_rejects_bad_offsets_and_indices():
    with pytest.raises(ValueError, match="offsets must rise from 0 to len"):
        TokenizedCorpus(np.arange(5), [0, 3, 2, 5])
    with pytest.raises(ValueError, match="offsets must rise"):
        TokenizedCorpus(np.arange(5), [0, 4])
    corpus = TokenizedCorpus(np.arange(5), [0, 2, 5])
    with pytest.raises(IndexError):
        corpus[2]
    with pytest.raises(TypeError, match="subset"):
        corpus[0:1]


# --- the document-level split --------------------------------------------------------------------------

@given(lengths=st.lists(st.integers(0, 50), min_size=1, max_size=30),
       fraction=st.floats(0.01, 0.9), seed=st.integers(0, 2**32 - 1), min_tokens=st.integers(0, 60))
def test_split_documents_partitions_whole_documents(lengths, fraction, seed, min_tokens):
    corpus = TokenizedCorpus.from_arrays(numbered_docs(lengths))
    nonempty = [k for k, n in enumerate(lengths) if n]
    if len(nonempty) < 2:
        with pytest.raises(ValueError, match="needs at least 2"):
            split_documents(corpus, fraction, seed, min_tokens)
        return
    train, held = split_documents(corpus, fraction, seed, min_tokens)
    train_docs = [int(d[0]) // 1000 for d in train if len(d)]
    held_docs = [int(d[0]) // 1000 for d in held]
    assert sorted(train_docs + held_docs) == nonempty and not set(train_docs) & set(held_docs)
    assert train_docs == sorted(train_docs) and held_docs == sorted(held_docs)   # original order kept
    assert held.lengths.min() > 0 and train.n_tokens > 0
    target = max(fraction * corpus.n_tokens, min_tokens)
    assert held.n_tokens >= target or len(train_docs) == 1     # enough, unless all but one were taken
    assert held.n_tokens - held.lengths.max() < target         # and no more: the last one taken was needed
    again = split_documents(corpus, fraction, seed, min_tokens)
    assert again[1].ids.tolist() == held.ids.tolist()                            # seeded


def test_split_documents_needs_two_documents():
    with pytest.raises(ValueError, match=r"1 non-empty document.*one document per line"):
        split_documents([np.arange(100), np.zeros(0)], 0.1, seed=0)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        split_documents(numbered_docs([3, 3]), 0.0, seed=0)


# --- packing from flat arrays ---------------------------------------------------------------------------

@given(lengths=st.lists(st.integers(0, 40), min_size=1, max_size=12), seq_len=st.integers(3, 20))
def test_pack_sequences_same_rows_from_flat_corpus_and_from_list(lengths, seq_len):
    docs = numbered_docs(lengths)
    stream = sum(lengths) + max(sum(1 for n in lengths if n) - 1, 0)
    if stream == 0:
        return
    got = pack_sequences(TokenizedCorpus.from_arrays(docs), seq_len, cls_id=2, sep_id=3, drop_last=False, pad_id=0)
    want = pack_sequences(docs, seq_len, cls_id=2, sep_id=3, drop_last=False, pad_id=0)
    assert got.tolist() == want.tolist()


def test_held_out_rows_come_from_documents_never_trained_on(tmp_path):
    from minillm.train.pretrain import PretrainArgs, prepare

    # 40 documents (one per line), each made of its own 10 words, 3 times over: 30 tokens a document,
    # so with 14 tokens a row every document spans 3 rows. A split of packed rows puts rows of one
    # document on both sides; a split of documents cannot.
    words = [f"w{i}" for i in range(400)]
    vocab = write(tmp_path, "vocab.txt", "\n".join(FakeTokenizer.SPECIALS + words) + "\n")
    lines = [" ".join(words[10 * k:10 * k + 10] * 3) for k in range(40)]
    corpus = write(tmp_path, "docs.txt", "\n".join(lines) + "\n")
    args = PretrainArgs(corpus=[str(corpus)], out=str(tmp_path / "run"), vocab=str(vocab), seq_len=16,
                        eval_fraction=0.1, seed=0)
    tok, _, train_rows, eval_rows = prepare(args)
    specials = set(tok.all_special_ids)
    train_words = set(train_rows.ravel().tolist()) - specials
    eval_words = set(eval_rows.ravel().tolist()) - specials
    assert eval_words and train_words and not train_words & eval_words


def test_held_out_rows_sample_every_corpus_file(tmp_path):
    from minillm.train.pretrain import PretrainArgs, prepare

    # Two files with words of their own; the held-out rows (capped at 4) must not all come from the first.
    words = {name: [f"{name}{i}" for i in range(200)] for name in ("a", "b")}
    vocab = write(tmp_path, "vocab.txt", "\n".join(FakeTokenizer.SPECIALS + words["a"] + words["b"]) + "\n")
    files = [str(write(tmp_path, f"{name}.txt", "\n".join(" ".join(w[10 * k:10 * k + 10] * 3) for k in range(20))))
             for name, w in words.items()]
    args = PretrainArgs(corpus=files, out=str(tmp_path / "run"), vocab=str(vocab), seq_len=16, eval_fraction=0.5,
                        max_eval_rows=4, seed=0)
    tok, _, _, eval_rows = prepare(args)
    seen = {tok.ids_to_tokens[i][0] for i in eval_rows.ravel().tolist() if i not in tok.all_special_ids}
    assert len(eval_rows) == 4 and seen == {"a", "b"}


# --- the tokenizer's fast path into the flat corpus ------------------------------------------------------

def small_bert_tokenizer():
    pieces = ["the", "cat", "sat", "on", "mat", "play", "##ing", "##ed", "-", ",", ".", "<", ">", "/", "br",
              "!", "1", "000", "a", "dog", "un", "##believ", "##able", "e", "##e", "c"]
    return BertTokenizer.from_vocab_list(FakeTokenizer.SPECIALS + pieces)


DOCS = ["The cat sat<br /><br />on the mat!!!", "", "\n\n", "a <unk> dog\nplayed <unk>", "foo<unk>bar [MASK]x",
        "Cafe\u0301 \u00e9t\u00e9,1,000... [UNK]<unk>", "\u00a0\t unbelievable  "]


@settings(max_examples=30)
@given(extra=st.lists(st.lists(hard_texts(), max_size=3).map("\n".join), max_size=4))
def test_encode_documents_fast_path_gives_encode_document_ids(extra):
    tok = small_bert_tokenizer()
    docs = DOCS + [t.replace("x", "<unk>") for t in extra]
    got = encode_documents(docs, tok)                        # BertTokenizer.batch_text_to_ids
    want = [encode_document(d, tok) for d in docs]           # piece by piece, [UNK] id between
    assert [d.tolist() for d in got] == [w.tolist() for w in want]


def test_tokenize_corpus_returns_a_flat_corpus_and_caches_it(tmp_path):
    tok = small_bert_tokenizer()
    p = write(tmp_path, "c.txt", "\n".join(DOCS[:1] + DOCS[3:]) + "\n")
    first = tokenize_corpus([p, p], tok, cache_dir=tmp_path / "cache")
    assert isinstance(first, TokenizedCorpus) and len(first) == 2 * 6
    assert [d.tolist() for d in first] == 2 * [encode_document(d, tok).tolist() for d in read_corpus(p)]
    cached = tokenize_corpus([p, p], tok, cache_dir=tmp_path / "cache")
    assert cached.ids.tolist() == first.ids.tolist() and cached.offsets.tolist() == first.offsets.tolist()


@needs_imdb
def test_imdb_reviews_tokenize_split_and_pack(tmp_path):
    with open(IMDB, encoding="utf-8") as f:
        head = [next(f) for _ in range(300)]
    p = write(tmp_path, "imdb300.txt", "".join(head))
    tok = small_bert_tokenizer()
    corpus = tokenize_corpus(p, tok, use_cache=False)
    assert len(corpus) == 300
    train, held = split_documents(corpus, 0.05, seed=1, min_eval_tokens=126)
    assert len(train) + len(held) == 300 and held.n_tokens >= max(0.05 * corpus.n_tokens, 126)
    rows = pack_sequences(held, 128, tok.cls_token_id, tok.sep_token_id)
    assert rows.shape[0] >= 1 and (rows[:, 0] == tok.cls_token_id).all()

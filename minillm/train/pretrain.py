"""Masked-language-model pretraining from random weights: L = -sum over masked i of log P(w_i | context).

    corpus files -> documents -> WordPiece ids (cached) -> rows "[CLS] ... [SEP]" of T tokens
    each step: B rows (a fresh permutation per epoch) -> dynamic masking (15%; 80/10/10) -> BertForMaskedLM
    evaluation: a fixed masking of the held-out rows -> MLM loss, perplexity, masked-token accuracy

The vocabulary is `--vocab FILE` (e.g. the uncased BERT vocab.txt) or, by default, one trained on the
corpus with `train_wordpiece`. What this is not: next-sentence prediction (RoBERTa showed MLM alone does
as well), sequence-length curricula, or multi-process data loading.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data import mask_tokens, pack_sequences, read_corpus, split_documents, tokenize_corpus
from ..models.bert import BertConfig, BertForMaskedLM
from ..tokenizer import BertTokenizer
from .device import device_of, on_device
from .checks import (check_out_dir, check_settings, nonnegative_int, open_fraction, positive_float, positive_int,
                     random_seed, sequence_length, setting)
from .loop import Trainer, TrainConfig
from .resume import check_resume, run_record

# (layers, hidden, heads); the feed-forward is 4x hidden as in BERT. `tiny` and `mini` are the shapes of
# Turc et al.'s BERT-Tiny / BERT-Mini; `small` is BERT-Small's 4 layers at width 512.
PRESETS = {
    "tiny": dict(num_hidden_layers=2, hidden_size=128, num_attention_heads=2),
    "mini": dict(num_hidden_layers=4, hidden_size=256, num_attention_heads=4),
    "small": dict(num_hidden_layers=4, hidden_size=512, num_attention_heads=8),
}


@dataclass
class PretrainArgs:
    """`minillm pretrain`'s arguments; each numeric one is checked on creation by its flag's own Check."""
    corpus: list
    out: str
    preset: str = "mini"
    steps: int = setting(positive_int, 1000)
    batch_size: int = setting(positive_int, 32)
    seq_len: int = setting(sequence_length, 128)
    seed: int = setting(random_seed, 0)
    lr: float = setting(positive_float, 5e-4)
    vocab: str | None = None
    vocab_size: int = setting(positive_int, 8000)
    eval_fraction: float = setting(open_fraction, 0.02)
    eval_every: int = setting(nonnegative_int, 0)
    checkpoint_every: int = setting(nonnegative_int, 200)
    grad_accum: int = setting(positive_int, 1)
    whole_word: bool = False
    resume: bool = False
    max_eval_rows: int = setting(positive_int, 256)
    sparse_head: bool = True
    device: str = "cpu"  # "cuda": the model, its optimizer and every batch on the GPU

    def __post_init__(self):
        check_settings(self)
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; known presets: {', '.join(PRESETS)}")
        check_out_dir(self.out)


def preset_config(preset: str, vocab_size: int, seq_len: int) -> BertConfig:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known presets: {', '.join(PRESETS)}")
    shape = PRESETS[preset]
    return BertConfig(vocab_size=vocab_size, intermediate_size=4 * shape["hidden_size"],
                      max_position_embeddings=max(128, seq_len), hidden_dropout_prob=0.1,
                      attention_probs_dropout_prob=0.0, **shape)


def build_tokenizer(args: PretrainArgs, documents: list[str]) -> BertTokenizer:
    """The tokenizer of a run: a resumed run's own vocab.txt, --vocab, or one trained on the corpus."""
    out = Path(args.out)
    if args.resume and (out / "vocab.txt").is_file():
        return BertTokenizer.from_pretrained(out)
    if args.vocab:  # a vocab.txt, or a folder holding one (and perhaps tokenizer_config.json)
        path = Path(args.vocab)
        return BertTokenizer.from_pretrained(path) if path.is_dir() else BertTokenizer(str(path))
    from ..tokenizer import train_wordpiece

    return BertTokenizer.from_vocab_list(train_wordpiece(documents, args.vocab_size, progress=True))


def prepare(args: PretrainArgs):
    """Everything checked and built before the first step: (tokenizer, config, train rows, eval rows)."""
    args.__post_init__()  # again, in case a field was changed after the arguments were made
    documents = [doc for path in args.corpus for doc in read_corpus(path)]  # raises on empty / non-UTF-8
    tok = build_tokenizer(args, documents)
    docs = tokenize_corpus(args.corpus, tok, progress=True)  # flat ids + document offsets
    # Held-out documents are split off before packing, so no eval token sits in a text trained on.
    train_docs, eval_docs = split_documents(docs, args.eval_fraction, args.seed, min_eval_tokens=args.seq_len - 2)
    if train_docs.n_tokens < args.seq_len - 2:
        raise ValueError(f"the corpus {args.corpus} leaves {train_docs.n_tokens} training tokens, less than one "
                         f"row of {args.seq_len}; use more text or a shorter --seq-len")
    train_rows = pack_sequences(train_docs, args.seq_len, tok.cls_token_id, tok.sep_token_id)  # (N, T)
    eval_rows = pack_sequences(eval_docs, args.seq_len, tok.cls_token_id, tok.sep_token_id)  # (M, T)
    # At most max_eval_rows, spread evenly over the held-out documents, so over every corpus file in turn.
    keep = np.linspace(0, len(eval_rows) - 1, min(len(eval_rows), args.max_eval_rows)).round().astype(np.int64)
    eval_rows = eval_rows[keep]
    config = preset_config(args.preset, tok.vocab_size, args.seq_len)
    return tok, config, train_rows, eval_rows


def mlm_batch(rows: np.ndarray, tok, rng: np.random.Generator, whole_word_table=None) -> dict:
    """Dynamic masking of (B, T) rows: a new choice of masked tokens every time a row is seen."""
    from ..data import find_word_starts

    starts = None if whole_word_table is None else find_word_starts(rows, whole_word_table)
    ids, labels = mask_tokens(rows, rng, tok.mask_token_id, tok.vocab_size, tok.all_special_ids, word_starts=starts)
    return {"input_ids": ids.astype(np.int64), "attention_mask": np.ones_like(ids, dtype=np.int64),
            "labels": labels.astype(np.int64)}


def evaluate_mlm(model, tok, eval_rows: np.ndarray, seed: int, batch_size: int = 32) -> dict:
    """Held-out MLM loss (mean over masked tokens), perplexity exp(loss), and masked-token accuracy."""
    rng = np.random.default_rng([seed, 2**20])  # the same masking at every evaluation of a run
    device = device_of(model)
    total_loss, correct, count = 0.0, 0, 0
    for start in range(0, len(eval_rows), batch_size):
        host = mlm_batch(eval_rows[start:start + batch_size], tok, rng)
        targets = host["labels"].reshape(-1)
        targets = targets[targets != -100]                       # (M,) on the host, for counting
        if targets.size == 0:
            continue
        sparse, model.sparse_head = model.sparse_head, True
        out = model(**on_device(host, device))                   # loss: mean over the M masked positions
        model.sparse_head = sparse
        total_loss += float(out.loss.item()) * targets.size
        correct += int((out.logits.numpy().argmax(-1) == targets).sum())  # logits (M, V): only the masked rows
        count += targets.size
    loss = total_loss / max(count, 1)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "mlm_accuracy": correct / max(count, 1),
            "masked_tokens": count}


def pretrain(args: PretrainArgs) -> dict:
    """Run MLM pretraining as `minillm pretrain` does; returns the final evaluation."""
    from ..data import continuation_table, tokenizer_digest
    from ..tensor import manual_seed

    cfg = TrainConfig(steps=args.steps, lr=args.lr, seed=args.seed, grad_accum=args.grad_accum,
                      eval_every=args.eval_every or max(1, args.steps // 10),
                      checkpoint_every=args.checkpoint_every, warmup_fraction=0.06)
    # What defines this run, recorded in its checkpoints: a resume that differs is refused. The data files
    # count by their SHA-256; the device and the checkpoint interval may change.
    run = run_record(args, files=("corpus", "vocab"), exclude=("out", "resume", "checkpoint_every", "device"))
    if args.resume:  # a broken or different checkpoint is reported before the corpus is read
        check_resume(args.out, run, cfg)
    tok, config, train_rows, eval_rows = prepare(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    manual_seed(args.seed)
    model = BertForMaskedLM(config, sparse_head=args.sparse_head)
    tok.save_pretrained(out)
    table = continuation_table(tok) if args.whole_word else None
    n, b = len(train_rows), args.batch_size
    per_epoch = max(1, n // b)

    def get_batch(step, micro, rng):
        k = step * args.grad_accum + micro                        # the k-th micro-batch of the run
        epoch, i = divmod(k, per_epoch)
        order = np.random.default_rng([args.seed, epoch, 7]).permutation(n)
        return mlm_batch(train_rows[order[i * b:(i + 1) * b]], tok, rng, table)

    run["tokenizer"] = tokenizer_digest(tok)  # on resume it comes from the run folder's own vocab.txt
    trainer = Trainer(
        model, cfg, out, get_batch,
        evaluate=lambda m: evaluate_mlm(m, tok, eval_rows, args.seed),
        save_model=lambda path: model.save_pretrained(path, tokenizer=tok),
        count_tokens=lambda batch: int(batch["input_ids"].size), desc=f"pretrain {args.preset}", device=args.device,
        run=run,
    )
    print(f"pretrain: {args.preset} ({model.num_parameters() / 1e6:.2f}M parameters, vocab {tok.vocab_size}), "
          f"{n} train rows / {len(eval_rows)} eval rows of {args.seq_len} tokens, batch {b}, {args.steps} steps")
    return trainer.fit(resume=args.resume)

"""Masked-language-model pretraining from random weights: L = -sum over masked i of log P(w_i | context).

    corpus files -> documents -> WordPiece ids (cached) -> rows "[CLS] ... [SEP]" of T tokens
    each step: B rows (a fresh permutation per epoch) -> dynamic masking (--mask-rate; 80/10/10) -> BertForMaskedLM
    evaluation: a fixed masking (15%) of the held-out rows -> MLM loss, perplexity, masked-token accuracy

The vocabulary is `--vocab FILE` (e.g. the uncased BERT vocab.txt) or, by default, one trained on the
corpus with `train_wordpiece`. What this is not: next-sentence prediction (RoBERTa showed MLM alone does
as well), sequence-length curricula, or multi-process data loading.

The recipe, each piece a flag (defaults in brackets, and where they come from):

* `--steps N` [1000] or `--minutes M`: a wall-time budget; the steps that fit it are measured and fixed
  before the first step, and the schedule is laid over them (budget.py says how, and why not a clock).
* `--lr` [5e-4] with `--warmup` [0.06: 6% of the steps, as in Izsak et al. 2021, "How to train BERT with
  an academic budget"; a number >= 1 is a count of steps], then linear decay to 0 (BERT).
* `--weight-decay` [0.01, BERT; none on biases and LayerNorm weights].
* `--dropout` [0.0]: hidden-state dropout while pretraining. Cramming (Geiping & Goldstein 2022) trains
  without it: a short run sees most text once and cannot overfit, while dropout slows what each step
  learns. The saved config.json records the value used; `minillm finetune --dropout` sets its own.
* `--mask-rate` [0.15, BERT]: the share of tokens chosen for prediction. Wettig et al. 2023 ("Should you
  mask 15% in masked language modeling?") found higher rates better for larger models; Cramming uses
  0.25. Held-out evaluation always masks 15%, so runs with different rates are scored alike.
* sparse prediction [on; `--dense-head` turns it off]: the vocabulary projection runs on masked
  positions only (Cramming): at a 15% rate, 15% of the head's work.
* `--whole-word` [off]: mask all the WordPiece pieces of a word together.
* `--alibi` [off; the demo turns it on]: ALiBi's distance bias -m_h |i - j| on the attention scores
  (models/bert.py). Without it a small model on a laptop budget sits on a plateau where attention ignores
  word order, in PyTorch as here (benchmarks/results/plateau_probe.md); with it the held-out loss leaves
  that plateau within a few hundred steps. transformers cannot load the result (the saved model_type says
  so), hence a flag and not the default.
* `--batch-size` [32], `--seq-len` [128], `--grad-accum` [1].

The corpus mix recommended for SST-2 (sentiment of movie-review phrases): in-domain text first, as
"Don't stop pretraining" (Gururangan et al. 2020) found domain text to help the task, with general
English beside it:

    --corpus $MINILLM_DATA/imdb/unsup.txt $MINILLM_DATA/wikitext2/*.txt $MINILLM_DATA/sst2/train.tsv

(50,000 unlabelled IMDb reviews; WikiText-2; the SST-2 *training* sentences, of which a GLUE TSV gives
only the `sentence` column, never the labels). Evaluation data is refused as a corpus: a file named
`dev.tsv` or `test.tsv` in an `sst2` folder, and any file whose bytes are SST-2's dev.tsv (by the SHA-256
recorded in minillm.data.datasets), whatever its name.

What a run did is in `--out/run.json`: every argument, the SHA-256 of each corpus file, the TrainConfig,
the model config, the rows, and for a budget its measured plan. Every metrics.jsonl row also carries
`tokens_seen` and `elapsed_minutes` (loop.py), for curves against tokens and against time.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..data import mask_tokens, pack_sequences, read_corpus, split_documents, tokenize_corpus
from ..models.bert import BertConfig, BertForMaskedLM
from ..tokenizer import BertTokenizer
from .device import device_of, on_device
from .checks import (check_out_dir, check_settings, dropout_rate, mask_rate, nonnegative_float, nonnegative_int,
                     open_fraction, positive_float, positive_int, random_seed, sequence_length, setting, warmup_amount,
                     warmup_split)
from .loop import Trainer, TrainConfig, write_run_file
from .resume import check_resume, find_checkpoint, run_record

# (layers, hidden, heads); the feed-forward is 4x hidden as in BERT. `tiny` and `mini` are the shapes of
# Turc et al.'s BERT-Tiny / BERT-Mini; `small` is BERT-Small's 4 layers at width 512.
PRESETS = {
    "tiny": dict(num_hidden_layers=2, hidden_size=128, num_attention_heads=2),
    "mini": dict(num_hidden_layers=4, hidden_size=256, num_attention_heads=4),
    "small": dict(num_hidden_layers=4, hidden_size=512, num_attention_heads=8),
}
DEFAULT_STEPS = 1000   # when neither steps nor minutes is given
EVAL_MASK_RATE = 0.15  # held-out rows are always masked at BERT's rate, whatever --mask-rate trains with
# Evaluation data, never a corpus: (folder, file name) pairs, compared in lower case (a link: both ends).
EVALUATION_FILES = (("sst2", "dev.tsv"), ("sst2", "test.tsv"))


@dataclass
class PretrainArgs:
    """`minillm pretrain`'s arguments; each numeric one is checked on creation by its flag's own Check."""
    corpus: list
    out: str
    preset: str = "mini"
    steps: int | None = setting(positive_int, None, optional=True)       # None: DEFAULT_STEPS, unless minutes
    minutes: float | None = setting(positive_float, None, optional=True)  # a wall-time budget instead of steps
    batch_size: int = setting(positive_int, 32)
    seq_len: int = setting(sequence_length, 128)
    seed: int = setting(random_seed, 0)
    lr: float = setting(positive_float, 5e-4)
    warmup: float = setting(warmup_amount, 0.06)          # < 1: a fraction of the steps; >= 1: steps
    weight_decay: float = setting(nonnegative_float, 0.01)
    dropout: float = setting(dropout_rate, 0.0)           # hidden-state dropout while pretraining
    mask_rate: float = setting(mask_rate, 0.15)
    vocab: str | None = None
    vocab_size: int = setting(positive_int, 8000)
    eval_fraction: float = setting(open_fraction, 0.02)
    eval_every: int = setting(nonnegative_int, 0)
    checkpoint_every: int = setting(nonnegative_int, 200)
    grad_accum: int = setting(positive_int, 1)
    whole_word: bool = False
    alibi: bool = False          # attention_bias = "alibi" (models/bert.py): not loadable by transformers
    resume: bool = False
    max_eval_rows: int = setting(positive_int, 256)
    sparse_head: bool = True
    device: str = "cpu"  # "cuda": the model, its optimizer and every batch on the GPU
    objective: str = "mlm"  # "clm": GPT-2's next-token objective (pretrain_clm.py), with a gpt-* preset

    def __post_init__(self):
        check_settings(self)
        if self.steps is not None and self.minutes is not None:
            raise ValueError(f"PretrainArgs: steps = {self.steps} and minutes = {self.minutes} both given; a run has a "
                             "step count or a time budget (which fixes the step count), not both")
        if self.steps is None and self.minutes is None:
            self.steps = DEFAULT_STEPS
        from .pretrain_clm import check_clm_args, check_objective

        check_objective(self.objective, self.preset, PRESETS)  # a preset of the objective's model family
        if self.objective == "clm":
            check_clm_args(self)
        check_out_dir(self.out)
        refuse_evaluation_files(self.corpus)


def refuse_evaluation_files(paths, digests=None) -> None:
    """Raise ValueError for a corpus file that is evaluation data: named as one (EVALUATION_FILES; a link by
    its own name and by its target's), or, when `digests` (the files' SHA-256, in order) are given, with the bytes of one
    whose digest minillm records (SST-2's dev.tsv), whatever its name or folder."""
    from ..data.datasets import DATASETS

    names = {f"{folder}/{name}" for folder, name in EVALUATION_FILES}
    known = {m.sha256: m.dest for ds in DATASETS.values() for m in ds.members if m.dest in names and m.sha256}
    for i, path in enumerate(paths):
        named = [p for p in (Path(path).absolute(), Path(path).resolve())  # the name given, and a link's target
                 if (p.parent.name.lower(), p.name.lower()) in EVALUATION_FILES]
        copy = digests is not None and digests[i] in known
        if named or copy:
            what = (f"is {named[0].parent.name}/{named[0].name}" if named
                    else f"has the bytes of {known[digests[i]]} (its SHA-256), under another name")
            raise ValueError(f"--corpus {path} {what}: evaluation data, never pretraining text (a model trained on "
                             "the sentences it is scored on would be scored unfairly). For SST-2 pretrain on "
                             "sst2/train.tsv (its sentences only) and keep sst2/dev.tsv for evaluation")


def preset_config(preset: str, vocab_size: int, seq_len: int, dropout: float = 0.0, alibi: bool = False) -> BertConfig:
    """The BertConfig of a preset; `dropout` is hidden-state dropout (attention dropout is never applied by
    the fused attention kernel, so it is 0); `alibi` adds ALiBi's distance bias to the attention scores."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known presets: {', '.join(PRESETS)}")
    shape = PRESETS[preset]
    return BertConfig(vocab_size=vocab_size, intermediate_size=4 * shape["hidden_size"],
                      max_position_embeddings=max(128, seq_len), hidden_dropout_prob=dropout,
                      attention_probs_dropout_prob=0.0, attention_bias="alibi" if alibi else None, **shape)


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
    config = preset_config(args.preset, tok.vocab_size, args.seq_len, args.dropout, args.alibi)
    return tok, config, train_rows, eval_rows


def mlm_batch(rows: np.ndarray, tok, rng: np.random.Generator, whole_word_table=None,
              mask_rate: float = 0.15) -> dict:
    """Dynamic masking of (B, T) rows: a new choice of masked tokens every time a row is seen."""
    from ..data import find_word_starts

    starts = None if whole_word_table is None else find_word_starts(rows, whole_word_table)
    ids, labels = mask_tokens(rows, rng, tok.mask_token_id, tok.vocab_size, tok.all_special_ids,
                              mlm_probability=mask_rate, word_starts=starts)
    return {"input_ids": ids.astype(np.int64), "attention_mask": np.ones_like(ids, dtype=np.int64),
            "labels": labels.astype(np.int64)}


def evaluate_mlm(model, tok, eval_rows: np.ndarray, seed: int, batch_size: int = 32) -> dict:
    """Held-out MLM loss (mean over masked tokens), perplexity exp(loss), and masked-token accuracy, with
    EVAL_MASK_RATE of the tokens masked whatever the run trains with."""
    rng = np.random.default_rng([seed, 2**20])  # the same masking at every evaluation of a run
    device = device_of(model)
    total_loss, correct, count = 0.0, 0, 0
    for start in range(0, len(eval_rows), batch_size):
        host = mlm_batch(eval_rows[start:start + batch_size], tok, rng, mask_rate=EVAL_MASK_RATE)
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


def train_config(args: PretrainArgs, steps: int) -> TrainConfig:
    """The TrainConfig of a run of `steps` steps (given, or fixed by the budget)."""
    fraction, warmup_steps = warmup_split(args.warmup)
    if warmup_steps is not None and warmup_steps >= steps:
        fixed = f"the {steps} steps the {args.minutes:g}-minute budget affords" if args.minutes else f"--steps {steps}"
        raise ValueError(f"--warmup {warmup_steps} steps is not below {fixed}: the learning rate would never "
                         "decay; give a fraction of the steps instead (e.g. --warmup 0.06)")
    return TrainConfig(steps=steps, lr=args.lr, seed=args.seed, grad_accum=args.grad_accum,
                       eval_every=args.eval_every or max(1, steps // 10), checkpoint_every=args.checkpoint_every,
                       warmup_fraction=fraction, warmup_steps=warmup_steps, weight_decay=args.weight_decay)


def budgeted_steps(out) -> int:
    """The step count a budgeted run fixed, read from its last checkpoint (what --resume continues)."""
    _, state = find_checkpoint(out)
    return int(state["config"]["steps"])


def micro_batch_rows(k: int, n_rows: int, batch_size: int, seed: int) -> np.ndarray:
    """Indices of the rows of a run's k-th micro-batch: epoch after epoch a fresh permutation of the rows,
    seeded by (seed, epoch, 7), cut into batches of batch_size (a last partial batch is left out). A function
    of k alone, so a resumed run, or a benchmark that wants the rows a run saw, gets the same ones."""
    per_epoch = max(1, n_rows // batch_size)
    epoch, i = divmod(k, per_epoch)
    order = np.random.default_rng([seed, epoch, 7]).permutation(n_rows)
    return order[i * batch_size:(i + 1) * batch_size]


def plan_steps(args, model, get_batch, evaluate, count_tokens):
    """(steps, plan, first evaluation, clock start) of a run: --steps as given; for --minutes, the steps a
    budget affords, measured on this machine before the first step (budget.py), or on --resume the count
    the run fixed then. `plan` and the first evaluation are None unless a budget was just measured."""
    from .budget import plan_budget

    plan, first_eval, clock = None, None, time.perf_counter()
    if args.minutes is not None and not args.resume:
        print(f"pretrain: measuring this machine's step time for the {args.minutes:g}-minute budget")
        plan, first_eval = plan_budget(args.minutes, model, get_batch, evaluate, Path(args.out), seed=args.seed,
                                       grad_accum=args.grad_accum, weight_decay=args.weight_decay,
                                       eval_every=args.eval_every, checkpoint_every=args.checkpoint_every,
                                       device=args.device, count_tokens=count_tokens, clock_start=clock)
        print(f"pretrain: a step takes {plan.seconds_per_step:.3f} s, an evaluation {plan.seconds_per_eval:.2f} s, "
              f"a checkpoint {plan.seconds_per_checkpoint:.2f} s -> {plan.steps} steps in {args.minutes:g} minutes")
        return plan.steps, plan, first_eval, clock
    steps = budgeted_steps(args.out) if args.minutes is not None else args.steps
    return steps, plan, first_eval, clock


def pretrain(args: PretrainArgs) -> dict:
    """Run MLM pretraining as `minillm pretrain` does; returns the final evaluation."""
    if args.objective == "clm":
        from .pretrain_clm import pretrain_clm

        return pretrain_clm(args)
    from ..data import continuation_table, tokenizer_digest
    from ..tensor import manual_seed

    # What defines this run, recorded in its checkpoints: a resume that differs is refused. The data files
    # count by their SHA-256; the device and the checkpoint interval may change.
    run = run_record(args, files=("corpus", "vocab"), exclude=("out", "resume", "checkpoint_every", "device"))
    refuse_evaluation_files(args.corpus, [f["sha256"] for f in run["corpus"]])
    if args.resume:  # a broken or different checkpoint is reported before the corpus is read
        steps = budgeted_steps(args.out) if args.minutes is not None else args.steps
        check_resume(args.out, run, train_config(args, steps))
    tok, config, train_rows, eval_rows = prepare(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    manual_seed(args.seed)
    model = BertForMaskedLM(config, sparse_head=args.sparse_head)
    tok.save_pretrained(out)
    table = continuation_table(tok) if args.whole_word else None
    n, b = len(train_rows), args.batch_size

    def get_batch(step, micro, rng):
        rows = micro_batch_rows(step * args.grad_accum + micro, n, b, args.seed)
        return mlm_batch(train_rows[rows], tok, rng, table, args.mask_rate)

    def evaluate(m):
        return evaluate_mlm(m, tok, eval_rows, args.seed)

    def count_tokens(batch):
        return int(batch["input_ids"].size)

    steps, plan, first_eval, clock = plan_steps(args, model, get_batch, evaluate, count_tokens)
    cfg = train_config(args, steps)
    run["tokenizer"] = tokenizer_digest(tok)  # on resume it comes from the run folder's own vocab.txt
    trainer = Trainer(model, cfg, out, get_batch, evaluate=evaluate,
                      save_model=lambda path: model.save_pretrained(path, tokenizer=tok),
                      count_tokens=count_tokens, desc=f"pretrain {args.preset}", device=args.device, run=run,
                      clock_start=clock if plan is not None else None)
    record = {"command": "pretrain", "args": asdict(args), "data": run["corpus"], "tokenizer": run["tokenizer"],
              "train_config": asdict(cfg), "model_config": config.to_dict(),
              "rows": {"train": int(n), "eval": int(len(eval_rows)), "seq_len": args.seq_len},
              "tokens_per_step": b * args.seq_len * args.grad_accum, "eval_mask_rate": EVAL_MASK_RATE,
              "budget": asdict(plan) if plan is not None else None}
    write_run_file(out, record, update=args.resume)
    print(f"pretrain: {args.preset} ({model.num_parameters() / 1e6:.2f}M parameters, vocab {tok.vocab_size}), "
          f"{n} train rows / {len(eval_rows)} eval rows of {args.seq_len} tokens, batch {b}, {steps} steps; lr "
          f"{args.lr:g}, warm-up {cfg.warmup} steps, weight decay {args.weight_decay:g}, dropout {args.dropout:g}, "
          f"mask rate {args.mask_rate:g}{', whole words' if args.whole_word else ''}{', ALiBi' if args.alibi else ''}")
    result = trainer.fit(resume=args.resume, first_eval=first_eval)
    write_run_file(out, {"finished": {"step": trainer.step, "tokens_seen": trainer.tokens_seen,
                                      "elapsed_minutes": round(trainer.elapsed_minutes(), 4)}}, update=True)
    return result

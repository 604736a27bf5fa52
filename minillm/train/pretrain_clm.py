"""Causal-language-model pretraining (GPT-2) from random weights: L = -mean over t of log P(x_{t+1} | x_{<=t}).

    corpus files -> documents -> byte-level BPE ids (cached) -> one stream "<|endoftext|> doc <|endoftext|> doc ..."
    cut into rows of T tokens; each step: B rows (a fresh permutation per epoch) -> GPT2LMHeadModel(labels = ids)
    evaluation: every position of the held-out rows -> loss (mean next-token cross-entropy), perplexity exp(loss)

`minillm pretrain --objective clm --preset gpt-tiny|gpt-mini|gpt-small ...` runs this with the shared
Trainer of loop.py, so it has what MLM pretraining has: checkpoints and exact `--resume`, metrics.jsonl
with `tokens_seen` and `elapsed_minutes`, the progress bar, `--minutes` budgets (budget.py) and run.json.
The flags mean what they mean for MLM (pretrain.py lists them and where their defaults come from); the
MLM-only ones (--mask-rate, --whole-word, --dense-head) are refused.

What differs from MLM, and why:

* Every position is a prediction. The model at position t sees tokens 0..t (causal attention) and is
  scored on token t + 1, so a row of T tokens gives T - 1 predictions, where MLM scores the 15% it masked.
  The labels are the input ids themselves; GPT2LMHeadModel shifts them (docs/clm.md draws it).
* No [CLS] / [SEP] framing: documents are joined by GPT-2's one special token, `<|endoftext|>`, which also
  opens the first, and the stream is cut into rows with no padding (`pack_stream`). A row may start in the
  middle of a document, as in GPT-2's training; the model learns after `<|endoftext|>` what a document's
  beginning looks like, which zero-shot prompting (zero_shot_clm.py) uses.
* The tokenizer is byte-level BPE (`minillm.bpe`): `--vocab DIR` (vocab.json + merges.txt) or, by default,
  one trained on the corpus with `--vocab-size` ids. It has no unknown token; newlines are tokens.
* Perplexity exp(loss) is the number to watch: the held-out loss in nats per token, as "the model is as
  unsure as a uniform choice among exp(loss) tokens". It compares runs with the same tokenizer only.

The held-out split is by document (minillm.data.split_documents), before packing, so no held-out token
sits in a document trained on. The saved folder (config.json, model.safetensors, vocab.json, merges.txt)
loads with `GPT2LMHeadModel.from_pretrained` here and in transformers.

What this is not: a data loader for corpora larger than memory, or a recipe tuned for GPT-2 at scale
(no gradient checkpointing, no mixed precision).
"""
from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..bpe import ENDOFTEXT, ByteLevelBPETokenizer, train_bpe
from ..data import read_corpus, split_documents, tokenize_corpus
from ..models.gpt2 import GPT2Config, GPT2LMHeadModel
from .device import device_of, on_device

# (layers, width, heads); the feed-forward is 4x the width, as in GPT-2. The shapes are those of the BERT
# presets (pretrain.PRESETS), under names that say which family they build.
GPT_PRESETS = {
    "gpt-tiny": dict(n_layer=2, n_embd=128, n_head=2),
    "gpt-mini": dict(n_layer=4, n_embd=256, n_head=4),
    "gpt-small": dict(n_layer=4, n_embd=512, n_head=8),
}
OBJECTIVES = ("mlm", "clm")
DEFAULT_PRESET = {"mlm": "mini", "clm": "gpt-mini"}
# MLM-only PretrainArgs fields and their defaults: a causal run refuses any other value.
MLM_ONLY = {"mask_rate": ("--mask-rate", 0.15), "whole_word": ("--whole-word", False), "alibi": ("--alibi", False),
            "sparse_head": ("--dense-head", True)}


def check_objective(objective: str, preset: str, mlm_presets) -> None:
    """Raise ValueError for an unknown objective, or a preset of the other family (a BERT preset for
    --objective clm, a GPT-2 one for mlm), naming the presets that fit."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; use 'mlm' (BERT, masked tokens) or 'clm' (GPT-2, "
                         "next token)")
    own, other = (GPT_PRESETS, mlm_presets) if objective == "clm" else (mlm_presets, GPT_PRESETS)
    if preset in own:
        return
    if preset in other:
        family, fix = ("a BERT (masked-LM) preset", "--objective mlm") if objective == "clm" else \
            ("a GPT-2 (causal-LM) preset", "--objective clm")
        raise ValueError(f"--preset {preset} is {family}, but --objective is {objective}; use one of "
                         f"{', '.join(own)}, or {fix}")
    raise ValueError(f"unknown preset {preset!r}; --objective {objective} presets: {', '.join(own)}")


def check_clm_args(args) -> None:
    """The checks a causal run adds to PretrainArgs': no MLM-only setting away from its default."""
    for name, (flag, default) in MLM_ONLY.items():
        if getattr(args, name) != default:
            raise ValueError(f"{flag} is a masked-LM setting; --objective clm predicts every next token and "
                             "masks nothing: drop it")


def gpt_preset_config(preset: str, vocab_size: int, seq_len: int, eos_token_id: int,
                      dropout: float = 0.0) -> GPT2Config:
    """The GPT2Config of a preset. `dropout` goes to the residual and embedding dropout; attention dropout
    is 0 (the fused attention kernel never materialises the probabilities it would drop)."""
    if preset not in GPT_PRESETS:
        raise ValueError(f"unknown GPT-2 preset {preset!r}; known: {', '.join(GPT_PRESETS)}")
    return GPT2Config(vocab_size=vocab_size, n_positions=max(128, seq_len), n_inner=None,
                      resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=0.0,
                      bos_token_id=eos_token_id, eos_token_id=eos_token_id, **GPT_PRESETS[preset])


def build_bpe_tokenizer(args, documents: list[str]) -> ByteLevelBPETokenizer:
    """The tokenizer of a run: a resumed run's own vocab.json + merges.txt, --vocab (a folder with those, or
    tokenizer.json), or byte-level BPE trained on the corpus with args.vocab_size ids."""
    out = Path(args.out)
    if args.resume and (out / "vocab.json").is_file():
        return ByteLevelBPETokenizer.from_pretrained(out)
    if args.vocab:
        path = Path(args.vocab)
        if not path.is_dir():
            raise ValueError(f"--vocab {path}: --objective clm takes a folder with vocab.json and merges.txt "
                             "(a byte-level BPE tokenizer, e.g. a run folder of `minillm pretrain --objective "
                             "clm`), not a single file")
        return ByteLevelBPETokenizer.from_pretrained(path)
    return train_bpe(documents, args.vocab_size, progress=True)


def pack_stream(corpus, seq_len: int, eos_id: int) -> np.ndarray:
    """Documents -> (N, T) rows of a causal LM: `<|endoftext|>` before every non-empty document, the
    stream cut into rows of T tokens; the short leftover at the end (fewer than T tokens) is dropped.

    Unlike `pack_sequences` (MLM) no row is framed: a [CLS] / [SEP] pair at fixed places would teach the
    model that a boundary comes every T tokens.
    """
    from ..data import TokenizedCorpus

    corpus = TokenizedCorpus.from_arrays(corpus)
    starts = corpus.offsets[:-1][corpus.lengths > 0]                       # where each non-empty document begins
    stream = np.insert(corpus.ids, starts, np.int32(eos_id))               # (S + n,): eos, doc, eos, doc ...
    n_rows = len(stream) // seq_len
    if n_rows == 0:
        raise ValueError(f"pack_stream: {len(stream)} tokens do not fill one row of seq_len={seq_len}; use more "
                         "text or a shorter --seq-len")
    return stream[:n_rows * seq_len].reshape(n_rows, seq_len)              # (N, T)


def clm_rows(corpus_paths, tok, seq_len: int, eval_fraction: float, seed: int, max_eval_rows: int):
    """(train rows (N, T), held-out rows (M, T)) of a causal run: the documents of the corpus files split by
    document (seeded), each side packed by `pack_stream`; at most max_eval_rows held-out rows, spread evenly
    over the held-out documents. Benchmarks call this to score other models on the same tokens."""
    docs = tokenize_corpus(corpus_paths, tok, progress=True)   # flat ids + document offsets (cached)
    train_docs, eval_docs = split_documents(docs, eval_fraction, seed, min_eval_tokens=seq_len)
    train_rows = pack_stream(train_docs, seq_len, tok.eos_token_id)        # (N, T)
    eval_rows = pack_stream(eval_docs, seq_len, tok.eos_token_id)          # (M, T)
    keep = np.linspace(0, len(eval_rows) - 1, min(len(eval_rows), max_eval_rows)).round().astype(np.int64)
    return train_rows, eval_rows[keep]


def prepare(args):
    """Everything checked and built before the first step: (tokenizer, config, train rows, eval rows)."""
    args.__post_init__()
    documents = [doc for path in args.corpus for doc in read_corpus(path)]  # raises on empty / non-UTF-8
    tok = build_bpe_tokenizer(args, documents)
    if tok.eos_token != ENDOFTEXT:
        raise ValueError(f"the tokenizer's end-of-text token is {tok.eos_token!r}, not {ENDOFTEXT!r}")
    train_rows, eval_rows = clm_rows(args.corpus, tok, args.seq_len, args.eval_fraction, args.seed,
                                     args.max_eval_rows)
    config = gpt_preset_config(args.preset, tok.vocab_size, args.seq_len, tok.eos_token_id, args.dropout)
    return tok, config, train_rows, eval_rows


def clm_batch(rows: np.ndarray) -> dict:
    """(B, T) rows -> the model's inputs; labels are the ids themselves (the model shifts them)."""
    ids = np.ascontiguousarray(rows, dtype=np.int64)
    return {"input_ids": ids, "labels": ids}


def evaluate_clm(model, eval_rows: np.ndarray, batch_size: int = 32) -> dict:
    """Held-out loss: the mean over every predicted position (T - 1 per row) of -log P(next token), and
    perplexity exp(loss)."""
    device = device_of(model)
    total, count = 0.0, 0
    for start in range(0, len(eval_rows), batch_size):
        rows = eval_rows[start:start + batch_size]
        out = model(**on_device(clm_batch(rows), device))     # loss: mean over b * (T - 1) predictions
        n = rows.shape[0] * (rows.shape[1] - 1)
        total += float(out.loss.item()) * n
        count += n
    loss = total / max(count, 1)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "predicted_tokens": count}


def pretrain_clm(args) -> dict:
    """Run causal-LM pretraining as `minillm pretrain --objective clm` does; returns the final evaluation.

    `args` is a pretrain.PretrainArgs with objective "clm"."""
    from ..data import tokenizer_digest
    from ..tensor import manual_seed
    from .loop import Trainer, write_run_file
    from .pretrain import budgeted_steps, micro_batch_rows, plan_steps, refuse_evaluation_files, train_config
    from .resume import check_resume, run_record

    run = run_record(args, files=("corpus", "vocab"), exclude=("out", "resume", "checkpoint_every", "device"))
    refuse_evaluation_files(args.corpus, [f["sha256"] for f in run["corpus"]])
    if args.resume:  # a broken or different checkpoint is reported before the corpus is read
        steps = budgeted_steps(args.out) if args.minutes is not None else args.steps
        check_resume(args.out, run, train_config(args, steps))
    tok, config, train_rows, eval_rows = prepare(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    manual_seed(args.seed)
    model = GPT2LMHeadModel(config)
    tok.save_pretrained(out)
    n, b = len(train_rows), args.batch_size

    def get_batch(step, micro, rng):
        return clm_batch(train_rows[micro_batch_rows(step * args.grad_accum + micro, n, b, args.seed)])

    def evaluate(m):
        return evaluate_clm(m, eval_rows)

    def count_tokens(batch):
        return int(batch["input_ids"].size)

    steps, plan, first_eval, clock = plan_steps(args, model, get_batch, evaluate, count_tokens)
    cfg = train_config(args, steps)
    run["tokenizer"] = tokenizer_digest(tok)  # on resume it comes from the run folder's own vocab.json
    trainer = Trainer(model, cfg, out, get_batch, evaluate=evaluate,
                      save_model=lambda path: model.save_pretrained(path, tokenizer=tok),
                      count_tokens=count_tokens, desc=f"pretrain {args.preset}", device=args.device, run=run,
                      clock_start=clock if plan is not None else None)
    record = {"command": "pretrain", "objective": "clm", "args": asdict(args), "data": run["corpus"],
              "tokenizer": run["tokenizer"], "train_config": asdict(cfg), "model_config": config.to_dict(),
              "rows": {"train": int(n), "eval": int(len(eval_rows)), "seq_len": args.seq_len},
              "tokens_per_step": b * args.seq_len * args.grad_accum,
              "budget": asdict(plan) if plan is not None else None}
    write_run_file(out, record, update=args.resume)
    print(f"pretrain: {args.preset} ({model.num_parameters() / 1e6:.2f}M parameters, vocab {tok.vocab_size}), "
          f"{n} train rows / {len(eval_rows)} eval rows of {args.seq_len} tokens, batch {b}, {steps} steps; lr "
          f"{args.lr:g}, warm-up {cfg.warmup} steps, weight decay {args.weight_decay:g}, dropout {args.dropout:g}")
    result = trainer.fit(resume=args.resume, first_eval=first_eval)
    write_run_file(out, {"finished": {"step": trainer.step, "tokens_seen": trainer.tokens_seen,
                                      "elapsed_minutes": round(trainer.elapsed_minutes(), 4)}}, update=True)
    return result

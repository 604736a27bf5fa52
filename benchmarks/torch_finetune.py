"""The PyTorch + transformers peer of `minillm finetune`: the same SST-2 recipe, step for step.

`benchmarks/sst2_results.py` runs this next to `minillm finetune` so that accuracy and wall time can be
compared on the same machine with the same threads. What is the same on both sides:

    model       BertForSequenceClassification.from_pretrained(folder, num_labels=2): the checkpoint's encoder
                and pooler, a fresh linear classifier (normal, std = initializer_range), dropout as in the config
    tokens      transformers' BertTokenizer from the same vocab.txt; truncation to --max-length
                (--check-ids N compares the first N ids with minillm's own tokenizer)
    batches     minillm.data.Batches: the very same length-bucketed batches in the same order for a seed
                (it is NumPy data code, not a DL framework); dynamic padding per batch
    optimizer   AdamW, betas (0.9, 0.999), eps 1e-8, weight decay 0.01 on weight matrices only
                (none on biases and LayerNorm parameters), global grad-norm clipping at 1.0
    schedule    lr(t) = peak * (t + 1) / W for t < W, then peak * (S - t) / (S - W), W = round(0.1 S)
                (minillm.optim.LinearWarmupDecay), S = round(epochs * batches per epoch), capped by --max-steps
    evaluation  dev accuracy at the end of every epoch and after the last step; the best one is kept

What differs: the dropout stream (torch's generator vs minillm's), the float summation order, and
attention-probability dropout, which transformers applies (attention_probs_dropout_prob in the config)
and minillm's fused attention kernel does not (it never materialises the probabilities; see
minillm/models/bert.py). What this is not: a tuned PyTorch baseline (no mixed precision, no compile).

Run:  python benchmarks/torch_finetune.py --model DIR --train train.tsv --eval dev.tsv [--epochs 1]
The last stdout line is JSON: {"accuracy": best dev accuracy, "n": dev rows, "steps": ..., "train_s": ...}.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

# Run as a script, Python puts benchmarks/ first on sys.path, and benchmarks/kernels.py would then shadow
# the `kernels` package that minillm imports. Drop that entry; minillm is installed (editable).
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="checkpoint folder in HF layout (config.json, vocab.txt, weights)")
    p.add_argument("--train", required=True, help="GLUE-style TSV (sentence<TAB>label)")
    p.add_argument("--eval", required=True, help="GLUE-style TSV used for the dev accuracy")
    p.add_argument("--out", default=None, help="folder for metrics.jsonl (same records as minillm's)")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--max-steps", type=int, default=0, help="cap on optimizer steps (0: epochs decide)")
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--warmup-fraction", type=float, default=0.1)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (intra-op threads)")
    p.add_argument("--check-ids", type=int, default=1000,
                   help="compare the token ids of the first N training sentences with minillm's tokenizer (0: off)")
    return p.parse_args(argv)


def lr_factor(step: int, warmup: int, total: int) -> float:
    """minillm.optim.LinearWarmupDecay.factor, copied so that the peer does not import minillm's optimizer."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def check_token_ids(model_dir: str, hf_tok, sentences: list[str], max_length: int) -> float:
    """Fraction of `sentences` that minillm's and transformers' tokenizers turn into identical ids."""
    from minillm.tokenizer import BertTokenizer as MiniTokenizer

    ours = MiniTokenizer.from_pretrained(model_dir)
    a = ours(sentences, truncation=True, max_length=max_length)["input_ids"]
    b = hf_tok(sentences, truncation=True, max_length=max_length)["input_ids"]
    same = sum(list(x) == list(y) for x, y in zip(a, b))
    return same / max(len(sentences), 1)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    from transformers import BertForSequenceClassification, BertTokenizer
    from transformers.utils import logging as hf_logging

    from minillm.data import Batches, pad_batch, read_tsv

    torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()  # "some weights were newly initialised": expected for the classifier
    started = time.perf_counter()

    tok = BertTokenizer.from_pretrained(args.model)
    train_x, train_y = read_tsv(args.train, num_labels=2)
    eval_x, eval_y = read_tsv(args.eval, num_labels=2)
    ids_match = check_token_ids(args.model, tok, train_x[: args.check_ids], args.max_length) if args.check_ids else None
    if ids_match is not None and ids_match < 1.0:
        print(f"torch_finetune: warning: only {ids_match:.1%} of the first {args.check_ids} sentences get the same "
              "ids from both tokenizers, so the batches differ from minillm's")
    train = Batches.from_texts(train_x, train_y, tok, max_length=args.max_length, batch_size=args.batch_size,
                               shuffle=True, seed=args.seed)
    dev = Batches.from_texts(eval_x, eval_y, tok, max_length=args.max_length, batch_size=64, shuffle=False)

    torch.manual_seed(args.seed)
    model = BertForSequenceClassification.from_pretrained(args.model, num_labels=2)
    decay = [p for n, p in model.named_parameters() if not (n.endswith("bias") or "LayerNorm" in n)]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=args.lr, betas=(0.9, 0.999), eps=1e-8)
    per_epoch = len(train)
    steps = max(1, min(int(round(args.epochs * per_epoch)), args.max_steps or math.inf))
    warmup = int(round(args.warmup_fraction * steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: lr_factor(t, warmup, steps))

    metrics = None
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        metrics = open(Path(args.out) / "metrics.jsonl", "w", encoding="utf-8")

    def log(**record):
        if metrics:
            metrics.write(json.dumps(record) + "\n")
            metrics.flush()

    def evaluate() -> float:
        model.eval()
        correct = 0
        with torch.no_grad():
            for batch in dev.iter_epoch(0):
                labels = batch.pop("labels")
                logits = model(**{k: torch.from_numpy(v) for k, v in batch.items()}).logits  # (B, 2)
                correct += int((logits.argmax(-1).numpy() == labels).sum())
        return correct / len(dev.sequences)

    print(f"torch_finetune: {len(train_x)} train / {len(eval_x)} eval sentences, {steps} steps "
          f"({per_epoch} per epoch), batch {args.batch_size}, lr {args.lr}, {torch.get_num_threads()} threads")
    best, last, t_train, t_eval = -1.0, None, 0.0, 0.0
    epoch_batches, epoch_of_cache = None, -1
    for step in range(steps):
        t0 = time.perf_counter()
        epoch, i = divmod(step, per_epoch)
        if epoch != epoch_of_cache:
            epoch_batches, epoch_of_cache = train.batch_indices(epoch), epoch
        idx = epoch_batches[i]
        input_ids, attention_mask = pad_batch([train.sequences[j] for j in idx], tok.pad_token_id)  # (B, T)
        model.train()
        out = model(input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(attention_mask),
                    labels=torch.from_numpy(train.labels[idx]))
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        t_train += time.perf_counter() - t0
        if (step + 1) % 10 == 0 or step + 1 == steps:
            log(step=step + 1, split="train", loss=out.loss.item(), lr=lr)
        if (step + 1) % per_epoch == 0 or step + 1 == steps:
            t0 = time.perf_counter()
            last = evaluate()
            t_eval += time.perf_counter() - t0
            best = max(best, last)
            log(step=step + 1, split="eval", accuracy=last)
            print(f"[torch finetune] step {step + 1}: accuracy {last:.4f} (best {best:.4f})", flush=True)
    if metrics:
        metrics.close()
    print(json.dumps({"accuracy": best, "final_accuracy": last, "n": len(dev.sequences), "steps": steps,
                      "train_s": round(t_train, 2), "eval_s": round(t_eval, 2),
                      "total_s": round(time.perf_counter() - started, 2), "threads": torch.get_num_threads(),
                      "ids_match": ids_match, "torch": torch.__version__}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Does PyTorch, trained exactly as minillm trains, escape the MLM plateau where minillm does not?

minillm's own MLM pretraining of the `tiny` preset levels off (held-out masked-token accuracy ~13%, loss
~6.1). Before blaming the recipe, rule out the engine: this benchmark trains the same model twice from the
same initial weights on the same batches, once with `minillm pretrain`'s real code and once with PyTorch
(transformers' BertForMaskedLM, torch.optim.AdamW), and writes both held-out curves side by side.

    python benchmarks/pretrain_parity.py --corpus $MINILLM_DATA/imdb/unsup.txt $MINILLM_DATA/wikitext2/*.txt \
        $MINILLM_DATA/sst2/train.tsv                       # 2,000 steps of tiny, seq 128, batch 32

Method:

1. **minillm**, in its own process: `minillm.train.pretrain.pretrain` itself, unchanged (corpus reading,
   WordPiece training, packing into rows, the `tiny` preset, the Trainer with its parameter groups,
   LinearWarmupDecay, clip_grad_norm and AdamW, the sparse MLM head, evaluate_mlm). Two hooks only
   record, they change nothing: the Trainer's `get_batch` (every training batch, as minillm's dynamic
   masking made it) and, at the first evaluation, the held-out batches evaluate_mlm masks (the same
   masking at every evaluation). The initial weights are saved before the first step.
2. **PyTorch**, in its own process afterwards (benchmarks/_harness.py says why one engine per process):
   transformers' BertForMaskedLM loaded from those initial weights, trained on the recorded batches, in
   the same order, with the same recipe written independently: AdamW (betas 0.9 / 0.999, eps 1e-8), weight
   decay on every parameter but biases and LayerNorm (the rule of Hugging Face's run_mlm example), update u at
   lr * min(u / W, (S - u + 1) / (S - W)) (minillm's LinearWarmupDecay), global-norm clipping at
   TrainConfig.max_grad_norm; held-out loss and masked-token accuracy on the recorded held-out batches
   at the same steps minillm evaluates.

How to read it: both engines compute in float32 with different operation orders, so the two trajectories
agree closely for the first steps (the "early agreement" line: per-step train loss, relative) and then
drift apart in their details, as any two float32 runs do; from there the comparison is of the curves.
tests/test_training_parity.py checks 30 steps step by step. If PyTorch climbs well above minillm's
accuracy, the engine has a defect that short tests miss; if both plateau together, the recipe (or the
budget) is what to change.

Cost: both engines run N steps of the same model on 2 cores, one after the other, plus minillm's
WordPiece training and tokenization of the corpus (cached in ~/.cache/minillm after the first run). The
recorded batches take 8 bytes per token (int32 ids and labels) in a temporary folder (--work), removed at
the end unless --keep-work: 65 MB for the default 2,000 steps.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import _harness as H  # noqa: E402

STEM = "pretrain_parity"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", nargs="+", required=True, help="plain-text corpus files, as `minillm pretrain`")
    ap.add_argument("--steps", type=int, default=2000, help="optimizer steps of each engine (2000)")
    ap.add_argument("--eval-every", type=int, default=200, help="held-out evaluation every K steps (200)")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-4, help="peak learning rate (`minillm pretrain`'s default)")
    ap.add_argument("--warmup", type=float, default=0.06, help="< 1: a fraction of the steps; >= 1: steps")
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--mask-rate", type=float, default=0.15)
    ap.add_argument("--vocab", default=None, help="a vocab.txt (default: WordPiece trained on the corpus)")
    ap.add_argument("--vocab-size", type=int, default=8000)
    ap.add_argument("--max-eval-rows", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="threads of each engine's process")
    ap.add_argument("--out", default=H.RESULTS, help="folder for pretrain_parity.md / .json (benchmarks/results)")
    ap.add_argument("--work", default=None, help="folder for the recorded batches and the runs (a temporary one)")
    ap.add_argument("--keep-work", action="store_true", help="keep --work (the minillm run, the batches)")
    ap.add_argument("--_worker", choices=H.ENGINES, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def shown_path(path: str) -> str:
    """A path as a results file shows it: under $MINILLM_DATA or relative to the repository, never this
    machine's absolute path."""
    full = os.path.abspath(path)
    data = os.environ.get("MINILLM_DATA")
    if data and full.startswith(os.path.abspath(data) + os.sep):
        return "$MINILLM_DATA/" + os.path.relpath(full, os.path.abspath(data))
    if full.startswith(H.ROOT + os.sep):
        return os.path.relpath(full, H.ROOT)
    return os.path.basename(full) if os.path.isabs(path) else path


def shown_args(argv: list) -> list:
    """The arguments of the command that regenerates the results: paths shown by `shown_path`, and
    without --out, --work and --keep-work (where the files go is not part of what they say)."""
    shown, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in ("--out", "--work"):
            skip = True
        elif a != "--keep-work" and not a.startswith(("--out=", "--work=")):
            shown.append(shown_path(a) if os.path.exists(a) else a)
    return shown


def lr_factor(update: int, warmup: int, total: int) -> float:
    """The learning-rate factor of update `update` (1-based): linear warm-up to 1 at update `warmup`, then
    linear decay to 1 / (total - warmup) at the last update (minillm's LinearWarmupDecay)."""
    if warmup and update <= warmup:
        return update / warmup
    return max(0.0, (total - update + 1) / max(1, total - warmup))


# ---- the minillm worker: `minillm pretrain`'s own code, with two recording hooks


def minillm_worker(args) -> dict:
    import numpy as np

    import minillm
    from minillm.train import pretrain as P
    from minillm.train.metrics import read_metrics

    work = args.work
    pa = P.PretrainArgs(corpus=args.corpus, out=os.path.join(work, "minillm"), preset=args.preset, steps=args.steps,
                        batch_size=args.batch_size, seq_len=args.seq_len, seed=args.seed, lr=args.lr,
                        warmup=args.warmup, weight_decay=args.weight_decay, mask_rate=args.mask_rate,
                        vocab=args.vocab, vocab_size=args.vocab_size, eval_every=args.eval_every,
                        checkpoint_every=0, max_eval_rows=args.max_eval_rows)
    shape = (args.steps, args.batch_size, args.seq_len)
    ids = np.lib.format.open_memmap(os.path.join(work, "train_ids.npy"), "w+", np.int32, shape)
    labels = np.lib.format.open_memmap(os.path.join(work, "train_labels.npy"), "w+", np.int32, shape)
    seen = np.zeros(args.steps, bool)

    class RecordingTrainer(P.Trainer):
        """The Trainer, unchanged, except that each batch it asks for is also written to disk."""

        def __init__(self, model, config, out_dir, get_batch, evaluate, save_model, **kw):
            save_model(os.path.join(work, "init"))  # the initial weights (and vocab.txt), HF layout

            def recording_get_batch(step, micro, rng):
                batch = get_batch(step, micro, rng)
                if micro != 0:
                    raise ValueError("pretrain_parity records one micro-batch per step (grad_accum 1)")
                ids[step], labels[step], seen[step] = batch["input_ids"], batch["labels"], True
                return batch

            super().__init__(model, config, out_dir, recording_get_batch, evaluate, save_model, **kw)
            with open(os.path.join(work, "recipe.json"), "w") as f:
                json.dump({"steps": config.steps, "lr": config.lr, "warmup": config.warmup,
                           "weight_decay": config.weight_decay, "max_grad_norm": config.max_grad_norm,
                           "eval_every": config.eval_every, "grad_accum": config.grad_accum}, f)

    real_evaluate, real_mlm_batch = P.evaluate_mlm, P.mlm_batch
    eval_batches = []

    def recording_evaluate(model, tok, eval_rows, seed, batch_size=32):
        if eval_batches:  # the masking is the same at every evaluation: recorded once
            return real_evaluate(model, tok, eval_rows, seed, batch_size)

        def mlm_batch(*a, **kw):
            batch = real_mlm_batch(*a, **kw)
            eval_batches.append(batch)
            return batch

        P.mlm_batch = mlm_batch
        try:
            result = real_evaluate(model, tok, eval_rows, seed, batch_size)
        finally:
            P.mlm_batch = real_mlm_batch
        np.savez(os.path.join(work, "eval_batches.npz"),
                 **{f"{k}_{i}": b[k] for i, b in enumerate(eval_batches) for k in ("input_ids", "labels")})
        return result

    P.Trainer, P.evaluate_mlm = RecordingTrainer, recording_evaluate
    t0 = time.perf_counter()
    final = P.pretrain(pa)
    seconds = time.perf_counter() - t0
    ids.flush()
    labels.flush()
    if not seen.all():
        raise RuntimeError(f"steps without a recorded batch: {np.flatnonzero(~seen)[:10]}")
    rows = read_metrics(os.path.join(pa.out, "metrics.jsonl"))
    run = json.load(open(os.path.join(pa.out, "run.json")))
    recipe = json.load(open(os.path.join(work, "recipe.json")))
    return {"engine": "minillm", "final": final, "seconds": seconds, "recipe": recipe,
            "train": [{k: r.get(k) for k in ("step", "loss", "lr", "grad_norm", "elapsed_minutes")}
                      for r in rows if r["split"] == "train"],
            "eval": [{k: r.get(k) for k in ("step", "loss", "mlm_accuracy", "masked_tokens", "tokens_seen")}
                     for r in rows if r["split"] == "eval"],
            "rows": run["rows"], "model_config": run["model_config"], "train_config": run["train_config"],
            "blas": H.blas_info(), "version": getattr(minillm, "__version__", "?"), "backend": minillm.get_backend()}


# ---- the PyTorch worker: the recorded batches, the recipe written independently


def torch_worker(args) -> dict:
    import numpy as np
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    work = args.work
    recipe = json.load(open(os.path.join(work, "recipe.json")))
    steps, warmup, every = recipe["steps"], recipe["warmup"], recipe["eval_every"]
    model = transformers.BertForMaskedLM.from_pretrained(os.path.join(work, "init"))
    named = list(model.named_parameters())
    no_decay = ("bias", "LayerNorm.weight")  # the rule of Hugging Face's run_mlm example
    groups = [{"params": [p for n, p in named if not any(k in n for k in no_decay)],
               "weight_decay": recipe["weight_decay"]},
              {"params": [p for n, p in named if any(k in n for k in no_decay)], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=recipe["lr"], betas=(0.9, 0.999), eps=1e-8)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda done: lr_factor(done + 1, warmup, steps))
    ids = np.load(os.path.join(work, "train_ids.npy"), mmap_mode="r")
    labels = np.load(os.path.join(work, "train_labels.npy"), mmap_mode="r")
    held = np.load(os.path.join(work, "eval_batches.npz"))
    eval_batches = [(torch.from_numpy(held[f"input_ids_{i}"].astype(np.int64)),
                     torch.from_numpy(held[f"labels_{i}"].astype(np.int64))) for i in range(len(held.files) // 2)]

    def evaluate() -> dict:
        """Held-out MLM loss (mean over masked tokens) and masked-token accuracy, as evaluate_mlm computes."""
        model.eval()
        total, correct, count = 0.0, 0, 0
        with torch.no_grad():
            for x, y in eval_batches:
                keep = y != -100
                if not keep.any():
                    continue
                logits = model(input_ids=x, attention_mask=torch.ones_like(x)).logits[keep]   # (M, V)
                total += float(torch.nn.functional.cross_entropy(logits, y[keep], reduction="sum"))
                correct += int((logits.argmax(-1) == y[keep]).sum())
                count += int(keep.sum())
        model.train()
        return {"loss": total / count, "mlm_accuracy": correct / count, "masked_tokens": count}

    train, evals = [], []
    model.train()
    t0 = time.perf_counter()
    for step in range(steps):
        x = torch.from_numpy(ids[step].astype(np.int64))
        y = torch.from_numpy(labels[step].astype(np.int64))
        loss = model(input_ids=x, attention_mask=torch.ones_like(x), labels=y).loss
        loss.backward()
        norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), recipe["max_grad_norm"]))
        lr = opt.param_groups[0]["lr"]
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        train.append({"step": step + 1, "loss": float(loss.detach()), "lr": lr, "grad_norm": norm})
        if step + 1 == steps or (every and (step + 1) % every == 0):
            evals.append({"step": step + 1, **evaluate()})
            H.log(f"[torch] step {step + 1}: eval loss {evals[-1]['loss']:.4f}, "
                  f"mlm_accuracy {evals[-1]['mlm_accuracy']:.4f}")
    return {"engine": "torch", "seconds": time.perf_counter() - t0, "train": train, "eval": evals,
            "blas": H.torch_blas_info(),
            "version": f"torch {torch.__version__}, transformers {transformers.__version__}"}


# ---- the parent: both workers, then the results files


def mean(xs) -> float:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else float("nan")


def report(args, argv, ml: dict, pt: dict, load_start, load_end) -> None:
    n = args.steps
    ours = {r["step"]: r for r in ml["train"]}
    theirs = {r["step"]: r for r in pt["train"]}
    early = [s for s in range(1, min(n, 50) + 1) if s in ours and ours[s]["loss"] is not None]
    gaps = [abs(ours[s]["loss"] - theirs[s]["loss"]) / abs(theirs[s]["loss"]) for s in range(1, n + 1)
            if s in ours and ours[s]["loss"] is not None]
    first_apart = next((s for s, g in zip(range(1, n + 1), gaps) if g > 1e-3), None)
    lr_gap = max(abs(ours[s]["lr"] - theirs[s]["lr"]) / theirs[s]["lr"] for s in ours if theirs[s]["lr"] > 0)
    rows = []
    prev = 0
    tevals = {r["step"]: r for r in pt["eval"]}
    for e in ml["eval"]:
        s = e["step"]
        t = tevals.get(s, {})
        window = range(prev + 1, s + 1)
        rows.append({"step": s, "tokens_seen": e.get("tokens_seen"),
                     "minillm": {"eval_loss": e["loss"], "mlm_accuracy": e["mlm_accuracy"],
                                 "train_loss": mean(ours[i]["loss"] for i in window if i in ours)},
                     "torch": {"eval_loss": t.get("loss"), "mlm_accuracy": t.get("mlm_accuracy"),
                               "train_loss": mean(theirs[i]["loss"] for i in window if i in theirs)}})
        prev = s
    cmd = H.command("pretrain_parity.py", argv)
    cfg, mc = ml["train_config"], ml["model_config"]
    host = H.host()
    data = {"host": {**host, "loadavg_start": load_start, "loadavg_end": load_end}, "threads": args.threads,
            "settings": H.settings_text(args.threads, torch_allocators=("kept",)),
            "blas": {"minillm": ml["blas"], "torch": pt["blas"]},
            "versions": {"minillm": ml["version"], "torch": pt["version"]}, "backend": ml["backend"],
            "corpus": [shown_path(c) for c in args.corpus], "rows": ml["rows"], "model_config": mc,
            "train_config": cfg, "seconds": {"minillm": ml["seconds"], "torch": pt["seconds"]},
            "early_agreement": {"steps": len(early),
                                "max_relative_train_loss_gap": max(gaps[:len(early)], default=None),
                                "max_relative_train_loss_gap_all_steps": max(gaps, default=None),
                                "first_step_apart_1e-3": first_apart, "max_relative_lr_gap": lr_gap},
            "evals": rows,
            "train_loss": {"minillm": [ours[s]["loss"] if s in ours else None for s in range(1, n + 1)],
                           "torch": [theirs[s]["loss"] for s in range(1, n + 1)]}}
    last = rows[-1]
    verdict = ("PyTorch ends {:+.1f} points of masked-token accuracy and {:+.3f} nats of held-out loss from "
               "minillm").format(100 * (last["torch"]["mlm_accuracy"] - last["minillm"]["mlm_accuracy"]),
                                 last["torch"]["eval_loss"] - last["minillm"]["eval_loss"])
    md = [f"# MLM pretraining, minillm vs PyTorch on the same batches ({args.preset}, {n} steps)", "",
          f"Machine: {host['cpu']}, {host['cores']} cores; load average (1 min) {load_start[0]:.2f} at the start, "
          f"{load_end[0]:.2f} at the end. Threads: {args.threads} for each engine, one engine at a time.",
          f"- minillm ({ml['backend']} backend): {data['settings']['minillm']}; {ml['blas']}.",
          f"- PyTorch ({pt['version']}): {pt['blas']}.", "",
          f"Model: `{args.preset}` ({mc['num_hidden_layers']} layers, hidden {mc['hidden_size']}, "
          f"{mc['num_attention_heads']} heads, vocab {mc['vocab_size']}), seq {args.seq_len}, batch "
          f"{args.batch_size}; {ml['rows']['train']} training rows, {ml['rows']['eval']} held-out rows "
          f"({ml['eval'][-1].get('masked_tokens')} masked tokens, 15%). Corpus: "
          + ", ".join(f"`{c}`" for c in data["corpus"]) + ".",
          f"Recipe (both engines): AdamW lr {cfg['lr']:g}, warm-up {ml['recipe']['warmup']} "
          f"step{'s' if ml['recipe']['warmup'] != 1 else ''} then linear decay, weight decay "
          f"{cfg['weight_decay']:g} (not on biases and LayerNorm), "
          f"clipping at {cfg['max_grad_norm']:g}, mask rate {args.mask_rate:g}, dropout 0; the same initial "
          "weights and the same masked batches (made by minillm's masking, recorded, replayed in PyTorch).", "",
          f"Wall time: minillm {ml['seconds'] / 60:.1f} min (including corpus preparation and evaluations), "
          f"PyTorch {pt['seconds'] / 60:.1f} min.", "",
          "Step by step: the train losses differ by at most "
          f"{data['early_agreement']['max_relative_train_loss_gap']:.1e} "
          f"(relative) over the first {len(early)} steps and {max(gaps, default=float('nan')):.1e} over all {n}; "
          + (f"they first differ by more than 1e-3 at step {first_apart}" if first_apart else
             "they never differ by more than 1e-3")
          + f"; the learning rates agree to {lr_gap:.0e}. Two float32 engines may drift apart in the details "
          "over many steps; where they have, compare the curves, not the digits.", "",
          f"**{verdict}.**", "",
          "| step | tokens | minillm eval loss | PyTorch eval loss | minillm accuracy | PyTorch accuracy "
          "| minillm train loss | PyTorch train loss |",
          "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        a, b = r["minillm"], r["torch"]
        md.append(f"| {r['step']} | {r['tokens_seen'] or 0:,} | {a['eval_loss']:.4f} | {b['eval_loss']:.4f} | "
                  f"{100 * a['mlm_accuracy']:.2f}% | {100 * b['mlm_accuracy']:.2f}% | {a['train_loss']:.4f} | "
                  f"{b['train_loss']:.4f} |")
    md += ["", "Train loss: the mean over the steps since the previous row. Held-out: the same masked tokens at "
           "every row, for both engines."]
    H.write_results(args.out, STEM, cmd, md, data)
    H.log(verdict)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args._worker:
        print(json.dumps(minillm_worker(args) if args._worker == "minillm" else torch_worker(args)))
        return
    work = args.work or tempfile.mkdtemp(prefix="minillm-pretrain-parity-")
    os.makedirs(work, exist_ok=True)
    try:
        script = os.path.abspath(__file__)
        base = [a for a in argv if a != "--keep-work"]
        if "--work" not in base:
            base += ["--work", work]
        load_start = list(os.getloadavg())
        H.log(f"minillm: {args.steps} steps (records the batches in {work})")
        ml = H.run_worker(script, base + ["--_worker", "minillm"], "minillm", args.threads)
        H.log(f"PyTorch: the same {args.steps} steps")
        pt = H.run_worker(script, base + ["--_worker", "torch"], "torch", args.threads)
        report(args, shown_args(argv), ml, pt, load_start, list(os.getloadavg()))
    finally:
        if not args.keep_work and not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print(f"results in {args.out}")


if __name__ == "__main__":
    main()

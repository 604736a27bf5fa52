"""`minillm demo`: the BERT story end to end, in about ten minutes on two CPU cores.

    1. find the data (MINILLM_DATA, the cache, or a verified download of SST-2 and WikiText-2)
    2. pretrain a small BERT with masked-language modelling on WikiText-2 + SST-2 *training* sentences
    3. zero-shot: classify SST-2 dev sentences through the cloze prompt "<sentence> it was [MASK] ."
    4. fine-tune the pretrained model on SST-2 train, evaluate on SST-2 dev
    5. print a few predictions and write report.md with the curves

The SST-2 dev sentences are only ever evaluated on, never trained on.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

EXAMPLES = [
    "a warm , funny and thoroughly engaging film",
    "the plot is thin and the acting is worse",
    "an ambitious mess that never comes together",
    "one of the most beautiful movies of the year",
]

# Steps per minute, measured on a 2-core machine with the numba backend (evaluations included): pretraining
# at batch 32 x 64 tokens, fine-tuning at batch 32 on SST-2's short, length-bucketed sentences.
# (tiny measured in a full demo run: 354 and 1125 steps/min; mini and small scaled by their step times.)
PRETRAIN_STEPS_PER_MINUTE = {"tiny": 350, "mini": 110, "small": 30}
FINETUNE_STEPS_PER_MINUTE = {"tiny": 1100, "mini": 320, "small": 100}


@dataclass
class DemoArgs:
    out: str = "runs/demo"
    minutes: float = 10.0
    pretrain_steps: int | None = None
    finetune_steps: int | None = None
    preset: str = "tiny"
    data: str | None = None
    seed: int = 0
    device: str = "cpu"


def demo(args: DemoArgs) -> Path:
    from ..data import data_dir
    from .finetune import FinetuneArgs, evaluate_path, evaluate_zero_shot, finetune, predict
    from .pretrain import PretrainArgs, pretrain

    started = time.perf_counter()
    root = Path(args.data) if args.data else data_dir()
    sst2, wiki = root / "sst2", root / "wikitext2"
    corpus = [str(p) for p in (wiki / "train.txt", wiki / "valid.txt", wiki / "test.txt", sst2 / "train.tsv")
              if p.is_file()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # About 62% of the budget pretrains, 20% fine-tunes; the rest is tokenizing, evaluating and reporting.
    pre_steps = args.pretrain_steps or max(20, int(0.62 * args.minutes * PRETRAIN_STEPS_PER_MINUTE[args.preset]))
    ft_steps = args.finetune_steps or max(20, int(0.2 * args.minutes * FINETUNE_STEPS_PER_MINUTE[args.preset]))
    print(f"demo: data from {root}; pretraining {args.preset} for {pre_steps} steps, fine-tuning for {ft_steps}")

    t = time.perf_counter()
    pre = pretrain(PretrainArgs(corpus=corpus, out=str(out / "pretrained"), preset=args.preset, steps=pre_steps,
                                batch_size=32, seq_len=64, seed=args.seed, lr=1e-3, vocab_size=8000,
                                checkpoint_every=max(50, pre_steps // 4), device=args.device))
    pre_time = time.perf_counter() - t

    zero = evaluate_zero_shot(out / "pretrained", sst2 / "dev.tsv", device=args.device)
    print(f"demo: zero-shot SST-2 dev accuracy {zero['accuracy']:.3f} (chance 0.51)")

    t = time.perf_counter()
    finetune(FinetuneArgs(model=str(out / "pretrained"), train=str(sst2 / "train.tsv"), eval=str(sst2 / "dev.tsv"),
                          out=str(out / "finetuned"), epochs=10.0, lr=1e-4, batch_size=32, max_length=64,
                          seed=args.seed, max_steps=ft_steps, eval_every=max(1, ft_steps // 4), device=args.device))
    ft_time = time.perf_counter() - t
    final = evaluate_path(out / "finetuned", sst2 / "dev.tsv", device=args.device)
    print(f"demo: fine-tuned SST-2 dev accuracy {final['accuracy']:.3f}")

    predictions = predict(out / "finetuned", EXAMPLES, device=args.device)
    for r in predictions:
        print(f"  {r['label']:>8} {r['probability']:.2f}  {r['text']}")
    report = write_report(out, args, pre, zero, final, predictions, pre_steps, ft_steps, pre_time, ft_time,
                          time.perf_counter() - started)
    print(f"demo: report written to {report}")
    return report


def write_report(out: Path, args, pre, zero, final, predictions, pre_steps, ft_steps, pre_time, ft_time, total):
    lines = [
        "# minillm demo report",
        "",
        f"Preset `{args.preset}`, seed {args.seed}, {total / 60:.1f} minutes in all.",
        "",
        "| stage | steps | time | result |",
        "| --- | --- | --- | --- |",
        f"| MLM pretraining (WikiText-2 + SST-2 train sentences) | {pre_steps} | {pre_time / 60:.1f} min | "
        f"held-out MLM loss {pre['loss']:.3f}, perplexity {pre['perplexity']:.1f}, masked-token accuracy "
        f"{pre['mlm_accuracy']:.3f} |",
        f"| zero-shot cloze on SST-2 dev (`<sentence> it was [MASK] .`, calibrated) | 0 | | accuracy "
        f"{zero['accuracy']:.3f} (n = {zero['n']}) |",
        f"| fine-tuning on SST-2 train | {ft_steps} | {ft_time / 60:.1f} min | dev accuracy {final['accuracy']:.3f}, "
        f"macro-F1 {final['f1']:.3f} |",
        "",
        "Chance on SST-2 dev is 50.9% (the larger class). The published 2-layer BERT-Tiny, pretrained on billions "
        "of words, reaches 83.2% after fine-tuning; this model saw a few million tokens.",
        "",
        f"Confusion matrix of the fine-tuned model on SST-2 dev (rows: true, columns: predicted): "
        f"`{final['confusion']}`",
        "",
        "## Predictions",
        "",
        *[f"- {r['label']} ({r['probability']:.2f}): {r['text']}" for r in predictions],
        "",
        "## Curves",
        "",
        "![pretraining](pretrained/loss.png)",
        "",
        "![fine-tuning](finetuned/loss.png)",
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    (out / "report.json").write_text(json.dumps({"pretrain": pre, "zero_shot": zero, "finetuned": final}, indent=2))
    return path

"""`minillm demo`: the BERT story end to end, in about ten minutes on two CPU cores.

    1. find the data (--data DIR, MINILLM_DATA, the cache, or a verified download of SST-2 and WikiText-2)
       and check every file the run will read before the first step
    2. pretrain a small BERT with masked-language modelling (with ALiBi, see models/bert.py; 30% of the
       tokens masked, peak learning rate 3e-3: the short-budget recipe) on the IMDb unlabelled reviews when
       the data folder has them, WikiText-2 and the SST-2 *training* sentences
    3. zero-shot: classify SST-2 dev sentences through a cloze prompt such as "<sentence> a [MASK] movie .":
       label words searched on 3,000 SST-2 *training* sentences (finetune.search_label_words) or the
       written-out ones, whichever classifies 1,000 other training sentences better
    4. fine-tune the pretrained model on SST-2 train; and, for comparison, the same architecture from random
       weights with the same budget, each at the learning rate benchmarks/results/finetune_recipe.md chose
       for it. Each run chooses its checkpoint on whole SST-2 training sentences held out of its training
       (`--validation sentences`); SST-2 dev is scored once, at the end
    5. few labels: both starting points fine-tuned again on 2,000 rows of SST-2 train, where what pretraining
       learned has the most to add
    6. print a few predictions and write report.json, and report.md rendered from it, with the curves

The SST-2 dev sentences are only ever evaluated on, never trained on or chosen by. report.md is a pure
function of report.json (`render_report`), so a committed report can be checked against the writer.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, fields
from pathlib import Path

EXAMPLES = [
    "a warm , funny and thoroughly engaging film",
    "the plot is thin and the acting is worse",
    "an ambitious mess that never comes together",
    "one of the most beautiful movies of the year",
]

# Fine-tuning steps per minute, measured on a 2-core machine with the numba backend (evaluations included),
# at batch 32 on SST-2's short, length-bucketed sentences (tiny measured in full demo runs on a 2-core Xeon:
# 1760 steps in 0.7 minutes, 3840 in 1.6; mini and small scaled by their step times). Pretraining measures its own rate
# (`pretrain --minutes`).
FINETUNE_STEPS_PER_MINUTE = {"tiny": 2400, "mini": 700, "small": 220}
# Shares of the time budget: pretraining, and each of the two fine-tuning runs. The rest (about 10%) is
# tokenizing, the zero-shot pass, the few-label runs, evaluations and the report.
PRETRAIN_SHARE, FINETUNE_SHARE = 0.70, 0.10
# The pretraining recipe for a short budget: peak learning rate 3e-3 and 30% of the tokens masked instead of
# BERT's 1e-4-scale rate and 15% (benchmarks/results/mask_rate_probe.md: at the demo's step count the held-out
# MLM loss falls much further; more predictions per row and a larger step are what a short run lacks. 40%
# ends 0.06 lower at equal steps; 30% keeps the cheaper step, since each masked row costs a vocabulary projection).
PRETRAIN_LR, PRETRAIN_MASK_RATE = 3e-3, 0.30
# Few labels: both starting points fine-tuned again on this many SST-2 training rows (seeded), for this many
# steps. With all 67,000 labelled phrases a 2-layer model learns most of what it can from the labels alone;
# pretraining shows where labels are scarce.
FEW_LABEL_ROWS, FEW_LABEL_STEPS = 2000, 300
# Fine-tuning learning rates, chosen per starting point on held-out SST-2 training sentences by
# benchmarks/finetune_recipe.py (a pretrained model takes a higher one than random weights do).
FINETUNE_LR = {"pretrained": 1e-3, "random": 3e-4}
# Zero-shot: label words searched on this many SST-2 training sentences (seeded), this many per label.
LABEL_WORD_SENTENCES, LABEL_WORDS_PER_LABEL = 3000, 5
# ... and the searched words, the written-out ones and the two prompts compared on this many other ones.
CHECK_SENTENCES = 1000
# Both drawn among the training rows of at least this many words (25,152 of SST-2's 67,349; 749 of the 872
# dev sentences are this long).
LONG_ROW_WORDS = 10
# Corpora for MLM pretraining, in this order, relative to the data folder. Only text nobody evaluates on:
# the IMDb unlabelled reviews (in-domain: movie reviews), WikiText-2 (its train split when the folder has it)
# and the SST-2 *training* sentences (labels unused).
PRETRAIN_CORPORA = ("imdb/unsup.txt", "wikitext2/train.txt", "wikitext2/valid.txt", "wikitext2/test.txt",
                    "sst2/train.tsv")
# The files every run reads: checked before the first step.
REQUIRED = ("sst2/train.tsv", "sst2/dev.tsv", "wikitext2/valid.txt", "wikitext2/test.txt")


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


def step_budget(args: DemoArgs) -> tuple[int | None, int]:
    """(pretraining steps: the override or None, for a budget of PRETRAIN_SHARE * minutes that the run turns
    into steps itself; steps of each fine-tuning run: the override or a share of args.minutes)."""
    pre = args.pretrain_steps
    ft = args.finetune_steps or max(20, int(FINETUNE_SHARE * args.minutes * FINETUNE_STEPS_PER_MINUTE[args.preset]))
    return pre, ft


def command_line(args: DemoArgs) -> str:
    """The `minillm demo` command that repeats this run: every flag that differs from its default."""
    parts = ["minillm demo"]
    for f in fields(DemoArgs):
        value = getattr(args, f.name)
        if value != f.default:
            parts.append(f"--{f.name.replace('_', '-')} {value}")
    return " ".join(parts)


def find_data(args: DemoArgs) -> tuple[Path, str]:
    """(data folder, where it came from), after checking it holds every file the demo reads.

    --data DIR is used as given; otherwise `data_dir()` (MINILLM_DATA, the cache, a verified download), with
    the IMDb unlabelled reviews when they can be had (IMDb is optional: REQUIRED lists what must be there).
    A missing file is an error naming it, before any tokenizing or training.
    """
    from ..data import data_dir, read_tsv
    from ..data.datasets import DataNotFoundError

    if args.data:
        root, source = Path(args.data), "the `--data` folder"
    else:
        try:  # the IMDb reviews too (pretraining text), downloaded into the cache if need be
            root = data_dir(("sst2", "wikitext2", "imdb"))
        except DataNotFoundError:  # e.g. a MINILLM_DATA folder without imdb/: pretrain without it
            root = data_dir()
        source = "`$MINILLM_DATA`" if os.environ.get("MINILLM_DATA") else "the download cache"
    missing = [name for name in REQUIRED if not (root / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{root} lacks {', '.join(missing)}; the demo needs {', '.join(REQUIRED)} "
                                "(wikitext2/train.txt is used when present)")
    for name in ("sst2/train.tsv", "sst2/dev.tsv"):  # a malformed row is reported now, as file:line
        read_tsv(root / name, num_labels=2)
    return root, source


def demo(args: DemoArgs) -> Path:
    from ..backend import get_backend
    from ..data import read_tsv
    from ..models.bert import BertConfig, BertForMaskedLM
    from ..tensor import manual_seed
    from ..tokenizer import BertTokenizer
    import numpy as np

    from .finetune import (DEFAULT_LABEL_WORDS, DEFAULT_PROMPT, SEARCH_PROMPT, FinetuneArgs, evaluate_zero_shot,
                           finetune, predict, search_label_words, zero_shot_scores)
    from .pretrain import PretrainArgs, pretrain

    started = time.perf_counter()
    root, source = find_data(args)
    corpora = [name for name in PRETRAIN_CORPORA if (root / name).is_file()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pre_steps, ft_steps = step_budget(args)
    planned = f"{pre_steps} steps" if args.pretrain_steps else f"{PRETRAIN_SHARE * args.minutes:.1f} minutes"
    print(f"demo: data from {root}; pretraining {args.preset} (ALiBi) for {planned} on {', '.join(corpora)}; "
          f"two fine-tuning runs of {ft_steps} steps")

    t = time.perf_counter()
    # Without --pretrain-steps the pretraining share of the budget is a `--minutes` run: the step rate is
    # measured on this machine and the schedule laid over the steps that fit. ALiBi: see models/bert.py.
    budget = dict(steps=args.pretrain_steps) if args.pretrain_steps else dict(minutes=PRETRAIN_SHARE * args.minutes)
    pre = pretrain(PretrainArgs(corpus=[str(root / name) for name in corpora], out=str(out / "pretrained"),
                                preset=args.preset, batch_size=32, seq_len=128, seed=args.seed, lr=PRETRAIN_LR,
                                mask_rate=PRETRAIN_MASK_RATE, vocab_size=8000, alibi=True, checkpoint_every=200,
                                device=args.device, **budget))
    finished = json.loads((out / "pretrained" / "run.json").read_text())["finished"]
    pre = {**pre, "steps": finished["step"], "seconds": time.perf_counter() - t, "corpora": corpora,
           "tokens_seen": finished["tokens_seen"]}

    t = time.perf_counter()
    mlm = BertForMaskedLM.from_pretrained(out / "pretrained").to(args.device)
    tok = BertTokenizer.from_pretrained(out / "pretrained")
    train_x, train_y = read_tsv(root / "sst2" / "train.tsv", num_labels=2)
    # Search and check on long rows: SST-2's training rows are mostly short phrases ("a film"), its dev rows
    # whole sentences (19.5 words on average); words and a prompt chosen on phrases are chosen for phrases.
    long_rows = np.array([i for i, x in enumerate(train_x) if len(x.split()) >= LONG_ROW_WORDS])
    if len(long_rows) < LABEL_WORD_SENTENCES + CHECK_SENTENCES:  # a small training file (tests): every row
        long_rows = np.arange(len(train_x))
    order = np.random.default_rng(args.seed).permutation(long_rows)
    search, check = order[:LABEL_WORD_SENTENCES], order[LABEL_WORD_SENTENCES:LABEL_WORD_SENTENCES + CHECK_SENTENCES]
    searched = search_label_words(mlm, tok, [train_x[i] for i in search], train_y[search], SEARCH_PROMPT,
                                  (LABEL_WORDS_PER_LABEL,))[LABEL_WORDS_PER_LABEL]
    # A weak model's searched words can be noise: they compete with the written-out ones on other training
    # sentences, and the best of the three (ties to the earlier) reads dev.
    candidates = [(DEFAULT_PROMPT, DEFAULT_LABEL_WORDS), (SEARCH_PROMPT, DEFAULT_LABEL_WORDS), (SEARCH_PROMPT, searched)]
    check_accuracy = [float((zero_shot_scores(mlm, tok, [train_x[i] for i in check], prompt, words).argmax(-1)
                             == train_y[check]).mean()) for prompt, words in candidates]
    best = max(range(len(candidates)), key=check_accuracy.__getitem__)
    prompt, words = candidates[best]
    del mlm
    zero = evaluate_zero_shot(out / "pretrained", root / "sst2" / "dev.tsv", prompt=prompt, label_words=words,
                              device=args.device)
    zero.update(seconds=time.perf_counter() - t, prompt=prompt, label_words=[list(w) for w in words],
                searched_words=[list(w) for w in searched], searched=best == 2, label_word_sentences=len(search),
                check_sentences=len(check), check_accuracy=check_accuracy[best],
                min_words=LONG_ROW_WORDS if len(long_rows) < len(train_x) else 0)
    print(f"demo: zero-shot SST-2 dev accuracy {zero['accuracy']:.3f}")

    def fine_tune(model_dir, name, lr, train=root / "sst2" / "train.tsv", steps=ft_steps, validation="sentences"):
        t = time.perf_counter()
        result = finetune(FinetuneArgs(model=str(model_dir), train=str(train), eval=str(root / "sst2" / "dev.tsv"),
                                       out=str(out / name), epochs=100.0, lr=lr, batch_size=32, max_length=64,
                                       seed=args.seed, max_steps=steps, eval_every=max(1, steps // 4),
                                       validation=validation, validation_fraction=0.1, device=args.device))
        return {**result, "steps": steps, "lr": lr, "seconds": time.perf_counter() - t}

    few_tsv = out / "few_labels" / "train.tsv"  # FEW_LABEL_ROWS rows of SST-2 train, drawn with the seed
    few_tsv.parent.mkdir(exist_ok=True)
    n_few = min(FEW_LABEL_ROWS, len(train_x) // 2)  # a small training file (tests) gives half its rows
    few = np.random.default_rng(args.seed + 1).choice(len(train_x), n_few, replace=False)
    few_tsv.write_text("sentence\tlabel\n" + "".join(f"{train_x[i]}\t{train_y[i]}\n" for i in few), encoding="utf-8")
    final = fine_tune(out / "pretrained", "finetuned", FINETUNE_LR["pretrained"])
    print(f"demo: fine-tuned SST-2 dev accuracy {final['accuracy']:.3f}")
    few_labels = {"rows": n_few, "finetuned": fine_tune(
        out / "pretrained", "few_labels/finetuned", FINETUNE_LR["pretrained"], few_tsv, FEW_LABEL_STEPS, "rows")}
    with tempfile.TemporaryDirectory(dir=out) as init:  # the same architecture, random weights
        manual_seed(args.seed)
        BertForMaskedLM(BertConfig.from_json(out / "pretrained" / "config.json")).save_pretrained(
            init, tokenizer=BertTokenizer.from_pretrained(out / "pretrained"))
        scratch = fine_tune(init, "from_scratch", FINETUNE_LR["random"])
        few_labels["from_scratch"] = fine_tune(init, "few_labels/from_scratch", FINETUNE_LR["random"], few_tsv,
                                               FEW_LABEL_STEPS, "rows")
    print(f"demo: from random weights, SST-2 dev accuracy {scratch['accuracy']:.3f}")
    print(f"demo: with {n_few:,} labelled rows, pretrained {few_labels['finetuned']['accuracy']:.3f}, "
          f"from random weights {few_labels['from_scratch']['accuracy']:.3f}")

    predictions = predict(out / "finetuned", EXAMPLES, device=args.device)
    for r in predictions:
        print(f"  {r['label']:>8} {r['probability']:.2f}  {r['text']}")
    for run, png in (("pretrained", "pretrain_loss.png"), ("finetuned", "finetune_loss.png"),
                     ("from_scratch", "from_scratch_loss.png")):
        shutil.copyfile(out / run / "loss.png", out / png)  # beside report.md, so the report travels whole
    dev_labels = read_tsv(root / "sst2" / "dev.tsv", num_labels=2)[1]
    report = {
        "command": command_line(args), "data": {"source": source, "corpora": corpora,
                                                "not_found": [n for n in PRETRAIN_CORPORA if n not in corpora]},
        "preset": args.preset, "seed": args.seed, "device": args.device, "backend": get_backend(),
        "cpu_count": os.cpu_count(), "dev_majority_share": float(max(dev_labels.mean(), 1 - dev_labels.mean())),
        "pretrain": pre, "zero_shot": zero, "finetuned": final, "from_scratch": scratch, "few_labels": few_labels,
        "predictions": predictions, "seconds": time.perf_counter() - started,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    path = out / "report.md"
    path.write_text(render_report(report), encoding="utf-8")
    print(f"demo: report written to {path}")
    return path


def render_report(r: dict) -> str:
    """report.md from the contents of report.json (and nothing else)."""
    pre, zero, ft, scratch = r["pretrain"], r["zero_shot"], r["finetuned"], r["from_scratch"]
    few = r.get("few_labels")  # reports made before the few-label runs have none
    long_rows = f" of at least {zero['min_words']} words" if zero.get("min_words") else ""
    where = f"{r['device'].upper()}" if r["device"] != "cpu" else f"CPU ({r['cpu_count']} cores)"
    not_found = r["data"]["not_found"]

    def minutes(seconds):
        return f"{seconds / 60:.1f} min"

    def tuned(run):
        return (f"dev accuracy {run['accuracy']:.3f}, macro-F1 {run['f1']:.3f} (checkpoint chosen at validation "
                f"accuracy {run['validation_accuracy']:.3f})")

    lines = [
        "# minillm demo report",
        "",
        f"Made by `{r['command']}`, data from {r['data']['source']}; preset `{r['preset']}`, seed {r['seed']}, "
        f"{r['backend']} kernels on the {where}; {r['seconds'] / 60:.1f} minutes in all.",
        "",
        "| stage | trained on | steps | time | result |",
        "| --- | --- | --- | --- | --- |",
        f"| MLM pretraining | {' + '.join(f'`{c}`' for c in pre['corpora'])} (text only) | {pre['steps']} | "
        f"{minutes(pre['seconds'])} | held-out MLM loss {pre['loss']:.3f}, perplexity {pre['perplexity']:.1f}, "
        f"masked-token accuracy {pre['mlm_accuracy']:.3f} |",
        f"| zero-shot cloze (`{zero.get('prompt', '{sentence} it was [MASK] .')}`, calibrated) | "
        + (f"nothing; label words {', '.join(zero['label_words'][0])} / {', '.join(zero['label_words'][1])} "
           f"({'searched on' if zero['searched'] else 'written out, preferred to those searched on'} "
           f"{zero['label_word_sentences']:,} `sst2/train.tsv` rows{long_rows}, by accuracy "
           f"{zero['check_accuracy']:.3f} on {zero['check_sentences']:,} others)"
           if "label_words" in zero else "nothing")
        + f" | 0 | {minutes(zero['seconds'])} | dev accuracy {zero['accuracy']:.3f} (n = {zero['n']}) |",
        f"| fine-tuning the pretrained model | `sst2/train.tsv` less its validation split | {ft['steps']} | "
        f"{minutes(ft['seconds'])} | {tuned(ft)} |",
        f"| fine-tuning from random weights (same architecture, same budget) | the same | {scratch['steps']} | "
        f"{minutes(scratch['seconds'])} | {tuned(scratch)} |",
        *([f"| few labels: fine-tuning the pretrained model | {few['rows']:,} rows of `sst2/train.tsv` (seeded), "
           f"10% of them held out for validation | {few['finetuned']['steps']} | "
           f"{minutes(few['finetuned']['seconds'])} | {tuned(few['finetuned'])} |",
           f"| few labels: from random weights | the same | {few['from_scratch']['steps']} | "
           f"{minutes(few['from_scratch']['seconds'])} | {tuned(few['from_scratch'])} |"] if few else []),
        "",
        ("Not in the data folder, so not used: " + ", ".join(f"`{n}`" for n in not_found) + "."
         if not_found else "Every pretraining corpus was found."),
        "",
        f"Model selection: each fine-tuning run (learning rate {ft.get('lr', 1e-4):g} pretrained, "
        f"{scratch.get('lr', 1e-4):g} from random weights) kept the checkpoint with the best accuracy on "
        f"{ft['validation_n']:,} whole SST-2 training sentences held out of its training (seeded); SST-2 dev "
        f"(n = {ft['n']}) was scored once, at the end, on that checkpoint, and chose nothing.",
        "",
        f"Pretraining gain on SST-2 dev: {100 * (ft['accuracy'] - scratch['accuracy']):+.1f} points with every "
        "labelled row" + (f", {100 * (few['finetuned']['accuracy'] - few['from_scratch']['accuracy']):+.1f} points "
                          f"with {few['rows']:,}" if few else "") + " (one seed each: a point or two is noise).",
        "",
        f"Chance on SST-2 dev is {100 * r['dev_majority_share']:.1f}% (the larger class). The published 2-layer "
        "BERT-Tiny, pretrained on billions of words, reaches 83.2% after fine-tuning; this model's pretraining "
        f"saw {pre['tokens_seen'] / 1e6:.1f} million tokens.",
        "",
        f"Confusion matrix of the fine-tuned model on SST-2 dev (rows: true, columns: predicted): `{ft['confusion']}`",
        "",
        "## Predictions",
        "",
        *[f"- {p['label']} ({p['probability']:.2f}): {p['text']}" for p in r["predictions"]],
        "",
        "## Curves",
        "",
        "![pretraining](pretrain_loss.png)",
        "",
        "![fine-tuning the pretrained model](finetune_loss.png)",
        "",
        "![fine-tuning from random weights](from_scratch_loss.png)",
        "",
    ]
    return "\n".join(lines)

"""Zero-shot SST-2 with the MLM head of a model minillm pretrained: the prompt and label words chosen on SST-2
*train*, then SST-2 dev scored once.

    python benchmarks/zero_shot_cloze.py --model runs/pretraining-study/tiny-alibi/pretrained
    # -> benchmarks/results/zero_shot_cloze.md / .json

Method: every (prompt, label words, calibrated or not) candidate in CANDIDATES is scored on the same
--choose sentences drawn (seeded) from SST-2 train, whose labels pick the best candidate by accuracy; only
that candidate is then run on SST-2 dev. The cloze classifier itself is minillm.train.finetune.zero_shot_scores:
the MLM head's probabilities of each label's words at the prompt's [MASK], summed per label, calibrated
by dividing by the scores of the empty sentence (Zhao et al. 2021) and normalised. Label words that are
not one token of the model's vocabulary are dropped (minillm.train.finetune.label_word_ids).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)  # benchmarks/kernels.py would shadow the kernels package
sys.path.insert(0, str(REPO))

PROMPTS = ("{sentence} it was [MASK] .", "{sentence} the movie was [MASK] .", "{sentence} overall , it was [MASK] .",
           "{sentence} a [MASK] movie .", "{sentence} this film is [MASK] .")
LABEL_WORDS = {
    "terrible/great": (("terrible", "bad", "awful"), ("great", "good", "wonderful")),
    "bad/good": (("bad",), ("good",)),
    "worst/best": (("terrible", "awful", "boring", "worst", "waste"), ("great", "excellent", "wonderful", "best",
                                                                        "perfect")),
}
CANDIDATES = list(itertools.product(PROMPTS, LABEL_WORDS, (True, False)))
SEARCH_K = (1, 3, 5, 10, 20)   # searched label words per label
RESULTS = REPO / "benchmarks" / "results" / "zero_shot_cloze"


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return float((probs.argmax(-1) == labels).mean())


def main(argv=None):
    from minillm.data import read_tsv
    from minillm.models.bert import BertForMaskedLM
    from minillm.tokenizer import BertTokenizer
    from minillm.train.finetune import MIN_MEAN_PROBABILITY, search_label_words, zero_shot_scores

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a folder written by `minillm pretrain` (MLM head)")
    ap.add_argument("--data", default=os.environ.get("MINILLM_DATA"), help="folder with sst2/ (MINILLM_DATA)")
    ap.add_argument("--choose", type=int, default=2000, help="SST-2 train sentences the choice is made on")
    ap.add_argument("--search", type=int, default=3000,
                    help="other SST-2 train sentences the label words are searched on (0: no search)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--results", default=str(RESULTS), help="results path without suffix")
    args = ap.parse_args(argv)
    if not args.data:
        raise SystemExit("--data or MINILLM_DATA: the folder with sst2/")
    model = BertForMaskedLM.from_pretrained(args.model)
    tok = BertTokenizer.from_pretrained(args.model)
    train_x, train_y = read_tsv(Path(args.data) / "sst2" / "train.tsv", num_labels=2)
    order = np.random.default_rng(args.seed).permutation(len(train_x))
    pick = order[:min(args.choose, len(train_x))]                       # ranks the candidates
    search = order[len(pick):len(pick) + args.search]                    # disjoint from it
    xs, ys = [train_x[i] for i in pick], np.asarray(train_y)[pick]
    words_of = dict(LABEL_WORDS)
    candidates = list(CANDIDATES)
    for prompt in PROMPTS if args.search else ():
        found = search_label_words(model, tok, [train_x[i] for i in search], np.asarray(train_y)[search], prompt,
                                   SEARCH_K)
        for k, words in found.items():
            name = f"searched k={k}: " + "/".join(",".join(w) for w in words) + f" ({prompt})"
            words_of[name] = words
            candidates.append((prompt, name, True))
    table = []
    for prompt, words, calibrate in candidates:
        acc = accuracy(zero_shot_scores(model, tok, xs, prompt, words_of[words], calibrate=calibrate), ys)
        table.append({"prompt": prompt, "label_words": words, "calibrated": calibrate, "train_accuracy": acc,
                      "words": words_of[words]})
        print(f"{acc:.3f}  {prompt!r}  {words}  calibrated={calibrate}", flush=True)
    best = max(table, key=lambda r: r["train_accuracy"])
    dev_x, dev_y = read_tsv(Path(args.data) / "sst2" / "dev.tsv", num_labels=2)
    dev = accuracy(zero_shot_scores(model, tok, dev_x, best["prompt"], best["words"],
                                    calibrate=best["calibrated"]), np.asarray(dev_y))
    default = next(r for r in table if r["prompt"] == PROMPTS[0] and r["label_words"] == "terrible/great"
                   and r["calibrated"])
    record = {"command": "python benchmarks/zero_shot_cloze.py " + " ".join(
                  a if not a.startswith(str(REPO)) else os.path.relpath(a, REPO) for a in (argv or sys.argv[1:])),
              "model": os.path.relpath(args.model, REPO) if os.path.isabs(args.model) else args.model,
              "choose_sentences": len(xs), "search_sentences": len(search), "seed": args.seed,
              "min_mean_probability": MIN_MEAN_PROBABILITY, "candidates": table, "chosen": best,
              "dev_accuracy": dev, "dev_n": len(dev_x), "dev_majority_share": float(max(np.mean(dev_y), 1 - np.mean(dev_y)))}
    out = Path(args.results)
    out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    out.with_suffix(".md").write_text(render(record, default))
    print(f"chosen on SST-2 train: {best}; SST-2 dev accuracy {dev:.4f}")


def render(r: dict, default: dict) -> str:
    c = r["chosen"]
    lines = ["# Zero-shot SST-2 with the MLM head (cloze), prompt chosen on SST-2 train", "",
             f"Regenerated by `{r['command']}`. Model: `{r['model']}`.", "",
             f"Chosen on {r['choose_sentences']} SST-2 *train* sentences (seed {r['seed']}) among "
             f"{len(r['candidates'])} candidates (written-out label words, and label words searched on "
             f"{r['search_sentences']} other SST-2 train sentences: per prompt, the whole words whose calibrated "
             f"log-probability at the [MASK] differs most between positive and negative sentences, among words "
             f"predicted there with mean probability >= {r['min_mean_probability']:g}; "
             f"`minillm.train.finetune.search_label_words`): prompt `{c['prompt']}`, label words {c['label_words']}, "
             f"{'calibrated' if c['calibrated'] else 'not calibrated'} (train accuracy {c['train_accuracy']:.3f}).",
             "",
             f"**SST-2 dev accuracy: {r['dev_accuracy']:.4f}** ({r['dev_n']} sentences, scored once; the larger "
             f"class is {r['dev_majority_share']:.3f}). The default prompt of `minillm evaluate --zero-shot` scored "
             f"{default['train_accuracy']:.3f} on the same train sentences.", "",
             "| prompt | label words | calibrated | SST-2 train accuracy |", "| --- | --- | --- | --- |"]
    for row in sorted(r["candidates"], key=lambda x: -x["train_accuracy"]):
        lines.append(f"| `{row['prompt']}` | {row['label_words']} | {row['calibrated']} | {row['train_accuracy']:.3f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

"""Why does a small BERT stall on the MLM plateau, and what gets it off? Probes in PyTorch (a peer, not minillm).

minillm's `tiny` preset (2 layers, width 128, 2 heads), pretrained on IMDb + WikiText-2 + SST-2 train, levels
off at a held-out MLM loss near 6.0 (the corpus' unigram entropy is 6.72 nats) and a masked-token accuracy of
13-14%, and its attention maps show heads that look at the same few keys from every query: a bag of words.
tests/test_training_parity.py shows that minillm's steps are PyTorch's steps; this script asks whether
transformers' own BertForMaskedLM, trained the same way, stalls too, and which change lets it move on.

    python benchmarks/plateau_probe.py --config base alibi --steps 1500 --stop-after 750
    # writes benchmarks/results/plateau_probe.json (one record per configuration; reruns replace them)

Every configuration trains from the same seed on the same rows (minillm's own pipeline: WordPiece trained on
the corpus, documents split before packing into 128-token rows) with AdamW, weight decay 0.01 off biases and
LayerNorm, warm-up 6% then linear decay to 0 over --steps, clipping at 1.0, batch 32, 15% masking (80/10/10),
and is scored on the same fixed masking of 256 held-out rows every --eval-every steps. One thread per
process: run two configurations side by side on two cores.

Configurations (CONFIGS): the baseline; a 3x learning rate; pre-LN (transformers' RobertaPreLayerNorm);
a larger initial scale (0.06 instead of 0.02); larger initial Q/K only; sinusoidal initial positions; the
`mini` shape; and ALiBi (Press et al. 2022): -m_h |i - j| added to head h's scores, passed to transformers
as a 4-D additive attention mask, slopes 0.5 and 0.125.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)  # benchmarks/kernels.py would shadow the kernels package
sys.path.insert(0, str(REPO))

CONFIGS = {
    "base": {},
    "lr3e-3": {"lr": 3e-3},
    "pre-ln": {"prenorm": True},
    "init0.06": {"init": 0.06},
    "qk-init0.1": {"qk_init": 0.1},
    "sin-positions": {"sin_positions": 0.03},
    "pre-ln-lr3e-3": {"prenorm": True, "lr": 3e-3},
    "mini": {"layers": 4, "hidden": 256, "heads": 4},
    "alibi": {"alibi": (0.5, 0.125)},
}
CORPUS = ["imdb/unsup.txt", "wikitext2/test.txt", "wikitext2/valid.txt", "sst2/train.tsv"]
RESULTS = REPO / "benchmarks" / "results" / "plateau_probe.json"


def rows(data: Path, work: Path):
    """(train rows, held-out rows, tokenizer) from minillm's own pipeline, as `minillm pretrain` builds them."""
    from minillm.train.pretrain import PretrainArgs, prepare

    args = PretrainArgs(corpus=[str(data / c) for c in CORPUS], out=str(work), preset="tiny", steps=1)
    tok, _, train, held_out = prepare(args)
    return train, held_out, tok


def build(cfg: dict, vocab_size: int):
    import torch
    from transformers import BertConfig, BertForMaskedLM

    hidden = cfg.get("hidden", 128)
    shape = dict(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=cfg.get("layers", 2),
                 num_attention_heads=cfg.get("heads", 2), intermediate_size=4 * hidden, hidden_dropout_prob=0.0,
                 attention_probs_dropout_prob=0.0, initializer_range=cfg.get("init", 0.02))
    if cfg.get("prenorm"):
        from transformers import RobertaPreLayerNormConfig, RobertaPreLayerNormForMaskedLM

        return RobertaPreLayerNormForMaskedLM(RobertaPreLayerNormConfig(
            **shape, max_position_embeddings=130, pad_token_id=0, type_vocab_size=1))
    model = BertForMaskedLM(BertConfig(**shape, max_position_embeddings=128, attn_implementation="eager"))
    with torch.no_grad():
        if cfg.get("qk_init"):
            for name, p in model.named_parameters():
                if name.endswith(("query.weight", "key.weight")):
                    p.normal_(0.0, cfg["qk_init"])
        if cfg.get("sin_positions"):
            table = model.bert.embeddings.position_embeddings.weight
            n, d = table.shape
            angle = np.arange(n)[:, None] / 10000 ** (2 * np.arange(d // 2)[None, :] / d)
            sin = np.zeros((n, d))
            sin[:, 0::2], sin[:, 1::2] = np.sin(angle), np.cos(angle)
            table.copy_(torch.tensor(sin * cfg["sin_positions"], dtype=torch.float32))
    return model


def run(name: str, cfg: dict, train, held_out, tok, steps: int, stop_after: int, eval_every: int) -> dict:
    import torch

    from minillm.data import mask_tokens

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build(cfg, tok.vocab_size)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg.get("lr", 1e-3))
    warm = max(1, int(0.06 * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda u: min((u + 1) / warm, max(0.0, (steps - u) / (steps - warm))))
    bias = None
    if cfg.get("alibi"):
        i = torch.arange(train.shape[1])
        dist = (i[:, None] - i[None, :]).abs().float()
        bias = torch.stack([-m * dist for m in cfg["alibi"]])[None]  # (1, H, T, T), added to the scores

    def forward(ids, labels=None):
        extra = {} if bias is None else {"attention_mask": bias.expand(ids.shape[0], -1, -1, -1)}
        return model(input_ids=ids, labels=labels, **extra)

    def batch(r, rng):
        ids, labels = mask_tokens(r.astype(np.int64), rng, tok.mask_token_id, tok.vocab_size, tok.all_special_ids)
        return torch.from_numpy(ids), torch.from_numpy(labels)

    erng = np.random.default_rng(123)
    evals = [batch(held_out[i:i + 32], erng) for i in range(0, len(held_out), 32)]

    def evaluate():
        model.eval()
        total, correct, n = 0.0, 0, 0
        with torch.no_grad():
            for ids, labels in evals:
                keep = labels != -100
                logits = forward(ids).logits[keep]
                total += torch.nn.functional.cross_entropy(logits, labels[keep], reduction="sum").item()
                correct += int((logits.argmax(-1) == labels[keep]).sum())
                n += int(keep.sum())
        model.train()
        return {"loss": round(total / n, 4), "mlm_accuracy": round(correct / n, 4)}

    rng, curve, t0 = np.random.default_rng(0), [], time.perf_counter()
    for step in range(1, stop_after + 1):
        ids, labels = batch(train[rng.integers(0, len(train), 32)], rng)
        loss = forward(ids, labels).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % eval_every == 0 or step == stop_after:
            curve.append({"step": step, **evaluate()})
            print(name, curve[-1], f"{time.perf_counter() - t0:.0f} s", flush=True)
    return {"name": name, "config": cfg, "steps": steps, "stop_after": stop_after, "curve": curve}


def render(records: dict) -> str:
    """plateau_probe.md from the records: held-out loss / masked-token accuracy per configuration and step."""
    steps = sorted({point["step"] for r in records.values() for point in r["curve"]})
    lines = ["# The MLM plateau in PyTorch: which change gets a small BERT off it", "",
             "Regenerated by `python benchmarks/plateau_probe.py --config NAME ...` (see its docstring for the method;",
             "`--render` rewrites this file from plateau_probe.json). transformers' BertForMaskedLM, `tiny` shape",
             "unless named, IMDb unsup + WikiText-2 valid/test + SST-2 train, rows of 128, batch 32, lr 1e-3, a",
             "1,500-step schedule stopped early; held-out MLM loss / masked-token accuracy (15% masking, 256 rows).",
             "The corpus' unigram entropy is 6.72 nats.", "",
             "| configuration | " + " | ".join(f"step {s}" for s in steps) + " |",
             "| --- |" + " --- |" * len(steps)]
    for name, r in records.items():
        at = {p["step"]: f"{p['loss']:.3f} / {p['mlm_accuracy']:.3f}" for p in r["curve"]}
        lines.append(f"| {name} | " + " | ".join(at.get(s, "") for s in steps) + " |")
    notes = [r["note"] for r in records.values() if r.get("note")]
    return "\n".join(lines + ([""] + sorted(set(notes)) if notes else [])) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", nargs="+", choices=sorted(CONFIGS), default=["base", "alibi"])
    ap.add_argument("--steps", type=int, default=1500, help="the schedule's length (warm-up and decay)")
    ap.add_argument("--stop-after", type=int, default=750, help="stop here (on the plateau or off it)")
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--data", default=os.environ.get("MINILLM_DATA"))
    ap.add_argument("--work", default="runs/plateau-probe")
    ap.add_argument("--results", default=str(RESULTS))
    ap.add_argument("--render", action="store_true", help="only rewrite the .md from the .json")
    args = ap.parse_args(argv)
    results = Path(args.results)
    if args.render:
        results.with_suffix(".md").write_text(render(json.loads(results.read_text())))
        return
    if not args.data:
        raise SystemExit("--data or MINILLM_DATA: the folder with imdb/, wikitext2/ and sst2/")
    train, held_out, tok = rows(Path(args.data), Path(args.work))
    records = json.loads(results.read_text()) if results.is_file() else {}
    for name in args.config:
        records[name] = run(name, CONFIGS[name], train, held_out, tok, args.steps, args.stop_after, args.eval_every)
        results.write_text(json.dumps(records, indent=1) + "\n")
        results.with_suffix(".md").write_text(render(records))


if __name__ == "__main__":
    main()

"""Where a minillm training step spends its time: matmuls, each fused kernel, the optimizer, and the rest
(autograd bookkeeping, reshapes/copies, allocation).

    python benchmarks/profile_step.py [--shape mini|minilm] [--head sparse|dense] [--steps 5] [--threads 2] [--save]

--save also writes the table to benchmarks/results/profile_step_<shape>_<head>.md (and its .json twin).

Each fused op's forward and backward is wrapped with a timer (the matmuls are the `linear` rows); the
"other" line is the step time minus everything timed, i.e. the engine's own overhead. Medians would hide
where time goes, so this reports the mean over --steps steps after two warm-up steps.
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import time

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--shape", choices=("mini", "minilm"), default="mini")
ap.add_argument("--head", choices=("sparse", "dense"), default="sparse")
ap.add_argument("--steps", type=int, default=5)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--save", action="store_true", help="write benchmarks/results/profile_step_<shape>_<head>.md / .json")
args = ap.parse_args()
for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(args.threads)
for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):  # together, as in benchmarks/_harness.py: no forced BLAS kernel
    os.environ.pop(var, None)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks._harness import blas_info  # noqa: E402

import numpy as np  # noqa: E402

import minillm as mm  # noqa: E402
import minillm.functional as F  # noqa: E402
from minillm.optim import AdamW  # noqa: E402
from minillm.train.loop import parameter_groups  # noqa: E402

spent = collections.defaultdict(float)


def timed(cls, name):
    for method in ("forward", "backward"):
        original = getattr(cls, method)

        def wrapper(self, *a, _original=original, _key=f"{name} {method}", **k):
            t = time.perf_counter()
            result = _original(self, *a, **k)
            spent[_key] += time.perf_counter() - t
            return result

        setattr(cls, method, wrapper)


for cls, name in [(F.Linear, "linear (matmul)"), (F.Attention, "attention"), (F.LayerNorm, "layer norm"),
                  (F.Gelu, "gelu"), (F.CrossEntropy, "cross-entropy"), (F.Softmax, "softmax")]:
    timed(cls, name)

L, C, H = (4, 256, 4) if args.shape == "mini" else (6, 384, 12)
V, B, T = 30522, 16, 128
config = mm.BertConfig(vocab_size=V, hidden_size=C, num_hidden_layers=L, num_attention_heads=H,
                       intermediate_size=4 * C, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
model = mm.BertForMaskedLM(config, sparse_head=(args.head == "sparse")).train()
optimizer = AdamW(parameter_groups(model, 0.01), lr=1e-4)
rng = np.random.default_rng(0)
ids = rng.integers(5, V, (B, T))
labels = np.where(rng.random((B, T)) < 0.15, ids, -100)
phase = collections.defaultdict(float)


def step():
    t0 = time.perf_counter()
    out = model(input_ids=ids, attention_mask=np.ones_like(ids), labels=labels)
    t1 = time.perf_counter()
    out.loss.backward()
    t2 = time.perf_counter()
    optimizer.step()
    optimizer.zero_grad()
    t3 = time.perf_counter()
    phase["forward"] += t1 - t0
    phase["backward"] += t2 - t1
    phase["optimizer (AdamW kernel)"] += t3 - t2


for _ in range(2):
    step()
spent.clear()
phase.clear()
for _ in range(args.steps):
    step()
n = args.steps
total = sum(phase.values()) / n
ops = sum(v for v in spent.values()) / n
command = (f"python benchmarks/profile_step.py --shape {args.shape} --head {args.head} --steps {n} "
           f"--threads {args.threads}" + (" --save" if args.save else ""))
rows = sorted(((k, v / n) for k, v in spent.items()), key=lambda kv: -kv[1])
rows += [("optimizer (AdamW kernel)", phase["optimizer (AdamW kernel)"] / n),
         ("other: autograd bookkeeping, reshapes, copies, allocation", total - ops - phase["optimizer (AdamW kernel)"] / n)]
lines = [f"# Step profile: {args.shape}, {args.head} head, batch {B} x {T}, {args.threads} threads", "",
         f"Mean of {n} steps after 2 warm-up steps; NumPy BLAS: {blas_info()}; OPENBLAS_CORETYPE and "
         "OPENBLAS_L2_SIZE removed from the environment. One process, minillm only: the ratios against PyTorch are "
         "in train_step.md.", "",
         f"Step: {total * 1000:.0f} ms = {B * T / total:.0f} tokens/s "
         f"({', '.join(f'{k} {v / n * 1000:.0f} ms' for k, v in phase.items())})", "",
         "| part | ms per step | share |", "| --- | --- | --- |",
         *[f"| {name} | {seconds * 1000:.1f} | {seconds / total:.0%} |" for name, seconds in rows], ""]
print(f"Command: `{command}`\n")
print("\n".join(lines))
if args.save:
    import json
    from pathlib import Path

    stem = Path(__file__).resolve().parent / "results" / f"profile_step_{args.shape}_{args.head}"
    stem.with_suffix(".md").write_text("\n".join([f"Regenerate: `{command}`", "", *lines]), encoding="utf-8")
    stem.with_suffix(".json").write_text(json.dumps(
        {"command": command, "shape": args.shape, "head": args.head, "threads": args.threads, "steps": n,
         "step_ms": total * 1000, "tokens_per_s": B * T / total,
         "phases_ms": {k: v / n * 1000 for k, v in phase.items()},
         "parts_ms": {name: seconds * 1000 for name, seconds in rows}}, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {stem.with_suffix('.md')}")

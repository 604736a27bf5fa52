"""What keeping freed memory buys: minillm under glibc's allocator defaults and under its own setting.

    python benchmarks/allocator.py [--threads 2] [--rounds 3] [--steps 5] [--quick]

`import minillm` asks glibc's malloc to keep freed memory for reuse (minillm/backend.py, keep_freed_memory;
docs/design.md, "Memory between steps"). MINILLM_KEEP_FREED_MEMORY=0 turns that off. This script runs the same
work both ways, each in fresh worker processes of its own, the two settings alternating over --rounds rounds,
and counts what the setting is about: the minor page faults (ru_minflt, one per 4 KiB page the kernel maps
and zeroes) per call, next to the time.

Cases (minillm only; the peer comparisons are in train_step.md and kernels.md):
  attention backward (16, 12, 128, 32) with fresh inputs: Q, K, V, dO, O copied into new arrays before each
      call, as a training step hands the kernel arrays it has just made.
  training step, BERT-mini and MiniLM shapes, B16 T128, sparse MLM head, dropout 0 (forward, backward,
      AdamW; the model and batch of benchmarks/profile_step.py).
Medians over rounds of each worker's median; nothing here asserts a speed.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import _harness as H  # noqa: E402

SETTINGS = {"glibc": "0", "kept": "1"}  # MINILLM_KEEP_FREED_MEMORY
SHAPES = {"mini": (4, 256, 4), "minilm": (6, 384, 12)}  # layers, width, heads (intermediate 4x width)
CASES = ("attention backward (16, 12, 128, 32), fresh inputs", "training step, mini, sparse head",
         "training step, minilm, sparse head")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=None, help="rounds (3; --quick 1)")
    ap.add_argument("--steps", type=int, default=None, help="timed calls per case and worker (5; --quick 2)")
    ap.add_argument("--quick", action="store_true", help="smoke run into a temp folder")
    ap.add_argument("--out", default=None)
    ap.add_argument("--_worker", choices=tuple(SETTINGS), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.steps = args.steps or (2 if args.quick else 5)
    args.out = args.out or (H.quick_out() if args.quick else H.RESULTS)
    return args


def measure(fn, calls: int, warmup: int = 1) -> dict:
    """fn() `warmup` times untimed, then `calls` times: the seconds of each and the mean minor page faults per
    call."""
    for _ in range(warmup):
        fn()
    times, faults = [], []
    for _ in range(calls):
        f0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    return {"times": times, "faults": sum(faults) / len(faults)}


def worker(args) -> dict:
    import numpy as np

    import minillm as mm
    from kernels.attention import cpu
    from minillm.optim import AdamW
    from minillm.train.loop import parameter_groups

    rng = np.random.default_rng(0)
    out = {"setting": mm.malloc_setting}
    B, H_, T, D = 16, 12, 128, 32
    q, k, v, dout = (rng.standard_normal((B, H_, T, D), dtype=np.float32) for _ in range(4))
    mask = np.ones((B, T), bool)
    mask[1::2, 3 * T // 4:] = False  # the last quarter of every other sequence is padding
    o, lse = cpu.attention_fwd(q, k, v, mask)
    out[CASES[0]] = measure(lambda: cpu.attention_bwd(*(a.copy() for a in (dout, q, k, v, o)), lse, mask),
                            4 * args.steps)
    V, B, T = 30522, 16, 128
    ids = rng.integers(5, V, (B, T))
    labels = np.where(rng.random((B, T)) < 0.15, ids, -100)
    for case, shape in zip(CASES[1:], SHAPES):
        L, C, heads = SHAPES[shape]
        config = mm.BertConfig(vocab_size=V, hidden_size=C, num_hidden_layers=L, num_attention_heads=heads,
                               intermediate_size=4 * C, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        model = mm.BertForMaskedLM(config, sparse_head=True).train()
        opt = AdamW(parameter_groups(model, 0.01), lr=1e-4)

        def step():
            model(input_ids=ids, attention_mask=np.ones_like(ids), labels=labels).loss.backward()
            opt.step()
            opt.zero_grad()

        # three untimed steps, as profile_step's two and one more: Numba's cache load and the AdamW moments,
        # and the heap growing to the step's high-water mark (the first steps' faults under either setting)
        out[case] = measure(step, args.steps, warmup=3)
        del model, opt
    return out


def run_worker(args, setting: str) -> dict:
    env = H.engine_env("minillm", args.threads)
    env["MINILLM_KEEP_FREED_MEMORY"] = SETTINGS[setting]
    cmd = [sys.executable, os.path.abspath(__file__), "--_worker", setting, "--steps", str(args.steps)]
    res = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, cwd=H.ROOT, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    args = parse_args(argv)
    if args._worker:
        print(json.dumps(worker(args)))
        return
    host, workers = H.host(), {s: [] for s in SETTINGS}
    for r in range(args.rounds):
        for setting in (tuple(SETTINGS) if r % 2 == 0 else tuple(SETTINGS)[::-1]):
            H.log(f"round {r + 1}/{args.rounds}: {setting}")
            w = run_worker(args, setting)
            want = "off" if setting == "glibc" else "set"
            if w["setting"] != want:
                raise SystemExit(f"the {setting} worker reports malloc_setting {w['setting']!r}, not {want!r}")
            workers[setting].append(w)
    rows = []
    for case in CASES:
        s = {k: H.summarize([w[case]["times"] for w in workers[k]]) for k in SETTINGS}
        f = {k: H.median([w[case]["faults"] for w in workers[k]]) for k in SETTINGS}
        rows.append({"case": case, **{k: {**s[k], "faults": f[k]} for k in SETTINGS},
                     "speedup": s["glibc"]["median"] / s["kept"]["median"]})
    cmd = H.command("allocator.py", ["--threads", args.threads, "--rounds", args.rounds, "--steps", args.steps]
                    + (["--quick"] if args.quick else []))
    md = ["# Keeping freed memory: glibc's defaults against minillm's setting", "",
          f"Machine: {host['cpu']}, {host['cores']} cores; load average (1 min) {host['loadavg'][0]:.2f} at the "
          f"start. minillm processes as in train_step.md ({args.threads} threads), "
          "MINILLM_KEEP_FREED_MEMORY=0 (glibc) or unset (kept: mmap threshold 1 GiB, trim threshold 2 GiB); "
          f"{args.rounds} round(s), the two alternating, {args.steps} timed steps per worker after 3 untimed ones "
          f"(the attention case: {4 * args.steps} calls after 1). ms: the median of the per-worker medians "
          "[fastest, slowest call]; "
          "faults: minor page faults per call (the median over workers of each worker's mean).", "",
          "| case | glibc ms | kept ms | glibc / kept | faults per call, glibc | faults per call, kept |",
          "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        g, k = r["glibc"], r["kept"]
        md.append(f"| {r['case']} | {g['median'] * 1e3:.1f} [{g['min'] * 1e3:.1f}, {g['max'] * 1e3:.1f}] | "
                  f"{k['median'] * 1e3:.1f} [{k['min'] * 1e3:.1f}, {k['max'] * 1e3:.1f}] | {r['speedup']:.2f}x | "
                  f"{g['faults']:,.0f} | {k['faults']:,.0f} |")
    md += ["", "A page fault maps one 4 KiB page and the kernel zeroes it; on a virtual machine each one also "
           "exits to the hypervisor. Kept memory is reused by the next step instead, so the faults per call fall "
           "to about none and the resident size stays at the step's high-water mark."]
    H.write_results(args.out, "allocator", cmd, md, {"host": host, "threads": args.threads, "rounds": args.rounds,
                                                     "steps": args.steps, "rows": rows})
    print(f"results in {args.out}")


if __name__ == "__main__":
    main()

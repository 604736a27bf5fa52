"""Data-parallel benchmark: a `minillm pretrain` step (mini preset, MLM) as 2 ranks x 1 thread against
1 rank x 2 threads on the same cores, and ZeRO-1's optimizer memory per rank.

    python benchmarks/distributed.py [--rounds 3] [--steps 5] [--batch-size 32] [--seq-len 128] [--quick]

What is timed is Trainer.train_step itself (minillm/train/loop.py): build the global batch, this rank's
rows, forward, backward, the bucketed gradient Allreduce, clipping, AdamW; on random MLM batches (15%
masked) of the pretrain preset's shape (vocab 8000, the default --vocab-size; sparse head; dropout 0).

Method (benchmarks/_harness.py says why): each configuration runs in fresh processes of its own, started
by this parent: `python benchmarks/distributed.py --_worker` with 2 threads for 1 rank, `mpiexec -n 2 ...`
with 1 thread per rank for 2 ranks; the configurations alternate over --rounds rounds. A worker runs one
untimed step (Numba's cache load, first-touch allocations), then --steps timed steps; rank 0 reports the
step times and the time spent summing gradients (the Allreduce). tokens/s = B*T / the median of the
per-round median step times. Every configuration's first-step loss must agree with 1 rank's within 1e-5
relative (float32 sums in another order; more would mean different work), or nothing is reported.

Also measured, in one round: each preset's step time on 1 rank x 2 threads (the t_1 of the scaling model
in docs/distributed.md), and ZeRO-1 against replicated AdamW on 2 ranks: AdamW moment bytes and peak
resident memory per rank. From t_1 and the parameter count the results file predicts the scaling
efficiency of 2-64 nodes at 10 and 100 Gbit/s (`predicted_efficiency`, the formula in its docstring).
Results: distributed.md/.json in benchmarks/results (--quick: a temp folder). Nothing here asserts a speed.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import _harness as H  # noqa: E402

VOCAB, MASK_RATE = 8000, 0.15
PRESETS = ("tiny", "mini", "small")
NODES = (2, 4, 8, 16, 32, 64)
LINKS_GBIT = (10, 100)
LATENCY_S = 5e-6  # per message on a cluster network (a few microseconds: the order of InfiniBand / RoCE)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=None, help="rounds per configuration (3; --quick 1)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per worker (5; --quick 2)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 round, 2 steps, tiny preset only")
    ap.add_argument("--out", default=None, help="results folder (default benchmarks/results; --quick: a temp folder)")
    ap.add_argument("--_worker", nargs=2, metavar=("PRESET", "ZERO"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.steps = args.steps or (2 if args.quick else 5)
    if args.out is None:
        args.out = H.quick_out() if args.quick else H.RESULTS
    return args


def canonical_command(args) -> str:
    flags = ["--rounds", args.rounds, "--steps", args.steps]
    for flag, value, default in (("--batch-size", args.batch_size, 32), ("--seq-len", args.seq_len, 128)):
        if value != default:
            flags += [flag, value]
    return H.command("distributed.py", flags + (["--quick"] if args.quick else []))


# ---- the worker: one configuration, in this process (one rank of it) ---------------------------------------
def worker(args, preset: str, zero: int) -> dict | None:
    import numpy as np

    import minillm as mm
    from minillm.train import distributed
    from minillm.train.loop import TrainConfig, Trainer
    from minillm.train.pretrain import preset_config

    mm.set_backend("numba")
    distributed.configure(zero=zero)
    comm = distributed.world()
    B, T = args.batch_size, args.seq_len

    def get_batch(step, micro, rng):
        ids = rng.integers(5, VOCAB, (B, T))                                      # (B, T)
        labels = np.where(rng.random((B, T)) < MASK_RATE, ids, -100)              # (B, T), ~15% labelled
        ids = np.where(labels != -100, 4, ids)                                    # [MASK] = 4
        return {"input_ids": ids, "attention_mask": np.ones_like(ids), "labels": labels}

    mm.manual_seed(0)
    model = mm.BertForMaskedLM(preset_config(preset, VOCAB, T), sparse_head=True)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(model, TrainConfig(steps=1000, lr=1e-4, warmup_steps=0), out, get_batch,
                          evaluate=lambda m: {"loss": 0.0}, save_model=lambda path: None)
        comm_s, real_sync = [], trainer.parallel.sync_gradients

        def timed_sync():
            t0 = time.perf_counter()
            real_sync()
            comm_s.append(time.perf_counter() - t0)

        trainer.parallel.sync_gradients = timed_sync
        first_loss = trainer.train_step()[0]
        trainer.step = 1
        H.reset_peak_rss()
        times = []
        for _ in range(args.steps):
            comm.barrier()  # every rank starts the step together: the step time is the job's
            t0 = time.perf_counter()
            trainer.train_step()
            times.append(time.perf_counter() - t0)
            trainer.step += 1
    memory = comm.allgather_object({"moment_bytes": distributed.moment_bytes(trainer.optimizer),
                                    "peak_mb": H.vm_kb("VmHWM") / 1024})
    if not comm.is_root:
        return None
    import numba

    return dict(preset=preset, ranks=comm.size, zero=zero, threads=numba.get_num_threads(), times=times,
                comm_s=comm_s[1:], first_loss=first_loss, params=model.num_parameters(), memory=memory,
                mpi=getattr(comm, "library", None), blas=H.blas_info())


def run_config(args, preset: str, ranks: int, zero: int = 0) -> dict:
    """One configuration in fresh processes: 1 rank x 2 threads, or `ranks` ranks x 1 thread under mpiexec."""
    from minillm.train import distributed

    threads = max(1, 2 // ranks)
    env = H.engine_env("minillm", threads)
    flags = ["--steps", str(args.steps), "--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len),
             "--_worker", preset, str(zero)]
    cmd = [sys.executable, os.path.abspath(__file__), *flags]
    if ranks > 1:
        cmd = [distributed.find_mpiexec(), "-n", str(ranks), *cmd]
    res = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, cwd=H.ROOT)
    if res.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


# ---- the parent ----------------------------------------------------------------------------------------------
def ring_allreduce_bytes(params: int, ranks: int) -> float:
    """Bytes each rank sends (and receives) in a ring Allreduce of the float32 gradients: 2 (n-1)/n x 4 P."""
    return 2 * (ranks - 1) / ranks * 4 * params


def predicted_efficiency(step_1: float, params: int, ranks: int, gbit: float, latency_s: float = LATENCY_S) -> dict:
    """Predicted scaling efficiency of `ranks` nodes, one rank per node, from the one-rank step time step_1.

    Communication (ring Allreduce, bandwidth-bound, Patarasuk & Yuan 2009): t_c = 2 (n-1)/n x 4 P / b +
    2 (n-1) x alpha, with b the link's bytes/s and alpha the per-message latency. Not overlapped with
    backward (as minillm runs it): t_n = t_compute + t_c.
      weak scaling (each node keeps the one-rank batch; the global batch grows n-fold): t_compute = step_1,
        efficiency = step_1 / (step_1 + t_c);
      strong scaling (minillm's --batch-size: the global batch fixed, split n ways): t_compute = step_1 / n,
        efficiency = (step_1 / n) / (step_1 / n + t_c) = speed-up / n.
    Assumes compute scales perfectly with the rows a rank gets (no fixed per-step cost), every link at its
    full rate, and no other traffic.
    """
    t_c = ring_allreduce_bytes(params, ranks) / (gbit * 1e9 / 8) + 2 * (ranks - 1) * latency_s
    weak = step_1 / (step_1 + t_c)
    strong = (step_1 / ranks) / (step_1 / ranks + t_c)
    return {"comm_s": t_c, "weak": weak, "strong": strong, "strong_speedup": strong * ranks}


def collect(args) -> dict:
    host = H.host()
    main = [("1 rank x 2 threads", 1, 0), ("2 ranks x 1 thread", 2, 0)]
    preset = "tiny" if args.quick else "mini"
    workers = []
    for r in range(args.rounds):
        for name, ranks, zero in (main if r % 2 == 0 else main[::-1]):
            H.log(f"round {r + 1}/{args.rounds}: {preset}, {name}")
            w = run_config(args, preset, ranks, zero)
            w.update(round=r, name=name)
            H.log("  steps " + ", ".join(f"{t:.3f}" for t in w["times"]) + " s" +
                  (f"; gradient Allreduce {H.median(w['comm_s']) * 1e3:.1f} ms" if ranks > 1 else ""))
            workers.append(w)
    H.log(f"{preset}: 2 ranks x 1 thread, ZeRO-1")
    zero = run_config(args, preset, 2, 1)
    singles = {}
    for p in (("tiny",) if args.quick else PRESETS):
        H.log(f"one rank x 2 threads: {p}")
        singles[p] = next((w for w in workers if w["preset"] == p and w["ranks"] == 1), None) or run_config(args, p, 1)
    B, T = args.batch_size, args.seq_len
    results = []
    for name, ranks, _ in main:
        ws = [w for w in workers if w["name"] == name]
        rel = max(abs(w["first_loss"] - workers[0]["first_loss"]) / workers[0]["first_loss"] for w in ws)
        if not rel <= 1e-5:
            raise SystemExit(f"{name}: first-step loss differs from 1 rank's by {rel:.1e} (> 1e-5): not the same step")
        s = H.summarize([w["times"] for w in ws])
        comm = [t for w in ws for t in w["comm_s"]]
        results.append(dict(name=name, ranks=ranks, threads=ws[0]["threads"], step_s=s,
                            tokens_per_s=B * T / s["median"], tokens_per_s_range=[B * T / s["max"], B * T / s["min"]],
                            allreduce_s=H.median(comm) if ranks > 1 and comm else 0.0, first_loss_rel_diff=rel,
                            memory=ws[0]["memory"]))
    plain = next(w for w in workers if w["ranks"] == 2)
    steps_1 = {p: H.median(w["times"]) for p, w in singles.items()}
    params = {p: w["params"] for p, w in singles.items()}
    prediction = {p: {str(n): {str(g): predicted_efficiency(steps_1[p], params[p], n, g) for g in LINKS_GBIT}
                      for n in NODES} for p in steps_1}
    return {
        "host": {"cpu": host["cpu"], "cores": host["cores"], "caches": host["caches"], "loadavg_start": host["loadavg"],
                 "loadavg_end": list(os.getloadavg())},
        "rounds": args.rounds, "steps": args.steps, "batch_size": B, "seq_len": T, "vocab": VOCAB, "preset": preset,
        "mpi": plain["mpi"], "blas": workers[0]["blas"].split(",")[:2] and ", ".join(workers[0]["blas"].split(",")[:2]),
        "results": results,
        "zero": {"replicated": plain["memory"], "zero1": zero["memory"],
                 "first_loss_rel_diff": abs(zero["first_loss"] - plain["first_loss"]) / plain["first_loss"]},
        "single_rank_step_s": steps_1, "params": params, "latency_s": LATENCY_S, "prediction": prediction,
    }


def write(args, data: dict) -> None:
    B, T, h = data["batch_size"], data["seq_len"], data["host"]
    one, two = data["results"]
    lines = ["# Data-parallel benchmark: 2 ranks x 1 thread vs 1 rank x 2 threads", "",
             f"Machine: {h['cpu']}, {h['cores']} cores, caches {h['caches']}; load average (1 min) "
             f"{h['loadavg_start'][0]:.2f} at the start, {h['loadavg_end'][0]:.2f} at the end. MPI: {data['mpi']}. "
             f"NumPy BLAS: {data['blas']}. Threads: NUMBA_NUM_THREADS=OMP_NUM_THREADS=OPENBLAS_NUM_THREADS = 2 for "
             "1 rank, 1 per rank for 2 ranks (what `--ranks 2` sets on a 2-core machine).", "",
             f"Step: `Trainer.train_step` of the {data['preset']} preset (MLM, sparse head, vocab {data['vocab']}), "
             f"global batch {B} x {T} = {B * T} tokens (15% masked), AdamW with gradient clipping. Each configuration "
             f"in fresh processes, the two alternating over {data['rounds']} rounds; one untimed step, then "
             f"{data['steps']} timed steps, every rank starting each step together (a barrier). tokens/s = {B * T} / "
             "the median of the per-round median step times [slowest, fastest single step]. The first-step losses "
             f"agree within {max(r['first_loss_rel_diff'] for r in data['results']):.1e} relative.", "",
             "| configuration | threads per rank | tokens/s | step s (median) | gradient Allreduce per step |",
             "| --- | --- | --- | --- | --- |"]
    for r in data["results"]:
        lo, hi = r["tokens_per_s_range"]
        lines.append(f"| {r['name']} | {r['threads']} | {r['tokens_per_s']:,.0f} [{lo:,.0f}, {hi:,.0f}] | "
                     f"{r['step_s']['median']:.3f} | {r['allreduce_s'] * 1e3:.1f} ms |" if r["ranks"] > 1 else
                     f"| {r['name']} | {r['threads']} | {r['tokens_per_s']:,.0f} [{lo:,.0f}, {hi:,.0f}] | "
                     f"{r['step_s']['median']:.3f} | none |")
    ratio = two["tokens_per_s"] / one["tokens_per_s"]
    lines += ["", f"2 ranks x 1 thread / 1 rank x 2 threads: **{ratio:.2f}x** the tokens/s."]
    if max(h["loadavg_start"][0], h["loadavg_end"][0]) > h["cores"]:
        lines += ["", f"The machine was shared (load average above its {h['cores']} cores): a process of 2 threads "
                  "loses more to a busy machine than two processes of 1 thread, since each of its parallel regions "
                  "waits for its slowest thread, and the one-rank step times t_1 below are longer than on an idle "
                  "machine. Read the ratio as an upper bound of what 2 ranks gain here."]
    lines += [""]
    z, rep = data["zero"]["zero1"], data["zero"]["replicated"]
    lines += ["ZeRO-1 against replicated AdamW, 2 ranks (measured on each rank after the timed steps; the peak is "
              "the process's resident memory, the model, activations and buffers included):", "",
              "| optimizer | rank | AdamW moments (bytes) | peak resident MB |", "| --- | --- | --- | --- |"]
    for name, mem in (("replicated", rep), ("ZeRO-1", z)):
        for rank, m in enumerate(mem):
            lines.append(f"| {name} | {rank} | {m['moment_bytes']:,} | {m['peak_mb']:.0f} |")
    lines += ["", f"ZeRO-1's first-step loss differs from the replicated run's by {data['zero']['first_loss_rel_diff']:.1e} "
              "relative. The moments halve; the peak does not move, because ZeRO-1 keeps a flat gradient and "
              "parameter buffer of 4 P bytes each where the replicated path keeps its 4 P bytes of gradient buckets, "
              "and activations dominate at this size.", ""]
    lines += ["## Predicted scaling on a cluster", "",
              "One rank per node, t_1 = this machine's measured one-rank step (1 rank x 2 threads, "
              f"batch {B} x {T}); communication t_c = 2 (n-1)/n x 4 P / b + 2 (n-1) x {data['latency_s'] * 1e6:.0f} us "
              "(ring Allreduce, not overlapped with backward). Weak scaling: each node keeps the batch (efficiency = "
              "t_1 / (t_1 + t_c)); strong scaling: the global batch fixed, as `--batch-size` is (efficiency = "
              "(t_1/n) / (t_1/n + t_c)). `predicted_efficiency` has the assumptions.", "",
              "| preset | params P | t_1 s | bytes sent per rank per step (n -> inf: 8 P) |",
              "| --- | --- | --- | --- |"]
    for p, t1 in data["single_rank_step_s"].items():
        P = data["params"][p]
        lines.append(f"| {p} | {P:,} | {t1:.3f} | {8 * P / 2**20:.1f} MB |")
    lines += ["", "| preset | link | " + " | ".join(f"n={n}" for n in NODES) + " |",
              "| --- | --- | " + " | ".join("---" for _ in NODES) + " |"]
    for p, by_n in data["prediction"].items():
        for g in LINKS_GBIT:
            cells = [f"{by_n[str(n)][str(g)]['weak']:.0%} / {by_n[str(n)][str(g)]['strong']:.0%}" for n in NODES]
            lines.append(f"| {p} | {g} Gbit/s | " + " | ".join(cells) + " |")
    lines += ["", "Each cell: weak-scaling / strong-scaling efficiency."]
    H.write_results(args.out, "distributed", canonical_command(args), lines, data)
    print(f"results in {args.out}")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args._worker:
        out = worker(args, args._worker[0], int(args._worker[1]))
        if out is not None:
            print(json.dumps(out))
        return 0
    from minillm.train import distributed

    if distributed.find_mpiexec() is None:
        raise SystemExit(f"no mpiexec: {distributed.INSTALL_HINT}")
    write(args, collect(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())

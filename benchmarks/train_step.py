"""Training-step benchmark: one BERT MLM step (forward, backward, AdamW) in minillm and in PyTorch, side by side.

    python benchmarks/train_step.py [--threads 2] [--rounds 3] [--steps 5] [--shapes mini,minilm]
                                    [--heads dense,sparse] [--quick]

Same model, same weights, same batch, same work in both engines: minillm (numba backend) against PyTorch eager
+ transformers, dropout 0, AdamW with weight decay 0.01 on every parameter. Two MLM heads, each compared
with the peer doing the same work:
  dense   scores all B*T positions: minillm `sparse_head=False`; PyTorch the standard HF forward with labels.
  sparse  scores only the M labelled positions: minillm `sparse_head=True`; PyTorch runs `model.bert`, gathers
          the labelled rows of the hidden states, then `model.cls` and cross-entropy (written out below).

Method (benchmarks/_harness.py says why): every (engine, shape, head) runs in a fresh worker process of its
own, with its engine's own settings; the engines alternate over --rounds rounds. A worker measures its
engine's float32 matmul rate, runs one step of a tiny model (Numba's cache load, PyTorch's lazy init), takes
its resident memory as the baseline, builds the model, and times one first step plus --steps steps on one
batch. tokens/s = B*T / the median of the per-round median step times. Peak MB = the process's peak
resident memory during the steps minus the baseline. MFU = model FLOPs per step / step time / the best
float32 matmul rate measured in the run. The first-step losses of the two engines must agree within 1e-3
relative, or nothing is reported. Results: train_step.md/.json/.png in benchmarks/results (--quick: a temp
folder), then the README table is refreshed (benchmarks/render_docs.py). Nothing here asserts a speed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import _harness as H  # noqa: E402

SHAPES = {  # name -> (layers L, width C, heads H, intermediate I)
    "mini": (4, 256, 4, 1024),
    "minilm": (6, 384, 12, 1536),
}
VOCAB, MASK_RATE, LR, WEIGHT_DECAY = 30522, 0.15, 1e-4, 0.01
MB = 2**20  # "MB" in the tables are 2^20 bytes (VmHWM is in kB = 1024 bytes)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=None, help="worker rounds per engine and config (3; --quick 1)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per worker, after the first (5; --quick 2)")
    ap.add_argument("--shapes", default="mini,minilm")
    ap.add_argument("--heads", default="dense,sparse")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 round, 2 steps")
    ap.add_argument("--out", default=None, help="results folder (default benchmarks/results; --quick: a temp folder)")
    ap.add_argument("--no-docs", action="store_true", help="do not refresh the generated tables in the docs")
    ap.add_argument("--_worker", nargs=3, metavar=("ENGINE", "SHAPE", "HEAD"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    for name, known in (("shapes", SHAPES), ("heads", ("dense", "sparse"))):
        if set(getattr(args, name).split(",")) - set(known):
            ap.error(f"--{name} {getattr(args, name)}: each must be one of {', '.join(known)}")
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.steps = args.steps or (2 if args.quick else 5)
    if args.steps < 1:
        ap.error("--steps must be at least 1: the medians need timed steps")
    if args.out is None:
        args.out = H.quick_out() if args.quick else H.RESULTS
    return args


def canonical_command(args) -> str:
    flags = ["--threads", args.threads, "--rounds", args.rounds, "--steps", args.steps]
    for flag, value, default in (("--shapes", args.shapes, "mini,minilm"), ("--heads", args.heads, "dense,sparse"),
                                 ("--batch-size", args.batch_size, 16), ("--seq-len", args.seq_len, 128)):
        if value != default:
            flags += [flag, value]
    return H.command("train_step.py", flags + (["--quick"] if args.quick else []))


def config(shape: str, vocab: int = VOCAB) -> dict:
    L, C, Hh, I = SHAPES[shape]
    return dict(vocab_size=vocab, hidden_size=C, num_hidden_layers=L, num_attention_heads=Hh, intermediate_size=I,
                hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def make_batch(B: int, T: int, vocab: int, seed: int = 0) -> dict:
    """Random ids (B, T), no padding; exactly round(15% * B*T) labelled positions, -100 elsewhere."""
    import numpy as np

    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, (B, T))                                           # (B, T)
    labels = np.full(B * T, -100)
    picked = rng.choice(B * T, int(round(MASK_RATE * B * T)), replace=False)       # (M,)
    labels[picked] = rng.integers(0, vocab, picked.size)
    return dict(input_ids=ids, attention_mask=np.ones_like(ids), labels=labels.reshape(B, T))


def model_flops(shape: str, B: int, T: int, masked: int, head: str) -> float:
    """Matmul FLOPs of one training step: 6 * (matmul weights) * rows + attention 12 * L * T^2 * C * B.

    6 = 2 (multiply-add) * 3 (forward, and backward's two matmuls: input and weight gradients). The encoder's
    matmul weights per layer are 4 C^2 (Q, K, V, output) + 2 C I (the MLP), applied at all B*T tokens; the
    head's are C^2 (transform) + C V (decoder, tied to the embeddings), applied at B*T tokens (dense) or only
    at the M labelled ones (sparse). Attention: Q K^T and P V are 2 * 2 T^2 D per head, 4 T^2 C per layer and
    sequence, x3 for forward + backward. Embedding lookups, LayerNorm, GELU, softmax, AdamW: not counted.
    """
    L, C, Hh, I = SHAPES[shape]
    head_rows = B * T if head == "dense" else masked
    return 6 * L * (4 * C * C + 2 * C * I) * B * T + 6 * (C * C + C * VOCAB) * head_rows + 12 * L * T * T * C * B


# ---- the two engines: each maker returns (model, step); step(batch) runs one full training step, returns the loss


def make_minillm(cfg: dict, head: str):
    import minillm as mm

    mm.set_backend("numba")
    mm.manual_seed(0)
    model = mm.BertForMaskedLM(mm.BertConfig(**cfg), sparse_head=(head == "sparse"))
    model.train()
    opt = mm.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)

    def step(batch):
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss.item()

    return model, step


def make_torch(cfg: dict, head: str, state: dict | None = None):
    import torch
    import transformers

    model = transformers.BertForMaskedLM(transformers.BertConfig(**cfg))
    if state is not None:  # minillm's names are HF's; the decoder weight/bias are tied to word embeddings/bias
        missing, unexpected = model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in state.items()},
                                                    strict=False)
        if unexpected or set(missing) - {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias"}:
            raise RuntimeError(f"weight copy minillm -> transformers: missing {missing}, unexpected {unexpected}")
        assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight, "untied head"
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)  # PyTorch's default impl.

    def loss_of(batch):
        ids, am, labels = (torch.from_numpy(batch[k]) for k in ("input_ids", "attention_mask", "labels"))
        if head == "dense":
            return model(input_ids=ids, attention_mask=am, labels=labels).loss
        hidden = model.bert(input_ids=ids, attention_mask=am).last_hidden_state   # (B, T, C)
        flat = labels.reshape(-1)                                                 # (B*T,)
        rows = (flat != -100).nonzero().squeeze(1)                                # (M,)
        logits = model.cls(hidden.reshape(-1, hidden.shape[-1])[rows])            # (M, C) -> (M, V)
        return torch.nn.functional.cross_entropy(logits, flat[rows])

    def step(batch):
        opt.zero_grad(set_to_none=True)
        loss = loss_of(batch)
        loss.backward()
        opt.step()
        return loss.item()

    return model, step


def worker(args, engine: str, shape: str, head: str) -> dict:
    """One engine, shape and head in this (fresh) process: matmul rate, baseline, first step, timed steps, peak."""
    import gc

    if engine == "torch":
        import torch  # before minillm: PyTorch's OpenMP reads its environment (wait policy) when it loads
        import transformers  # noqa: F401

        torch.set_num_threads(args.threads)
        machine = {"matmul_gflops": H.torch_matmul_gflops()}
        blas = H.torch_blas_info()
    else:
        machine = {"matmul_gflops": H.numpy_matmul_gflops()}
        blas = H.blas_info()
    import minillm as mm

    B, T = args.batch_size, args.seq_len
    make = make_minillm if engine == "minillm" else make_torch
    tiny = dict(config(shape), vocab_size=97, num_hidden_layers=1)
    make(tiny, head)[1](make_batch(B, T, 97))  # JIT cache load / lazy init, outside the baseline
    gc.collect()
    base_kb = H.vm_kb("VmRSS")
    batch = make_batch(B, T, VOCAB)
    if engine == "minillm":
        model, step = make_minillm(config(shape), head)
        params = model.num_parameters()
    else:  # the same initial weights as minillm's, then the minillm copy is dropped
        ours, _ = make_minillm(config(shape), head)
        params, state = ours.num_parameters(), ours.state_dict()
        _, step = make_torch(config(shape), head, state)
        del ours, state
    gc.collect()
    peak_reset = H.reset_peak_rss()  # the peak of the steps, not of building the model
    t0 = time.perf_counter()
    first_loss = step(batch)
    first_s = time.perf_counter() - t0
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        last_loss = step(batch)
        times.append(time.perf_counter() - t0)
    masked = int((batch["labels"] != -100).sum())
    return dict(engine=engine, shape=shape, head=head, machine=machine, blas=blas, times=times, first_s=first_s,
                first_loss=first_loss, last_loss=last_loss, params=params, masked=masked,
                peak_mb=(H.vm_kb("VmHWM") - base_kb) / 1024, baseline_mb=base_kb / 1024, peak_reset=peak_reset,
                minillm_version=mm.__version__, versions=H.engine_versions(engine))


# ---- the parent


def collect(args) -> dict:
    blas_seen = H.blas_overrides_seen()
    host = H.host()
    configs = [(s, h) for s in args.shapes.split(",") for h in args.heads.split(",")]
    workers = []
    script = os.path.abspath(__file__)
    base = ["--threads", str(args.threads), "--steps", str(args.steps), "--batch-size", str(args.batch_size),
            "--seq-len", str(args.seq_len)]
    for r in range(args.rounds):
        for k, (shape, head) in enumerate(configs):
            for engine, allocator in [(e, a) for e in H.engine_order(r + k) for a in H.ALLOCATORS[e]]:
                H.log(f"round {r + 1}/{args.rounds}: {engine} {shape} {head} (allocator: {allocator})")
                w = H.run_worker(script, base + ["--_worker", engine, shape, head], engine, args.threads,
                                 allocator=allocator)
                w.update(round=r, allocator=allocator)
                H.log(f"  first step {w['first_s']:.2f} s, loss {w['first_loss']:.6f}; steps "
                      + ", ".join(f"{t:.3f}" for t in w["times"]) + f" s; peak {w['peak_mb']:.0f} MB")
                workers.append(w)
    machine = H.machine_lines(workers)
    line = machine["matmul_gflops"]["line"]
    results = []
    B, T = args.batch_size, args.seq_len
    for shape, head in configs:
        ws = {e: [w for w in workers if (w["engine"], w["shape"], w["head"]) == (e, shape, head)] for e in H.ENGINES}
        for b in ws["torch"]:
            rel = abs(ws["minillm"][0]["first_loss"] - b["first_loss"]) / abs(b["first_loss"])
            if not rel <= 1e-3:  # float32 sums in different orders differ ~1e-6; 1e-3: different models or data
                raise SystemExit(f"{shape}/{head}: first-step losses disagree by {rel:.1e} (> 1e-3): the two engines "
                                 "are not computing the same step; fix that before timing them")
        r = dict(shape=shape, head=head, params=ws["minillm"][0]["params"], masked=ws["minillm"][0]["masked"])
        r["flops"] = model_flops(shape, B, T, r["masked"], head)
        for e in H.ENGINES:  # per engine, its faster allocator setting (H.ALLOCATORS), and only its workers
            by_allocator = {}
            for w in ws[e]:
                by_allocator.setdefault(w["allocator"], []).append(w["times"])
            s = H.fastest(by_allocator)
            ws[e] = [w for w in ws[e] if w["allocator"] == s["allocator"]]
            r[e] = dict(step_s=s, allocator=s["allocator"], tokens_per_s=B * T / s["median"],
                        tokens_per_s_range=[B * T / s["max"], B * T / s["min"]],
                        mfu=r["flops"] / s["median"] / 1e9 / line, peak_mb=H.median([w["peak_mb"] for w in ws[e]]),
                        first_step_s=[w["first_s"] for w in ws[e]], first_loss=ws[e][0]["first_loss"],
                        last_loss=ws[e][0]["last_loss"])
        r["loss_rel_diff"] = abs(r["minillm"]["first_loss"] - r["torch"]["first_loss"]) / abs(r["torch"]["first_loss"])
        r["ratio"] = r["torch"]["step_s"]["median"] / r["minillm"]["step_s"]["median"]
        results.append(r)
    return {
        "host": {"cpu": host["cpu"], "cores": host["cores"], "caches": host["caches"],
                 "loadavg_start": host["loadavg"],
                 "loadavg_end": list(os.getloadavg())},
        "threads": args.threads, "rounds": args.rounds, "steps": args.steps, "batch_size": B, "seq_len": T,
        "vocab": VOCAB, "mask_rate": MASK_RATE, "lr": LR, "weight_decay": WEIGHT_DECAY, "dropout": 0.0,
        "shapes": {s: dict(zip(("layers", "width", "heads", "intermediate"), SHAPES[s]))
                   for s in args.shapes.split(",")},
        "settings": H.settings_text(args.threads),
        "blas": {e: next(w["blas"] for w in workers if w["engine"] == e) for e in H.ENGINES},
        "blas_overrides_seen": blas_seen,
        "versions": {e: next(w["versions"] for w in workers if w["engine"] == e) for e in H.ENGINES},
        "minillm_version": workers[0]["minillm_version"],
        "peak_reset": all(w["peak_reset"] for w in workers),
        "machine": machine, "results": results,
    }


def write(args, data: dict) -> None:
    B, T = data["batch_size"], data["seq_len"]
    tok = B * T
    line = data["machine"]["matmul_gflops"]["line"]
    lines = H.header_lines("Training-step benchmark: minillm vs PyTorch", data, data["threads"])
    lines += [
        f"Step: batch {B} x seq {T} = {tok} tokens, no padding; vocab {VOCAB}; {MASK_RATE:.0%} of positions labelled "
        f"(M = masked rows); dropout 0; AdamW lr {LR}, weight decay {WEIGHT_DECAY} on all parameters. minillm "
        f"{data['minillm_version']} (numba backend; {data['versions']['minillm']}); {data['versions']['torch']}.", "",
        "Shapes (layers/width/heads/intermediate): " + ", ".join(
            f"{s} {'/'.join(str(v) for v in d.values())}" for s, d in data["shapes"].items()) + ".", "",
        f"Method: each (engine, shape, head) in a fresh process of its own, engines alternating, {data['rounds']} "
        f"rounds; in each, one first step, then {data['steps']} timed steps on the same batch. tokens/s = {tok} / "
        "the median of the per-round median step times [from the slowest to the fastest single step]. ratio = "
        "PyTorch step time / minillm step time (> 1: minillm is faster). Peak MB: the process's peak resident "
        "memory during the steps minus its resident memory after the imports and one tiny-model step "
        "(median over rounds" + ("" if data["peak_reset"] else "; the peak could not be reset: it may include "
                                 "building the model") + "). "
        f"MFU: model FLOPs / step time / {line:.0f} GFLOP/s (the matmul line above).", "",
        "Model FLOPs per step = 6 * L * (4C^2 + 2CI) * B*T + 6 * (C^2 + C*V) * R + 12 * L * T^2 * C * B, with "
        "R = B*T rows for the dense head and R = M for the sparse one (matmuls only; `model_flops`).", "",
        "| shape | head | minillm tokens/s | PyTorch tokens/s | PyTorch / minillm | minillm peak MB | PyTorch peak MB "
        "| MFU minillm | MFU PyTorch |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in data["results"]:
        o, p = r["minillm"], r["torch"]
        lines.append(
            f"| {r['shape']} | {r['head']} | {o['tokens_per_s']:,.0f} [{o['tokens_per_s_range'][0]:,.0f}, "
            f"{o['tokens_per_s_range'][1]:,.0f}] | {p['tokens_per_s']:,.0f} [{p['tokens_per_s_range'][0]:,.0f}, "
            f"{p['tokens_per_s_range'][1]:,.0f}] | {r['ratio']:.2f}x | {o['peak_mb']:.0f} | {p['peak_mb']:.0f} "
            f"| {o['mfu']:.1%} | {p['mfu']:.1%} |")
    lines += ["", "Params N counts the tied embedding/decoder matrix once; weights, gradients and the two AdamW "
              "moments alone take 16 N bytes, the floor under both engines' peaks.", "",
              "| shape | head | params N (16 N MB) | M | GFLOP/step | minillm step s | PyTorch step s "
              "| first step s, round 1 (minillm / PyTorch) | first loss minillm / PyTorch (rel. diff) "
              "| loss after the steps |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in data["results"]:
        o, p = r["minillm"], r["torch"]
        so, sp = o["step_s"], p["step_s"]
        lines.append(
            f"| {r['shape']} | {r['head']} | {r['params'] / 1e6:.2f} M ({16 * r['params'] / MB:.0f}) | {r['masked']} "
            f"| {r['flops'] / 1e9:.1f} | {so['median']:.3f} [{so['min']:.3f}, {so['max']:.3f}] "
            f"| {sp['median']:.3f} [{sp['min']:.3f}, {sp['max']:.3f}] | {o['first_step_s'][0]:.2f} / "
            f"{p['first_step_s'][0]:.2f} | {o['first_loss']:.5f} / {p['first_loss']:.5f} ({r['loss_rel_diff']:.1e}) "
            f"| {o['last_loss']:.5f} / {p['last_loss']:.5f} |")
    lines += ["", "The first step of minillm includes whatever Numba compiling the tiny step left to do (usually "
              "none); PyTorch's includes its lazy initialisation. Neither is in the medians. The losses after the "
              "steps are a witness that the AdamW updates agree: the same batch again and again, so the loss falls, "
              "alike in both engines.", "",
              "Taken on a 2-core machine shared with other jobs (see the load average above): the figures are noisy "
              "and will be re-measured on a quiet machine with the command on the first line.", ""]
    H.write_results(args.out, "train_step", canonical_command(args), lines, data)
    plot(args.out, data)


def plot(out: str, data: dict) -> None:
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = data["results"]
    labels = [f"{r['shape']}\n{r['head']}" for r in results]
    x = np.arange(len(results))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for i, (engine, name, colour) in enumerate((("minillm", "minillm (numba)", "#1f77b4"),
                                                 ("torch", "PyTorch + transformers", "#ff7f0e"))):
        axes[0].bar(x + (i - 0.5) * 0.4, [r[engine]["tokens_per_s"] for r in results], 0.4, label=name, color=colour)
        axes[1].bar(x + (i - 0.5) * 0.4, [r[engine]["peak_mb"] for r in results], 0.4, color=colour)
    axes[0].set_ylabel("tokens/s (higher is better)")
    axes[1].set_ylabel("peak resident MB over baseline (lower is better)")
    axes[0].legend(fontsize=8)
    for ax in axes:
        ax.set_xticks(x, labels)
    fig.suptitle(f"BERT MLM training step, batch {data['batch_size']} x {data['seq_len']}, {data['threads']} threads, "
                 "each engine in its own processes")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "train_step.png"), dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args._worker:
        print(json.dumps(worker(args, *args._worker)))
        return
    data = collect(args)
    write(args, data)
    H.refresh_docs(args.out, args.no_docs)


if __name__ == "__main__":
    main()

"""The training step's matmuls alone: NumPy's BLAS (what minillm runs) against PyTorch's, product by product.

    python benchmarks/matmul_shapes.py [--threads 2] [--rounds 3] [--repeats 20] [--shapes mini,minilm] [--quick]

About 70% of minillm's training step is its linear layers (profile_step_minilm_sparse.md), and the step
runs at 0.84-0.91x PyTorch's speed (train_step.md). This script times those layers' matrix products by
themselves, so that the part of the gap that is one BLAS against another can be told apart from the rest.

The products: every linear layer of one sparse-head training step of the train_step.py shapes (B*T = 2048
rows; the head on the M = 15% masked rows; vocab V), forward y = x W^T and backward dX = dY W, dW = dY^T X,
written as minillm/functional.py::Linear writes them: `x @ W.T`, `g @ W`, `g.T @ x`, with W stored (out, in)
and the transposes as views. minillm's worker runs exactly these NumPy expressions (minillm imported first,
so its settings apply); PyTorch's runs the same expressions on torch tensors of the same values, under
torch.no_grad(). Bias additions, attention, and everything else in the step are left out.

Method (benchmarks/_harness.py says why): each (engine, shape) in a fresh worker process with its engine's
own settings, engines alternating over --rounds rounds; PyTorch under both allocator settings, each product
keeping the faster. Before timing, each worker checks each product against a float64 NumPy product of the
same seeded inputs (`check`). Per product: the median over rounds of each worker's median call. A shape's
"linear layers of one step" = the sum of each product's time times its count in a step (L per encoder
product, 1 per head product). Nothing here asserts a speed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import _harness as H  # noqa: E402
from benchmarks.train_step import MASK_RATE, SHAPES, VOCAB  # noqa: E402

EXPRS = {  # the products of minillm/functional.py::Linear; the same text runs on NumPy arrays and torch tensors
    "fwd": lambda x, w, g: x @ w.T,  # (R, K) @ (K, O) -> (R, O)
    "dX": lambda x, w, g: g @ w,     # (R, O) @ (O, K) -> (R, K)
    "dW": lambda x, w, g: g.T @ x,   # (O, R) @ (R, K) -> (O, K)
}


def layers(shape: str, rows: int) -> list:
    """(name, R rows, K in, O out, count per step) of each linear layer in one sparse-head step."""
    L, C, _, I = SHAPES[shape]
    M = int(round(MASK_RATE * rows))
    return [("QKV", rows, C, 3 * C, L), ("attention output", rows, C, C, L), ("FFN up", rows, C, I, L),
            ("FFN down", rows, I, C, L), ("head transform", M, C, C, 1), ("head decoder", M, C, VOCAB, 1)]


def products(shape: str, rows: int) -> list:
    """One dict per product: its layer, kind (EXPRS key), operand shapes, contraction length, FLOPs, count."""
    out = []
    for layer, R, K, O, count in layers(shape, rows):
        for kind, dims, inner in (("fwd", f"({R}, {K}) x ({K}, {O})", K), ("dX", f"({R}, {O}) x ({O}, {K})", O),
                                  ("dW", f"({O}, {R}) x ({R}, {K})", R)):
            out.append(dict(name=f"{layer} {kind}", layer=layer, kind=kind, dims=dims, R=R, K=K, O=O,
                            inner=inner, flops=2 * R * K * O, count=count))
    return out


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=None, help="worker rounds per engine and shape (3; --quick 1)")
    ap.add_argument("--repeats", type=int, default=None, help="timed calls per product and worker (20; --quick 3)")
    ap.add_argument("--shapes", default="mini,minilm")
    ap.add_argument("--rows", type=int, default=16 * 128, help="B*T rows of the encoder products (2048)")
    ap.add_argument("--quick", action="store_true", help="smoke run into a temp folder: 1 round, 3 calls")
    ap.add_argument("--out", default=None, help="results folder (default benchmarks/results; --quick: a temp folder)")
    ap.add_argument("--_worker", nargs=2, metavar=("ENGINE", "SHAPE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if set(args.shapes.split(",")) - set(SHAPES):
        ap.error(f"--shapes {args.shapes}: each must be one of {', '.join(SHAPES)}")
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.repeats = args.repeats or (3 if args.quick else 20)
    args.out = args.out or (H.quick_out() if args.quick else H.RESULTS)
    return args


def canonical_command(args) -> str:
    flags = ["--threads", args.threads, "--rounds", args.rounds, "--repeats", args.repeats]
    for flag, value, default in (("--shapes", args.shapes, "mini,minilm"), ("--rows", args.rows, 2048)):
        if value != default:
            flags += [flag, value]
    return H.command("matmul_shapes.py", flags + (["--quick"] if args.quick else []))


def check(expr, x, w, g, got, inner: int) -> float:
    """max |got - exact| / bound over the output, exact the float64 product of the same float32 inputs.

    bound = inner * eps32 * (|x|, |W|, |g| in the same product): a float32 dot product of `inner` terms, summed
    in any order, is off by at most about inner * u * sum |a_k b_k| (u = eps32 / 2, the unit roundoff), so
    this has a factor 2 to spare; BLAS's blocked sums usually stay far below it. A wrong operand or transpose
    is off by the size of the product itself, hundreds of times the bound or more. > 1: the product is wrong.
    """
    import numpy as np

    f64 = [a.astype(np.float64) for a in (x, w, g)]
    exact = expr(*f64)
    bound = inner * float(np.finfo(np.float32).eps) * expr(*[np.abs(a) for a in f64])
    return float(np.max(np.abs(np.asarray(got, dtype=np.float64) - exact) / bound))


def worker(args, engine: str, shape: str) -> dict:
    """One engine and shape in this (fresh) process: the matmul line, then each product checked and timed."""
    if engine == "torch":
        import torch  # first: its OpenMP reads the environment when it loads

        torch.set_num_threads(args.threads)
        machine, blas = {"matmul_gflops": H.torch_matmul_gflops()}, H.torch_blas_info()
        to_engine, to_numpy = torch.from_numpy, lambda t: t.numpy()
        no_grad = torch.no_grad()
    else:
        import contextlib

        import minillm  # noqa: F401  (first: its thread and allocator settings)

        machine, blas = {"matmul_gflops": H.numpy_matmul_gflops()}, H.blas_info()
        to_engine, to_numpy, no_grad = (lambda a: a), (lambda a: a), contextlib.nullcontext()
    import numpy as np

    rng = np.random.default_rng(0)
    out = {}
    with no_grad:
        for layer, R, K, O, _ in layers(shape, args.rows):
            x = rng.standard_normal((R, K), dtype=np.float32)           # (R, K) layer input
            w = 0.02 * rng.standard_normal((O, K), dtype=np.float32)    # (O, K) weight, stored (out, in)
            g = rng.standard_normal((R, O), dtype=np.float32)           # (R, O) gradient of the output
            ex, ew, eg = (to_engine(a) for a in (x, w, g))
            for p in [p for p in products(shape, args.rows) if p["layer"] == layer]:
                expr = EXPRS[p["kind"]]
                err = check(expr, x, w, g, to_numpy(expr(ex, ew, eg)), p["inner"])
                if not err <= 1:
                    raise SystemExit(f"{engine} {shape} {p['name']}: off by {err:.2g} x the float32 bound; "
                                     "not the product minillm's Linear computes")
                times = H.time_calls(lambda: expr(ex, ew, eg), args.repeats, budget_s=3.0)
                out[p["name"]] = dict(times=times, err_over_bound=err)
                H.log(f"  {engine} {shape} {p['name']}: {1e3 * H.median(times):.2f} ms (error {err:.1e} x bound)")
    return dict(engine=engine, shape=shape, machine=machine, blas=blas, products=out,
                versions=H.engine_versions(engine))


def collect(args) -> dict:
    host, blas_seen, workers = H.host(), H.blas_overrides_seen(), []
    shapes = args.shapes.split(",")
    base = ["--threads", str(args.threads), "--repeats", str(args.repeats), "--rows", str(args.rows)]
    for r in range(args.rounds):
        for k, shape in enumerate(shapes):
            for engine, allocator in [(e, a) for e in H.engine_order(r + k) for a in H.ALLOCATORS[e]]:
                H.log(f"round {r + 1}/{args.rounds}: {engine} {shape} (allocator: {allocator})")
                w = H.run_worker(os.path.abspath(__file__), base + ["--_worker", engine, shape], engine,
                                 args.threads, allocator=allocator)
                workers.append(dict(w, round=r, allocator=allocator))
    results = []
    for shape in shapes:
        rows = []
        for p in products(shape, args.rows):
            row = dict(p)
            for e in H.ENGINES:
                runs, by_allocator = [w for w in workers if (w["engine"], w["shape"]) == (e, shape)], {}
                for w in runs:
                    by_allocator.setdefault(w["allocator"], []).append(w["products"][p["name"]]["times"])
                s = H.fastest(by_allocator)
                row[e] = dict(s=s, gflops=p["flops"] / s["median"] / 1e9,
                              err_over_bound=max(w["products"][p["name"]]["err_over_bound"] for w in runs))
            row["ratio"] = row["torch"]["s"]["median"] / row["minillm"]["s"]["median"]
            rows.append(row)
        total = {e: sum(r["count"] * r[e]["s"]["median"] for r in rows) for e in H.ENGINES}
        flops = sum(r["count"] * r["flops"] for r in rows)
        results.append(dict(shape=shape, products=rows, step_flops=flops, step_s=total,
                            step_gflops={e: flops / total[e] / 1e9 for e in H.ENGINES},
                            ratio=total["torch"] / total["minillm"]))
    settings = H.settings_text(args.threads)
    settings["torch"] = settings["torch"].split("; gradients by")[0] + "; the products under torch.no_grad()"
    return {
        "host": dict(cpu=host["cpu"], cores=host["cores"], caches=host["caches"], loadavg_start=host["loadavg"],
                     loadavg_end=list(os.getloadavg())),
        "threads": args.threads, "rounds": args.rounds, "repeats": args.repeats, "rows": args.rows, "vocab": VOCAB,
        "masked_rows": int(round(MASK_RATE * args.rows)),
        "shapes": {s: dict(zip(("layers", "width", "heads", "intermediate"), SHAPES[s])) for s in shapes},
        "settings": settings, "blas": {e: next(w["blas"] for w in workers if w["engine"] == e) for e in H.ENGINES},
        "blas_overrides_seen": blas_seen,
        "versions": {e: next(w["versions"] for w in workers if w["engine"] == e) for e in H.ENGINES},
        "machine": H.machine_lines(workers), "results": results,
    }


def write(args, data: dict) -> None:
    lines = H.header_lines("The training step's matmuls: NumPy's BLAS (minillm) vs PyTorch's", data, data["threads"])
    worst = max(r[e]["err_over_bound"] for s in data["results"] for r in s["products"] for e in H.ENGINES)
    lines += [
        f"Products: every linear layer of one sparse-head training step, {data['rows']} encoder rows (batch 16 x "
        f"seq 128), the head on M = {data['masked_rows']} masked rows, vocab {data['vocab']}; weights W stored "
        "(out, in). fwd `x @ W.T`, dX `g @ W`, dW `g.T @ x` (minillm/functional.py::Linear), transposes as "
        f"views, float32; {data['versions']['minillm']} / {data['versions']['torch']}. Shapes (layers/width/"
        "heads/intermediate): " + ", ".join(f"{s} {'/'.join(str(v) for v in d.values())}"
                                            for s, d in data["shapes"].items()) + ".", "",
        f"Method: each (engine, shape) in a fresh process, engines alternating, {data['rounds']} rounds, "
        f"{data['repeats']} timed calls per product after one untimed; ms = the median over rounds of each "
        "process's median call [fastest, slowest call]. ratio = PyTorch ms / minillm ms (> 1: minillm is "
        "faster). count = times the product runs in one step. Checked first against a float64 product of the "
        "same inputs: the largest error was "
        f"{worst:.1e} of the float32 bound inner * eps32 * (|a| |b|) (`check`).", ""]
    for s in data["results"]:
        lines += [f"## {s['shape']}", "",
                  "| product | (rows, inner) x (inner, cols) | count | minillm ms | PyTorch ms | minillm GFLOP/s "
                  "| PyTorch GFLOP/s | ratio |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in s["products"]:
            o, p = r["minillm"], r["torch"]
            ms = {e: f"{1e3 * r[e]['s']['median']:.2f} [{1e3 * r[e]['s']['min']:.2f}, {1e3 * r[e]['s']['max']:.2f}]"
                  for e in H.ENGINES}
            lines.append(f"| {r['name']} | {r['dims']} | {r['count']} | {ms['minillm']} | {ms['torch']} "
                         f"| {o['gflops']:.0f} | {p['gflops']:.0f} | {r['ratio']:.2f}x |")
        lines.append("")
    lines += ["## One step's linear layers", "",
              "Sum over the products of count x ms (the bias additions and everything else in the step excluded).",
              "", "| shape | GFLOP | minillm ms | PyTorch ms | minillm GFLOP/s | PyTorch GFLOP/s | ratio |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for s in data["results"]:
        lines.append(f"| {s['shape']} | {s['step_flops'] / 1e9:.1f} | {1e3 * s['step_s']['minillm']:.1f} "
                     f"| {1e3 * s['step_s']['torch']:.1f} | {s['step_gflops']['minillm']:.0f} "
                     f"| {s['step_gflops']['torch']:.0f} | {s['ratio']:.2f}x |")
    lines += ["", "Set the total beside the training step's ratio in train_step.md: the step's matmuls alone run at "
              "about the same ratio, so the step's gap to PyTorch is mostly the gap between the two BLAS libraries "
              "on these shapes (docs/performance.md).", ""]
    H.write_results(args.out, "matmul_shapes", canonical_command(args), lines, data)
    print("\n".join(lines))
    print(f"results in {args.out}")


def main(argv=None) -> None:
    args = parse_args(argv)
    if args._worker:
        print(json.dumps(worker(args, *args._worker)))
        return
    write(args, collect(args))


if __name__ == "__main__":
    main()

"""Generation benchmark: greedy decoding tokens/s, minillm with and without its key/value cache, and transformers.

    python benchmarks/generate_speed.py [--threads 2] [--rounds 2] [--new-tokens 256] [--prompt-len 8]
                                        [--shapes small,gpt2-small] [--quick]

Three engines on the same random weights (GPT-2's init, seed 0), batch 1, a prompt of --prompt-len random
ids, --new-tokens new tokens, greedy, no end-of-text stop:
  cache   minillm `generate` (use_cache=True): the prompt once, then one token per step over the KV cache
  full    minillm `generate(use_cache=False)`: the whole sequence recomputed at every step
  torch   transformers' GPT2LMHeadModel.generate(do_sample=False, use_cache=True), the weights copied from
          minillm's model (the same names), torch.set_num_threads = the threads of the others

Method (benchmarks/_harness.py says why): every (engine, shape) runs in a fresh worker process with its
engine's own settings; the engines alternate over --rounds rounds (the order rotates by round). A worker
measures its engine's float32 matmul rate, runs one short generation (Numba's cache load, PyTorch's lazy
init), then times --repeats generations of --new-tokens tokens. tokens/s = new tokens / the median of the
per-round median times (prompt included: it is one step of the loop). The three engines must produce the
same tokens (cache and full: all of them; torch: at least the first --agree tokens, since float32 sums in
another order may flip a near-tie of random weights later on), or nothing is reported. The cache worker
then profiles one more generation (cProfile) and reports where its time goes: the block projections and
the vocabulary head (BLAS), the one-query attention kernel, the other kernel families, and the rest
(Python, allocation).

The floor of a cached step: at batch 1 a step multiplies one row by every weight matrix once, so it must
read every weight once; each worker measures how fast one BLAS matrix-vector product reads a 256 MB
matrix (the gemv line, far beyond any cache), and weight bytes / that line is the step's floor. A model
whose weights fit in the last-level cache can beat it. Results: generate.md/.json in benchmarks/results
(--quick: a temp folder). Nothing here asserts a speed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import _harness as H  # noqa: E402

SHAPES = {  # name -> (layers L, width C, heads H)
    "small": (4, 256, 4),
    "gpt2-small": (12, 768, 12),
}
VOCAB, N_POSITIONS = 50257, 1024
MODES = ("cache", "full", "torch")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=None, help="worker rounds per engine and shape (2; --quick 1)")
    ap.add_argument("--repeats", type=int, default=1, help="timed generations per worker")
    ap.add_argument("--new-tokens", type=int, default=None, help="new tokens per generation (256; --quick 32)")
    ap.add_argument("--prompt-len", type=int, default=8)
    ap.add_argument("--agree", type=int, default=32, help="leading tokens that minillm and transformers must share")
    ap.add_argument("--shapes", default="small,gpt2-small")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 round, 32 new tokens")
    ap.add_argument("--out", default=None, help="results folder (default benchmarks/results; --quick: a temp folder)")
    ap.add_argument("--_worker", nargs=2, metavar=("MODE", "SHAPE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if set(args.shapes.split(",")) - set(SHAPES):
        ap.error(f"--shapes {args.shapes}: each must be one of {', '.join(SHAPES)}")
    args.rounds = args.rounds or (1 if args.quick else 2)
    args.new_tokens = args.new_tokens or (32 if args.quick else 256)
    if args.repeats < 1 or args.new_tokens < 1 or args.prompt_len < 1:
        ap.error("--repeats, --new-tokens and --prompt-len must be at least 1")
    if args.prompt_len + args.new_tokens > N_POSITIONS:
        ap.error(f"--prompt-len + --new-tokens must fit GPT-2's {N_POSITIONS} positions")
    if args.out is None:
        args.out = H.quick_out() if args.quick else H.RESULTS
    return args


def canonical_command(args) -> str:
    flags = ["--threads", args.threads, "--rounds", args.rounds, "--new-tokens", args.new_tokens]
    for flag, value, default in (("--repeats", args.repeats, 1), ("--prompt-len", args.prompt_len, 8),
                                 ("--shapes", args.shapes, "small,gpt2-small"), ("--agree", args.agree, 32)):
        if value != default:
            flags += [flag, value]
    return H.command("generate_speed.py", flags + (["--quick"] if args.quick else []))


def config(shape: str) -> dict:
    L, C, Hh = SHAPES[shape]
    return dict(vocab_size=VOCAB, n_positions=N_POSITIONS, n_embd=C, n_layer=L, n_head=Hh, resid_pdrop=0.0,
                embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None)


GEMV_ROWS, GEMV_COLS = 1 << 16, 1 << 10   # a 256 MB float32 matrix: far beyond any cache


def numpy_gemv_gbs(repeats: int = 5) -> float:
    """GB/s at which NumPy's BLAS reads a matrix in a matrix-vector product (W x, W 256 MB): a decode step's
    pattern, one row of activations against every weight."""
    import numpy as np

    w = np.full((GEMV_ROWS, GEMV_COLS), 0.5, np.float32)    # the values do not change the time
    x = np.ones(GEMV_COLS, np.float32)
    return w.nbytes / min(H.time_calls(lambda: w @ x, repeats)) / 1e9


def torch_gemv_gbs(repeats: int = 5) -> float:
    import torch

    w = torch.full((GEMV_ROWS, GEMV_COLS), 0.5)
    x = torch.ones(GEMV_COLS)
    return w.numel() * 4 / min(H.time_calls(lambda: w @ x, repeats)) / 1e9


def weight_bytes(shape: str) -> int:
    """float32 bytes one cached step must read at least once: every block's weights and the (tied) embedding
    matrix, read by the vocabulary head. At batch 1 a step is bound by this traffic, not by FLOPs."""
    L, C, _ = SHAPES[shape]
    return 4 * (L * (12 * C * C + 13 * C) + VOCAB * C)


def prompt(n: int):
    import numpy as np

    return np.random.default_rng(0).integers(0, VOCAB, (1, n))


def minillm_model(shape: str):
    import minillm as mm

    mm.set_backend("numba")
    mm.manual_seed(0)
    return mm.GPT2LMHeadModel(mm.GPT2Config(**config(shape))).eval()


def make_minillm(shape: str, use_cache: bool):
    model = minillm_model(shape)
    return lambda ids, n: model.generate(ids, max_new_tokens=n, use_cache=use_cache)[0].tolist(), model


def make_torch(shape: str):
    import torch
    import transformers

    ours = minillm_model(shape)
    state = {k: torch.from_numpy(v.copy()) for k, v in ours.state_dict().items()}
    del ours
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**config(shape))).eval()
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise RuntimeError(f"weight copy minillm -> transformers: missing {missing}, unexpected {unexpected}")
    assert model.lm_head.weight is model.transformer.wte.weight, "untied head"
    model.generation_config.eos_token_id = None   # no early stop: every engine makes all the tokens

    def run(ids, n):
        with torch.no_grad():
            out = model.generate(torch.from_numpy(ids), max_new_tokens=n, do_sample=False, use_cache=True,
                                 pad_token_id=0, attention_mask=torch.ones(ids.shape, dtype=torch.long))
        return out[0].tolist()

    return run, model


PROFILE_GROUPS = ("block projections (BLAS)", "vocabulary head (BLAS)", "one query's attention (decode kernel)",
                  "attention kernel (the prompt)", "layernorm kernel", "gelu kernel", "sampling (argmax)")


def profile_minillm(model, ids, n: int) -> dict:
    """Seconds of one cached generation by where they go (cProfile's own time per function, grouped)."""
    import cProfile
    import inspect
    import pstats

    from minillm.models.gpt2 import Conv1D

    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.runcall(model.generate, ids, max_new_tokens=n)
    total = time.perf_counter() - t0
    groups = dict.fromkeys(PROFILE_GROUPS, 0.0)
    conv1d = (inspect.getsourcefile(Conv1D.infer), Conv1D.infer.__code__.co_firstlineno)
    stats = pstats.Stats(prof).stats
    for (path, line, name), (_, _, tottime, _, _) in stats.items():
        if (path, line) == conv1d:        # x W + b on arrays: the matmul and the bias add
            groups["block projections (BLAS)"] += tottime
        if path.endswith(os.path.join("minillm", "functional.py")) and name == "forward":
            groups["vocabulary head (BLAS)"] += tottime   # Linear.forward: h E^T, the one F.linear left
        if os.path.join("kernels", "attention") in path:
            groups["one query's attention (decode kernel)" if "decode" in name else
                   "attention kernel (the prompt)"] += tottime
        for family in ("layernorm", "gelu"):
            if os.path.join("kernels", family) in path:
                groups[f"{family} kernel"] += tottime
        if name == "next_tokens" or "argmax" in name:
            groups["sampling (argmax)"] += tottime
    profiled = sum(v[2] for v in stats.values())
    groups["everything else (Python, allocation)"] = max(0.0, profiled - sum(groups.values()))
    return {"total_s": total, "profiled_s": profiled, "groups": groups}


def time_head(model, repeats: int = 20) -> float:
    """Seconds of the vocabulary projection alone, logits (1, 1, V) = h (1, 1, C) E^T, as generate runs it."""
    import numpy as np

    import minillm as mm
    from minillm import functional as F

    h = mm.Tensor(np.random.default_rng(1).standard_normal((1, 1, model.config.n_embd)).astype(np.float32))
    with mm.no_grad():
        return H.median(H.time_calls(lambda: F.linear(h, model.transformer.wte.weight), repeats))


def worker(args, mode: str, shape: str) -> dict:
    engine = "torch" if mode == "torch" else "minillm"
    if engine == "torch":
        import torch  # before minillm: PyTorch's OpenMP reads its environment (wait policy) when it loads
        import transformers  # noqa: F401

        torch.set_num_threads(args.threads)
        machine = {"matmul_gflops": H.torch_matmul_gflops(), "gemv_gbs": torch_gemv_gbs()}
        blas = H.torch_blas_info()
    else:
        machine = {"matmul_gflops": H.numpy_matmul_gflops(), "gemv_gbs": numpy_gemv_gbs()}
        blas = H.blas_info()
    import minillm as mm

    ids = prompt(args.prompt_len)
    run, model = make_torch(shape) if engine == "torch" else make_minillm(shape, use_cache=(mode == "cache"))
    t0 = time.perf_counter()
    run(ids, 4)                                        # JIT cache load / lazy init, untimed
    first_s = time.perf_counter() - t0
    times, tokens = [], None
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        tokens = run(ids, args.new_tokens)
        times.append(time.perf_counter() - t0)
    out = dict(engine=engine, mode=mode, shape=shape, machine=machine, blas=blas, times=times, first_s=first_s,
               tokens=tokens[args.prompt_len:], minillm_version=mm.__version__, versions=H.engine_versions(engine))
    if mode == "cache":
        out["profile"] = profile_minillm(model, ids, args.new_tokens)
        out["head_s"] = time_head(model)
        out["params"] = model.num_parameters()
    return out


# ---- the parent


def collect(args) -> dict:
    blas_seen = H.blas_overrides_seen()
    host = H.host()
    shapes = args.shapes.split(",")
    workers = []
    script = os.path.abspath(__file__)
    base = ["--threads", str(args.threads), "--repeats", str(args.repeats), "--new-tokens", str(args.new_tokens),
            "--prompt-len", str(args.prompt_len)]
    for r in range(args.rounds):
        for k, shape in enumerate(shapes):
            order = MODES[(r + k) % 3:] + MODES[:(r + k) % 3]   # rotate: no engine always first
            for mode in order:
                H.log(f"round {r + 1}/{args.rounds}: {mode} {shape}")
                w = H.run_worker(script, base + ["--_worker", mode, shape], "torch" if mode == "torch" else "minillm",
                                 args.threads)
                w["round"] = r
                H.log(f"  {args.new_tokens} tokens in " + ", ".join(f"{t:.2f}" for t in w["times"]) + " s")
                workers.append(w)
    machine = H.machine_lines(workers)
    gemv = {e: max(w["machine"]["gemv_gbs"] for w in workers if w["engine"] == e and "gemv_gbs" in w["machine"])
            for e in H.ENGINES if any(w["engine"] == e and "gemv_gbs" in w["machine"] for w in workers)}
    if gemv:
        machine["gemv_gbs"] = {"per_engine": gemv, "line": max(gemv.values())}
    results = []
    for shape in shapes:
        ws = {m: [w for w in workers if (w["mode"], w["shape"]) == (m, shape)] for m in MODES}
        ref = ws["cache"][0]["tokens"]
        for w in ws["cache"] + ws["full"]:
            if w["tokens"] != ref:
                raise SystemExit(f"{shape}: minillm's {w['mode']} generation differs from the cached one: a bug; "
                                 "fix it before timing")
        agree = min(_common_prefix(ref, w["tokens"]) for w in ws["torch"])
        if agree < min(args.agree, args.new_tokens):
            raise SystemExit(f"{shape}: minillm and transformers agree on only {agree} leading tokens "
                             f"(< {args.agree}): not the same model or weights; fix that before timing")
        r = dict(shape=shape, params=ws["cache"][0]["params"], weight_bytes=weight_bytes(shape), agree=agree)
        for m in MODES:
            s = H.summarize([w["times"] for w in ws[m]])
            r[m] = dict(gen_s=s, tokens_per_s=args.new_tokens / s["median"],
                        tokens_per_s_range=[args.new_tokens / s["max"], args.new_tokens / s["min"]],
                        first_s=[w["first_s"] for w in ws[m]])
        r["cache_vs_full"] = r["full"]["gen_s"]["median"] / r["cache"]["gen_s"]["median"]
        r["cache_vs_torch"] = r["torch"]["gen_s"]["median"] / r["cache"]["gen_s"]["median"]
        profiles = [w["profile"] for w in ws["cache"]]
        r["profile"] = min(profiles, key=lambda p: p["total_s"])   # the least disturbed run
        r["head_s"] = H.median([w["head_s"] for w in ws["cache"]])
        results.append(r)
    return {
        "host": {"cpu": host["cpu"], "cores": host["cores"], "caches": host["caches"],
                 "loadavg_start": host["loadavg"], "loadavg_end": list(os.getloadavg())},
        "threads": args.threads, "rounds": args.rounds, "repeats": args.repeats, "new_tokens": args.new_tokens,
        "prompt_len": args.prompt_len, "batch_size": 1, "vocab": VOCAB,
        "shapes": {s: dict(zip(("layers", "width", "heads"), SHAPES[s])) for s in shapes},
        "settings": settings(args.threads),
        "blas": {e: next(w["blas"] for w in workers if w["engine"] == e) for e in H.ENGINES},
        "blas_overrides_seen": blas_seen,
        "versions": {e: next(w["versions"] for w in workers if w["engine"] == e) for e in H.ENGINES},
        "minillm_version": workers[0]["minillm_version"],
        "machine": machine, "results": results,
    }


def settings(threads: int) -> dict:
    """The harness's settings lines; PyTorch here runs inference only (no gradients)."""
    s = H.settings_text(threads, torch_allocators=("kept",))
    s["torch"] = s["torch"].split("; gradients")[0] + "; inference under torch.no_grad()"
    return s


def _common_prefix(a: list, b: list) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def write(args, data: dict) -> None:
    n, P = data["new_tokens"], data["prompt_len"]
    lines = H.header_lines("Generation benchmark: minillm (KV cache, full recompute) vs transformers", data,
                           data["threads"])
    lines += [
        f"Task: greedy decoding, batch 1, a prompt of {P} random ids, {n} new tokens, no end-of-text stop; random "
        f"weights (GPT-2's init, seed 0), vocabulary {VOCAB}. minillm {data['minillm_version']} (numba backend; "
        f"{data['versions']['minillm']}); {data['versions']['torch']}.", "",
        "Shapes (layers/width/heads): " + ", ".join(
            f"{s} {'/'.join(str(v) for v in d.values())}" for s, d in data["shapes"].items()) + ".", "",
        f"Method: each (engine, shape) in a fresh process of its own, the three engines in rotating order, "
        f"{data['rounds']} round(s); in each, one untimed 4-token generation, then {data['repeats']} timed "
        f"generation(s) of {n} tokens. tokens/s = {n} / the median of the per-round median times [slowest, "
        "fastest run]; the time includes the prompt's step. cache: `model.generate(ids)`; full: "
        "`model.generate(ids, use_cache=False)`; transformers: `GPT2LMHeadModel.generate(do_sample=False, "
        "use_cache=True)` on minillm's weights. The two minillm runs produced the same tokens; minillm and "
        "transformers the same first `agree` tokens (below; the run stops if fewer than "
        f"{args.agree}).", "",
        "| shape | params | cache tokens/s | full recompute tokens/s | transformers tokens/s | cache / full "
        "| cache / transformers | tokens agreeing with transformers |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in data["results"]:
        c, f, t = r["cache"], r["full"], r["torch"]
        rate = {m: f"{x['tokens_per_s']:,.2f} [{x['tokens_per_s_range'][0]:,.2f}, {x['tokens_per_s_range'][1]:,.2f}]"
                for m, x in (("cache", c), ("full", f), ("torch", t))}
        lines.append(f"| {r['shape']} | {r['params'] / 1e6:.1f} M | {rate['cache']} | {rate['full']} | {rate['torch']} "
                     f"| {r['cache_vs_full']:.1f}x | {r['cache_vs_torch']:.2f}x | {r['agree']} of {n} |")
    lines += ["", "cache / full and cache / transformers are ratios of generation times (> 1: the cached minillm "
              "run is faster). Goals: cache / full >= 5x, cache / transformers >= 1.0x.", "",
              "## Where a cached generation's time goes (minillm)", "",
              "One more cached generation in the cache worker under cProfile (own time per function, grouped; the "
              "profiler's overhead, about the difference between the profiled and the timed seconds, lands in "
              "'everything else'); the least disturbed of the rounds.", "",
              "| shape | timed s (no profiler) | profiled s | "
              + " | ".join(next(iter(data["results"]))["profile"]["groups"]) + " |",
              "| --- | --- | --- | " + " | ".join("---" for _ in next(iter(data["results"]))["profile"]["groups"]) +
              " |"]
    for r in data["results"]:
        p = r["profile"]
        lines.append(f"| {r['shape']} | {r['cache']['gen_s']['median']:.2f} | {p['total_s']:.2f} | " + " | ".join(
            f"{v:.2f} ({v / p['profiled_s']:.0%})" for v in p["groups"].values()) + " |")
    gemv = data["machine"].get("gemv_gbs")
    if gemv:
        per = gemv["per_engine"]
        lines += ["", "## How far a cached step is from its floor", "",
                  f"At batch 1 a step multiplies one row by every weight matrix once, so it must read every weight "
                  f"once: the floor of a step is weight bytes / the rate at which a matrix-vector product reads a "
                  f"matrix too large for any cache (the gemv line, measured in this run: {gemv['line']:.1f} GB/s; "
                  f"NumPy {per.get('minillm', float('nan')):.1f}, PyTorch {per.get('torch', float('nan')):.1f}; "
                  "weights that fit in the last-level cache can be read faster, and a step below the floor says "
                  "so). The vocabulary head (h E^T, V x C, the tied embedding matrix) is projected once per step "
                  "in both minillm modes (only the last position), so it bounds cache / full: a full step divided "
                  "by the floor is the most any cache could gain over this full recomputation.", "",
                  "| shape | weights MB | floor per step, ms | cached step, ms | cached step / floor | vocabulary "
                  "head alone, ms (share of a cached step) | full step, ms | full step / floor (cache / full "
                  "at the floor) |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in data["results"]:
            step_s = r["cache"]["gen_s"]["median"] / n
            full_s = r["full"]["gen_s"]["median"] / n
            floor_s = r["weight_bytes"] / (gemv["line"] * 1e9)
            lines.append(f"| {r['shape']} | {r['weight_bytes'] / 2**20:.0f} | {floor_s * 1e3:.2f} | "
                         f"{step_s * 1e3:.2f} | {step_s / floor_s:.2f} | {r['head_s'] * 1e3:.2f} "
                         f"({r['head_s'] / step_s:.0%}) | {full_s * 1e3:.2f} | {full_s / floor_s:.1f}x |")
    lines += ["",
              "Taken on a 2-core machine shared with other jobs (see the load average above): the absolute "
              "figures are noisy; the ratios are measured alternately in the same run. Re-measure on a quiet "
              "machine with the command on the first line.", ""]
    H.write_results(args.out, "generate", canonical_command(args), lines, data)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args._worker:
        print(json.dumps(worker(args, *args._worker)))
        return
    data = collect(args)
    write(args, data)
    print(f"results in {args.out}")


if __name__ == "__main__":
    main()

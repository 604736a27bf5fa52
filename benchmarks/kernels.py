"""Kernel benchmark and lab: the NumPy reference, the Numba kernels and PyTorch CPU, side by side, at BERT shapes.

    python benchmarks/kernels.py [--threads 2] [--rounds 3] [--quick]          # the kernels the engine uses
    python benchmarks/kernels.py --family softmax --versions                   # the lab: every numbered version
    minillm bench ...                                                          # the same script, same flags

Method (benchmarks/_harness.py says why): minillm and PyTorch each run in their own worker processes, with
their own settings, alternating over --rounds rounds; a time is the median of the per-round medians, with
[min, max] over every timed call. Before anything of ours is timed at a shape, its outputs at that very shape
are checked against the NumPy reference (forward outputs and every gradient); PyTorch's are checked too, so
that both sides compute the same thing. PyTorch's gradients come from `torch.autograd.grad` on fresh leaf
tensors, so nothing accumulates into `.grad` between calls.

The default run times the contract's kernels (`kernels.get("numba")`): forward and forward + backward, and
the compile time of their first call (first call minus a warm call: Numba compiling, or loading its on-disk
cache; the run says which). `--versions` times every numbered version in the family's `cpu.VERSIONS`:
forward versions on the forward, backward versions on the backward alone (fed the reference's saved
tensors), each with its achieved GB/s (GFLOP/s for attention) against the machine's lines measured in the
same run, and draws one roofline-style chart per family.

Results: kernels.md/.json (default run) and kernels_<family>.md/.json/.png (--versions) in benchmarks/results,
each starting with the command that regenerates it; then the generated tables in README.md and the kernels'
NOTES.md are refreshed from them (benchmarks/render_docs.py). --quick (1 round, 3 repeats, one shape per
family) writes to a temporary folder instead, and so does --family without --versions (kernels.md is the
table of every family; a run of some of them does not replace it). This is a benchmark, not a test:
nothing here asserts a speed.
"""
from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
import zlib

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import _harness as H  # noqa: E402

FAMILIES = ("softmax", "layernorm", "gelu", "cross_entropy", "attention", "adamw")
CASES = [  # (family, shape, variant); every padding mask: the last quarter of every other sequence is padding
    ("softmax", (49152, 128), ""),               # B32 x H12 x T128 rows of attention scores
    ("layernorm", (4096, 384), ""),              # B16 x T256 tokens, MiniLM width
    ("layernorm", (4096, 768), ""),              # BERT-base width
    ("gelu", (4096, 1536), ""),                  # MiniLM's intermediate activations
    ("cross_entropy", (2048, 30522), ""),        # B16 x T128 rows over the vocabulary, 15% labelled
    ("attention", (32, 12, 128, 32), "padding"),
    ("attention", (16, 4, 256, 32), "padding"),
    ("attention", (16, 4, 256, 32), "causal"),
    ("attention", (8, 4, 512, 64), "padding"),
    ("attention", (8, 4, 512, 64), "causal"),
    ("adamw", (11_000_000,), ""),                # BERT-mini's parameters in one buffer
]
EPS = 1e-12  # BERT's layer-norm epsilon


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=None, help="worker rounds per engine (default 3; --quick 1)")
    ap.add_argument("--repeats", type=int, default=None, help="timed calls per implementation and round (7; --quick 3)")
    ap.add_argument("--family", default="all", help="comma-separated families, or all: " + ", ".join(FAMILIES))
    ap.add_argument("--versions", action="store_true", help="time every numbered version of each family")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 round, 3 repeats, one shape per family")
    ap.add_argument("--out", default=None, help="results folder (default benchmarks/results; --quick, or --family "
                    "without --versions: a temp folder, since kernels.md is the run of every family)")
    ap.add_argument("--no-docs", action="store_true", help="do not refresh the generated tables in the docs")
    ap.add_argument("--_worker", choices=H.ENGINES, help=argparse.SUPPRESS)
    ap.add_argument("--_round", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    fams = FAMILIES if args.family == "all" else tuple(args.family.split(","))
    if set(fams) - set(FAMILIES):
        ap.error(f"--family {args.family}: each must be one of {', '.join(FAMILIES)} (or all)")
    args.families = fams
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.repeats = args.repeats or (3 if args.quick else 7)
    if args.out is None:  # kernels.md holds every family: a run of some of them must not replace it
        partial = args.family != "all" and not args.versions
        args.out = H.quick_out() if args.quick or partial else H.RESULTS
    return args


def cases_of(args) -> list:
    picked = [c for c in CASES if c[0] in args.families]
    if args.quick:  # the first shape of each family
        picked = [c for i, c in enumerate(picked) if c[0] not in {p[0] for p in picked[:i]}]
    return picked


def case_name(case) -> str:
    family, shape, variant = case
    return f"{family} {tuple(shape)}" + (f" {variant}" if variant else "")


def canonical_command(args) -> str:
    flags = ["--threads", args.threads, "--rounds", args.rounds]
    if args.repeats != (3 if args.quick else 7):
        flags += ["--repeats", args.repeats]
    if args.family != "all":
        flags += ["--family", args.family]
    if args.versions:
        flags.append("--versions")
    if args.quick:
        flags.append("--quick")
    return H.command("kernels.py", flags)


# ---- the cases. Each Bench builds the same inputs in every process (seeded by its name) and hands out
# callables: fwd(f), bwd(b, saved), fwd_bwd(f, b) for any implementation of the contract functions, and the
# same three for PyTorch. Each callable returns a tuple of outputs, for the check against the reference.


class Bench:
    unit = "B"  # bytes; attention counts FLOP
    passes = ("fwd", "fwd+bwd")

    def __init__(self, case):
        import numpy as np

        self.np = np
        self.family, self.shape, self.variant = case
        self.rng = np.random.default_rng(zlib.crc32(case_name(case).encode()))
        self.fwd_name, self.bwd_name = {
            "softmax": ("softmax_fwd", "softmax_bwd"), "layernorm": ("layernorm_fwd", "layernorm_bwd"),
            "gelu": ("gelu_fwd", "gelu_bwd"), "cross_entropy": ("cross_entropy_fwd", "cross_entropy_bwd"),
            "attention": ("attention_fwd", "attention_bwd"), "adamw": ("adamw_step", None)}[self.family]
        self.work, self.formula = self.describe(self.shape, self.variant)

    def randn(self, *shape):
        return self.rng.standard_normal(shape).astype(self.np.float32)

    def saved(self, f):
        """What the backward needs from one forward run of f."""
        return f()


class Softmax(Bench):
    def __init__(self, case):
        super().__init__(case)
        self.x, self.dy = self.randn(*self.shape), self.randn(*self.shape)

    @staticmethod
    def describe(shape, variant):
        n = math.prod(shape) * 4
        return ({"fwd": 2 * n, "bwd": 3 * n, "fwd+bwd": 5 * n},
                "fwd 2*N*L*4 (x in, y out); bwd 3*N*L*4 (y, dy in, dx out)")

    def fwd(self, f):
        return lambda: (f(self.x),)

    def bwd(self, b, saved):
        return lambda: (b(saved[0], self.dy),)

    def fwd_bwd(self, f, b):
        return lambda: (b(f(self.x), self.dy),)

    def torch(self, torch, F):
        x, dy = torch.from_numpy(self.x), torch.from_numpy(self.dy)

        def fb():
            xl = x.detach().requires_grad_()  # a fresh leaf: autograd.grad returns, .grad never accumulates
            return torch.autograd.grad(torch.softmax(xl, -1), (xl,), dy)

        xl = x.detach().requires_grad_()
        y = torch.softmax(xl, -1)
        return {"fwd": lambda: (torch.softmax(x, -1),), "fwd+bwd": fb,
                "bwd": lambda: torch.autograd.grad(y, (xl,), dy, retain_graph=True)}


class LayerNorm(Bench):
    def __init__(self, case):
        super().__init__(case)
        C = self.shape[-1]
        self.x, self.dy, self.w, self.b = self.randn(*self.shape), self.randn(*self.shape), self.randn(C), self.randn(C)

    @staticmethod
    def describe(shape, variant):
        n = math.prod(shape) * 4
        return ({"fwd": 2 * n, "bwd": 3 * n, "fwd+bwd": 5 * n},
                "fwd 2*N*C*4 (x in, y out); bwd 3*N*C*4 (dy, x in, dx out); (N,) and (C,) vectors not counted")

    def fwd(self, f):
        return lambda: f(self.x, self.w, self.b, EPS)

    def bwd(self, b, saved):
        _, mean, rstd = saved
        return lambda: b(self.dy, self.x, self.w, mean, rstd)

    def fwd_bwd(self, f, b):
        def run():
            _, mean, rstd = f(self.x, self.w, self.b, EPS)
            return b(self.dy, self.x, self.w, mean, rstd)
        return run

    def torch(self, torch, F):
        x, w, b, dy = (torch.from_numpy(a) for a in (self.x, self.w, self.b, self.dy))
        C = self.shape[-1]

        def fb():
            leaves = [a.detach().requires_grad_() for a in (x, w, b)]
            return torch.autograd.grad(F.layer_norm(leaves[0], (C,), leaves[1], leaves[2], EPS), leaves, dy)

        leaves = [a.detach().requires_grad_() for a in (x, w, b)]
        y = F.layer_norm(leaves[0], (C,), leaves[1], leaves[2], EPS)
        return {"fwd": lambda: (F.layer_norm(x, (C,), w, b, EPS),), "fwd+bwd": fb,
                "bwd": lambda: torch.autograd.grad(y, leaves, dy, retain_graph=True)}


class Gelu(Bench):
    def __init__(self, case):
        super().__init__(case)
        self.x, self.dy = self.randn(*self.shape), self.randn(*self.shape)

    @staticmethod
    def describe(shape, variant):
        n = math.prod(shape) * 4
        return {"fwd": 2 * n, "bwd": 3 * n, "fwd+bwd": 5 * n}, "fwd 2*n*4 (x in, y out); bwd 3*n*4 (x, dy in, dx out)"

    def fwd(self, f):
        return lambda: (f(self.x),)

    def saved(self, f):
        return ()

    def bwd(self, b, saved):
        return lambda: (b(self.x, self.dy),)

    def fwd_bwd(self, f, b):
        return lambda: (f(self.x), b(self.x, self.dy))[1:]

    def torch(self, torch, F):
        x, dy = torch.from_numpy(self.x), torch.from_numpy(self.dy)

        def fb():
            xl = x.detach().requires_grad_()
            return torch.autograd.grad(F.gelu(xl), (xl,), dy)

        xl = x.detach().requires_grad_()
        y = F.gelu(xl)
        return {"fwd": lambda: (F.gelu(x),), "fwd+bwd": fb,
                "bwd": lambda: torch.autograd.grad(y, (xl,), dy, retain_graph=True)}


class CrossEntropy(Bench):
    def __init__(self, case):
        super().__init__(case)
        N, V = self.shape
        self.z = self.randn(N, V)
        self.t = self.rng.integers(0, V, N)
        self.t[self.rng.random(N) < 0.85] = -100  # MLM: ~15% of the positions carry a label

    @staticmethod
    def describe(shape, variant):
        n = math.prod(shape) * 4
        return {"fwd": n, "bwd": 2 * n, "fwd+bwd": 3 * n}, "fwd N*V*4 (logits in); bwd 2*N*V*4 (logits in, dlogits out)"

    def fwd(self, f):
        return lambda: f(self.z, self.t)

    def bwd(self, b, saved):
        return lambda: (b(self.z, self.t, saved[1], 1.0),)

    def fwd_bwd(self, f, b):
        def run():
            _, lse = f(self.z, self.t)
            return (b(self.z, self.t, lse, 1.0),)
        return run

    def torch(self, torch, F):
        z, t = torch.from_numpy(self.z), torch.from_numpy(self.t)

        def fb():
            zl = z.detach().requires_grad_()
            return torch.autograd.grad(F.cross_entropy(zl, t), (zl,))

        zl = z.detach().requires_grad_()
        loss = F.cross_entropy(zl, t)
        return {"fwd": lambda: (F.cross_entropy(z, t),), "fwd+bwd": fb,
                "bwd": lambda: torch.autograd.grad(loss, (zl,), retain_graph=True)}


class Attention(Bench):
    unit = "FLOP"

    def __init__(self, case):
        super().__init__(case)
        B, Hh, T, D = self.shape
        self.q, self.k, self.v, self.dout = (self.randn(*self.shape) for _ in range(4))
        self.causal = self.variant == "causal"
        self.mask = None
        if self.variant == "padding":
            self.mask = self.np.ones((B, T), bool)
            self.mask[1::2, T - T // 4:] = False  # every other sequence: its last quarter is padding

    @staticmethod
    def describe(shape, variant):
        B, Hh, T, D = shape
        flops = 4 * B * Hh * T * T * D / (2 if variant == "causal" else 1)
        return ({"fwd": flops, "bwd": 2.5 * flops, "fwd+bwd": 3.5 * flops},
                "FLOP: fwd 4*B*H*T^2*D (Q K^T, P V); bwd 10*B*H*T^2*D (S again, dP, dV, dQ, dK); halved when causal; "
                "padding is counted as work (skipping it shows as a higher rate)")

    def fwd(self, f):
        return lambda: f(self.q, self.k, self.v, self.mask, self.causal)

    def bwd(self, b, saved):
        out, lse = saved
        return lambda: b(self.dout, self.q, self.k, self.v, out, lse, self.mask, self.causal)

    def fwd_bwd(self, f, b):
        def run():
            out, lse = f(self.q, self.k, self.v, self.mask, self.causal)
            return b(self.dout, self.q, self.k, self.v, out, lse, self.mask, self.causal)
        return run

    def torch(self, torch, F):
        q, k, v, dout = (torch.from_numpy(a) for a in (self.q, self.k, self.v, self.dout))
        m = None if self.mask is None else torch.from_numpy(self.mask)[:, None, None, :]  # True = may attend

        def sdpa(q, k, v):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=m, is_causal=self.causal)

        def fb():
            leaves = [a.detach().requires_grad_() for a in (q, k, v)]
            return torch.autograd.grad(sdpa(*leaves), leaves, dout)

        leaves = [a.detach().requires_grad_() for a in (q, k, v)]
        out = sdpa(*leaves)
        return {"fwd": lambda: (sdpa(q, k, v),), "fwd+bwd": fb,
                "bwd": lambda: torch.autograd.grad(out, leaves, dout, retain_graph=True)}


class AdamW(Bench):
    passes = ("step",)
    HYPER = (1e-4, 0.9, 0.999, 1e-8, 0.01, 10)  # lr, beta1, beta2, eps, weight decay, step

    def __init__(self, case):
        super().__init__(case)
        self.p, self.g, self.m = (self.randn(*self.shape) * 0.01 for _ in range(3))
        self.v = self.np.abs(self.m)
        self.start = (self.p.copy(), self.m.copy(), self.v.copy())  # timing updates p, m, v in place

    @staticmethod
    def describe(shape, variant):
        return {"step": 7 * math.prod(shape) * 4}, "7*n*4 (p, g, m, v in; p, m, v out)"

    def step(self, f, copy):
        """A step on copies (for the check: returns the new p, m, v) or in place (for timing)."""
        if copy:
            def run():
                p, m, v = (a.copy() for a in self.start)
                f(p, self.g, m, v, *self.HYPER)
                return p, m, v
            return run
        return lambda: f(self.p, self.g, self.m, self.v, *self.HYPER)

    def torch(self, torch, F):
        lr, b1, b2, eps, wd, step = self.HYPER

        def make():
            p0, m0, v0 = (a.copy() for a in self.start)
            p = torch.from_numpy(p0).requires_grad_()
            p.grad = torch.from_numpy(self.g)
            opt = torch.optim.AdamW([p], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd, fused=True)
            opt.state[p] = {"step": torch.tensor(float(step - 1)), "exp_avg": torch.from_numpy(m0),
                            "exp_avg_sq": torch.from_numpy(v0)}
            return p, opt

        def checked():
            p, opt = make()
            opt.step()
            s = opt.state[p]
            return p.detach(), s["exp_avg"], s["exp_avg_sq"]

        p, opt = make()
        return {"step": opt.step, "check": checked}


BENCHES = {"softmax": Softmax, "layernorm": LayerNorm, "gelu": Gelu, "cross_entropy": CrossEntropy,
           "attention": Attention, "adamw": AdamW}


def check(got, want, what: str) -> None:
    """Every output against the reference's: arrays within 1e-4 of the array's largest |entry|, scalars 1e-5.

    float32 kernels and the float32 reference sum up to 30522 terms in different orders and use different
    exps (the fast exp's error is 8e-8 relative): their differences stay below ~1e-5 of an array's largest
    entry. A wrong kernel (a mask inverted, an index off by one, a missing term) is off by O(1) of it.
    """
    import numpy as np

    from kernels.testing import assert_close

    for i, (g, w) in enumerate(zip(got, want)):
        g, w = (a.detach().numpy() if hasattr(a, "detach") else a for a in (g, w))
        if np.ndim(w) == 0:
            assert abs(float(g) - float(w)) <= 1e-5 * max(1.0, abs(float(w))), f"{what} output {i}: {g} vs {w}"
            continue
        w = np.asarray(w)
        finite = np.isfinite(w)
        scale = float(np.abs(w[finite]).max(initial=0.0)) or 1.0
        assert_close(np.asarray(g), w, atol=1e-4 * scale, rtol=0, name=f"{what} output {i}")


# ---- the workers


def numba_stats(module):
    """(cache hits, cache misses) summed over the Numba dispatchers of a module: loads vs compiles."""
    from numba.core.registry import CPUDispatcher

    hits = misses = 0
    for obj in vars(module).values():
        if isinstance(obj, CPUDispatcher):
            hits += sum(obj.stats.cache_hits.values())
            misses += sum(obj.stats.cache_misses.values())
    return hits, misses


def first_then_warm(fn, args, budget: float = 2.0, min_repeats: int = 3):
    """(outputs of the first call, its seconds, seconds of the warm calls after it).

    The first call of a Numba implementation compiles it (or loads Numba's on-disk cache) and then runs it
    once, so first - median(warm) is the compile (or load) time alone. Nothing else is inside that clock:
    the reference each output is checked against runs before or after, never between.
    """
    import time

    t0 = time.perf_counter()
    out = fn()
    first_s = time.perf_counter() - t0
    return out, first_s, H.time_calls(fn, args.repeats, budget, min_repeats=1 if args.quick else min_repeats,
                                      warmup=False)


def minillm_worker(args) -> dict:
    """Times our implementations; in the first round also the reference, and checks ours against it.

    The inputs are the same in every round (seeded by the case's name), so one check per implementation and
    shape is enough, and the slow reference (the teaching baseline, not the peer) is timed once.
    """
    first_round = args._round == 0
    machine = {"copy_gbs": H.numba_copy_gbs(), "matmul_gflops": H.numpy_matmul_gflops()}
    times, first = {}, {}
    for case in cases_of(args):
        name = case_name(case)
        H.log(f"[minillm] {name}")
        bench = BENCHES[case[0]](case)
        ref = importlib.import_module(f"kernels.{bench.family}.reference")
        cpu = importlib.import_module(f"kernels.{bench.family}.cpu")
        first[f"{name}|winner"] = {fn: next(v for v, f in cpu.VERSIONS[fn].items() if f is getattr(cpu, fn))
                                   for fn in cpu.VERSIONS}
        plan = []  # (pass, implementation, callable returning outputs for the check, callable to time, ours)
        if isinstance(bench, AdamW):  # in place: checked on copies of the starting state, timed in place
            ours = cpu.VERSIONS["adamw_step"] if args.versions else {"minillm": cpu.adamw_step}
            for impl, f in {**({"reference": ref.adamw_step} if first_round else {}), **ours}.items():
                plan.append(("step", impl, bench.step(f, copy=True), bench.step(f, copy=False), impl != "reference"))
        else:
            rf, rb = getattr(ref, bench.fwd_name), getattr(ref, bench.bwd_name)
            plan.append(("fwd", "reference", bench.fwd(rf), None, False))
            if args.versions:
                saved = bench.saved(bench.fwd(rf))
                plan += [("fwd", v, bench.fwd(f), None, True) for v, f in cpu.VERSIONS[bench.fwd_name].items()]
                plan.append(("bwd", "reference", bench.bwd(rb, saved), None, False))
                plan += [("bwd", v, bench.bwd(f, saved), None, True) for v, f in cpu.VERSIONS[bench.bwd_name].items()]
            else:
                f, b = getattr(cpu, bench.fwd_name), getattr(cpu, bench.bwd_name)
                plan += [("fwd", "minillm", bench.fwd(f), None, True),
                         ("fwd+bwd", "reference", bench.fwd_bwd(rf, rb), None, False),
                         ("fwd+bwd", "minillm", bench.fwd_bwd(f, b), None, True)]
            if not first_round:
                plan = [item for item in plan if item[1] != "reference"]
        want = {}
        for p, impl, run, timed, ours in plan:
            key = f"{name}|{p}|{impl}"
            before = numba_stats(cpu)
            out, first_s, ts = first_then_warm(run, args, min_repeats=1 if impl == "reference" else 3)
            compile_s = first_s - H.median(ts)
            if timed is not None:  # an in-place update: checked (and its compile timed) on copies, timed in place
                ts = H.time_calls(timed, args.repeats, 2.0, min_repeats=1 if args.quick else 3)
            if impl == "reference":
                want[p] = out
            elif first_round:
                check(out, want[p], f"{name} {p} {impl}")
            times[key] = ts
            if ours:
                hits, misses = (a - b for a, b in zip(numba_stats(cpu), before))
                first[key] = {"compile_s": max(0.0, compile_s), "hits": hits, "misses": misses}
    return {"machine": machine, "times": times, "first": first, "blas": H.blas_info()}


def torch_worker(args) -> dict:
    import torch  # first: PyTorch's OpenMP reads its environment when it loads
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    machine = {"copy_gbs": H.torch_copy_gbs(), "matmul_gflops": H.torch_matmul_gflops()}
    times = {}
    for case in cases_of(args):
        name = case_name(case)
        H.log(f"[torch] {name}")
        bench = BENCHES[case[0]](case)
        ref = importlib.import_module(f"kernels.{bench.family}.reference")
        peer = bench.torch(torch, F)
        if isinstance(bench, AdamW):
            if args._round == 0:
                check(peer["check"](), bench.step(ref.adamw_step, copy=True)(), f"{name} torch")
            times[f"{name}|step|torch"] = H.time_calls(peer["step"], args.repeats, 2.0)
            continue
        rf, rb = getattr(ref, bench.fwd_name), getattr(ref, bench.bwd_name)
        passes = ("fwd", "bwd") if args.versions else ("fwd", "fwd+bwd")
        for p in passes:
            if args._round == 0:  # the same inputs every round: one check is enough
                want = {"fwd": bench.fwd(rf), "bwd": bench.bwd(rb, bench.saved(bench.fwd(rf))),
                        "fwd+bwd": bench.fwd_bwd(rf, rb)}[p]()
                check(peer[p](), want, f"{name} {p} torch")
            times[f"{name}|{p}|torch"] = H.time_calls(peer[p], args.repeats, 2.0)
    return {"machine": machine, "times": times, "first": {}, "blas": H.torch_blas_info()}


# ---- the parent: rounds of workers, then the results files


def worker_argv(args, engine):
    argv = ["--_worker", engine, "--threads", str(args.threads), "--repeats", str(args.repeats),
            "--family", ",".join(args.families)]
    return argv + (["--versions"] if args.versions else []) + (["--quick"] if args.quick else [])


def collect(args) -> dict:
    blas_seen = H.blas_overrides_seen()
    host = H.host()
    workers = []
    script = os.path.abspath(__file__)
    for r in range(args.rounds):
        for engine in H.engine_order(r):
            for allocator in H.ALLOCATORS[engine]:
                H.log(f"round {r + 1}/{args.rounds}: {engine} (allocator: {allocator})")
                w = H.run_worker(script, worker_argv(args, engine) + ["--_round", str(r)], engine, args.threads,
                                 allocator=allocator)
                w.update(engine=engine, round=r, allocator=allocator)
                workers.append(w)
    keys = sorted({k for w in workers for k in w["times"]})
    rows = {}
    for k in keys:  # per case, the engine's faster allocator setting (minillm has one)
        by_allocator = {}
        for w in workers:
            if k in w["times"]:
                by_allocator.setdefault(w["allocator"], []).append(w["times"][k])
        rows[k] = H.fastest(by_allocator)
    firsts = {}
    for w in workers:
        for k, v in w["first"].items():
            firsts.setdefault(k, []).append(v)
    return {
        "host": {"cpu": host["cpu"], "cores": host["cores"], "caches": host["caches"],
                 "loadavg_start": host["loadavg"],
                 "loadavg_end": list(os.getloadavg())},
        "threads": args.threads, "rounds": args.rounds, "repeats": args.repeats,
        "settings": H.settings_text(args.threads),
        "blas": {e: next(w["blas"] for w in workers if w["engine"] == e) for e in H.ENGINES},
        "blas_overrides_seen": blas_seen,
        "machine": H.machine_lines(workers),
        "cases": [{"name": case_name(c), "family": c[0], "shape": list(c[1]), "variant": c[2],
                   "unit": BENCHES[c[0]].unit, "passes": list(BENCHES[c[0]].passes),
                   "work": BENCHES[c[0]].describe(c[1], c[2])[0], "formula": BENCHES[c[0]].describe(c[1], c[2])[1]}
                  for c in cases_of(args)],
        "times": rows, "first": firsts,
    }


def main(argv=None) -> None:
    args = parse_args(argv)
    if args._worker:
        out = (minillm_worker if args._worker == "minillm" else torch_worker)(args)
        print(__import__("json").dumps(out))
        return
    from benchmarks import kernels_report

    data = collect(args)
    cmd = canonical_command(args)
    if args.versions:
        for family in args.families:
            kernels_report.write_versions(args.out, cmd, data, family)
    else:
        kernels_report.write_main(args.out, cmd, data)
    H.refresh_docs(args.out, args.no_docs)


if __name__ == "__main__":
    main()

"""Kernel benchmark: the NumPy reference, the Numba kernels and PyTorch CPU, side by side, at BERT shapes.

    python benchmarks/kernels.py [--threads 2] [--quick] [--out benchmarks/results]

For every kernel and shape: validate the Numba result against the reference at that very shape, then time
the forward pass and forward + backward. The first Numba call (JIT compile, or loading the on-disk cache)
is reported apart; warm times are medians over the repeats with [min, max]. Memory-bound kernels get an
effective bandwidth (bytes formula in the table) next to this machine's copy bandwidth measured in the same
run; attention gets GFLOP/s next to the float32 matmul rate. Writes kernels.md and kernels.png to --out.

Thread count: Numba from NUMBA_NUM_THREADS, PyTorch from torch.set_num_threads, BLAS from
OPENBLAS/OMP/MKL_NUM_THREADS: all set to --threads before anything is imported.
This is a benchmark, not a test: nothing here asserts a speed.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--threads", type=int, default=int(os.environ.get("NUMBA_NUM_THREADS", 2)))
ap.add_argument("--quick", action="store_true", help="fewer reference repeats; for a smoke run")
ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
ARGS = ap.parse_args()
for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import importlib  # noqa: E402

import numpy as np  # noqa: E402
from numba import njit, prange  # noqa: E402

from kernels.testing import assert_close  # noqa: E402

try:
    import torch  # noqa: E402
    import torch.nn.functional as F  # noqa: E402

    torch.set_num_threads(ARGS.threads)
except ImportError:  # the peer is optional
    torch = None

REPEATS = 7
REF_REPEATS = 3 if ARGS.quick else REPEATS
MB = 1e6


def timeit(fn, repeats):
    """(median, min, max) seconds over `repeats` calls after one warm-up call."""
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts)), min(ts), max(ts)


# ---- the machine's own limits, measured in this run


@njit(cache=True, parallel=True)
def _copy(a, b):
    n = a.shape[0]
    chunk = 1 << 16
    for k in prange((n + chunk - 1) // chunk):
        for i in range(k * chunk, min(n, (k + 1) * chunk)):
            b[i] = a[i]


def machine_limits():
    a = np.random.default_rng(0).standard_normal(1 << 26).astype(np.float32)  # 256 MB: far beyond cache
    b = np.empty_like(a)
    t, _, _ = timeit(lambda: _copy(a, b), REPEATS)
    copy_gbs = 2 * a.nbytes / t / 1e9  # read + write
    m = np.random.default_rng(1).standard_normal((2048, 2048)).astype(np.float32)
    t, _, _ = timeit(lambda: m @ m, REPEATS)
    return copy_gbs, 2 * 2048**3 / t / 1e9


# ---- the cases: inputs, the three implementations, bytes or FLOPs


def K(backend, family):
    return importlib.import_module(f"kernels.{family}.{ {'numpy': 'reference', 'numba': 'cpu'}[backend]}")


def softmax_case(rng, shape):
    x = rng.standard_normal(shape).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)

    def ours(k):
        return (lambda: k.softmax_fwd(x)), (lambda: k.softmax_bwd(k.softmax_fwd(x), dy))

    def peer():
        xt, dyt = torch.from_numpy(x).requires_grad_(), torch.from_numpy(dy)
        return (lambda: torch.softmax(xt.detach(), -1)), (lambda: torch.softmax(xt, -1).backward(dyt))

    n = x.size * 4
    return ours, peer, (2 * n, 5 * n), "fwd 2NL*4 (x in, y out); +bwd 3NL*4 (y, dy in, dx out)"


def layernorm_case(rng, shape):
    x = rng.standard_normal(shape).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    w, b = rng.standard_normal(shape[-1]).astype(np.float32), rng.standard_normal(shape[-1]).astype(np.float32)

    def ours(k):
        def fb():
            y, mean, rstd = k.layernorm_fwd(x, w, b, 1e-12)
            return k.layernorm_bwd(dy, x, w, mean, rstd)

        return (lambda: k.layernorm_fwd(x, w, b, 1e-12)), fb

    def peer():
        xt, wt, bt = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))
        dyt = torch.from_numpy(dy)
        C = shape[-1]
        return (lambda: F.layer_norm(xt.detach(), (C,), wt.detach(), bt.detach(), 1e-12)), (
            lambda: F.layer_norm(xt, (C,), wt, bt, 1e-12).backward(dyt))

    n = x.size * 4
    return ours, peer, (2 * n, 5 * n), "fwd 2NC*4; +bwd 3NC*4 (dy, x in, dx out); mean/rstd/weights ignored"


def gelu_case(rng, shape):
    x = rng.standard_normal(shape).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)

    def ours(k):
        return (lambda: k.gelu_fwd(x)), (lambda: (k.gelu_fwd(x), k.gelu_bwd(x, dy)))

    def peer():
        xt, dyt = torch.from_numpy(x).requires_grad_(), torch.from_numpy(dy)
        return (lambda: F.gelu(xt.detach())), (lambda: F.gelu(xt).backward(dyt))

    n = x.size * 4
    return ours, peer, (2 * n, 5 * n), "fwd 2n*4; +bwd 3n*4 (x, dy in, dx out)"


def ce_case(rng, shape):
    N, V = shape
    z = rng.standard_normal(shape).astype(np.float32)
    t = rng.integers(0, V, N)
    t[rng.random(N) < 0.85] = -100  # MLM: ~15% of positions carry a label

    def ours(k):
        def fb():
            loss, lse = k.cross_entropy_fwd(z, t)
            return k.cross_entropy_bwd(z, t, lse, 1.0)

        return (lambda: k.cross_entropy_fwd(z, t)), fb

    def peer():
        zt, tt = torch.from_numpy(z).requires_grad_(), torch.from_numpy(t)
        return (lambda: F.cross_entropy(zt.detach(), tt)), (lambda: F.cross_entropy(zt, tt).backward())

    n = z.size * 4
    return ours, peer, (n, 3 * n), "fwd NV*4 (logits in); +bwd 2NV*4 (logits in, dlogits out)"


def adamw_case(rng, shape):
    p, g = rng.standard_normal((2,) + shape).astype(np.float32) * 0.01
    m, v = np.zeros_like(p), np.zeros_like(p)

    def ours(k):
        f = lambda: k.adamw_step(p, g, m, v, 1e-4, 0.9, 0.999, 1e-8, 0.01, 10)  # noqa: E731
        return f, None

    def peer():
        pt = torch.from_numpy(p.copy()).requires_grad_()
        pt.grad = torch.from_numpy(g)
        opt = torch.optim.AdamW([pt], lr=1e-4, weight_decay=0.01, foreach=True)
        opt.step()  # creates the state
        return opt.step, None

    n = p.size * 4
    return ours, peer, (7 * n, None), "7n*4 (p, g, m, v in; p, m, v out)"


def attention_case(rng, shape):
    B, H, T, D = shape
    q, k_, v, dout = (rng.standard_normal(shape).astype(np.float32) for _ in range(4))
    key_mask = np.ones((B, T), bool)
    key_mask[:, T - T // 4:] = False  # a padding mask: the last quarter of every sequence is padding
    key_mask[0] = True

    def ours(k):
        def fb():
            out, lse = k.attention_fwd(q, k_, v, key_mask)
            return k.attention_bwd(dout, q, k_, v, out, lse, key_mask)

        return (lambda: k.attention_fwd(q, k_, v, key_mask)), fb

    def peer():
        qt, kt, vt = (torch.from_numpy(a).requires_grad_() for a in (q, k_, v))
        mt, dt = torch.from_numpy(key_mask)[:, None, None, :], torch.from_numpy(dout)
        f = lambda: F.scaled_dot_product_attention(qt.detach(), kt.detach(), vt.detach(), attn_mask=mt)  # noqa
        return f, (lambda: F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mt).backward(dt))

    flops = 4 * B * H * T * T * D
    return ours, peer, (flops, 3.5 * flops), "FLOPs: fwd 4BHT^2D (QK^T, PV); fwd+bwd 14BHT^2D (bwd recomputes QK^T)"


CASES = [
    ("softmax", softmax_case, (384 * 128, 128)),
    ("layernorm", layernorm_case, (4096, 384)),
    ("layernorm", layernorm_case, (4096, 768)),
    ("gelu", gelu_case, (16 * 128, 1024)),
    ("gelu", gelu_case, (16 * 128, 1536)),
    ("cross_entropy", ce_case, (2048, 30522)),
    ("adamw", adamw_case, (11_000_000,)),
    ("attention", attention_case, (32, 12, 128, 32)),
    ("attention", attention_case, (8, 4, 512, 64)),
]


def validate(family, fwd_ref, fwd_ours):
    """Compare the first output of our forward with the reference's, norm-relative (see the tests)."""
    want, got = fwd_ref(), fwd_ours()
    want = want[0] if isinstance(want, tuple) else want
    got = got[0] if isinstance(got, tuple) else got
    if isinstance(want, float):
        assert abs(got - want) <= 1e-4 * max(1.0, abs(want)), (family, got, want)
        return
    scale = float(np.abs(want).max())
    assert_close(got, want, atol=1e-4 * scale, rtol=1e-4, name=family)  # float32 vs float32 reference


def validate_adamw(ref_mod, ours_mod, shape):
    """adamw updates in place: run both on copies of the same state and compare the parameters."""
    rng = np.random.default_rng(5)
    p, g, m = rng.standard_normal((3,) + shape).astype(np.float32)
    v = np.abs(m)
    ours = [a.copy() for a in (p, g, m, v)]
    ref = [a.copy() for a in (p, g, m, v)]
    ours_mod.adamw_step(*ours, 1e-4, 0.9, 0.999, 1e-8, 0.01, 10)
    ref_mod.adamw_step(*ref, 1e-4, 0.9, 0.999, 1e-8, 0.01, 10)
    assert_close(ours[0], ref[0], atol=1e-6, rtol=1e-6, name="adamw param")  # one float32 update


def main():
    rng = np.random.default_rng(0)
    copy_gbs, mm_gflops = machine_limits()
    print(f"threads={ARGS.threads}  copy {copy_gbs:.1f} GB/s  float32 matmul {mm_gflops:.0f} GFLOP/s", flush=True)
    rows, bars = [], []
    for family, make, shape in CASES:
        try:
            ref_mod, ours_mod = K("numpy", family), K("numba", family)
        except ImportError as e:
            print(f"{family} {shape}: not available ({e})")
            rows.append(f"| {family} | {shape} | not available | | | | | | |")
            continue
        ours, peer, (b_f, b_fb), formula = make(rng, shape)
        ref_f, ref_fb = ours(ref_mod)
        t0 = time.perf_counter()
        our_f, our_fb = ours(ours_mod)
        if family != "adamw":
            validate(family, ref_f, our_f)
        else:
            validate_adamw(ref_mod, ours_mod, shape)
        first = time.perf_counter() - t0
        if our_fb is not None:
            t0 = time.perf_counter()
            our_fb()
            first += time.perf_counter() - t0
        peer_f, peer_fb = peer() if torch is not None else (None, None)
        for label, fr, fo, fp, nbytes in (("fwd", ref_f, our_f, peer_f, b_f), ("fwd+bwd", ref_fb, our_fb, peer_fb, b_fb)):
            if fo is None:
                continue
            tr = timeit(fr, REF_REPEATS)
            to = timeit(fo, REPEATS)
            tp = timeit(fp, REPEATS) if fp is not None else None
            if family == "attention":
                rate = f"{nbytes / to[0] / 1e9:.1f} GFLOP/s ({100 * nbytes / to[0] / 1e9 / mm_gflops:.0f}% of matmul)"
            else:
                rate = f"{nbytes / to[0] / 1e9:.1f} GB/s ({100 * nbytes / to[0] / 1e9 / copy_gbs:.0f}% of copy)"
            vs = f"{tp[0] / to[0]:.2f}x" if tp else "n/a"
            peer_s = f"{tp[0] * 1e3:.2f} [{tp[1] * 1e3:.2f}, {tp[2] * 1e3:.2f}]" if tp else "not installed"
            row = (f"| {family} | {shape} | {label} | {tr[0] * 1e3:.2f} | {to[0] * 1e3:.2f} [{to[1] * 1e3:.2f}, "
                   f"{to[2] * 1e3:.2f}] | {peer_s} | {rate} | {vs} | {first:.2f} |")
            print(row, flush=True)
            rows.append(row)
            bars.append((f"{family}\n{'x'.join(map(str, shape))}\n{label}", tr[0], to[0], tp[0] if tp else np.nan))
        print(f"    bytes/FLOPs: {formula}")
    write(rows, bars, copy_gbs, mm_gflops)


def write(rows, bars, copy_gbs, mm_gflops):
    os.makedirs(ARGS.out, exist_ok=True)
    cmd = "python benchmarks/kernels.py " + " ".join(sys.argv[1:])
    with open(os.path.join(ARGS.out, "kernels.md"), "w") as f:
        f.write(f"# Kernel benchmark\n\nCommand: `{cmd.strip()}`; threads = {ARGS.threads} (Numba, PyTorch, BLAS).\n")
        f.write(f"Machine limits measured in the same run: copy {copy_gbs:.1f} GB/s (Numba prange copy of 256 MB, "
                f"read + write), float32 matmul {mm_gflops:.0f} GFLOP/s (NumPy 2048^3).\n\n")
        f.write("Times in ms: median [min, max] of 7 warm runs (reference: "
                f"{REF_REPEATS}). First call = JIT compile or cache load of fwd + fwd+bwd, seconds.\n"
                "Bytes: softmax/gelu fwd 2n*4, fwd+bwd 5n*4; layernorm the same with n = N*C; cross-entropy fwd "
                "N*V*4, fwd+bwd 3*N*V*4; adamw 7n*4. Attention FLOPs: fwd 4*B*H*T^2*D, fwd+bwd 3.5x that.\n\n")
        f.write("| kernel | shape | pass | NumPy ref ms | Numba ms | PyTorch ms | Numba rate | PyTorch / Numba | first call s |\n")
        f.write("| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
        f.write("\n".join(rows) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [b[0] for b in bars]
    x = np.arange(len(bars))
    fig, ax = plt.subplots(figsize=(max(8, len(bars) * 1.1), 5))
    for i, (name, col) in enumerate((("NumPy reference", "#999999"), ("Numba", "#1f77b4"), ("PyTorch CPU", "#ff7f0e"))):
        ax.bar(x + (i - 1) * 0.27, [b[1 + i] * 1e3 for b in bars], 0.27, label=name, color=col)
    ax.set_yscale("log")
    ax.set_ylabel("ms (log scale, lower is better)")
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_title(f"minillm kernels, {ARGS.threads} threads")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(ARGS.out, "kernels.png"), dpi=110)


if __name__ == "__main__":
    main()

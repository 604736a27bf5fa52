"""GPU benchmark of the "cupy" kernels against PyTorch CUDA, written to one Markdown file.

    python benchmarks/gpu_bench.py --out benchmarks/results/gpu.md [--tests-log FILE] [--quick]

For every kernel and shape it (1) checks our result against PyTorch's at that shape, then (2) times both
with CUDA events after warm-up, reporting the median and the spread (min..max) of the repeats, and the
effective bandwidth (bytes that must move, over time) next to the GPU's peak, or the FLOP rate for
attention. The first call of each family, which includes NVRTC compilation, is timed separately.
Needs CuPy and a CUDA build of PyTorch; prints "GPU: not available" and exits 0 without a GPU.

Byte formulas (float32 = 4 bytes; the minimum traffic of a fused kernel, not what it really moves):
    softmax   fwd 2NC (read x, write y)            bwd 3NC (read y, dy, write dx)
    layernorm fwd 2NC + 2N + 2C                    bwd 3NC + 2N + 3C (read x, dy, write dx; dw, db)
    gelu      fwd 2n                               bwd 3n
    cross-ent fwd NV + 2N (read logits)            bwd 2NV + 2N (read logits, write dlogits)
    adamw     7n (read p, g, m, v; write p, m, v)
    attention FLOPs 4 B H Tq Tk D forward (QK^T and PV), 2.5x that backward; halved when causal
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# Nominal HBM bandwidth by product name (bytes/s), for "% of peak"; the measured copy rate is also shown.
NOMINAL_BW = {"H200": 4.8e12, "H100 SXM": 3.35e12, "H100 PCIe": 2.0e12, "H100": 3.35e12, "A100-SXM4-80GB": 2.04e12,
              "A100": 1.555e12, "L40S": 0.864e12, "RTX 4090": 1.008e12}


def gpu_available():
    try:
        import cupy as cp
        return cp.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


class Timer:
    """Median and spread of `repeat` timed calls, each bracketed by CUDA events on the current stream."""

    def __init__(self, framework, warmup=3, repeat=20):
        self.framework, self.warmup, self.repeat = framework, warmup, repeat

    def __call__(self, fn):
        import cupy as cp
        import torch
        for _ in range(self.warmup):
            fn()
        times = []
        for _ in range(self.repeat):
            if self.framework == "torch":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record(); fn(); end.record(); end.synchronize()
                times.append(start.elapsed_time(end) * 1e-3)
            else:
                start, end = cp.cuda.Event(), cp.cuda.Event()
                start.record(); fn(); end.record(); end.synchronize()
                times.append(cp.cuda.get_elapsed_time(start, end) * 1e-3)
        return statistics.median(times), min(times), max(times)


def max_rel_err(got, want):
    """max |got - want| / max |want| (norm-relative, so tiny entries do not dominate)."""
    import cupy as cp
    got, want = (cp.from_dlpack(a.detach().contiguous()) if hasattr(a, "detach") else a for a in (got, want))
    got, want = cp.asarray(got, dtype=cp.float64), cp.asarray(want, dtype=cp.float64)
    return float(cp.abs(got - want).max() / max(float(cp.abs(want).max()), 1e-30))


class Report:
    def __init__(self, peak_bw):
        self.rows, self.failures, self.peak_bw = [], [], peak_bw

    def add(self, op, shape, ours, theirs, err, tol, nbytes=None, flops=None):
        ok = err <= tol
        if not ok:
            self.failures.append(f"{op} {shape}: max rel err {err:.2e} > {tol:.0e}")

        def rate(t):
            if t is None:
                return "n/a"
            if flops is not None:
                return f"{flops / t[0] / 1e12:.1f} TFLOP/s"
            bw = nbytes / t[0]
            return f"{bw / 1e9:.0f} GB/s ({100 * bw / self.peak_bw:.0f}%)"

        def fmt(t):
            return "n/a" if t is None else f"{t[0] * 1e6:.1f} ({t[1] * 1e6:.1f}..{t[2] * 1e6:.1f})"

        speedup = "n/a" if theirs is None else f"{theirs[0] / ours[0]:.2f}x"
        self.rows.append(f"| {op} | {shape} | {'ok' if ok else 'MISMATCH'} {err:.1e} | {fmt(ours)} | {rate(ours)} "
                         f"| {fmt(theirs)} | {rate(theirs)} | {speedup} |")


def run_kernels(rep, quick):
    import cupy as cp
    import torch
    import torch.nn.functional as F

    import kernels
    K = kernels.get("cupy")
    ours, theirs = Timer("cupy"), Timer("torch")
    T = lambda a: torch.from_dlpack(a)  # noqa: E731  zero-copy CuPy -> torch view of the same memory
    rng = cp.random.RandomState(0)
    randn = lambda *s: rng.standard_normal(s, dtype=cp.float32)  # noqa: E731
    compile_times = {}

    def cold(name, fn):  # first call: NVRTC compile (or disk-cache load) + launch
        cp.cuda.Device().synchronize()
        t0 = time.perf_counter(); fn(); cp.cuda.Device().synchronize()
        compile_times[name] = time.perf_counter() - t0

    # ---- softmax: attention-score rows (B*H*T, T)
    for N, C in ([(12 * 128 * 32, 128)] if quick else [(12 * 128 * 32, 128), (12 * 512 * 8, 512), (4096, 4099)]):
        x, dy = randn(N, C), randn(N, C)
        cold("softmax", lambda: K.softmax_fwd(x))
        y = K.softmax_fwd(x)
        yt = torch.softmax(T(x), -1)
        rep.add("softmax_fwd", f"{N}x{C}", ours(lambda: K.softmax_fwd(x)), theirs(lambda: torch.softmax(T(x), -1)),
                max_rel_err(y, yt), 1e-5, nbytes=8 * N * C)
        want = torch._softmax_backward_data(T(dy), yt, -1, torch.float32)
        rep.add("softmax_bwd", f"{N}x{C}", ours(lambda: K.softmax_bwd(y, dy)),
                theirs(lambda: torch._softmax_backward_data(T(dy), yt, -1, torch.float32)),
                max_rel_err(K.softmax_bwd(y, dy), want), 1e-5, nbytes=12 * N * C)

    # ---- layer norm: hidden states (B*T, C)
    for N, C in ([(16384, 768)] if quick else [(16384, 768), (16384, 1024), (8192, 4096)]):
        x, dy, w, b = randn(N, C), randn(N, C), randn(C), randn(C)
        cold("layernorm", lambda: K.layernorm_fwd(x, w, b, 1e-12))
        y, mean, rstd = K.layernorm_fwd(x, w, b, 1e-12)
        yt, mt, rt = torch.ops.aten.native_layer_norm(T(x), [C], T(w), T(b), 1e-12)
        rep.add("layernorm_fwd", f"{N}x{C}", ours(lambda: K.layernorm_fwd(x, w, b, 1e-12)),
                theirs(lambda: F.layer_norm(T(x), [C], T(w), T(b), 1e-12)), max_rel_err(y, yt), 1e-5,
                nbytes=4 * (2 * N * C + 2 * N + 2 * C))
        grads = K.layernorm_bwd(dy, x, w, mean, rstd)
        tgrads = torch.ops.aten.native_layer_norm_backward(T(dy), T(x), [C], mt, rt, T(w), T(b), [True, True, True])
        # dweight/dbias sum N = 16k products: compared norm-relative at 1e-4 (float32 sums of that length)
        err = max(max_rel_err(grads[0], tgrads[0]), max_rel_err(grads[1], tgrads[1]), max_rel_err(grads[2], tgrads[2]))
        rep.add("layernorm_bwd", f"{N}x{C}", ours(lambda: K.layernorm_bwd(dy, x, w, mean, rstd)),
                theirs(lambda: torch.ops.aten.native_layer_norm_backward(T(dy), T(x), [C], mt, rt, T(w), T(b),
                                                                         [True, True, True])),
                err, 1e-4, nbytes=4 * (3 * N * C + 2 * N + 3 * C))

    # ---- GELU: the feed-forward activations (B*T, 4C)
    x, dy = randn(16384, 3072), randn(16384, 3072)
    n = x.size
    cold("gelu", lambda: K.gelu_fwd(x))
    rep.add("gelu_fwd", "16384x3072", ours(lambda: K.gelu_fwd(x)), theirs(lambda: F.gelu(T(x))),
            max_rel_err(K.gelu_fwd(x), F.gelu(T(x))), 1e-6, nbytes=8 * n)
    rep.add("gelu_bwd", "16384x3072", ours(lambda: K.gelu_bwd(x, dy)),
            theirs(lambda: torch.ops.aten.gelu_backward(T(dy), T(x))),
            max_rel_err(K.gelu_bwd(x, dy), torch.ops.aten.gelu_backward(T(dy), T(x))), 1e-6, nbytes=12 * n)

    # ---- cross-entropy over the BERT vocabulary (MLM: ~15% of positions carry a target)
    N, V = (2048, 30522) if quick else (8192, 30522)
    z = randn(N, V)
    t = rng.randint(0, V, N).astype(cp.int64)
    t[rng.random_sample(N) > 0.15] = -100
    zt, tt = T(z), T(t)
    from kernels.cross_entropy import gpu as ce_gpu  # its _device variant: the loss stays on the GPU
    cold("cross_entropy", lambda: ce_gpu.cross_entropy_fwd_device(z, t))
    loss, lse = ce_gpu.cross_entropy_fwd_device(z, t)
    want = F.cross_entropy(zt, tt, ignore_index=-100)
    rep.add("cross_entropy_fwd", f"{N}x{V}", ours(lambda: ce_gpu.cross_entropy_fwd_device(z, t)),
            theirs(lambda: F.cross_entropy(zt, tt, ignore_index=-100)), max_rel_err(loss, want), 1e-5,
            nbytes=4 * (N * V + 2 * N))
    zg = zt.detach().clone().requires_grad_(True)
    F.cross_entropy(zg, tt, ignore_index=-100).backward()
    rep.add("cross_entropy_bwd", f"{N}x{V}", ours(lambda: K.cross_entropy_bwd(z, t, lse, 1.0)), None,
            max_rel_err(K.cross_entropy_bwd(z, t, lse, 1.0), zg.grad), 1e-5, nbytes=4 * (2 * N * V + 2 * N))

    # ---- AdamW on 32M parameters (torch peer: fused AdamW on one tensor, same hyper-parameters)
    n = 1 << 25
    p, g = randn(n), randn(n)
    m, v = cp.zeros(n, cp.float32), cp.zeros(n, cp.float32)
    pt = torch.nn.Parameter(T(p).clone())
    pt.grad = T(g).clone()
    opt = torch.optim.AdamW([pt], lr=1e-3, weight_decay=0.01, fused=True)
    p0 = p.copy()
    K.adamw_step(p, g, m, v, 1e-3, 0.9, 0.999, 1e-8, 0.01, 1)
    opt.step()
    err = max_rel_err(p - p0, pt.detach() - T(p0))  # compare the update, not the (much larger) parameter
    step = [1]

    def ours_adamw():
        step[0] += 1
        K.adamw_step(p, g, m, v, 1e-3, 0.9, 0.999, 1e-8, 0.01, step[0])
    rep.add("adamw_step", f"{n}", ours(ours_adamw), theirs(opt.step), err, 1e-4, nbytes=28 * n)

    # ---- attention, BERT-base heads (H = 12, D = 64): padding mask (BERT) and causal
    B, H, D = (16, 12, 64)
    for Tn in ([128] if quick else [128, 256, 512]):
        for causal in (False, True):
            q, k, vv, do = randn(B, H, Tn, D), randn(B, H, Tn, D), randn(B, H, Tn, D), randn(B, H, Tn, D)
            lengths = rng.randint(Tn // 2, Tn + 1, B)
            key_mask = cp.arange(Tn)[None, :] < lengths[:, None]  # (B, T): the last keys are padding
            km = None if causal else key_mask
            cold("attention", lambda: K.attention_fwd(q, k, vv, key_mask=km, causal=causal))
            out, lse = K.attention_fwd(q, k, vv, key_mask=km, causal=causal)
            qt, kt, vt = (T(a).clone().requires_grad_(True) for a in (q, k, vv))
            mask_t = None if km is None else T(km.astype(cp.uint8)).bool()[:, None, None, :]  # (B, 1, 1, T)
            ref = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask_t, is_causal=causal)
            ref.backward(T(do))
            dq, dk, dv = K.attention_bwd(do, q, k, vv, out, lse, key_mask=km, causal=causal)
            # norm-relative 1e-4: sums over <= 512 keys and queries in a different order than torch's, and
            # the gradients chain three such reductions (P, dP, dS); float32 eps is 1.2e-7
            err = max(max_rel_err(out, ref), max_rel_err(dq, qt.grad), max_rel_err(dk, kt.grad),
                      max_rel_err(dv, vt.grad))
            flops = 4 * B * H * Tn * Tn * D * (0.5 if causal else 1.0) * 3.5  # fwd + bwd (2.5x)

            def ours_fb():
                o, l_ = K.attention_fwd(q, k, vv, key_mask=km, causal=causal)
                K.attention_bwd(do, q, k, vv, o, l_, key_mask=km, causal=causal)

            def torch_fb():
                r = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask_t, is_causal=causal)
                torch.autograd.grad(r, (qt, kt, vt), T(do))
            name = "attention fwd+bwd" + (" causal" if causal else " key_mask")
            rep.add(name, f"B{B} H{H} T{Tn} D{D}", ours(ours_fb), theirs(torch_fb), err, 1e-4, flops=flops)
    return compile_times


def run_training_step(quick):
    """One BERT MLM training step on the GPU through minillm, if the engine supports it yet."""
    try:
        import cupy as cp
        import numpy as np

        import minillm as mm
        mm.set_backend("cupy")
        cfg = mm.BertConfig(vocab_size=30522, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                            intermediate_size=1024, max_position_embeddings=512)
        model = mm.BertForMaskedLM(cfg)
        model.to("cuda")
        opt = mm.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
        B, Tn = 32, 128
        rng = np.random.default_rng(0)
        ids = cp.asarray(rng.integers(0, 30522, (B, Tn)))
        labels = cp.where(cp.asarray(rng.random((B, Tn)) < 0.15), ids, -100)
        am = cp.ones((B, Tn), dtype=cp.int64)

        def step():
            out = model(input_ids=ids, attention_mask=am, labels=labels)
            out.loss.backward(); opt.step(); opt.zero_grad()
        times = Timer("cupy", warmup=2, repeat=5 if quick else 10)(step)
        return f"minillm BertForMaskedLM (hidden 256, 4 layers, 4 heads), B={B}, T={Tn}: " \
               f"{times[0] * 1e3:.1f} ms/step (min {times[1] * 1e3:.1f}, max {times[2] * 1e3:.1f})"
    except Exception as e:  # the engine's GPU path is another issue's work; report, don't fail
        return f"not run: {type(e).__name__}: {str(e)[:300]}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "gpu.md"))
    ap.add_argument("--tests-log", help="pytest output to quote in the report")
    ap.add_argument("--quick", action="store_true", help="one shape per kernel")
    args = ap.parse_args()
    if not gpu_available():
        print("GPU: not available")
        return 0
    import cupy as cp
    import torch

    props = cp.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    nominal = next((bw for key, bw in NOMINAL_BW.items() if key in name), None)
    buf = cp.empty(1 << 28, dtype=cp.float32)  # 1 GiB device-to-device copy: the achievable bandwidth
    dst = cp.empty_like(buf)
    t = Timer("cupy")(lambda: cp.copyto(dst, buf))
    copy_bw = 2 * buf.nbytes / t[0]
    del buf, dst
    rep = Report(peak_bw=nominal or copy_bw)
    compile_times = run_kernels(rep, args.quick)
    train = run_training_step(args.quick)

    lines = [
        "# GPU results", "",
        f"Written by `benchmarks/gpu_check.sh` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", "",
        f"- GPU: {name}, {props['multiProcessorCount']} SMs; CuPy {cp.__version__}, PyTorch {torch.__version__}, "
        f"CUDA runtime {cp.cuda.runtime.runtimeGetVersion()}, Python {platform.python_version()}",
        f"- Peak bandwidth used for %: {'nominal ' + format(nominal / 1e12, '.2f') + ' TB/s' if nominal else 'measured copy'}; "
        f"measured device-to-device copy: {copy_bw / 1e12:.2f} TB/s (read + write of 1 GiB)",
        "- Times in microseconds: median (min..max) of 20 calls after 3 warm-ups, CUDA events around each call.",
        "- Rates: bytes of the formulas in benchmarks/gpu_bench.py's docstring over the median time; attention in "
        "TFLOP/s (FP32; fwd 4BHT^2D, bwd 2.5x). `check`: max |ours - torch| / max |torch| at that shape.", "",
        "| op | shape | check | ours us | ours rate | torch us | torch rate | torch/ours |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *rep.rows, "",
        "First call per family (NVRTC compile or disk-cache load + launch): "
        + ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in compile_times.items()), "",
        f"Training step: {train}", "",
    ]
    if rep.failures:
        lines += ["**Mismatches:**", *[f"- {f}" for f in rep.failures], ""]
    if args.tests_log and os.path.exists(args.tests_log):
        with open(args.tests_log) as f:
            tail = f.read().strip().splitlines()[-25:]
        lines += ["## GPU tests (`pytest -k cupy`), last lines", "", "```", *tail, "```", ""]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))
    return 1 if rep.failures else 0


if __name__ == "__main__":
    sys.exit(main())

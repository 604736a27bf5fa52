"""Training-step benchmark: one BERT MLM step (forward, backward, AdamW) in minillm and in PyTorch, side by side.

    python benchmarks/train_step.py [--threads 2] [--steps 5] [--shapes mini,minilm] [--heads dense,sparse]
                                    [--out benchmarks/results]

Same model, same weights, same batch, same work in both engines: minillm (numba backend) against PyTorch eager
+ transformers, dropout off, AdamW with weight decay 0.01 on every parameter. Two MLM heads, each compared
with the peer doing the same work:
  dense   scores all B*T positions: minillm `sparse_head=False`; PyTorch the standard HF forward with labels.
  sparse  scores only the M labelled positions: minillm `sparse_head=True`; PyTorch runs `model.bert`, gathers
          the labelled rows of the hidden states, then `model.cls` and cross-entropy (written out below).
Before timing, the first (warm-up) step's losses of the two engines must agree within 1e-3 relative. The
steps alternate minillm / PyTorch in one process; the first step (Numba JIT or cache load, PyTorch's lazy
init) is reported apart. Peak memory comes from one subprocess per engine, shape and head (see
`memory_worker`). MFU = model FLOPs per step / step time / the float32 matmul peak measured in this run.
This is a benchmark, not a test: nothing here asserts a speed. Threads: Numba, PyTorch and BLAS all get
--threads, set in the environment before anything is imported.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--steps", type=int, default=5, help="timed steps per engine, after one warm-up step")
ap.add_argument("--shapes", default="mini,minilm")
ap.add_argument("--heads", default="dense,sparse")
ap.add_argument("--batch-size", type=int, default=16)
ap.add_argument("--seq-len", type=int, default=128)
ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses (smoke runs)")
ap.add_argument("--_memory-worker", nargs=3, metavar=("ENGINE", "SHAPE", "HEAD"), help=argparse.SUPPRESS)
ARGS = ap.parse_args()
for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import minillm as mm  # noqa: E402

try:
    import torch  # noqa: E402
    import transformers  # noqa: E402
except ImportError as e:
    sys.exit(f"train_step.py compares against PyTorch + transformers: pip install torch transformers ({e})")
torch.set_num_threads(ARGS.threads)
mm.set_backend("numba")

SHAPES = {  # name -> (layers L, width C, heads H, intermediate I)
    "mini": (4, 256, 4, 1024),
    "minilm": (6, 384, 12, 1536),
}
VOCAB, MASK_RATE, LR, WEIGHT_DECAY = 30522, 0.15, 1e-4, 0.01
B, T = ARGS.batch_size, ARGS.seq_len
for name, known in (("shapes", SHAPES), ("heads", ("dense", "sparse"))):
    if set(getattr(ARGS, name).split(",")) - set(known):
        ap.error(f"--{name} {getattr(ARGS, name)}: each must be one of {', '.join(known)}")
if ARGS.steps < 1:
    ap.error("--steps must be at least 1: the medians need timed steps")
MB = 2**20  # peak "MB" in the tables are 2^20 bytes (VmHWM is in kB = 1024 bytes)


def config(shape: str, vocab: int = VOCAB) -> dict:
    L, C, H, I = SHAPES[shape]
    return dict(vocab_size=vocab, hidden_size=C, num_hidden_layers=L, num_attention_heads=H, intermediate_size=I,
                hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def make_batch(vocab: int, seed: int = 0) -> dict:
    """Random ids (B, T), no padding; exactly round(15% * B*T) labelled positions, -100 elsewhere."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, (B, T))                                           # (B, T)
    labels = np.full(B * T, -100)
    picked = rng.choice(B * T, int(round(MASK_RATE * B * T)), replace=False)       # (M,)
    labels[picked] = rng.integers(0, vocab, picked.size)
    return dict(input_ids=ids, attention_mask=np.ones_like(ids), labels=labels.reshape(B, T))


# ---- the two engines: each maker returns (model, step), step() runs one full training step, returns the loss


def make_minillm(cfg: dict, head: str):
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


# ---- what the machine can do, and what a step asks of it


def matmul_peak(repeats: int = 5) -> dict:
    """Median float32 GFLOP/s of a 2048^3 matmul (2 n^3 FLOPs) in NumPy's BLAS and in PyTorch's."""
    a = np.random.default_rng(1).standard_normal((2048, 2048)).astype(np.float32)
    ta = torch.from_numpy(a)
    out = {}
    for name, fn in (("numpy", lambda: a @ a), ("torch", lambda: ta @ ta)):
        fn()  # warm-up: thread pool start, page faults of the output
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        out[name] = 2 * 2048**3 / float(np.median(ts)) / 1e9
    return out


def model_flops(shape: str, masked: int, head: str) -> float:
    """Matmul FLOPs of one training step: 6 * (matmul weights) * rows + attention 12 * L * T^2 * C * B.

    6 = 2 (multiply-add) * 3 (forward, and backward's two matmuls: input and weight gradients). The encoder's
    matmul weights per layer are 4 C^2 (Q, K, V, output) + 2 C I (the MLP), applied at all B*T tokens; the
    head's are C^2 (transform) + C V (decoder, tied to the embeddings), applied at B*T tokens (dense) or only
    at the M labelled ones (sparse). Attention: Q K^T and P V are 2 * 2 T^2 D per head, 4 T^2 C per layer and
    sequence, x3 for forward + backward. Embedding lookups, LayerNorm, GELU, softmax, AdamW: not counted.
    """
    L, C, H, I = SHAPES[shape]
    head_rows = B * T if head == "dense" else masked
    return 6 * L * (4 * C * C + 2 * C * I) * B * T + 6 * (C * C + C * VOCAB) * head_rows + 12 * L * T * T * C * B


# ---- peak memory: one engine, shape and head per process, so that one engine's peak cannot hide the other's


def vm_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def memory_worker(engine: str, shape: str, head: str) -> None:
    """Prints JSON {"peak_mb": VmHWM at the end - VmRSS at the baseline} after two full training steps.

    The baseline is taken after the imports and one step of a tiny model of the same kind, so Numba's loaded
    machine code and PyTorch's lazy library state are not counted. Two steps, because the second is the
    steady one: weights, AdamW moments (allocated in the first step), activations and gradients all live.
    """
    make = make_minillm if engine == "minillm" else make_torch
    tiny = dict(config(shape), vocab_size=97, num_hidden_layers=1)
    make(tiny, head)[1](make_batch(97))
    base = vm_kb("VmRSS")
    batch = make_batch(VOCAB)
    _, step = make(config(shape), head)
    step(batch), step(batch)
    print(json.dumps({"peak_mb": (vm_kb("VmHWM") - base) / 1024, "baseline_mb": base / 1024}))


def measure_memory(engine: str, shape: str, head: str) -> float:
    cmd = [sys.executable, os.path.abspath(__file__), "--threads", str(ARGS.threads), "--batch-size", str(B),
           "--seq-len", str(T), "--_memory-worker", engine, shape, head]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(f"memory worker {engine} {shape} {head} failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])["peak_mb"]


# ---- the timed comparison


def timed(step, batch) -> tuple[float, float]:
    """(seconds, loss) of one training step."""
    t0 = time.perf_counter()
    loss = step(batch)
    return time.perf_counter() - t0, loss


def compare(shape: str, head: str) -> dict:
    """Fresh models with identical weights; warm-up + loss check; then ARGS.steps alternating timed steps."""
    cfg = config(shape)
    batch = make_batch(VOCAB)
    ours, ours_step = make_minillm(cfg, head)
    _, peer_step = make_torch(cfg, head, ours.state_dict())
    first_ours, loss_ours = timed(ours_step, batch)  # the first step: both models still hold the same weights
    first_peer, loss_peer = timed(peer_step, batch)
    rel = abs(loss_ours - loss_peer) / abs(loss_peer)
    print(f"  loss check: minillm {loss_ours:.6f}  torch {loss_peer:.6f}  relative difference {rel:.1e}", flush=True)
    if not rel <= 1e-3:  # float32 sums in different orders differ ~1e-6; 1e-3 means different models or data
        raise SystemExit(f"{shape}/{head}: losses disagree by {rel:.1e} (> 1e-3): the two engines are not "
                         "computing the same step; fix that before timing them")
    times, last = {"minillm": [], "torch": []}, {}
    for _ in range(ARGS.steps):
        for engine, step in (("minillm", ours_step), ("torch", peer_step)):
            t, last[engine] = timed(step, batch)
            times[engine].append(t)
    # Not a gate, a witness that the AdamW updates match too: the same batch again and again, so the loss
    # falls, and it falls alike in both engines when their optimizer steps agree.
    print(f"  loss after {ARGS.steps} updates: minillm {last['minillm']:.6f}  torch {last['torch']:.6f}", flush=True)
    masked = int((batch["labels"] != -100).sum())
    return dict(shape=shape, head=head, loss=(loss_ours, loss_peer, rel), first=(first_ours, first_peer),
                last_loss=(last["minillm"], last["torch"]), params=ours.num_parameters(),
                masked=masked, flops=model_flops(shape, masked, head),
                times={k: (float(np.median(v)), min(v), max(v)) for k, v in times.items()})


def write(results: list, peak: dict) -> None:
    os.makedirs(ARGS.out, exist_ok=True)
    cmd = ("python benchmarks/train_step.py " + " ".join(sys.argv[1:])).strip()
    tok = B * T
    ceiling = max(peak.values())  # one denominator for both engines: the better of the two BLAS libraries
    lines = [
        "# Training-step benchmark: minillm vs PyTorch", "",
        f"Command: `{cmd}`; threads = {ARGS.threads} (Numba, PyTorch, BLAS); batch {B} x seq {T} = {tok} "
        f"tokens per step; vocab {VOCAB}; {MASK_RATE:.0%} of positions labelled (M = masked rows); dropout 0; "
        f"AdamW lr {LR}, weight decay {WEIGHT_DECAY} on all parameters; minillm {mm.__version__} (numba backend), "
        f"torch {torch.__version__}, transformers {transformers.__version__}.", "",
        "Shapes (layers/width/heads/intermediate): " + ", ".join(f"{s} {'/'.join(map(str, SHAPES[s]))}"
                                                                   for s in ARGS.shapes.split(",")) + ".", "",
        f"float32 matmul peak measured in this run (2048^3, median of 5): NumPy {peak['numpy']:.0f} GFLOP/s, "
        f"PyTorch {peak['torch']:.0f} GFLOP/s; MFU is against the larger, {ceiling:.0f} GFLOP/s.", "",
        "Model FLOPs per step = 6 * L * (4C^2 + 2CI) * B*T + 6 * (C^2 + C*V) * R + 12 * L * T^2 * C * B, with "
        "R = B*T rows for the dense head and R = M for the sparse one (matmuls only; `model_flops`).", "",
        f"tokens/s = {tok} / step time, median of {ARGS.steps} alternating steps after one warm-up step "
        "[from the slowest, to the fastest step]. ratio = minillm / PyTorch (> 1: minillm is faster). Peak MB: "
        "VmHWM minus the baseline RSS of a fresh process per engine/shape/head, after imports and one tiny-model "
        "step (so JIT code is not counted), over two full training steps.", "",
        "| shape | head | minillm tokens/s | torch tokens/s | ratio | minillm peak MB | torch peak MB "
        "| MFU minillm | MFU torch |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        (to, to_lo, to_hi), (tp, tp_lo, tp_hi) = r["times"]["minillm"], r["times"]["torch"]
        mem = r.get("memory", {})
        mem_s = [f"{mem[e]:.0f}" if e in mem else "not measured" for e in ("minillm", "torch")]
        lines.append(
            f"| {r['shape']} | {r['head']} | {tok / to:,.0f} [{tok / to_hi:,.0f}, {tok / to_lo:,.0f}] | "
            f"{tok / tp:,.0f} [{tok / tp_hi:,.0f}, {tok / tp_lo:,.0f}] | {tp / to:.2f} | {mem_s[0]} | {mem_s[1]} | "
            f"{r['flops'] / to / 1e9 / ceiling:.1%} | {r['flops'] / tp / 1e9 / ceiling:.1%} |")
    lines += ["", "Params N counts the tied embedding/decoder matrix once; weights, gradients and the two AdamW "
              "moments alone take 16 N bytes, the floor under both engines' peaks.", "",
              "| shape | head | params N (16 N MB) | M | GFLOP/step | minillm step s | torch step s "
              "| first step s (minillm / torch) | first loss minillm / torch (rel. diff) | loss after the updates |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        (to, to_lo, to_hi), (tp, tp_lo, tp_hi) = r["times"]["minillm"], r["times"]["torch"]
        lines.append(
            f"| {r['shape']} | {r['head']} | {r['params'] / 1e6:.2f} M ({16 * r['params'] / MB:.0f}) | {r['masked']} "
            f"| {r['flops'] / 1e9:.1f} | {to:.3f} [{to_lo:.3f}, {to_hi:.3f}] | {tp:.3f} [{tp_lo:.3f}, {tp_hi:.3f}] "
            f"| {r['first'][0]:.2f} / {r['first'][1]:.2f} | {r['loss'][0]:.5f} / {r['loss'][1]:.5f} "
            f"({r['loss'][2]:.1e}) | {r['last_loss'][0]:.5f} / {r['last_loss'][1]:.5f} |")
    lines += ["", "The first step of minillm includes Numba compilation, or only loading its on-disk cache when "
              "an earlier run left one; PyTorch's includes its lazy initialisation. Neither is in the medians.", "",
              "These numbers were taken on a 2-core machine shared with other jobs, so they are noisy; the lead "
              "will re-run the command above on a quiet machine.", ""]
    with open(os.path.join(ARGS.out, "train_step.md"), "w") as f:
        f.write("\n".join(lines))
    plot(results)


def plot(results: list) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['shape']}\n{r['head']}" for r in results]
    x = np.arange(len(results))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for i, (engine, name, colour) in enumerate((("minillm", "minillm (numba)", "#1f77b4"),
                                                 ("torch", "PyTorch + transformers", "#ff7f0e"))):
        axes[0].bar(x + (i - 0.5) * 0.4, [B * T / r["times"][engine][0] for r in results], 0.4, label=name, color=colour)
        axes[1].bar(x + (i - 0.5) * 0.4, [r.get("memory", {}).get(engine, np.nan) for r in results], 0.4, color=colour)
    axes[0].set_ylabel("tokens/s (higher is better)")
    axes[1].set_ylabel("peak resident MB over baseline (lower is better)")
    axes[0].legend(fontsize=8)
    for ax in axes:
        ax.set_xticks(x, labels)
    fig.suptitle(f"BERT MLM training step, batch {B} x {T}, {ARGS.threads} threads")
    fig.tight_layout()
    fig.savefig(os.path.join(ARGS.out, "train_step.png"), dpi=110)


def main() -> None:
    if ARGS._memory_worker:
        memory_worker(*ARGS._memory_worker)
        return
    peak = matmul_peak()
    print(f"threads={ARGS.threads}  float32 matmul: NumPy {peak['numpy']:.0f}, torch {peak['torch']:.0f} GFLOP/s",
          flush=True)
    results = []
    for shape in ARGS.shapes.split(","):
        for head in ARGS.heads.split(","):
            print(f"{shape} / {head}", flush=True)
            r = compare(shape, head)
            (to, *_), (tp, *_) = r["times"]["minillm"], r["times"]["torch"]
            print(f"  tokens/s: minillm {B * T / to:,.0f}  torch {B * T / tp:,.0f}  ratio {tp / to:.2f}  "
                  f"(first step {r['first'][0]:.1f} s / {r['first'][1]:.1f} s)", flush=True)
            results.append(r)
    if not ARGS.no_memory:  # after the timing, so that the subprocesses never compete with a timed step
        for r in results:
            r["memory"] = {e: measure_memory(e, r["shape"], r["head"]) for e in ("minillm", "torch")}
            print(f"  peak MB {r['shape']}/{r['head']}: minillm {r['memory']['minillm']:.0f}  "
                  f"torch {r['memory']['torch']:.0f}", flush=True)
    write(results, peak)


if __name__ == "__main__":
    main()

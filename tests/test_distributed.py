"""Data-parallel training over MPI (minillm/train/distributed.py): `mpiexec -n 2 minillm pretrain` writes
the losses of one process, resumes (also with another rank count), refuses a batch that does not split,
stops every rank when one fails, and ZeRO-1 trains as the replicated optimizer does.

The MPI tests start real `mpiexec -n 2` jobs (a few seconds each) and skip, saying why, when mpi4py or
mpiexec is missing (`pip install -e '.[dist]'`; CI installs both through the `test` extra). The tests of
the pieces (sharding, loss shares, ZeRO-1's optimizer, the launcher's errors) run without MPI.

Tolerances between rank counts: one process sums a batch's loss terms (and every gradient) in one float32
pass; two ranks each sum half, then add the halves. Both are within a few float32 ulps (1.2e-7 relative)
of the exact sums, so they differ by about that much, step by step.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest

import minillm as mm
from minillm.models.checkpoint import read_safetensors
from minillm.train import distributed
from minillm.train.metrics import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A run of 2 ranks takes about 3 s here; 120 s means a hang, not a slow machine.
TIMEOUT_S = 120
# Losses of 1 and 2 ranks: a few float32 ulps (1.2e-7) per step, measured at most 8e-8 over 6 steps.
LOSS_RTOL = 1e-6


def mpi_skip_reason():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return f"mpi4py is not installed ({distributed.INSTALL_HINT})"
    if distributed.find_mpiexec() is None:
        return f"no mpiexec beside {sys.executable} or on PATH ({distributed.INSTALL_HINT})"
    return None


MPI_SKIP = mpi_skip_reason()
needs_mpi = pytest.mark.skipif(MPI_SKIP is not None, reason=str(MPI_SKIP))


def env_one_thread() -> dict:
    """Each rank one thread (the 2 ranks share 2 cores), minillm importable from the checkout."""
    env = dict(os.environ)
    env.update({v: "1" for v in distributed.THREAD_VARIABLES})
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_ranks(n: int, argv: list, script: str | None = None) -> subprocess.CompletedProcess:
    """`mpiexec -n N python -m minillm ARGV` (or python SCRIPT ARGV), its output captured."""
    program = [script] if script else ["-m", "minillm"]
    cmd = [distributed.find_mpiexec(), "-n", str(n), sys.executable, *program, *map(str, argv)]
    return subprocess.run(cmd, env=env_one_thread(), capture_output=True, text=True, timeout=TIMEOUT_S, cwd=ROOT)


def run_one(argv: list) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "minillm", *map(str, argv)]
    return subprocess.run(cmd, env=env_one_thread(), capture_output=True, text=True, timeout=TIMEOUT_S, cwd=ROOT)


def ok(res: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert res.returncode == 0, f"exit {res.returncode}\nstdout:\n{res.stdout[-3000:]}\nstderr:\n{res.stderr[-3000:]}"
    return res


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A generated plain-text corpus and SST-2-shaped TSVs (as tests/test_train.py makes them)."""
    d = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    words = {0: "bad awful dull boring terrible weak".split(), 1: "good great fine lovely wonderful strong".split()}
    filler = "the movie film story plot was is a an and of it this that very quite rather".split()

    def sentence(label):
        return " ".join([*rng.choice(filler, 5), rng.choice(words[label]), *rng.choice(filler, 3), rng.choice(words[label])])

    (d / "corpus.txt").write_text("\n".join(" ".join(sentence(int(rng.integers(2))) for _ in range(6))
                                            for _ in range(120)) + "\n")
    for name, n in (("train", 160), ("dev", 40)):
        labels = rng.integers(0, 2, n)
        (d / f"{name}.tsv").write_text("sentence\tlabel\n" + "".join(f"{sentence(int(y))}\t{y}\n" for y in labels))
    return d


def pretrain_argv(data, out, *extra):
    return ["pretrain", "--preset", "tiny", "--corpus", data / "corpus.txt", "--out", out, "--steps", 6,
            "--batch-size", 8, "--seq-len", 32, "--vocab-size", 120, "--checkpoint-every", 3, "--eval-every", 3,
            "--lr", 1e-3, *extra]


def rows(out, split=None) -> list:
    return [r for r in read_metrics(out / "metrics.jsonl") if split is None or r["split"] == split]


def assert_same_losses(a, b, rtol):
    """Same (step, split) rows, losses within rtol."""
    assert [(r["step"], r["split"]) for r in a] == [(r["step"], r["split"]) for r in b]
    got, want = np.array([r["loss"] for r in a]), np.array([r["loss"] for r in b])
    worst = int(np.argmax(np.abs(got - want) / np.abs(want)))
    assert np.allclose(got, want, rtol=rtol, atol=0), (f"row {worst} ({a[worst]['step']}, {a[worst]['split']}): "
                                                       f"{got[worst]!r} vs {want[worst]!r}")


@pytest.fixture(scope="module")
def one(corpus, tmp_path_factory):
    """The reference: the same command in one process."""
    out = tmp_path_factory.mktemp("one") / "run"
    ok(run_one(pretrain_argv(corpus, out)))
    return out


@pytest.fixture(scope="module")
def two(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("two") / "run"
    ok(run_ranks(2, pretrain_argv(corpus, out)))
    return out


# ---- under mpiexec -----------------------------------------------------------------------------------------
@needs_mpi
def test_two_ranks_write_the_losses_of_one_process(one, two):
    """mpiexec -n 2: metrics.jsonl has one row per step (rank 0 alone writes), each train row says ranks 2,
    and the losses, gradient norms and final weights are those of one process within float32 rounding."""
    train = rows(two, "train")
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in rows(two, "eval")] == [3, 6]
    assert all(r["ranks"] == 2 for r in train) and all(r["ranks"] == 1 for r in rows(one, "train"))
    assert [r["tokens_seen"] for r in train] == [r["tokens_seen"] for r in rows(one, "train")]  # the global batch
    assert_same_losses(rows(two), rows(one), LOSS_RTOL)
    norms = [(r["grad_norm"], s["grad_norm"]) for r, s in zip(train, rows(one, "train"))]
    assert np.allclose(*zip(*norms), rtol=LOSS_RTOL)  # a norm of the same gradients: the same rounding argument
    w2, w1 = read_safetensors(two / "model.safetensors"), read_safetensors(one / "model.safetensors")
    # 6 AdamW steps of lr <= 1e-3 from gradients that differ by float32 rounding: measured 7e-7.
    assert max(float(np.abs(w2[k] - w1[k]).max()) for k in w1) < 1e-5
    assert sorted(p.name for p in two.iterdir() if p.name.startswith("checkpoint-")) == ["checkpoint-6"]


DRIVER = textwrap.dedent('''\
    """minillm's CLI, with rank 1 failing as step 5 starts (after checkpoint-3): {kind}."""
    import sys
    from minillm.cli import main
    from minillm.train import loop

    class Injected(Exception):
        pass

    real_step = loop.Trainer.train_step

    def failing_step(self):
        if self.comm.rank == 1 and self.step == 4:
            raise {error}("rank 1 fails on purpose")
        return real_step(self)

    loop.Trainer.train_step = failing_step
    sys.exit(main(sys.argv[1:]))
''')


@needs_mpi
@pytest.mark.parametrize("kind, error", [("an error the CLI reports", "RuntimeError"),
                                         ("an exception nothing catches", "Injected")])
def test_a_failing_rank_stops_the_job_and_resume_reproduces_the_run(corpus, one, two, tmp_path, kind, error):
    """Rank 1 raises in step 5 while rank 0 waits for it in an Allreduce: the job ends within the timeout
    with a message naming the rank (MPI Abort), not a hang. Resuming the run with 2 ranks replays the
    uninterrupted 2-rank run bit for bit (same ranks: the same sums in the same order); its checkpoint
    resumed by 1 process gives the losses of one process."""
    script = tmp_path / "failing_rank"  # a Python script (python runs it whatever its name)
    script.write_text(DRIVER.format(kind=kind, error=error))
    out = tmp_path / "run"
    res = run_ranks(2, pretrain_argv(corpus, out), script=str(script))
    assert res.returncode != 0
    assert "rank 1 of 2" in res.stderr and "MPI Abort" in res.stderr, res.stderr[-2000:]
    assert "rank 1 fails on purpose" in res.stderr
    assert json.loads((out / "latest.json").read_text())["step"] == 3
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)

    ok(run_ranks(2, pretrain_argv(corpus, out, "--resume")))
    strip = [{k: r[k] for k in ("step", "split", "loss", "tokens_seen")} for r in rows(out)]
    assert strip == [{k: r[k] for k in ("step", "split", "loss", "tokens_seen")} for r in rows(two)]

    ok(run_one(pretrain_argv(corpus, copy, "--resume")))  # a checkpoint does not depend on the rank count
    assert [r["ranks"] for r in rows(copy, "train")] == [2, 2, 2, 1, 1, 1]
    assert_same_losses(rows(copy), rows(one), LOSS_RTOL)


@needs_mpi
def test_a_batch_that_does_not_split_over_the_ranks_is_refused(corpus, tmp_path):
    res = run_ranks(2, pretrain_argv(corpus, tmp_path / "run", "--batch-size", 7))
    assert res.returncode != 0
    assert "--batch-size 7 does not split evenly over 2 ranks" in res.stderr and "multiple of 2" in res.stderr
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


@needs_mpi
def test_zero1_trains_as_the_replicated_optimizer_with_half_the_moments(corpus, two, tmp_path):
    """--ranks 2 --zero 1 (the --ranks launcher, ZeRO-1's reduce-scatter / sharded AdamW / all-gather): the
    run of replicated AdamW within float32 rounding, its checkpoint in plain AdamW's layout, and each rank
    holding half of the moments (measured on the ranks themselves, printed by rank 0)."""
    out = tmp_path / "run"
    res = ok(run_one(pretrain_argv(corpus, out, "--ranks", 2, "--zero", 1)))
    mine, replicated = map(int, re.search(r"AdamW moments ([\d,]+) bytes per rank \(replicated: ([\d,]+)\)",
                                          res.stdout.replace(",", "")).groups())
    assert replicated == 8 * mm.BertForMaskedLM.from_pretrained(out).num_parameters()
    assert mine == 8 * -(-replicated // 16)  # 2 x 4 bytes x ceil(P / 2)
    assert [r["ranks"] for r in rows(out, "train")] == [2] * 6
    # The global norm is summed by slices (then one scalar Allreduce), not by parameters: float32 rounding.
    assert_same_losses(rows(out), rows(two), LOSS_RTOL)
    z, plain = (read_safetensors(d / "checkpoint-6" / "optimizer.safetensors") for d in (out, two))
    assert sorted(z) == sorted(plain)
    # Moments of 6 steps of gradients that agree to float32 rounding: measured 6e-9 (|m| ~ 1e-3).
    assert max(float(np.abs(z[k] - plain[k]).max()) for k in plain) < 1e-6


@needs_mpi
def test_finetune_on_two_ranks_matches_one_process(corpus, one, tmp_path):
    """Fine-tuning without dropout (dropout masks are drawn per rank) on 2 ranks: the losses of one process,
    a fresh classifier head broadcast from rank 0, the final dev row written once."""
    argv = ["finetune", "--model", one, "--train", corpus / "train.tsv", "--eval", corpus / "dev.tsv",
            "--max-steps", 4, "--batch-size", 8, "--dropout", 0, "--lr", 1e-3]
    ok(run_one([*argv, "--out", tmp_path / "one"]))
    ok(run_ranks(2, [*argv, "--out", tmp_path / "two"]))
    a, b = rows(tmp_path / "two"), rows(tmp_path / "one")
    assert [r.get("eval_split") for r in a if r["split"] == "eval"].count("dev") == 1
    assert_same_losses(a, b, LOSS_RTOL)


# ---- the pieces, in one process ----------------------------------------------------------------------------
def mlm_batch(rng, rows=8, T=12, V=50, rate=0.2):
    labels = np.where(rng.random((rows, T)) < rate, rng.integers(0, V, (rows, T)), -100)
    return {"input_ids": rng.integers(0, V, (rows, T)), "attention_mask": np.ones((rows, T), np.int64),
            "labels": labels}


@pytest.mark.parametrize("size", [2, 3, 4])
def test_loss_shares_weight_each_rank_by_its_masked_positions(size):
    """A mean over all masked positions = sum over ranks of (share x the rank's own mean), however unevenly
    the masked positions fall; the plain average of the ranks' means is not it."""
    rng = np.random.default_rng(size)
    batch = mlm_batch(rng, rows=12)
    token_loss = rng.random(batch["labels"].shape)                          # a loss per position
    total = distributed.loss_terms(batch)

    def mean(b, loss):
        keep = b["labels"] != -100
        return loss[keep].mean()

    parts, means = 0.0, []
    for rank in range(size):
        shard = distributed.shard_batch(batch, rank, size)
        lo = rank * 12 // size
        local = mean(shard, token_loss[lo:lo + len(shard["labels"])])
        parts += distributed.loss_terms(shard) / total * local
        means.append(local)
    assert np.isclose(parts, mean(batch, token_loss), rtol=1e-12)  # float64: exact up to rounding
    assert not np.isclose(np.mean(means), mean(batch, token_loss), rtol=1e-6)  # why the shares are needed


def test_shards_cover_the_batch_once_in_order():
    batch = {"input_ids": np.arange(10)[:, None] * np.ones((1, 3), int), "labels": np.arange(10), "scale": 2.0}
    shards = [distributed.shard_batch(batch, r, 3) for r in range(3)]
    assert np.concatenate([s["labels"] for s in shards]).tolist() == list(range(10))  # uneven: 3, 3, 4 rows
    assert all(s["scale"] == 2.0 for s in shards)  # not a per-row value: kept whole


def test_the_first_batch_must_split_evenly_over_the_ranks():
    fake = SimpleNamespace(rank=0, size=2, is_root=True)
    opt = mm.optim.AdamW([mm.nn.Parameter(np.zeros(3, np.float32))])
    parallel = distributed.DataParallel(opt, comm=fake)
    with pytest.raises(ValueError, match="a batch of 7 rows does not split evenly over 2 ranks"):
        parallel.shard(mlm_batch(np.random.default_rng(0), rows=7))


def toy_params(rng):
    shapes = [(5, 3), (3,), (4, 2), (7,)]
    return [mm.nn.Parameter(rng.standard_normal(s).astype(np.float32)) for s in shapes]


def test_zero1_optimizer_in_one_process_is_adamw():
    """ZeroAdamW with one rank (the whole flat vector is its slice) updates as AdamW does, over parameter
    groups with and without weight decay, clipping, and a parameter with no gradient (left alone, no state);
    its state_dict is AdamW's and loads back into AdamW."""
    rng = np.random.default_rng(0)
    a, b = toy_params(rng), None
    b = [mm.nn.Parameter(p.data.copy()) for p in a]

    def groups(ps):
        return [{"params": ps[:2], "weight_decay": 0.1}, {"params": ps[2:], "weight_decay": 0.0}]

    plain = mm.optim.AdamW(groups(a), lr=1e-2)
    zero = distributed.ZeroAdamW(mm.optim.AdamW(groups(b), lr=1e-2), distributed.SingleProcess())
    for step in range(4):
        grads = [rng.standard_normal(p.shape).astype(np.float32) for p in a]
        for ps in (a, b):
            for p, g in zip(ps, grads):
                p.grad = None if p is ps[3] else g.copy()
        norm_plain = mm.optim.clip_grad_norm(a, 1.0)
        zero.reduce_scatter_gradients()
        norm_zero = zero.clip_grad_norm(1.0)
        assert np.isclose(norm_plain, norm_zero, rtol=1e-6)  # float32 dots vs one float64 sum
        plain.step(), zero.step()
        plain.zero_grad(), zero.zero_grad()
        for p, q in zip(a, b):
            # The same kernel on the same numbers, but the clip scale from norms that differ in the last bits.
            np.testing.assert_allclose(q.data, p.data, rtol=1e-6, atol=1e-7)
    assert np.array_equal(b[3].data, a[3].data)  # never had a gradient: never decayed
    sp, sz = plain.state_dict(), zero.state_dict()
    assert sorted(sz["arrays"]) == sorted(sp["arrays"]) == ["0.m", "0.v", "1.m", "1.v", "2.m", "2.v"]
    assert sz["step"] == sp["step"] == 4
    fresh = distributed.ZeroAdamW(mm.optim.AdamW(groups(b), lr=1e-2), distributed.SingleProcess())
    fresh.load_state_dict(sz)
    assert np.array_equal(fresh.m, zero.m) and np.array_equal(fresh.v, zero.v)


@pytest.mark.parametrize("rank", [0, 1, 2])
def test_zero1_slices_the_moments_across_ranks(rank):
    """Rank r of 3 holds ceil(P / 3) moments of each kind; the slices tile the flat parameters once."""
    params = toy_params(np.random.default_rng(1))
    P = sum(p.size for p in params)  # 15 + 3 + 8 + 7 = 33
    fake = SimpleNamespace(rank=rank, size=3)
    zero = distributed.ZeroAdamW(mm.optim.AdamW(params), fake)
    assert zero.moment_bytes() == 2 * 4 * 11
    covered = sum(b - a for _, a, b, _ in zero.segments)
    assert covered == min(11, P - 11 * rank)


def test_ranks_without_mpi_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py now raises ImportError
    with pytest.raises(RuntimeError, match=re.escape("pip install -e '.[dist]'")):
        distributed.launch_command(2, ["pretrain"])
    monkeypatch.delitem(sys.modules, "mpi4py")
    if MPI_SKIP is None:
        monkeypatch.setattr(distributed, "find_mpiexec", lambda: None)
        with pytest.raises(RuntimeError, match="no mpiexec was found"):
            distributed.launch_command(2, ["pretrain"])


def test_single_process_collectives_are_the_identity():
    comm = distributed.world()
    assert isinstance(comm, distributed.SingleProcess) and comm.size == 1  # pytest is not under a launcher
    a, out = np.arange(4, dtype=np.float32), np.zeros(4, np.float32)
    comm.allreduce_(a), comm.reduce_scatter(a, out)
    assert a.tolist() == out.tolist() == [0, 1, 2, 3] and comm.sum(2.5) == 2.5


def test_nccl_path_imports_and_names_its_calls():
    """The GPU ranks' transport: NcclComm builds on cupy.cuda.nccl. Here, without a GPU, the module is
    imported and the NCCL calls it makes are checked to exist in CuPy's binding."""
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed: the NCCL path cannot be import-checked")
    try:
        from cupy.cuda import nccl
    except ImportError as e:
        pytest.skip(f"CuPy has no NCCL binding here ({e})")
    for name in ("allReduce", "reduceScatter", "allGather", "bcast"):
        assert hasattr(nccl.NcclCommunicator, name), name
    assert hasattr(nccl, "get_unique_id") and hasattr(nccl, "NCCL_FLOAT32") and hasattr(nccl, "NCCL_SUM")
    assert cupy is not None

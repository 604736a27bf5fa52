"""Data-parallel training over MPI: N processes (ranks), one model replica each, one global batch split N ways.

    global batch (B rows, the same on every rank: built from the same seeds)
    ┌──────────── rank 0 ────────────┬──────────── rank 1 ────────────┐
    │ rows [0, B/2)                  │ rows [B/2, B)                  │   shard_batch
    └────────────────────────────────┴────────────────────────────────┘
      forward + backward, loss x share  forward + backward, loss x share   share = my loss terms / all terms
      grads -> flat buckets [b0|b1|..]  grads -> flat buckets [b0|b1|..]
                 └──────── Allreduce(SUM), bucket by bucket, in place ───┘
      clip by the global norm, AdamW    (identical on every rank: identical replicas)

The loss is a mean over loss terms (MLM: the masked positions of the whole batch; classification: its rows),
so a rank's mean over its own terms is scaled by its share of all the terms before backward, and the
gradients are *summed*: the sum is exactly the single-process gradient, however the terms fall (a rank
with fewer masked positions weighs less). Averaging the ranks' means would not be.

What a rank does, and what it does not:

* every rank builds the same global batch (same seeds) and keeps its rows: no data is sent, and the same
  command gives the same run at any rank count (up to the order of float32 sums);
* rank 0 alone evaluates and writes (metrics.jsonl, checkpoints, the model, run.json, the progress bar);
  every rank reads the same checkpoint on resume, and a checkpoint holds no trace of the rank count;
* at start the parameters are broadcast from rank 0 (a fresh classifier head is random on each rank), and
  the TrainConfig of every rank is compared (different settings would desynchronize the collectives);
* a rank that raises takes the job down (MPI Abort from sys.excepthook, and from the CLI on an error exit):
  a rank stuck in Allreduce waiting for a dead peer would otherwise wait forever.

ZeRO stage 1 (`ZeroAdamW`, `--zero 1`, Rajbhandari et al. 2020): the AdamW moments are split across ranks
instead of replicated: Reduce_scatter the gradients (each rank receives the sum of its 1/N slice of the
flat parameter vector), clip by the global norm (one scalar Allreduce), update the slice, Allgather the
parameters. Same bytes on the wire as an Allreduce (which is a reduce-scatter followed by an all-gather),
and 2 x 4 x P / N bytes of moments per rank instead of 2 x 4 x P.

Transports: `SingleProcess` (no MPI: every collective is the identity), `MpiComm` (mpi4py, host arrays),
`NcclComm` (CuPy arrays on GPUs through cupy.cuda.nccl; objects and the rendezvous over MPI). What this is
not: overlap of communication with backward (DDP starts a bucket's Allreduce as soon as its gradients are
ready; here the buckets go after backward), ZeRO-2/3, tensor or pipeline parallelism. docs/distributed.md
has the numbers.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

INSTALL_HINT = "pip install -e '.[dist]' (mpi4py and the mpich wheel, which brings mpiexec)"
# Variables set by MPI launchers in each process they start: MPICH / Intel MPI (hydra), Open MPI, PMIx, MVAPICH.
LAUNCHER_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MV2_COMM_WORLD_SIZE")
THREAD_VARIABLES = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
DEFAULT_BUCKET_MB = 25.0  # PyTorch DDP's default bucket_cap_mb


# ---- communicators: rank, size and the few collectives training needs -------------------------------------
class SingleProcess:
    """One process, no MPI: every collective is the identity (a copy where it has an output)."""

    rank, size, local_rank, local_size = 0, 1, 0, 1
    is_root = True
    name = "single process"

    def allreduce_(self, a):              # in place, SUM
        return a

    def reduce_scatter(self, send, recv):  # recv (n / size,) <- this rank's slice of the SUM of every send (n,)
        recv[...] = send

    def allgather(self, send, recv):      # recv (size * n,) <- every rank's send (n,), in rank order
        recv[...] = send

    def gather(self, send, recv):         # as allgather, recv filled on rank 0 only
        recv[...] = send

    def bcast_(self, a, root: int = 0):   # in place, from root
        return a

    def sum(self, x: float) -> float:
        return float(x)

    def bcast_object(self, obj, root: int = 0):
        return obj

    def allgather_object(self, obj) -> list:
        return [obj]

    def barrier(self) -> None:
        pass

    def abort(self, status: int = 1):
        raise SystemExit(status)


class MpiComm(SingleProcess):
    """MPI_COMM_WORLD through mpi4py, on host (NumPy) arrays. Installs the abort-on-error excepthook."""

    name = "MPI"

    def __init__(self, comm=None):
        from mpi4py import MPI

        self.MPI, self.comm = MPI, comm if comm is not None else MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.is_root = self.rank == 0
        node = self.comm.Split_type(MPI.COMM_TYPE_SHARED)  # the ranks on this machine share its cores
        self.local_rank, self.local_size = node.Get_rank(), node.Get_size()
        node.Free()
        self.library = MPI.Get_library_version().splitlines()[0].strip()
        install_excepthook(self)

    def allreduce_(self, a):
        self.comm.Allreduce(self.MPI.IN_PLACE, a, op=self.MPI.SUM)
        return a

    def reduce_scatter(self, send, recv):
        self.comm.Reduce_scatter_block(send, recv, op=self.MPI.SUM)

    def allgather(self, send, recv):
        self.comm.Allgather(send, recv)

    def gather(self, send, recv):
        self.comm.Gather(send, recv if self.is_root else None, root=0)

    def bcast_(self, a, root: int = 0):
        self.comm.Bcast(a, root=root)
        return a

    def sum(self, x: float) -> float:
        return float(self.comm.allreduce(float(x), op=self.MPI.SUM))

    def bcast_object(self, obj, root: int = 0):
        return self.comm.bcast(obj, root=root)

    def allgather_object(self, obj) -> list:
        return self.comm.allgather(obj)

    def barrier(self) -> None:
        self.comm.Barrier()

    def abort(self, status: int = 1):
        import time

        sys.stdout.flush()
        sys.stderr.flush()
        time.sleep(0.5)  # the launcher forwards this rank's last lines before MPI_Abort kills every process
        self.MPI.COMM_WORLD.Abort(status)


class NcclComm(MpiComm):
    """CuPy arrays on one GPU per rank, reduced by NCCL (cupy.cuda.nccl); MPI carries the objects and the
    NCCL id. Rank r uses GPU local_rank (ranks on one machine each take their own GPU, as NCCL requires)."""

    name = "NCCL"

    def __init__(self, mpi: MpiComm):
        import cupy
        from cupy.cuda import nccl

        self.__dict__.update(mpi.__dict__)
        self.cupy, self.nccl = cupy, nccl
        cupy.cuda.Device(self.local_rank % cupy.cuda.runtime.getDeviceCount()).use()
        uid = self.comm.bcast(nccl.get_unique_id() if self.is_root else None, root=0)
        self.gpu = nccl.NcclCommunicator(self.size, uid, self.rank)
        self.float32 = nccl.NCCL_FLOAT32

    def _stream(self) -> int:
        return self.cupy.cuda.get_current_stream().ptr

    def _check(self, *arrays):
        for a in arrays:
            if a.dtype != np.float32 or not a.flags.c_contiguous:
                raise ValueError(f"NcclComm: float32 C-contiguous CuPy arrays only, got {a.dtype} {a.shape}")

    def allreduce_(self, a):
        self._check(a)
        self.gpu.allReduce(a.data.ptr, a.data.ptr, a.size, self.float32, self.nccl.NCCL_SUM, self._stream())
        return a

    def reduce_scatter(self, send, recv):
        self._check(send, recv)
        self.gpu.reduceScatter(send.data.ptr, recv.data.ptr, recv.size, self.float32, self.nccl.NCCL_SUM,
                               self._stream())

    def allgather(self, send, recv):
        self._check(send, recv)
        self.gpu.allGather(send.data.ptr, recv.data.ptr, send.size, self.float32, self._stream())

    def gather(self, send, recv):  # NCCL has no gather: an all-gather, used only when writing a checkpoint
        self.allgather(send, recv if self.is_root else self.cupy.empty(send.size * self.size, np.float32))

    def bcast_(self, a, root: int = 0):
        self._check(a)
        self.gpu.bcast(a.data.ptr, a.size, self.float32, root, self._stream())
        return a


def install_excepthook(comm) -> None:
    """An exception no one caught on any rank: print it, then MPI Abort every rank (no hang in a collective)."""
    previous = sys.excepthook

    def abort_every_rank(kind, value, tb):
        import traceback

        if previous is not sys.__excepthook__:
            previous(kind, value, tb)
            text = ""
        else:  # the traceback and the verdict in one write: nothing cut off by the abort
            text = "".join(traceback.format_exception(kind, value, tb))
        text += (f"minillm: rank {comm.rank} of {comm.size} failed ({kind.__name__}: {value}); stopping every rank "
                 "(MPI Abort)\n")
        sys.stderr.write(text)
        comm.abort(1)

    sys.excepthook = abort_every_rank


# ---- the process's world ----------------------------------------------------------------------------------
_world = None
_options = {"zero": 0, "bucket_mb": DEFAULT_BUCKET_MB}


def launched() -> bool:
    """True when an MPI launcher (mpiexec, mpirun, srun) started this process."""
    return any(v in os.environ for v in LAUNCHER_VARIABLES)


def world():
    """This process's communicator: MpiComm when an MPI launcher started more than one process, else
    SingleProcess. mpi4py is imported only under a launcher (importing it initializes MPI)."""
    global _world
    if _world is None:
        if not launched():
            _world = SingleProcess()
        else:
            try:
                from mpi4py import MPI
            except ImportError as e:
                raise RuntimeError(f"this process was started by an MPI launcher but mpi4py is missing ({e}); "
                                   f"install it: {INSTALL_HINT}") from None
            _world = MpiComm() if MPI.COMM_WORLD.Get_size() > 1 else SingleProcess()
            if _world.size > 1:
                share_cores(_world.local_size)
    return _world


def configure(zero: int | None = None, bucket_mb: float | None = None) -> dict:
    """Set the data-parallel options every Trainer of this process uses (the CLI's --zero, --bucket-mb)."""
    if zero is not None:
        if zero not in (0, 1):
            raise ValueError(f"--zero {zero}: stage 0 (replicated AdamW) or 1 (moments sharded) are implemented; "
                             "see docs/distributed.md for stages 2 and 3")
        _options["zero"] = zero
    if bucket_mb is not None:
        if not bucket_mb > 0:
            raise ValueError(f"--bucket-mb {bucket_mb}: must be > 0")
        _options["bucket_mb"] = float(bucket_mb)
    return dict(_options)


def options() -> dict:
    return dict(_options)


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def threads_per_rank(ranks: int) -> int:
    return max(1, available_cores() // max(1, ranks))


def share_cores(local_ranks: int) -> None:
    """Numba threads = cores // ranks on this machine, unless NUMBA_NUM_THREADS says otherwise (the
    OpenBLAS pool is sized when NumPy loads: only the environment can set it, as `--ranks` does)."""
    if "NUMBA_NUM_THREADS" in os.environ:
        return
    import numba

    numba.set_num_threads(min(numba.config.NUMBA_NUM_THREADS, threads_per_rank(local_ranks)))


def finish(status: int) -> int:
    """The CLI's exit: a rank that fails (status != 0) under MPI stops every rank instead of leaving them
    waiting in a collective."""
    comm = _world
    if status and comm is not None and comm.size > 1:
        print(f"minillm: rank {comm.rank} of {comm.size} exits with status {status}; stopping every rank (MPI "
              "Abort)", file=sys.stderr, flush=True)
        comm.abort(status)
    return status


# ---- the command line: `--ranks N` relaunches under mpiexec; under a launcher, this rank is set up ----------
def start_from_cli(args, argv: list) -> int | None:
    """`minillm pretrain|finetune` with --ranks / --zero / --bucket-mb. Returns mpiexec's exit status when
    this call relaunched the command as `--ranks` processes, None when this process goes on to train (then
    MPI is up, with the abort-on-error hook, and every rank but 0 prints nothing)."""
    configure(zero=args.zero, bucket_mb=args.bucket_mb)
    if args.ranks is not None and args.ranks > 1 and not launched():
        return relaunch(args.ranks, argv)
    comm = world()
    if args.ranks is not None and args.ranks != comm.size:
        raise ValueError(f"--ranks {args.ranks}, but the launcher started {comm.size} processes; give one or the other")
    if comm.size > 1:
        if args.batch_size % comm.size:
            raise ValueError(f"--batch-size {args.batch_size} does not split evenly over {comm.size} ranks: it is the "
                             f"global batch, each rank takes batch-size / ranks rows; give a multiple of {comm.size}")
        if getattr(args, "minutes", None) is not None:
            raise ValueError(f"--minutes with {comm.size} ranks: the budget's step count would be measured on each "
                             "rank on its own; run with --steps (a one-process --minutes run's plan is in its run.json)")
        if not comm.is_root:  # rank 0 alone talks: no duplicate lines, no second progress bar
            sys.stdout = open(os.devnull, "w")
            os.environ["TQDM_DISABLE"] = "1"
    return None


def find_mpiexec() -> str | None:
    """mpiexec beside this Python (the mpich wheel puts it in the virtualenv's bin/), else on PATH."""
    here = Path(sys.executable).parent / "mpiexec"
    return str(here) if here.is_file() else shutil.which("mpiexec")


def launch_command(ranks: int, argv: list) -> list:
    """mpiexec -n N python -m minillm ARGV, or a RuntimeError naming the install command."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        raise RuntimeError(f"--ranks {ranks} needs MPI, and mpi4py is not installed: {INSTALL_HINT}") from None
    mpiexec = find_mpiexec()
    if mpiexec is None:
        raise RuntimeError(f"--ranks {ranks} needs MPI, and no mpiexec was found beside {sys.executable} or on "
                           f"PATH: {INSTALL_HINT}")
    return [mpiexec, "-n", str(ranks), sys.executable, "-m", "minillm", *argv]


def relaunch(ranks: int, argv: list) -> int:
    """Run `minillm ARGV` as `ranks` processes under mpiexec, each with cores // ranks threads (unless the
    environment sets them); returns mpiexec's exit status."""
    cmd = launch_command(ranks, argv)
    env = dict(os.environ)
    for var in THREAD_VARIABLES:
        env.setdefault(var, str(threads_per_rank(ranks)))
    return subprocess.run(cmd, env=env).returncode


# ---- splitting the batch ----------------------------------------------------------------------------------
def loss_terms(batch: dict) -> int:
    """How many terms the batch's mean loss averages: labels that are not -100 (MLM: masked positions;
    classification: rows), or rows when the batch has no labels. A model whose loss averages something
    else (a causal LM scores labels[:, 1:]) passes its own count to the Trainer."""
    if "labels" in batch:
        return int((np.asarray(batch["labels"]) != -100).sum())
    return int(len(next(iter(batch.values()))))


def shard_batch(batch: dict, rank: int, size: int) -> dict:
    """Rows [rank * B // size, (rank + 1) * B // size) of every array with the batch's B rows (the first
    axis of input_ids, or of the first array); other values are kept whole. B need not divide: the loss
    shares keep the sum exact (the short last batch of a fine-tuning epoch), but the ranks' work is uneven."""
    first = batch["input_ids"] if "input_ids" in batch else next(iter(batch.values()))
    rows = int(np.shape(first)[0])
    lo, hi = rank * rows // size, (rank + 1) * rows // size
    return {k: (v[lo:hi] if getattr(v, "ndim", 0) >= 1 and v.shape[0] == rows else v) for k, v in batch.items()}


def check_same_everywhere(comm, value, what: str) -> None:
    """ValueError on every rank when `value` (JSON-able) differs between ranks."""
    if comm.size == 1:
        return
    seen = comm.allgather_object(json.dumps(value, sort_keys=True, default=str))
    if len(set(seen)) > 1:
        odd = next(r for r, s in enumerate(seen) if s != seen[0])
        raise ValueError(f"{what} differs between rank 0 ({seen[0][:200]}) and rank {odd} ({seen[odd][:200]}); "
                         "every rank must run the same command")


# ---- gradients: one Allreduce per flat bucket --------------------------------------------------------------
def make_buckets(params: list, bucket_mb: float) -> list:
    """Consecutive parameters grouped into buckets of at most bucket_mb MB (a bigger one alone): each bucket
    is (parameter indices, offsets, one flat float32 buffer) reused at every step."""
    cap, buckets, current, size = bucket_mb * 2**20, [], [], 0
    for i, p in enumerate(params):
        if current and (size + p.size) * 4 > cap:
            buckets.append(current)
            current, size = [], 0
        current.append(i)
        size += p.size
    if current:
        buckets.append(current)
    out = []
    for idx in buckets:
        offsets = np.cumsum([0] + [params[i].size for i in idx])
        out.append((idx, offsets, _zeros_like(params[idx[0]].data, int(offsets[-1]))))
    return out


def _zeros_like(array, n: int):
    from ..backend import xp

    return xp(array).zeros(n, dtype=np.float32)


def _present_everywhere(comm, params: list) -> np.ndarray:
    """(len(params),) bool: which parameters got a gradient on any rank (the others keep grad None, and
    AdamW leaves them alone as it does in one process)."""
    flags = np.array([p.grad is not None for p in params], np.float32)
    if comm.size > 1:
        MpiComm.allreduce_(comm, flags) if isinstance(comm, NcclComm) else comm.allreduce_(flags)
    return flags > 0


class DataParallel:
    """The data-parallel side of a Trainer: shard each batch, sum the gradients over ranks. With one process
    every method is the identity (the loop then runs exactly as before)."""

    def __init__(self, optimizer, comm=None, device: str = "cpu", zero: int = 0, bucket_mb: float = DEFAULT_BUCKET_MB,
                 terms=loss_terms):
        comm = world() if comm is None else comm
        if device == "cuda" and comm.size > 1 and not isinstance(comm, NcclComm):
            comm = NcclComm(comm)
        self.comm, self.zero, self.terms = comm, zero, terms
        self.params = [p for g in optimizer.param_groups for p in g["params"]]
        self.optimizer = ZeroAdamW(optimizer, comm) if zero else optimizer
        self.buckets = make_buckets(self.params, bucket_mb) if comm.size > 1 and not zero else []
        self.checked = False

    def describe(self) -> str:
        """One line: ranks, transport, and the AdamW moments this rank holds (measured, not predicted)."""
        replicated = 8 * sum(p.size for p in self.params)  # m and v, float32, of every parameter
        mine = moment_bytes(self.optimizer) if self.zero else replicated
        return (f"data parallel: {self.comm.size} rank(s) over {self.comm.name}, ZeRO-{self.zero}: AdamW moments "
                f"{mine:,} bytes per rank (replicated: {replicated:,})")

    def shard(self, batch: dict) -> tuple[dict, float]:
        """(this rank's rows of the global batch, its share of the batch's loss terms)."""
        if self.comm.size == 1:
            return batch, 1.0
        if not self.checked:  # the run's first batch is a full one: it must split evenly
            rows, self.checked = len(batch["input_ids"] if "input_ids" in batch else next(iter(batch.values()))), True
            if rows % self.comm.size:
                raise ValueError(f"a batch of {rows} rows does not split evenly over {self.comm.size} ranks; the batch "
                                 f"size is the global batch, so give a multiple of {self.comm.size}")
        total = self.terms(batch)
        mine = shard_batch(batch, self.comm.rank, self.comm.size)
        return mine, (self.terms(mine) / total if total else 0.0)

    def broadcast_parameters(self) -> None:
        """Rank 0's weights on every rank (a fresh head is random on each; DDP does the same at start)."""
        if self.comm.size > 1:
            for p in self.params:
                self.comm.bcast_(p.data)

    def sync_gradients(self) -> None:
        """Sum every gradient over the ranks: bucket by bucket, in place (ZeRO-1: reduce-scatter)."""
        if self.zero:
            return self.optimizer.reduce_scatter_gradients()
        if self.comm.size == 1:
            return None
        present = _present_everywhere(self.comm, self.params)
        for idx, offsets, flat in self.buckets:
            for j, i in enumerate(idx):
                g = self.params[i].grad
                flat[offsets[j]:offsets[j + 1]] = 0.0 if g is None else g.reshape(-1)
            self.comm.allreduce_(flat)
            for j, i in enumerate(idx):  # each gradient becomes a view of its bucket, as in DDP
                p = self.params[i]
                p.grad = flat[offsets[j]:offsets[j + 1]].reshape(p.shape) if present[i] else None
        return None


# ---- ZeRO stage 1 -----------------------------------------------------------------------------------------
class ZeroAdamW:
    """AdamW whose moments m, v are split across the ranks (ZeRO-1): rank r keeps the slice
    [r * S, (r + 1) * S) of the flat parameter vector (S = ceil(P / N)), and only that slice's moments.

    step: Reduce_scatter(gradients) -> the slice's summed gradient; clip_grad_norm: global norm from one
    scalar Allreduce; AdamW on the slice (the same kernel, per parameter segment, with its group's lr and
    weight decay); Allgather(slices) -> every parameter. state_dict gathers the moments to rank 0 in plain
    AdamW's layout, so a checkpoint does not depend on the rank count or on ZeRO.
    """

    def __init__(self, optimizer, comm):
        self.comm, self.param_groups = comm, optimizer.param_groups  # shared: the schedule sets lr there
        self.step_count = optimizer.step_count
        self.params = [p for g in self.param_groups for p in g["params"]]
        self.group_of = [g for g in self.param_groups for _ in g["params"]]
        sizes = [p.size for p in self.params]
        self.offsets = np.cumsum([0] + sizes)
        self.slice = -(-int(self.offsets[-1]) // comm.size)       # S = ceil(P / N): the last slice is padded
        lo, hi = comm.rank * self.slice, (comm.rank + 1) * self.slice
        self.segments = []  # (param index, start in the slice, stop in the slice, start in the parameter)
        for i in range(len(self.params)):
            a, b = max(lo, self.offsets[i]), min(hi, self.offsets[i + 1])
            if a < b:
                self.segments.append((i, int(a - lo), int(b - lo), int(a - self.offsets[i])))
        like = self.params[0].data
        self.flat = _zeros_like(like, self.slice * comm.size)      # gradients in, parameters out
        self.grad, self.param = _zeros_like(like, self.slice), _zeros_like(like, self.slice)
        self.m, self.v = _zeros_like(like, self.slice), _zeros_like(like, self.slice)
        self.seen = np.zeros(len(self.params), bool)   # had a gradient once: plain AdamW's state keys
        self.present = np.zeros(len(self.params), bool)

    def moment_bytes(self) -> int:
        return int(self.m.nbytes + self.v.nbytes)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def reduce_scatter_gradients(self) -> None:
        self.present = _present_everywhere(self.comm, self.params)
        for i, p in enumerate(self.params):
            a, b = self.offsets[i], self.offsets[i + 1]
            self.flat[a:b] = 0.0 if p.grad is None else p.grad.reshape(-1)
        self.flat[self.offsets[-1]:] = 0.0
        self.comm.reduce_scatter(self.flat, self.grad)

    def clip_grad_norm(self, max_norm: float) -> float:
        """Global L2 norm of the summed gradient (every rank's slice), and the slice scaled to max_norm."""
        total = math.sqrt(self.comm.sum(float((self.grad * self.grad).sum(dtype=np.float64))))
        if math.isfinite(total) and total > max_norm:
            self.grad *= np.float32(max_norm / (total + 1e-6))
        return total

    def step(self) -> None:
        from ..backend import kernels_for

        self.step_count += 1
        self.seen |= self.present
        adamw = kernels_for(self.param).adamw_step
        for i, a, b, start in self.segments:  # the weights as they are now (loaded, broadcast) into the slice
            self.param[a:b] = self.params[i].data.reshape(-1)[start:start + b - a]
        for i, a, b, _ in self.segments:
            if self.present[i]:
                g = self.group_of[i]
                adamw(self.param[a:b], self.grad[a:b], self.m[a:b], self.v[a:b], g["lr"], g["betas"][0],
                      g["betas"][1], g["eps"], g["weight_decay"], self.step_count)
        self.comm.allgather(self.param, self.flat)
        for i, p in enumerate(self.params):
            p.data[...] = self.flat[self.offsets[i]:self.offsets[i + 1]].reshape(p.shape)

    def state_dict(self) -> dict:
        """Plain AdamW's state_dict (every rank must call it: it gathers the moments; rank 0 gets them)."""
        from ..backend import to_device

        full = {}
        for name, mine in (("m", self.m), ("v", self.v)):
            full[name] = _zeros_like(mine, self.slice * self.comm.size)
            self.comm.gather(mine, full[name])
        arrays = {}
        for i, p in enumerate(self.params):
            if self.seen[i]:
                for name in ("m", "v"):
                    arrays[f"{i}.{name}"] = to_device(full[name][self.offsets[i]:self.offsets[i + 1]], "cpu").reshape(p.shape)
        return {"step": self.step_count, "lrs": [g["lr"] for g in self.param_groups], "arrays": arrays}

    def load_state_dict(self, state: dict) -> None:
        """Plain AdamW's state_dict (as written by either optimizer at any rank count): keep this rank's slice."""
        from ..backend import to_device

        self.step_count = int(state["step"])
        for group, lr in zip(self.param_groups, state["lrs"]):
            group["lr"] = lr
        for i, p in enumerate(self.params):
            self.seen[i] = f"{i}.m" in state["arrays"]
        for i, a, b, start in self.segments:
            for name, mine in (("m", self.m), ("v", self.v)):
                array = state["arrays"].get(f"{i}.{name}")
                if array is None:
                    mine[a:b] = 0.0
                    continue
                if array.shape != self.params[i].shape:
                    raise ValueError(f"optimizer state {i}: shape {array.shape} does not fit parameter "
                                     f"{self.params[i].shape}")
                mine[a:b] = to_device(np.ascontiguousarray(array).reshape(-1)[start:start + b - a], self.params[i].device)


def moment_bytes(optimizer) -> int:
    """Bytes of AdamW moments this process holds (plain AdamW: m and v of every parameter it has updated)."""
    if isinstance(optimizer, ZeroAdamW):
        return optimizer.moment_bytes()
    return int(sum(s["m"].nbytes + s["v"].nbytes for s in optimizer.state.values()))

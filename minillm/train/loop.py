"""The training loop shared by pretraining and fine-tuning.

One optimizer step is: for each of `grad_accum` micro-batches, loss / grad_accum -> backward; then
global-norm clipping, the learning rate of this step (linear warm-up, linear decay), AdamW, zero_grad.

Non-finite steps: when a step's mean loss or its gradient norm is NaN or inf, its update is skipped
(weights and AdamW moments stay as they were; llm.c skips outlier steps the same way), its train row in
metrics.jsonl says `"skipped": true` and a line is printed. One bad batch costs one step. After
`max_skipped_steps` skipped steps in a row (default 5) the run has diverged rather than hit a bad batch:
it stops with a FloatingPointError naming the step and suggesting a lower --lr, and the last checkpoint
stays as it was. No file is ever written with NaN or inf weights (`write_safetensors` refuses).

Determinism and exact resume: everything random in step s (which examples, which tokens are masked,
dropout) is drawn from generators seeded by (seed, s), never from state carried across steps. A checkpoint
therefore only needs the weights, the optimizer moments and the step number, and `resume=True` replays
the remaining steps exactly as an uninterrupted run would (tests check the losses match bit for bit,
whether the crash fell on a checkpoint or between two).

Same run or refused (resume.py): a checkpoint records the TrainConfig and the caller's description of
the run (`run`: the command's arguments, with a SHA-256 of each data file in place of its contents). A
resume whose settings differ is refused with the field, the old and the new value; only
`checkpoint_every` and `log_every` may change (and the caller leaves `out` and `resume` out of `run`). A
data file may move, but not change.

Data parallel (distributed.py): under `mpiexec -n N` each rank takes its rows of every global batch,
the gradients are summed over ranks (each rank's loss weighted by its share of the batch's loss terms)
before clipping, and rank 0 alone evaluates and writes (metrics.jsonl, checkpoints, the model, run.json,
the progress bar). Train rows record `ranks`. With one process all of it is the identity.

A time budget instead of a step count (`minillm pretrain --minutes M`) becomes a step count before the
first step: see budget.py.

Every row of metrics.jsonl also carries `tokens_seen` (input tokens of all steps so far) and
`elapsed_minutes` (wall time since the run's clock started: the calibration of a budgeted run included;
for a resumed run, the time up to its checkpoint plus the time since the resume), so loss can be drawn
against tokens and against minutes.

Crash safety: a checkpoint is written into a temporary folder `.checkpoint-<step>.tmp-<run id>` and
renamed to `checkpoint-<step>` when every file is in place; then `latest.json` (itself replaced
atomically) points at it, and only then are this run's older checkpoints removed. A run killed mid-write
leaves the previous checkpoint untouched and `latest.json` pointing at it.

Whose folders: every checkpoint's trainer_state.json carries the id of the run that wrote it, and only
folders with this run's id are ever removed: a `checkpoint-7/` that minillm did not write survives. A
folder in the way of a new checkpoint is replaced only when it is a minillm checkpoint (of this run, or of
an earlier run written into the same --out); anything else stops the run with an error.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm.auto import tqdm

from ..models.checkpoint import atomic_write, read_safetensors, write_safetensors
from ..optim import AdamW, LinearWarmupDecay, clip_grad_norm
from ..tensor import manual_seed
from . import distributed
from .checks import (check_out_dir, check_settings, nonnegative_float, nonnegative_int, positive_float,
                     positive_int, positive_or_inf, probability, random_seed, setting)
from .device import check_device, on_device
from .metrics import MetricsLog, plot_metrics
from .resume import check_same_run, find_checkpoint, read_trainer_state


@dataclass
class TrainConfig:
    steps: int = setting(positive_int)
    lr: float = setting(positive_float, 1e-4)
    weight_decay: float = setting(nonnegative_float, 0.01)
    warmup_fraction: float = setting(probability, 0.06)
    warmup_steps: int | None = setting(nonnegative_int, None, optional=True)  # given: overrides warmup_fraction
    max_grad_norm: float = setting(positive_or_inf, 1.0)
    grad_accum: int = setting(positive_int, 1)
    eval_every: int = setting(nonnegative_int, 0)        # 0: only at the end
    checkpoint_every: int = setting(nonnegative_int, 0)  # 0: only at the end
    log_every: int = setting(positive_int, 1)
    seed: int = setting(random_seed, 0)
    best_metric: str | None = None  # e.g. "accuracy": keep the model with the best eval value of it
    max_skipped_steps: int = setting(positive_int, 5)    # non-finite steps in a row before the run stops

    def __post_init__(self):
        check_settings(self)
        if self.warmup_steps is not None and self.warmup_steps >= self.steps:
            raise ValueError(f"TrainConfig.warmup_steps = {self.warmup_steps} is not below steps = {self.steps}: the "
                             "learning rate would never decay; give fewer warm-up steps or a fraction (e.g. 0.06)")

    @property
    def warmup(self) -> int:
        """Warm-up steps of the schedule: warmup_steps when given, else warmup_fraction of the steps."""
        return self.warmup_steps if self.warmup_steps is not None else int(round(self.warmup_fraction * self.steps))


def step_rng(seed: int, step: int, stream: int = 0) -> np.random.Generator:
    """The generator for everything random in optimizer step `step` (stream separates uses)."""
    return np.random.default_rng([seed, step, stream])


def parameter_groups(model, weight_decay: float) -> list[dict]:
    """BERT's recipe: weight decay on weight matrices only, none on biases and LayerNorm parameters.

    A parameter with fewer than 2 axes is a bias or a LayerNorm gain/shift whatever its name (BERT's
    `LayerNorm.weight`, GPT-2's `ln_1.weight`), so the rule holds for every model, not only BERT's names."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if name.endswith("bias") or "LayerNorm" in name or p.ndim < 2 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def forward_backward(model, get_batch, step: int, seed: int, grad_accum: int, device: str,
                     count_tokens: Callable, parallel=None) -> tuple[float, int]:
    """The gradients of optimizer step `step` (summed over its grad_accum micro-batches, each loss scaled by
    1 / grad_accum): returns (mean loss, input tokens). Dropout and data come from (seed, step) alone.

    parallel (distributed.DataParallel): this rank computes its rows of each micro-batch, its loss scaled by
    its share of the micro-batch's loss terms; the loss returned is the whole batch's (summed over ranks),
    the tokens those of the whole batch. The gradients are this rank's part until parallel.sync_gradients.
    """
    model.train()
    rank = parallel.comm.rank if parallel is not None else 0
    total, n_tokens = 0.0, 0
    for micro in range(grad_accum):
        dropout = step_rng(seed, step, 1 + micro) if rank == 0 else np.random.default_rng([seed, step, 1 + micro, rank])
        manual_seed(int(dropout.integers(2**31)))  # dropout of this micro-batch (each rank's own rows, own draw)
        batch = get_batch(step, micro, step_rng(seed, step, 100 + micro))
        n_tokens += count_tokens(batch)
        batch, share = parallel.shard(batch) if parallel is not None else (batch, 1.0)
        if share == 0.0:  # none of the batch's loss terms fell in this rank's rows
            continue
        out = model(**on_device(batch, device))
        (out.loss * (share / grad_accum)).backward()
        total += float(out.loss.item()) * share
    if parallel is not None:
        total = parallel.comm.sum(total)
    return total / grad_accum, n_tokens


def make_out_dir(path) -> Path:
    """Create the run folder `path` (a clear ValueError when it is a file, not a FileExistsError)."""
    path = check_out_dir(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_run_file(out_dir, record: dict, update: bool = False) -> Path:
    """Write `out_dir/run.json`: what the run was asked to do and how (its arguments, data digests,
    TrainConfig, ...), so that a run folder says what made it. update=True merges into the file there (a
    resumed run keeps what the first process recorded, such as a budget's measured plan): a None in
    `record` never replaces a value. Under MPI only rank 0 writes."""
    path = make_out_dir(out_dir) / "run.json"
    if not distributed.world().is_root:
        return path
    if update and path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            old = {}
        record = {**old, **{k: v for k, v in record.items() if v is not None or k not in old}}
    atomic_write(path, lambda t: t.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8"))
    return path


class Trainer:
    """Runs `config.steps` optimizer steps of `model`.

    Args:
        model: a module whose forward(**batch) returns an output with `.loss`.
        config: TrainConfig.
        out_dir: where metrics.jsonl, loss.png, checkpoints and the final model go.
        get_batch: get_batch(step, micro, rng) -> dict of arrays for the model (pure in its arguments).
        evaluate: evaluate(model) -> dict with at least "loss" (run in eval mode, under no_grad).
        save_model: save_model(path) writes the model in HF layout (with its tokenizer).
        count_tokens: count_tokens(batch) -> int, for tokens/s (given the batch as get_batch made it).
        device: "cpu" or "cuda": the model, its optimizer moments and every batch (through `on_device`).
        run: JSON-able settings that define the run beyond `config` (see `run_record`); recorded in every
            checkpoint, and a resume with different ones is refused.
        clock_start: the time.perf_counter() reading at which this run's clock started (a budgeted run
            passes the start of its calibration); default: when fit() starts.
        loss_terms: loss_terms(batch) -> how many terms the model's mean loss averages (default: labels that
            are not -100), to weight each rank's loss under data parallelism (distributed.py).
    """

    def __init__(self, model, config: TrainConfig, out_dir, get_batch: Callable, evaluate: Callable,
                 save_model: Callable, count_tokens: Callable = lambda b: int(np.asarray(b["input_ids"]).size),
                 desc: str = "train", run: dict | None = None, device: str = "cpu", clock_start: float | None = None,
                 loss_terms: Callable = distributed.loss_terms):
        self.model, self.config, self.out_dir = model, config, Path(out_dir)
        self.get_batch, self.evaluate, self.save_model, self.count_tokens = get_batch, evaluate, save_model, count_tokens
        self.desc, self.run = desc, run
        self.device = check_device(device)
        model.to(device)  # before the optimizer, whose moments are made where the parameters are
        self.optimizer = AdamW(parameter_groups(model, config.weight_decay), lr=config.lr)
        # Data parallel (identity in one process): rank 0's weights everywhere, the same settings everywhere;
        # under ZeRO-1 the optimizer becomes the sharded one.
        opts = distributed.options()
        self.parallel = distributed.DataParallel(self.optimizer, device=device, zero=opts["zero"],
                                                 bucket_mb=opts["bucket_mb"], terms=loss_terms)
        self.comm, self.optimizer = self.parallel.comm, self.parallel.optimizer
        distributed.check_same_everywhere(self.comm, {"config": asdict(config), "run": run, "zero": opts["zero"]},
                                          "the TrainConfig and run settings")
        self.parallel.broadcast_parameters()
        self.schedule = LinearWarmupDecay(self.optimizer, config.warmup, config.steps)
        self.step = 0
        self.tokens_seen = 0                 # input tokens of every step so far (restored on resume)
        self.elapsed_before = 0.0            # seconds of this run before the clock below started (on resume)
        self.clock_start = clock_start
        self.best = None
        self.skipped_in_a_row = 0
        self.run_id = uuid.uuid4().hex       # marks this run's checkpoint folders (a resume adopts the old id)
        self._own_legacy: set[str] = set()   # a resumed checkpoint written before run ids existed

    # -- the loop ----------------------------------------------------------------------------------
    def elapsed_minutes(self) -> float:
        """Wall time of this run so far (see the module docstring), in minutes."""
        return (self.elapsed_before + time.perf_counter() - self.clock_start) / 60

    def progress(self) -> dict:
        """What every metrics row carries besides its own values: tokens seen and minutes elapsed."""
        return {"tokens_seen": self.tokens_seen, "elapsed_minutes": round(self.elapsed_minutes(), 4)}

    def fit(self, resume: bool = False, first_eval: dict | None = None) -> dict:
        """Train to config.steps (from the last checkpoint when resume); returns the final evaluation.

        first_eval: an evaluation of the untrained model made before fit (a budgeted run's calibration
        makes one); a fresh run logs it as the eval row of step 0.
        """
        cfg = self.config
        make_out_dir(self.out_dir)
        if resume:
            self.load_checkpoint()
            self.clock_start = None   # the time before the crash is in elapsed_before
        if self.clock_start is None:
            self.clock_start = time.perf_counter()
        root = self.comm.is_root  # under MPI, rank 0 alone logs and writes
        log = MetricsLog(self.out_dir / "metrics.jsonl", resume_step=self.step if resume else None) if root else _NoLog()
        if first_eval is not None and not resume:
            log.write(**{"step": 0, "split": "eval", "elapsed_minutes": round(self.elapsed_minutes(), 4),
                         **first_eval, "tokens_seen": 0})
        last_eval = {}
        if root and (self.comm.size > 1 or self.parallel.zero):
            tqdm.write(f"[{self.desc}] {self.parallel.describe()}")
        bar = tqdm(total=cfg.steps, initial=self.step, desc=self.desc, unit="step", dynamic_ncols=True,
                   disable=None if root else True)
        tokens, t0 = 0, time.perf_counter()
        while self.step < cfg.steps:
            loss, n_tokens, grad_norm, skipped = self.train_step()
            self.step += 1
            tokens += n_tokens
            self.tokens_seen += n_tokens
            rate = tokens / max(time.perf_counter() - t0, 1e-9)
            row = dict(step=self.step, split="train", loss=loss, lr=self.optimizer.param_groups[0]["lr"],
                       grad_norm=grad_norm, tokens_per_s=round(rate, 1), ranks=self.comm.size, **self.progress())
            if skipped:
                self.skipped_in_a_row += 1
                log.write(**row, skipped=True)
                what = "loss" if not math.isfinite(loss) else "gradient norm"
                if root:
                    tqdm.write(f"[{self.desc}] step {self.step}: {what} is {loss if what == 'loss' else grad_norm}; "
                               f"update skipped ({self.skipped_in_a_row} in a row, the run stops at "
                               f"{cfg.max_skipped_steps})")
                if self.skipped_in_a_row >= cfg.max_skipped_steps:
                    bar.close()
                    raise FloatingPointError(
                        f"step {self.step}: {self.skipped_in_a_row} updates in a row skipped because the {what} "
                        f"was not finite ({loss if what == 'loss' else grad_norm}); training diverged. Lower "
                        f"--lr (this run: {cfg.lr:g}) or check the data; the last checkpoint in {self.out_dir} "
                        "is intact")
            else:
                self.skipped_in_a_row = 0
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    log.write(**row)
            bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{rate:,.0f}", refresh=False)
            bar.update(1)
            final = self.step == cfg.steps
            if final or (cfg.eval_every and self.step % cfg.eval_every == 0):
                last_eval = self.run_eval(log)
            if final or (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0):
                self.save_checkpoint()
        bar.close()
        if not last_eval:  # resumed a finished run: still evaluate once, as every run does
            last_eval = self.run_eval(log)
        if root:
            if cfg.best_metric is None:
                self.save_model(self.out_dir)
            plot_metrics(self.out_dir / "metrics.jsonl", self.out_dir / "loss.png", title=self.desc)
        self.comm.barrier()  # every file in place before any rank goes on (fine-tuning reads the model back)
        return last_eval

    def train_step(self) -> tuple[float, int, float, bool]:
        """One optimizer step over grad_accum micro-batches: (mean loss, tokens, gradient norm, skipped).

        The update is skipped (skipped=True) when the loss or the gradient norm is not finite.
        """
        cfg = self.config
        loss, n_tokens = forward_backward(self.model, self.get_batch, self.step, cfg.seed, cfg.grad_accum, self.device,
                                          self.count_tokens, self.parallel if self.comm.size > 1 else None)
        self.parallel.sync_gradients()  # summed over ranks (ZeRO-1: this rank's slice); nothing in one process
        grad_norm = float(self.optimizer.clip_grad_norm(cfg.max_grad_norm) if self.parallel.zero  # global norm
                          else clip_grad_norm(self.model.parameters(), cfg.max_grad_norm))
        skipped = not (math.isfinite(loss) and math.isfinite(grad_norm))
        self.schedule.set_step(self.step)
        if not skipped:
            self.optimizer.step()
        self.optimizer.zero_grad()
        return loss, n_tokens, grad_norm, skipped

    def run_eval(self, log: MetricsLog) -> dict:
        from ..tensor import no_grad

        progress = self.progress()  # where the run stands, before the evaluation's own time
        root, result = self.comm.is_root, None
        if root:  # rank 0 evaluates (the replicas are identical) and tells the others what it found
            self.model.eval()
            with no_grad():
                result = self.evaluate(self.model)
        result = self.comm.bcast_object(result)
        log.write(step=self.step, split="eval", **result, **progress)
        if root:
            tqdm.write(f"[{self.desc}] step {self.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in result.items()
                                                                       if isinstance(v, float)))
        metric = self.config.best_metric
        if metric is not None and (self.best is None or result[metric] > self.best):
            self.best = result[metric]
            if root:
                self.save_model(self.out_dir)  # the best model so far is the one in out_dir
        return result

    # -- checkpoints -------------------------------------------------------------------------------
    def _is_ours(self, folder: Path) -> bool:
        state = read_trainer_state(folder)
        return state is not None and (state.get("run_id") == self.run_id or folder.name in self._own_legacy)

    def save_checkpoint(self) -> Path | None:
        opt = self.optimizer.state_dict()  # every rank: under ZeRO-1 this gathers the moments to rank 0
        if not self.comm.is_root:
            return None
        folder = self.out_dir / f"checkpoint-{self.step}"
        if folder.exists() and read_trainer_state(folder) is None:
            raise ValueError(f"{folder} is in the way of this run's checkpoint and minillm did not write it (no "
                             f"trainer_state.json of a minillm run in it); move it out of {self.out_dir}, or "
                             "choose another --out")
        tmp = self.out_dir / f".{folder.name}.tmp-{self.run_id}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        try:
            write_safetensors(tmp / "model.safetensors", self.model.state_dict())  # refuses NaN / inf
            write_safetensors(tmp / "optimizer.safetensors", opt.pop("arrays") or {"_empty": np.zeros(0, np.float32)})
            state = {"step": self.step, "optimizer": opt, "best": self.best, "config": asdict(self.config),
                     "run": self.run, "run_id": self.run_id, "skipped_in_a_row": self.skipped_in_a_row,
                     "tokens_seen": self.tokens_seen, "elapsed_s": 60 * self.elapsed_minutes()}
            (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2))
            if folder.exists():  # a minillm checkpoint of this step that latest.json does not point at
                shutil.rmtree(folder)
            os.replace(tmp, folder)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        atomic_write(self.out_dir / "latest.json",
                     lambda t: t.write_text(json.dumps({"checkpoint": folder.name, "step": self.step})))
        for old in self.out_dir.glob("checkpoint-*"):
            if old != folder and old.is_dir() and self._is_ours(old):
                shutil.rmtree(old, ignore_errors=True)
        for leftover in self.out_dir.glob(f".checkpoint-*.tmp-{self.run_id}"):  # from a crash mid-write
            shutil.rmtree(leftover, ignore_errors=True)
        return folder

    def load_checkpoint(self) -> None:
        folder, state = find_checkpoint(self.out_dir)
        check_same_run(folder, state, self.config, self.run)
        weights = read_safetensors(folder / "model.safetensors")
        own = dict(self.model._named_parameters_all(""))
        for name, array in weights.items():
            if name not in own or own[name].shape != tuple(array.shape):
                raise ValueError(
                    f"--resume: {folder / 'model.safetensors'} tensor {name} {tuple(array.shape)} does not fit this "
                    f"model ({own[name].shape if name in own else 'no such parameter'}); was it made with another preset?"
                )
        self.model.load_state_dict(weights, strict=True)
        arrays = {k: v for k, v in read_safetensors(folder / "optimizer.safetensors").items() if k != "_empty"}
        self.optimizer.load_state_dict({**state["optimizer"], "arrays": arrays})
        self.step, self.best = int(state["step"]), state["best"]
        self.skipped_in_a_row = int(state.get("skipped_in_a_row", 0))
        self.tokens_seen = int(state.get("tokens_seen", 0))        # 0 for a checkpoint older than these fields
        self.elapsed_before = float(state.get("elapsed_s", 0.0))
        if state.get("run_id"):
            self.run_id = state["run_id"]
        else:
            self._own_legacy.add(folder.name)


class _NoLog:
    """metrics.jsonl on every rank but 0: nothing is written."""

    def write(self, **record) -> None:
        pass

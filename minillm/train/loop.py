"""The training loop shared by pretraining and fine-tuning.

One optimizer step is: for each of `grad_accum` micro-batches, loss / grad_accum -> backward; then
global-norm clipping, the learning rate of this step (linear warm-up, linear decay), AdamW, zero_grad.

Determinism and exact resume: everything random in step s (which examples, which tokens are masked,
dropout) is drawn from generators seeded by (seed, s), never from state carried across steps. A checkpoint
therefore only needs the weights, the optimizer moments and the step number, and `resume=True` replays
the remaining steps exactly as an uninterrupted run would (a test checks the losses match bit for bit).

Crash safety: a checkpoint is written into a fresh folder `checkpoint-<step>`; only when every file is in
place does `latest.json` (itself replaced atomically) point at it, and only then are older folders
removed. A run killed mid-write leaves the previous checkpoint untouched and `latest.json` pointing at it.
"""
from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm.auto import tqdm

from ..models.checkpoint import atomic_write, read_safetensors
from ..optim import AdamW, LinearWarmupDecay, clip_grad_norm
from ..tensor import manual_seed
from .device import check_device, on_device
from .metrics import MetricsLog, plot_metrics


@dataclass
class TrainConfig:
    steps: int
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_fraction: float = 0.06
    max_grad_norm: float = 1.0
    grad_accum: int = 1
    eval_every: int = 0          # 0: only at the end
    checkpoint_every: int = 0    # 0: only at the end
    log_every: int = 1
    seed: int = 0
    best_metric: str | None = None  # e.g. "accuracy": keep the model with the best eval value of it


def step_rng(seed: int, step: int, stream: int = 0) -> np.random.Generator:
    """The generator for everything random in optimizer step `step` (stream separates uses)."""
    return np.random.default_rng([seed, step, stream])


def parameter_groups(model, weight_decay: float) -> list[dict]:
    """BERT's recipe: weight decay on weight matrices only, none on biases and LayerNorm parameters."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


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
    """

    def __init__(self, model, config: TrainConfig, out_dir, get_batch: Callable, evaluate: Callable,
                 save_model: Callable, count_tokens: Callable = lambda b: int(np.asarray(b["input_ids"]).size),
                 desc: str = "train", device: str = "cpu"):
        self.model, self.config, self.out_dir = model, config, Path(out_dir)
        self.get_batch, self.evaluate, self.save_model, self.count_tokens = get_batch, evaluate, save_model, count_tokens
        self.desc = desc
        self.device = check_device(device)
        model.to(device)  # before the optimizer, whose moments are made where the parameters are
        self.optimizer = AdamW(parameter_groups(model, config.weight_decay), lr=config.lr)
        warmup = int(round(config.warmup_fraction * config.steps))
        self.schedule = LinearWarmupDecay(self.optimizer, warmup, config.steps)
        self.step = 0
        self.best = None

    # -- the loop ----------------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> dict:
        cfg = self.config
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            self.load_checkpoint()
        log = MetricsLog(self.out_dir / "metrics.jsonl", resume_step=self.step if resume else None)
        last_eval = {}
        bar = tqdm(total=cfg.steps, initial=self.step, desc=self.desc, unit="step", dynamic_ncols=True,
                   disable=None)
        tokens, t0 = 0, time.perf_counter()
        while self.step < cfg.steps:
            loss, n_tokens = self.train_step()
            self.step += 1
            tokens += n_tokens
            rate = tokens / max(time.perf_counter() - t0, 1e-9)
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                log.write(step=self.step, split="train", loss=loss, lr=self.optimizer.param_groups[0]["lr"],
                          tokens_per_s=round(rate, 1))
            bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{rate:,.0f}", refresh=False)
            bar.update(1)
            if not math.isfinite(loss):
                bar.close()
                raise FloatingPointError(f"loss became {loss} at step {self.step}; lower --lr or check the data")
            final = self.step == cfg.steps
            if final or (cfg.eval_every and self.step % cfg.eval_every == 0):
                last_eval = self.run_eval(log)
            if final or (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0):
                self.save_checkpoint()
        bar.close()
        if not last_eval:  # resumed a finished run: still evaluate once, as every run does
            last_eval = self.run_eval(log)
        if cfg.best_metric is None:
            self.save_model(self.out_dir)
        plot_metrics(self.out_dir / "metrics.jsonl", self.out_dir / "loss.png", title=self.desc)
        return last_eval

    def train_step(self) -> tuple[float, int]:
        """One optimizer step over grad_accum micro-batches; returns (mean loss, tokens)."""
        cfg = self.config
        self.model.train()
        total, n_tokens = 0.0, 0
        for micro in range(cfg.grad_accum):
            manual_seed(int(step_rng(cfg.seed, self.step, 1 + micro).integers(2**31)))  # dropout of this micro-batch
            batch = self.get_batch(self.step, micro, step_rng(cfg.seed, self.step, 100 + micro))
            n_tokens += self.count_tokens(batch)
            out = self.model(**on_device(batch, self.device))
            (out.loss * (1.0 / cfg.grad_accum)).backward()
            total += float(out.loss.item())
        clip_grad_norm(self.model.parameters(), cfg.max_grad_norm)
        self.schedule.set_step(self.step)
        self.optimizer.step()
        self.optimizer.zero_grad()
        return total / cfg.grad_accum, n_tokens

    def run_eval(self, log: MetricsLog) -> dict:
        from ..tensor import no_grad

        self.model.eval()
        with no_grad():
            result = self.evaluate(self.model)
        log.write(step=self.step, split="eval", **result)
        tqdm.write(f"[{self.desc}] step {self.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in result.items()
                                                                   if isinstance(v, float)))
        metric = self.config.best_metric
        if metric is not None and (self.best is None or result[metric] > self.best):
            self.best = result[metric]
            self.save_model(self.out_dir)  # the best model so far is the one in out_dir
        return result

    # -- checkpoints -------------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        from safetensors.numpy import save_file

        folder = self.out_dir / f"checkpoint-{self.step}"
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir()
        save_file({k: np.ascontiguousarray(v) for k, v in self.model.state_dict().items()},
                  str(folder / "model.safetensors"))
        opt = self.optimizer.state_dict()
        save_file(opt.pop("arrays") or {"_empty": np.zeros(0, np.float32)}, str(folder / "optimizer.safetensors"))
        state = {"step": self.step, "optimizer": opt, "best": self.best, "config": asdict(self.config)}
        (folder / "trainer_state.json").write_text(json.dumps(state, indent=2))
        atomic_write(self.out_dir / "latest.json",
                     lambda tmp: tmp.write_text(json.dumps({"checkpoint": folder.name, "step": self.step})))
        for old in self.out_dir.glob("checkpoint-*"):
            if old != folder:
                shutil.rmtree(old, ignore_errors=True)
        return folder

    def load_checkpoint(self) -> None:
        pointer = self.out_dir / "latest.json"
        if not pointer.is_file():
            raise FileNotFoundError(f"--resume: {pointer} not found; there is no checkpoint in {self.out_dir} to resume")
        folder = self.out_dir / json.loads(pointer.read_text())["checkpoint"]
        state = json.loads((folder / "trainer_state.json").read_text())
        saved = state["config"]
        for key in ("steps", "seed", "grad_accum"):
            if saved[key] != getattr(self.config, key):
                raise ValueError(
                    f"--resume: the checkpoint in {folder} was made with {key}={saved[key]}, this run asks for "
                    f"{key}={getattr(self.config, key)}; resuming would not continue the same run"
                )
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

"""A wall-time budget turned into a number of optimizer steps, before the first step.

`plan_budget` (used by `minillm pretrain --minutes M`): before the first step, a few real optimizer steps
are timed, with a throwaway AdamW whose learning rate is 0 so that they leave every weight as it was, and
one evaluation and one checkpoint write are timed too. From those costs the number of steps N that fills
the budget is fixed, and the run is then an ordinary N-step run: its learning-rate schedule (warm-up,
linear decay to 0) is laid over the N steps, so over the budget, and N is recorded in every checkpoint,
so `--resume` continues the same schedule and replays the same steps.

Why not a schedule driven by the clock, lr = f(elapsed / budget), as Cramming's `budget-*` schedulers
(Geiping & Goldstein 2022) and the 24-hour BERT of Izsak et al. (2021) use? Then the learning rate of
step s would depend on how fast the machine happened to be at that moment, and no rerun or resume could
reproduce a run. Fixing N once keeps every run exactly repeatable (the tests compare a budgeted run with
the `--steps N` run bit for bit), at a price: a machine that slows down mid-run ends past its budget.

What counts against the budget: everything from the start of the measurement to the end of the run
(the measured steps, training, evaluations, checkpoints, the final model); not reading and tokenizing the
corpus (cached after the first run) nor training a WordPiece vocabulary, which happen before.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..models.checkpoint import write_safetensors
from ..optim import AdamW, clip_grad_norm
from .device import check_device
from .loop import forward_backward, make_out_dir, parameter_groups


@dataclass
class BudgetPlan:
    """How a budget of `minutes` became `steps` optimizer steps; the caller records it (run.json)."""
    minutes: float
    steps: int
    seconds_per_step: float        # a whole optimizer step: forward, backward, clipping, AdamW
    seconds_per_eval: float
    seconds_per_checkpoint: float  # weights and both AdamW moments written to disk
    calibration_seconds: float     # what measuring took (part of the budget)
    timed_steps: int


def plan_steps(minutes: float, spent_s: float, step_s: float, eval_s: float, checkpoint_s: float,
               eval_every: int = 0, checkpoint_every: int = 0, evals: int = 10) -> int:
    """The largest N with  spent + N * step + E(N) * eval + C(N) * checkpoint <= 60 * minutes.

    E(N) = N / eval_every + 1, or evals + 1 when eval_every is 0 (the caller then evaluates every N // evals
    steps); C(N) = N / checkpoint_every + 1 (0: only the final one). The + 1 is the evaluation and the
    checkpoint (with the model saved beside it) at the end of every run. May return 0 or less: the budget
    does not even pay for the fixed costs; the caller says what to do.
    """
    left = 60.0 * minutes - spent_s - eval_s - checkpoint_s
    per_step = step_s + (eval_s / eval_every if eval_every else 0.0)
    per_step += checkpoint_s / checkpoint_every if checkpoint_every else 0.0
    if not eval_every:
        left -= evals * eval_s
    return int(left // per_step)


def plan_budget(minutes: float, model, get_batch: Callable, evaluate: Callable, out_dir, *, seed: int,
                grad_accum: int = 1, max_grad_norm: float = 1.0, weight_decay: float = 0.0,
                eval_every: int = 0, checkpoint_every: int = 0, device: str = "cpu",
                count_tokens: Callable = lambda b: int(np.asarray(b["input_ids"]).size),
                clock_start: float | None = None, warmup_steps: int = 2, min_timed_steps: int = 5,
                max_timed_steps: int = 50) -> tuple[BudgetPlan, dict]:
    """Measure what a step, an evaluation and a checkpoint cost on this machine; return (the plan, the
    evaluation of the untrained model, to be logged as step 0).

    The timed steps are real optimizer steps of the run's first batches (the same code as Trainer.train_step)
    with a throwaway AdamW at learning rate 0: p <- p * (1 - 0 * wd) - 0 * update leaves every weight as it
    was, so the run that follows is exactly the run `--steps N` would make. The first `warmup_steps` are not
    timed (measured on a tiny model on two cores: the first pays for JIT compilation, 20x a typical step,
    the second still 4x); then steps are timed until at least min_timed_steps of them and 0.5% of the
    budget have passed (at most max_timed_steps), and their mean is the step time: the occasional slow step
    (another process, the allocator) is part of what the run will pay. A step whose loss or gradient is not
    finite makes no update at all, as in training (0 * inf would be NaN).

    Args:
        clock_start: time.perf_counter() when the run's clock started (default: now); everything since then
            counts against the budget.
        eval_every, checkpoint_every: the run's intervals (0: ten evaluations per run / only the final
            checkpoint), as `plan_steps` takes them.
    Raises:
        ValueError when the budget leaves no time for a single step.
    """
    import tempfile

    from ..tensor import no_grad

    clock_start = time.perf_counter() if clock_start is None else clock_start
    check_device(device)
    model.to(device)
    throwaway = AdamW(parameter_groups(model, weight_decay), lr=0.0)

    def one_step(step: int) -> None:
        loss, _ = forward_backward(model, get_batch, step, seed, grad_accum, device, count_tokens)
        norm = float(clip_grad_norm(model.parameters(), max_grad_norm))
        if math.isfinite(loss) and math.isfinite(norm):
            throwaway.step()
        throwaway.zero_grad()

    for step in range(warmup_steps):  # compilation and first-touch allocations: not typical steps
        one_step(step)
    t, timed = time.perf_counter(), 0
    while timed < max_timed_steps and (timed < min_timed_steps or time.perf_counter() - t < 0.3 * minutes):
        one_step(timed)
        timed += 1
    step_s = (time.perf_counter() - t) / timed
    del throwaway

    model.eval()
    t = time.perf_counter()
    at_minutes = (t - clock_start) / 60
    with no_grad():
        first_eval = evaluate(model)
    eval_s = time.perf_counter() - t
    model.train()

    make_out_dir(out_dir)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".budget-") as tmp:
        t = time.perf_counter()
        write_safetensors(Path(tmp) / "model.safetensors", model.state_dict())
        checkpoint_s = 3 * (time.perf_counter() - t)  # the weights, then AdamW's m and v: three such files
    spent = time.perf_counter() - clock_start
    steps = plan_steps(minutes, spent, step_s, eval_s, checkpoint_s, eval_every, checkpoint_every)
    if steps < 1:
        raise ValueError(
            f"--minutes {minutes:g}: the budget leaves no time for a training step here (measured: a step "
            f"{step_s:.2f} s, an evaluation {eval_s:.2f} s, a checkpoint {checkpoint_s:.2f} s; measuring took "
            f"{spent:.1f} s); give a larger budget, or a fixed --steps")
    plan = BudgetPlan(minutes=minutes, steps=steps, seconds_per_step=step_s, seconds_per_eval=eval_s,
                      seconds_per_checkpoint=checkpoint_s, calibration_seconds=spent, timed_steps=timed)
    return plan, {**first_eval, "elapsed_minutes": round(at_minutes, 4)}

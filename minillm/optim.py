"""AdamW, the learning-rate schedule BERT trains with, and global-norm gradient clipping.

AdamW (Loshchilov & Hutter) keeps per-parameter moving averages of the gradient (m) and of its square (v)
and decouples weight decay from the adaptive step:

    p <- p * (1 - lr * wd)
    m <- b1 m + (1 - b1) g ;  v <- b2 v + (1 - b2) g^2
    p <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)

The update of each parameter is one pass of the `adamw_step` kernel of the current backend.
"""
from __future__ import annotations

import math

from .backend import kernels_for, to_device, xp


class AdamW:
    """AdamW over `params`: a list of Parameters, or of param groups (dicts with "params" and overrides).

    Example (BERT's recipe: no weight decay on biases and LayerNorm weights):
        opt = AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=1e-4, weight_decay=0.01)
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01):
        params = list(params)
        groups = params if params and isinstance(params[0], dict) else [{"params": params}]
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
        self.param_groups = [{**defaults, **g, "params": list(g["params"])} for g in groups]
        self.state: dict[int, dict] = {}  # id(param) -> {"m", "v"}
        self.step_count = 0

    def zero_grad(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    def step(self) -> None:
        """One update of every parameter that has a gradient."""
        self.step_count += 1
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state.get(id(p))
                if state is None:
                    m = xp(p.data)
                    state = self.state[id(p)] = {"m": m.zeros_like(p.data), "v": m.zeros_like(p.data)}
                kernels_for(p.data).adamw_step(
                    p.data, p.grad, state["m"], state["v"], group["lr"], beta1, beta2, group["eps"],
                    group["weight_decay"], self.step_count,
                )

    # -- checkpointing: moments by parameter position, so a fresh model + optimizer can resume -----
    def state_dict(self) -> dict:
        arrays, index = {}, 0
        for group in self.param_groups:
            for p in group["params"]:
                if id(p) in self.state:
                    arrays[f"{index}.m"] = to_device(self.state[id(p)]["m"], "cpu")
                    arrays[f"{index}.v"] = to_device(self.state[id(p)]["v"], "cpu")
                index += 1
        lrs = [g["lr"] for g in self.param_groups]
        return {"step": self.step_count, "lrs": lrs, "arrays": arrays}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step"])
        for group, lr in zip(self.param_groups, state["lrs"]):
            group["lr"] = lr
        index = 0
        for group in self.param_groups:
            for p in group["params"]:
                if f"{index}.m" in state["arrays"]:
                    m, v = state["arrays"][f"{index}.m"], state["arrays"][f"{index}.v"]
                    if m.shape != p.shape:
                        raise ValueError(f"optimizer state {index}: shape {m.shape} does not fit parameter {p.shape}")
                    self.state[id(p)] = {"m": to_device(m.copy(), p.device), "v": to_device(v.copy(), p.device)}
                index += 1


class LinearWarmupDecay:
    """lr(t) = peak * t / warmup for t < warmup, then linear decay to 0 at total_steps (BERT's schedule)."""

    def __init__(self, optimizer: AdamW, warmup_steps: int, total_steps: int):
        self.optimizer = optimizer
        self.peaks = [g["lr"] for g in optimizer.param_groups]
        self.warmup_steps = max(0, int(warmup_steps))
        self.total_steps = max(1, int(total_steps))

    def factor(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        return max(0.0, (self.total_steps - step) / max(1, self.total_steps - self.warmup_steps))

    def set_step(self, step: int) -> None:
        """Set the learning rate for the update about to be made as update number `step` (0-based)."""
        for group, peak in zip(self.optimizer.param_groups, self.peaks):
            group["lr"] = peak * self.factor(step)


def clip_grad_norm(parameters, max_norm: float) -> float:
    """Scale all gradients so that their global L2 norm is at most max_norm; return the norm before."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return 0.0
    # One BLAS dot per gradient (no float64 copy), summed where the gradients live, one transfer of the total.
    m = xp(grads[0])
    total = math.sqrt(float(sum(m.dot(g.ravel(), g.ravel()) for g in grads)))
    if math.isfinite(total) and total > max_norm:
        scale = max_norm / (total + 1e-6)
        for g in grads:
            g *= g.dtype.type(scale)
    return total

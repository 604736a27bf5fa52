"""metrics.jsonl (one JSON object per line) and the loss.png curve drawn from it.

The file is strict JSON, readable by any JSON parser (jq, pandas, JavaScript): a NaN or infinite value,
such as the loss of a skipped step, is written as null.
"""
from __future__ import annotations

import json
import math
from pathlib import Path


class MetricsLog:
    """Appends records to `path`; on resume, lines past the resumed step are dropped first."""

    def __init__(self, path, resume_step: int | None = None):
        self.path = Path(path)
        if resume_step is None:
            self.path.write_text("")
        else:
            kept = [r for r in read_metrics(self.path) if r["step"] <= resume_step]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def write(self, **record) -> None:
        record = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, allow_nan=False) + "\n")


def read_metrics(path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def smooth(values: list[float], alpha: float = 0.1) -> list[float]:
    """Exponential moving average, bias-corrected like Adam's moments so the start is not dragged to 0."""
    out, avg = [], 0.0
    for i, v in enumerate(values, 1):
        avg = (1 - alpha) * avg + alpha * v
        out.append(avg / (1 - (1 - alpha) ** i))
    return out


def plot_metrics(metrics_path, png_path, title: str = "") -> Path | None:
    """Draw train loss (raw and smoothed) and eval loss against step, eval accuracy on a second axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    train = [r for r in records if r.get("split") == "train" and _finite(r.get("loss"))]
    evals = [r for r in records if r.get("split") == "eval" and _finite(r.get("loss"))]
    if not train and not evals:
        return None
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if train:
        steps = [r["step"] for r in train]
        losses = [r["loss"] for r in train]
        ax.plot(steps, losses, color="tab:blue", alpha=0.25, lw=0.8)
        ax.plot(steps, smooth(losses), color="tab:blue", lw=1.6, label="train loss (smoothed)")
    if evals:
        ax.plot([r["step"] for r in evals], [r["loss"] for r in evals], "o-", color="tab:orange", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    accuracy_key = next((k for k in ("accuracy", "mlm_accuracy") if evals and k in evals[0]), None)
    handles, labels = ax.get_legend_handles_labels()
    if accuracy_key:
        ax2 = ax.twinx()
        ax2.plot([r["step"] for r in evals], [r[accuracy_key] for r in evals], "s--", color="tab:green",
                 label=f"eval {accuracy_key}")
        ax2.set_ylabel(accuracy_key)
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, loc="upper right", fontsize=8)
    ax.set_title(title or Path(metrics_path).parent.name)
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)
    return Path(png_path)

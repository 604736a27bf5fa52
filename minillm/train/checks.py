"""Checks of run settings, written once and used twice.

Each numeric setting of a run (steps, batch size, learning rate ...) has one `Check`. The same object is

  * the argparse `type=` of its flag, so `minillm pretrain --batch-size 0` stops at parse time with
    argparse's usage error naming the flag ("argument --batch-size: must be a positive integer, got '0'"),
    before any data is read;
  * the metadata of its dataclass field, so `PretrainArgs(batch_size=0)` (the Python API) raises a
    ValueError naming the field, through `check_settings` in `__post_init__`:

        @dataclass
        class PretrainArgs:
            batch_size: int = setting(positive_int, 32)
            def __post_init__(self):
                check_settings(self)

A test walks every subcommand of the parser and every field of the argument dataclasses and fails when a
numeric one has no check, or when a flag and its field disagree. What this is not: a schema library; only
what a run needs. Standard library only, so the command line can use it before anything heavy is imported.
"""
from __future__ import annotations

import argparse
import math
import numbers
from dataclasses import MISSING, field, fields
from pathlib import Path


class Check:
    """A rule for one numeric setting: its kind (int or float) and the values it accepts.

    Called with a string (as argparse does) it parses, checks and returns the value, or raises
    argparse.ArgumentTypeError; `accepts(value)` checks a value given from Python.
    """

    def __init__(self, kind: type, ok, what: str):
        self.kind, self.ok, self.what = kind, ok, what
        self.__name__ = what  # argparse names the type by __name__ in some of its messages

    def accepts(self, value) -> bool:
        if isinstance(value, bool):  # True is an int to Python, never a step count to a user
            return False
        wanted = numbers.Integral if self.kind is int else numbers.Real
        return isinstance(value, wanted) and bool(self.ok(value))

    def __call__(self, text: str):
        try:
            value = self.kind(text)
        except (TypeError, ValueError):
            value = None
        if value is None or not self.accepts(value):
            raise argparse.ArgumentTypeError(f"must be {self.what}, got {text!r}")
        return value

    def __repr__(self) -> str:
        return f"Check({self.what!r})"


def int_range(low: int, high: int | None = None, why: str = "") -> Check:
    """An integer in [low, high] (no upper bound when high is None)."""
    what = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
    return Check(int, lambda v: v >= low and (high is None or v <= high), what + (f" ({why})" if why else ""))


positive_int = Check(int, lambda v: v > 0, "a positive integer")
nonnegative_int = Check(int, lambda v: v >= 0, "an integer >= 0")
positive_float = Check(float, lambda v: math.isfinite(v) and v > 0, "a positive finite number")
nonnegative_float = Check(float, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")
probability = Check(float, lambda v: 0 <= v <= 1, "a number in [0, 1]")
open_fraction = Check(float, lambda v: 0 < v < 1, "a number strictly between 0 and 1")
positive_or_inf = Check(float, lambda v: v > 0, "a positive number (inf allowed)")
random_seed = Check(int, lambda v: v >= 0, "an integer >= 0 (NumPy seeds are non-negative)")
sequence_length = int_range(8, 512, "[CLS] ... [SEP] rows; BERT's position table has 512 positions")
classifier_length = int_range(3, 512, "[CLS], a token and [SEP] at least; BERT has at most 512 positions")
label_count = int_range(2, None, "a classifier needs two classes at least")
# The pretraining / fine-tuning recipe (see minillm/train/pretrain.py for where each default comes from).
mask_rate = Check(float, lambda v: 0 < v < 1, "a share of the tokens strictly between 0 and 1 (BERT: 0.15)")
dropout_rate = Check(float, lambda v: 0 <= v < 1, "a probability in [0, 1) (1 would drop every activation)")
warmup_amount = Check(
    float, lambda v: math.isfinite(v) and v >= 0 and (v < 1 or float(v).is_integer()),
    "a fraction of the steps in [0, 1) (0.06: the first 6%), or a whole number of steps >= 1 (500)")


def warmup_split(value: float) -> tuple[float, int | None]:
    """--warmup as TrainConfig takes it: (warmup_fraction, warmup_steps). Below 1 it is a fraction of the
    run's steps; 1 or more, a number of steps (so `--warmup 1` is one step, not the whole run)."""
    if not warmup_amount.accepts(value):
        raise ValueError(f"warmup = {value!r}: must be {warmup_amount.what}")
    return (float(value), None) if value < 1 else (0.0, int(value))


def setting(check: Check, default=MISSING, optional: bool = False):
    """A dataclass field (required when no default is given) whose value `check_settings` checks; None
    passes when optional."""
    return field(default=default, metadata={"check": check, "optional": optional})


def check_settings(obj) -> None:
    """Raise ValueError for the first field of dataclass `obj` that its Check refuses."""
    for f in fields(obj):
        check = f.metadata.get("check")
        value = getattr(obj, f.name)
        if check is None or (value is None and f.metadata.get("optional")):
            continue
        if not check.accepts(value):
            raise ValueError(f"{type(obj).__name__}.{f.name} = {value!r}: must be {check.what}")


def _out_dir_problem(path: Path) -> str | None:
    for p in (path, *path.parents):
        if p.exists():
            if p.is_dir():
                return None
            where = "is a file" if p == path else f"lies inside {p}, which is a file"
            return (f"{path} {where}; --out must be a folder (it gets the model, checkpoints, metrics.jsonl "
                    "and loss.png)")
    return None


def check_out_dir(path) -> Path:
    """`path` as a folder a run may write into: it may exist as a folder or not exist yet, never as a file."""
    path = Path(path)
    problem = _out_dir_problem(path)
    if problem:
        raise ValueError(f"--out: {problem}")
    return path


def out_dir(text: str) -> str:
    """argparse type of --out: refuses a path that is (or lies inside) an existing file."""
    problem = _out_dir_problem(Path(text))
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text

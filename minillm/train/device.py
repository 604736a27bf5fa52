"""Where a model lives and where its batches go: the device plumbing every training and evaluation path shares.

A run's device ("cpu" or "cuda") is one explicit argument, from `--device` down: the model is moved there
once (`Module.to`), and every batch is moved there by `on_device` before anything reads it. A model's
forward moves its own inputs, but a loss, a metric or an index computed next to the model needs its
arrays where the model's outputs are: a NumPy target in a CuPy cross-entropy is an error on a GPU while
the same code runs silently on a CPU. Routing every batch through one function makes that mistake
impossible to make in one path and not the others.
"""
from __future__ import annotations

from ..backend import to_device

DEVICES = ("cpu", "cuda")


def check_device(device: str) -> str:
    """`device` if it is one minillm knows, else ValueError."""
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; use one of {', '.join(DEVICES)}")
    return device


def device_of(model) -> str:
    """"cpu" or "cuda": where the model's parameters live, and so where every batch for it must go."""
    return model.parameters()[0].device


def on_device(batch: dict, device: str) -> dict:
    """A copy of `batch` with every array in it (inputs, masks, targets, positions) on `device`."""
    return {k: to_device(v, device) if hasattr(v, "shape") and hasattr(v, "dtype") else v for k, v in batch.items()}

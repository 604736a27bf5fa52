"""What every model family shares at its inputs and outputs: the output record and the id-array check.

`Output` is a dict whose entries are also attributes, as transformers' ModelOutput (`out.logits`,
`out["loss"]`); `as_ids` turns token ids, masks and labels given as lists, int arrays or Tensors into an
int array on the model's device, checked for shape. Nothing here knows a model family.
"""
from __future__ import annotations

import numpy as np

from ..backend import to_device
from ..tensor import Tensor


class Output(dict):
    """A dict whose entries are also attributes: `out.loss`, `out["logits"]` (as transformers' ModelOutput)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def as_ids(a, name: str, shape=None, device: str = "cpu"):
    """Token ids, masks and labels may come as lists, int arrays or Tensors: return an int array on
    `device` (the device of the model's parameters), checked for shape. A 1-D `input_ids` (or mask) is one
    sequence, (T,) -> (1, T); labels keep their shape."""
    a = a.data if isinstance(a, Tensor) else a
    a = to_device(a if hasattr(a, "get") else np.asarray(a), device)
    if name != "labels" and a.ndim == 1:
        a = a[None, :]
    if name != "labels" and a.ndim != 2:
        raise ValueError(f"{name} must have shape (B, T), got {tuple(a.shape)}")
    if shape is not None and tuple(a.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(a.shape)} but input_ids has shape {tuple(shape)}")
    return a

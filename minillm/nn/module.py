"""Module and Parameter: the bookkeeping that turns tensors into a model.

A `Module` finds its parameters and sub-modules by looking at its own attributes, in the order they were
assigned, so that `named_parameters()` yields dotted names such as `encoder.layer.0.attention.self.query.weight`
(the Hugging Face names, so a checkpoint's key list maps one to one). `state_dict()` / `load_state_dict()` speak plain arrays.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Iterator

import numpy as np

from ..backend import to_device
from ..tensor import Tensor


class Parameter(Tensor):
    """A tensor that is a learnable weight of a module (requires_grad=True)."""

    def __init__(self, data, dtype=None):
        super().__init__(data, requires_grad=True, dtype=dtype)

    def __repr__(self) -> str:
        return f"Parameter(shape={self.shape}, dtype={self.dtype})"


class Module:
    """Base class: subclasses assign Parameters and Modules as attributes and define forward()."""

    training: bool = True

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    # -- traversal ---------------------------------------------------------------------------------
    def named_children(self) -> Iterator[tuple[str, "Module"]]:
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value

    def modules(self) -> Iterator["Module"]:
        yield self
        for _, child in self.named_children():
            yield from child.modules()

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """(dotted name, parameter) pairs; a parameter shared by two modules (tied weights) appears once."""
        seen = set()
        for name, p in self._named_parameters_all(prefix):
            if id(p) not in seen:
                seen.add(id(p))
                yield name, p

    def _named_parameters_all(self, prefix):
        for name, value in vars(self).items():
            if isinstance(value, Parameter):
                yield prefix + name, value
            elif isinstance(value, Module):
                yield from value._named_parameters_all(f"{prefix}{name}.")

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters()]

    def num_parameters(self) -> int:
        return sum(p.size for p in self.parameters())

    # -- state -------------------------------------------------------------------------------------
    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Every parameter by name (tied weights under each of their names), as host arrays."""
        return OrderedDict((name, to_device(p.data, "cpu")) for name, p in self._named_parameters_all(""))

    def load_state_dict(self, state: dict, strict: bool = True) -> tuple[list[str], list[str]]:
        """Copy arrays into parameters by name. Returns (missing, unexpected) names; strict raises on either.

        A shape that does not fit raises ValueError naming the tensor and both shapes.
        """
        own = dict(self._named_parameters_all(""))
        missing = [name for name in own if name not in state]
        unexpected = [name for name in state if name not in own]
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict: missing {missing[:10]}, unexpected {unexpected[:10]}")
        for name, array in state.items():
            if name not in own:
                continue
            p = own[name]
            if tuple(array.shape) != p.shape:
                raise ValueError(f"load_state_dict: {name} has shape {tuple(array.shape)}, the model expects {p.shape}")
            p.data = to_device(np.asarray(array, dtype=p.dtype) if not hasattr(array, "get") else array, p.device)
        return missing, unexpected

    # -- modes and devices -------------------------------------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        for m in self.modules():
            m.training = mode
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def to(self, device: str) -> "Module":
        """Move every parameter to "cpu" or "cuda" in place (the Parameter objects stay the same)."""
        for p in self.parameters():
            p.data = to_device(p.data, device)
            p.grad = None if p.grad is None else to_device(p.grad, device)
        return self

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}("]
        for name, child in self.named_children():
            body = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {body}")
        return "\n".join(lines) + ")" if len(lines) > 1 else f"{type(self).__name__}({self.extra_repr()})"

    def extra_repr(self) -> str:
        return ""


class ModuleList(Module):
    """A list of modules, named 0, 1, 2, ... (as `encoder.layer.0`)."""

    def __init__(self, modules=()):
        for i, m in enumerate(modules):
            setattr(self, str(i), m)

    def __len__(self) -> int:
        return sum(1 for _ in self.named_children())

    def __iter__(self):
        return (m for _, m in self.named_children())

    def __getitem__(self, i: int) -> Module:
        return getattr(self, str(i % len(self)))

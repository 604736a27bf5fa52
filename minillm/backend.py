"""The one seam between minillm and the array library, and the choice of kernel backend.

Every op in minillm asks `xp(array)` for the module that owns an array (NumPy on the CPU, CuPy on a GPU)
instead of calling `np.` directly, so the same autograd code runs on both. Which *kernels* run the fused
ops (softmax, layer norm, attention, ...) is chosen separately:

    mm.set_backend("numba")     # or "numpy" (the readable reference) or "cupy"; env MINILLM_BACKEND

CuPy arrays always use the "cupy" kernels; CPU arrays use "numpy" or "numba", whichever is set.

This module deliberately knows nothing about tensors or autograd.
"""
from __future__ import annotations

import os

import numpy as np

import kernels

_backend = os.environ.get("MINILLM_BACKEND", "numba")
if _backend not in kernels.BACKENDS:
    raise ValueError(
        f"MINILLM_BACKEND={_backend!r} is not a kernel backend; known backends: {', '.join(kernels.BACKENDS)}"
    )


def set_backend(name: str) -> None:
    """Choose the kernel backend for fused ops: "numpy" (reference), "numba" (CPU) or "cupy" (GPU)."""
    global _backend
    if name not in kernels.BACKENDS:
        raise ValueError(f"unknown backend {name!r}; known backends: {', '.join(kernels.BACKENDS)}")
    if name == "cupy":
        kernels.get("cupy")  # fail now, with the install hint, rather than inside the first forward pass
    _backend = name


def get_backend() -> str:
    """The name of the current kernel backend."""
    return _backend


def is_cupy(array) -> bool:
    return type(array).__module__.startswith("cupy")


def xp(array):
    """The array module (numpy or cupy) that owns `array`."""
    if is_cupy(array):
        import cupy

        return cupy
    return np


def kernels_for(array):
    """The kernel namespace that can run on `array`: cupy for GPU arrays, else the current CPU backend."""
    if is_cupy(array):
        return kernels.get("cupy")
    if _backend == "cupy":
        raise RuntimeError(
            "the kernel backend is 'cupy' but this tensor lives on the CPU; move the model and inputs "
            "with .to('cuda'), or call mm.set_backend('numba') to compute on the CPU"
        )
    return kernels.get(_backend)


def scatter_add(target, index, values) -> None:
    """target[index] += values, adding repeated indices (the backward of a gather/embedding lookup)."""
    if is_cupy(target):
        import cupyx

        cupyx.scatter_add(target, index, values)
    elif isinstance(index, np.ndarray) and index.dtype.kind in "iu" and values.ndim == index.ndim + target.ndim - 1:
        # Rows gathered by an integer array (an embedding lookup): sort the ids, sum each run of equal ids
        # with one reduceat, and add once per distinct id. Far faster than np.add.at on (N, C) rows.
        ids = index.reshape(-1)
        if ids.size == 0:
            return
        rows = values.reshape(ids.size, *target.shape[1:])
        order = np.argsort(ids, kind="stable")
        sorted_ids = ids[order]
        starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
        target[sorted_ids[starts]] += np.add.reduceat(rows[order], starts, axis=0)
    else:
        np.add.at(target, index, values)


def to_device(array, device: str):
    """Copy `array` to "cpu" or "cuda" (a no-op when it is already there)."""
    if device == "cpu":
        return array.get() if is_cupy(array) else array
    if device in ("cuda", "gpu") or device.startswith("cuda:"):
        try:
            import cupy
        except ImportError as e:
            raise RuntimeError("device 'cuda' needs CuPy and a GPU: pip install -e '.[gpu]'") from e
        return array if is_cupy(array) else cupy.asarray(array)
    raise ValueError(f"unknown device {device!r}; use 'cpu' or 'cuda'")

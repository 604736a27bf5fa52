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


def normalize_index(shape, index, op: str = "indexing", like=None):
    """`index` with every integer-array part made non-negative and checked against `shape`.

    NumPy reads -1 as the last entry of an axis, so one row can be spelled two ways (-1 and n - 1). Code
    that groups equal ids (scatter_add's fast path below) would take them for two rows and lose a
    gradient. After this function each entry has one spelling, in [0, n); an id outside [-n, n) raises an
    IndexError that names the op, the axis and the shape. Ints, slices, None, Ellipsis and bool masks pass
    through unchanged (they cannot spell one entry twice); a list of ints becomes an integer array (of
    the array module of `like`, the array being indexed, when given).
    """
    parts = index if isinstance(index, tuple) else (index,)
    parts = tuple(_as_index_array(p, like) for p in parts)

    def width(p):  # how many axes of `shape` an index part consumes
        if p is None or p is Ellipsis or isinstance(p, (bool, np.bool_)):
            return 0
        if hasattr(p, "dtype") and hasattr(p, "ndim") and p.dtype == bool:
            return p.ndim  # a mask covers as many axes as it has (a 0-d one, none)
        return 1

    in_ellipsis = len(shape) - sum(width(p) for p in parts)
    out, axis = [], 0
    for p in parts:
        if p is Ellipsis:
            axis += max(in_ellipsis, 0)
        elif (isinstance(p, np.ndarray) or is_cupy(p)) and p.dtype.kind in "iu":
            if axis >= len(shape):
                raise IndexError(f"{op}: too many indices for an array of shape {tuple(shape)}")
            n = shape[axis]
            if p.size:
                lo, hi = int(p.min()), int(p.max())
                if lo < -n or hi >= n:
                    raise IndexError(
                        f"{op}: index {lo if lo < -n else hi} is out of range for axis {axis} of an array of "
                        f"shape {tuple(shape)} (valid: {-n} .. {n - 1})"
                    )
                if lo < 0:
                    p = xp(p).where(p < 0, p + n, p)
        axis += 0 if p is Ellipsis else width(p)
        out.append(p)
    return tuple(out) if isinstance(index, tuple) else out[0]


def _as_index_array(p, like=None):
    """A list of ints (or bools) as an array, so that it is normalized like one; anything else unchanged."""
    if isinstance(p, list):
        a = np.asarray(p)
        return (a if like is None else xp(like).asarray(a)) if a.dtype.kind in "biu" else p
    return p


def scatter_add(target, index, values) -> None:
    """target[index] += values, adding repeated indices (the backward of a gather/embedding lookup)."""
    index = normalize_index(target.shape, index, "scatter_add", like=target)
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

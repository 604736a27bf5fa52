"""Input conversion shared by the kernel families: one place decides what a kernel accepts.

    as_float32  for the Numba kernels: any real dtype -> a C-contiguous float32 copy (or the array itself)
    as_float    for the NumPy references: float32 and float64 pass through (gradient checks need float64)
"""
from __future__ import annotations

import numpy as np


def as_float32(a, op: str, name: str) -> np.ndarray:
    """`a` as a C-contiguous float32 array; a non-real dtype is a ValueError naming the op and argument."""
    a = np.asarray(a)
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{op}: {name} must hold real numbers, got dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.float32)


def as_float(x) -> np.ndarray:
    """`x` as an array that keeps float32 or float64; anything else becomes float32."""
    x = np.asarray(x)
    return x if x.dtype in (np.float32, np.float64) else x.astype(np.float32)

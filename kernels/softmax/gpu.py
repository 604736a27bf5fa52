"""Softmax on the GPU: the CuPy launcher of softmax.cu (backend "cupy" of the kernel contract).

    softmax_fwd(x, mask=None) -> y      y = exp(x - max) / sum(exp(x - max)) over the last axis
    softmax_bwd(y, dy) -> dx            dx = y * (dy - sum(y * dy))

Same semantics as kernels/softmax/reference.py: `mask` is a bool array broadcastable to x (True = keep);
a fully masked row gives zeros. This file only checks inputs, flattens to (N, C) rows and launches; the
algorithm (one warp per row, online max/sum, warp-shuffle reductions) is explained in softmax.cu.

Importing this module needs neither CuPy nor a GPU; the first call compiles softmax.cu with NVRTC.
"""
from __future__ import annotations

import math

from kernels._cuda import NULL, WARP, as_f32, cdiv, cu_path, get_kernel, i32, require_cupy

_CU = cu_path(__file__, "softmax")
WARPS_PER_BLOCK = 4  # must match #define WARPS_PER_BLOCK in softmax.cu: one row per warp


def _rows(x):
    """(..., C) -> (N, C) view: N = product of all leading dims."""
    C = x.shape[-1]
    return x.reshape(-1, C), math.prod(x.shape[:-1]), C


def softmax_fwd(x, mask=None):
    """Softmax over the last axis of a float32 CuPy array; `mask` (bool, broadcastable, True = keep)."""
    cp = require_cupy()
    x = as_f32("softmax_fwd", "x", x, min_ndim=1)
    if x.size == 0:
        return cp.empty_like(x)
    x2, N, C = _rows(x)  # (..., C) -> (N, C)
    m2 = NULL  # no mask: the kernel sees a NULL pointer
    if mask is not None:
        mask = cp.asarray(mask)
        if mask.dtype != cp.bool_:
            raise ValueError(f"softmax_fwd: mask must be bool (True = keep), got {mask.dtype}")
        try:
            # Materialized at x's shape, 1 byte per entry (a quarter of x's traffic): simpler than
            # teaching the kernel broadcasting strides, and attention masks are small next to scores.
            m2 = cp.ascontiguousarray(cp.broadcast_to(mask, x.shape)).view(cp.uint8).reshape(N, C)
        except ValueError as e:
            raise ValueError(f"softmax_fwd: mask of shape {mask.shape} does not broadcast to x's {x.shape}") from e
    y = cp.empty_like(x)
    kernel = get_kernel(_CU, "softmax_fwd")
    kernel((cdiv(N, WARPS_PER_BLOCK),), (WARPS_PER_BLOCK * WARP,), (x2, m2, y, i32(N), i32(C)))
    return y


def softmax_bwd(y, dy):
    """Gradient of softmax: dx = y * (dy - sum(y * dy, axis=-1, keepdims=True))."""
    cp = require_cupy()
    y = as_f32("softmax_bwd", "y", y, min_ndim=1)
    dy = as_f32("softmax_bwd", "dy", dy, shape=y.shape)
    dx = cp.empty_like(y)
    if y.size == 0:
        return dx
    _, N, C = _rows(y)
    kernel = get_kernel(_CU, "softmax_bwd")
    kernel((cdiv(N, WARPS_PER_BLOCK),), (WARPS_PER_BLOCK * WARP,), (y, dy, dx, i32(N), i32(C)))
    return dx

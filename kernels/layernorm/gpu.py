"""Layer norm on the GPU: the CuPy launcher of layernorm.cu (backend "cupy" of the kernel contract).

    layernorm_fwd(x, weight, bias, eps) -> (y, mean, rstd)
        y = (x - mean) * rstd * weight + bias,  rstd = 1 / sqrt(var + eps), over the last axis
    layernorm_bwd(dy, x, weight, mean, rstd) -> (dx, dweight, dbias)

Same semantics as kernels/layernorm/reference.py: x is (..., C), weight and bias (C,), mean and rstd have
x's leading shape; the same numerics (statistics of the row shifted by its first element, so a constant row
gives y = bias exactly even at eps = 1e-12; the backward re-centres x - mean). dweight and dbias are
reduced over all rows deterministically (two kernels, no atomics; see layernorm.cu), so repeated runs give
bit-identical gradients.

Importing this module needs neither CuPy nor a GPU; the first call compiles layernorm.cu with NVRTC.
"""
from __future__ import annotations

import math

from kernels._cuda import WARP, as_f32, cdiv, cu_path, f32, get_kernel, i32, require_cupy

_CU = cu_path(__file__, "layernorm")
# These three must match the #defines of layernorm.cu.
WARPS_PER_BLOCK = 4   # one row per warp in layernorm_fwd / layernorm_bwd_dx
ROWS_PER_CHUNK = 64   # rows summed by one block of layernorm_bwd_params_partial
COLS_PER_BLOCK = 256  # columns (= threads) per block of the two parameter-gradient kernels


def layernorm_fwd(x, weight, bias, eps):
    """Normalize the last axis of x; returns (y (..., C), mean (...), rstd (...))."""
    cp = require_cupy()
    x = as_f32("layernorm_fwd", "x", x, min_ndim=1)
    C = x.shape[-1]
    weight = as_f32("layernorm_fwd", "weight", weight, shape=(C,))
    bias = as_f32("layernorm_fwd", "bias", bias, shape=(C,))
    if C == 0:
        raise ValueError("layernorm_fwd: the normalized axis has size 0; mean and variance are undefined")
    N = math.prod(x.shape[:-1])
    y = cp.empty_like(x)                                   # (..., C)
    mean = cp.empty(x.shape[:-1], dtype=cp.float32)        # (...)
    rstd = cp.empty(x.shape[:-1], dtype=cp.float32)        # (...)
    if N:
        get_kernel(_CU, "layernorm_fwd")(
            (cdiv(N, WARPS_PER_BLOCK),), (WARPS_PER_BLOCK * WARP,),
            (x, weight, bias, y, mean, rstd, i32(N), i32(C), f32(eps)),
        )
    return y, mean, rstd


def layernorm_bwd(dy, x, weight, mean, rstd):
    """Gradients of layer norm: dx (..., C), dweight (C,), dbias (C,)."""
    cp = require_cupy()
    x = as_f32("layernorm_bwd", "x", x, min_ndim=1)
    C = x.shape[-1]
    dy = as_f32("layernorm_bwd", "dy", dy, shape=x.shape)
    weight = as_f32("layernorm_bwd", "weight", weight, shape=(C,))
    mean = as_f32("layernorm_bwd", "mean", mean, shape=x.shape[:-1])
    rstd = as_f32("layernorm_bwd", "rstd", rstd, shape=x.shape[:-1])
    N = math.prod(x.shape[:-1])
    dx = cp.empty_like(x)
    dweight = cp.zeros((C,), dtype=cp.float32)
    dbias = cp.zeros((C,), dtype=cp.float32)
    if N == 0 or C == 0:
        return dx, dweight, dbias
    off = cp.empty((N,), dtype=cp.float32)  # per-row rounding of `mean`, removed from x - mean (layernorm.cu)
    get_kernel(_CU, "layernorm_bwd_dx")(
        (cdiv(N, WARPS_PER_BLOCK),), (WARPS_PER_BLOCK * WARP,),
        (dy, x, weight, mean, rstd, dx, off, i32(N), i32(C)),
    )
    n_chunks = cdiv(N, ROWS_PER_CHUNK)
    if n_chunks > 65535:  # gridDim.y limit of the partial-sum kernel
        raise ValueError(f"layernorm_bwd: {N} rows is more than {65535 * ROWS_PER_CHUNK}; split the batch")
    partial = cp.empty((n_chunks, 2, C), dtype=cp.float32)  # per-chunk (dweight, dbias)
    get_kernel(_CU, "layernorm_bwd_params_partial")(
        (cdiv(C, COLS_PER_BLOCK), n_chunks), (COLS_PER_BLOCK,), (dy, x, mean, off, rstd, partial, i32(N), i32(C)),
    )
    get_kernel(_CU, "layernorm_bwd_params_reduce")(
        (cdiv(C, COLS_PER_BLOCK),), (COLS_PER_BLOCK,), (partial, dweight, dbias, i32(n_chunks), i32(C)),
    )
    return dx, dweight, dbias

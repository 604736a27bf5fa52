"""Attention on the GPU: the CuPy launcher of attention.cu (backend "cupy" of the kernel contract).

    attention_fwd(q, k, v, key_mask=None, causal=False, scale=None) -> (out, lse)
    attention_bwd(dout, q, k, v, out, lse, key_mask=None, causal=False, scale=None) -> (dq, dk, dv)
    attention_decode_fwd(q, k, v, key_mask=None, scale=None) -> (out, lse)   one query (not in the contract)

Same semantics as kernels/attention/reference.py (read its docstring for the math): q (B, H, Tq, D),
k and v (B, H, Tk, D), key_mask (B, Tk) bool with True = may be attended to, causal aligned bottom-right,
lse -inf and output 0 on rows that see no key. Head size D <= 128.

The kernels are FlashAttention-style (tiles in shared memory, online softmax, P recomputed from lse in the
backward); the backward runs three kernels: Delta = rowsum(dO * out), then dK/dV per key block, then dQ
per query block -- two passes instead of atomics, so gradients are deterministic. See attention.cu.

Importing this module needs neither CuPy nor a GPU; the first call compiles attention.cu with NVRTC.
"""
from __future__ import annotations

import math

from kernels._cuda import (
    NULL, WARP, as_f32, cdiv, check_array, cu_path, f32, get_kernel, i32, i64, require_cupy,
)

_CU = cu_path(__file__, "attention")
NWARPS = 4         # must match #define NWARPS in attention.cu
MAX_GRID_Y = 65535  # CUDA's limit on gridDim.y, which carries B * H


def _bucket(op, D):
    """The compiled head-size bucket DMAX >= D and its rows per block (mirrors Cfg<DMAX> in attention.cu)."""
    for dmax in (32, 64, 128):
        if D <= dmax:
            rows_per_warp = 2 if dmax >= 128 else 4
            return dmax, NWARPS * rows_per_warp
    raise ValueError(
        f"{op}: head size D = {D} is larger than 128, the most attention.cu supports "
        "(its per-lane registers and shared-memory tiles are sized for D <= 128); use the 'numba' backend"
    )


def _check(op, q, k, v, key_mask, extra=()):
    """Validate and convert q, k, v and `extra` ((name, array, shape) triples).

    Returns (q, k, v, extra arrays), (B, H, Tq, Tk, D), and the key mask as bytes (or NULL).
    """
    cp = require_cupy()
    q = as_f32(op, "q", q, ndim=4)
    B, H, Tq, D = q.shape
    k = as_f32(op, "k", k, ndim=4)
    Tk = k.shape[2]
    k = as_f32(op, "k", k, shape=(B, H, Tk, D))
    v = as_f32(op, "v", v, shape=(B, H, Tk, D))
    extra = tuple(as_f32(op, name, a, shape=shape) for name, a, shape in extra)
    if B * H > MAX_GRID_Y:
        raise ValueError(f"{op}: B * H = {B * H} exceeds CUDA's grid limit {MAX_GRID_Y}; split the batch")
    if D == 0:
        raise ValueError(f"{op}: head size D is 0 (q has shape {q.shape}); attention needs D >= 1")
    mask = NULL  # no key mask: the kernel sees a NULL pointer
    if key_mask is not None:
        if isinstance(key_mask, cp.ndarray):
            key_mask = cp.ascontiguousarray(key_mask)
        check_array(op, "key_mask", key_mask, shape=(B, Tk), dtype=cp.bool_)
        mask = key_mask.view(cp.uint8)  # bool is one byte: the kernel reads it as unsigned char
    return (q, k, v) + extra, (B, H, Tq, Tk, D), mask


def _scale(scale, D):
    return 1.0 / math.sqrt(D) if scale is None else float(scale)


def attention_fwd(q, k, v, key_mask=None, causal=False, scale=None):
    """out = softmax(scale * q k^T + mask) v over keys; returns (out (B, H, Tq, D), lse (B, H, Tq))."""
    cp = require_cupy()
    (q, k, v), (B, H, Tq, Tk, D), mask = _check("attention_fwd", q, k, v, key_mask)
    out = cp.empty_like(q)                             # (B, H, Tq, D)
    lse = cp.empty((B, H, Tq), dtype=cp.float32)       # (B, H, Tq)
    if B * H * Tq == 0:
        return out, lse
    # Tk == 0 needs no special case: the key loop runs zero times, so every row gets out 0, lse -inf.
    dmax, rows = _bucket("attention_fwd", D)
    get_kernel(_CU, f"attention_fwd_d{dmax}")(
        (cdiv(Tq, rows), B * H), (NWARPS * WARP,),
        (q, k, v, mask, out, lse, i32(H), i32(Tq), i32(Tk), i32(D), i32(bool(causal)), f32(_scale(scale, D))),
    )
    return out, lse


def attention_bwd(dout, q, k, v, out, lse, key_mask=None, causal=False, scale=None):
    """Gradients (dq, dk, dv) of attention from the saved (out, lse); never builds the T x T matrix."""
    cp = require_cupy()
    (q, k, v, dout, out, lse), (B, H, Tq, Tk, D), mask = _check(
        "attention_bwd", q, k, v, key_mask,
        extra=(("dout", dout, q.shape), ("out", out, q.shape), ("lse", lse, q.shape[:3])),
    )
    dq, dk, dv = cp.zeros_like(q), cp.zeros_like(k), cp.zeros_like(v)
    if B * H * Tq == 0 or Tk == 0 or D == 0:
        return dq, dk, dv  # no query or no key: every gradient is an empty sum
    dmax, rows = _bucket("attention_bwd", D)
    scale = f32(_scale(scale, D))
    delta = cp.empty((B, H, Tq), dtype=cp.float32)     # Delta_i = dO_i . out_i
    n_rows = B * H * Tq
    get_kernel(_CU, "attention_bwd_delta")((cdiv(n_rows, NWARPS),), (NWARPS * WARP,), (dout, out, delta, i64(n_rows), i32(D)))
    shape_args = (i32(H), i32(Tq), i32(Tk), i32(D), i32(bool(causal)), scale)
    get_kernel(_CU, f"attention_bwd_dkdv_d{dmax}")(
        (cdiv(Tk, rows), B * H), (NWARPS * WARP,), (q, k, v, dout, lse, delta, mask, dk, dv) + shape_args,
    )
    get_kernel(_CU, f"attention_bwd_dq_d{dmax}")(
        (cdiv(Tq, rows), B * H), (NWARPS * WARP,), (q, k, v, dout, lse, delta, mask, dq) + shape_args,
    )
    return dq, dk, dv


def attention_decode_fwd(q, k, v, key_mask=None, scale=None):
    """One query per (batch, head) against a key/value cache (see reference.attention_decode_fwd). No kernel
    of its own yet: attention_fwd with Tq = 1 and no causal mask computes the same."""
    require_cupy()
    if getattr(q, "ndim", 0) != 4 or q.shape[2] != 1:
        raise ValueError(f"attention_decode_fwd: q must have shape (B, H, 1, D), got {getattr(q, 'shape', None)}; "
                         "for several queries use attention_fwd")
    return attention_fwd(q, k, v, key_mask, causal=False, scale=scale)

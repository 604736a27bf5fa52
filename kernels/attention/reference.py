"""Scaled-dot-product attention in plain NumPy: the ground truth of every attention kernel.

What it is: the textbook algorithm, written so it reads like the equations. It materializes the full
(B, H, Tq, Tk) score matrix on purpose, because that is the clearest way to see the math; it works in
float32 and float64 alike (the result keeps the input dtype), and float64 is what the gradient checks use.

What it is not: fast or frugal. The Numba versions in cpu.py compute the same numbers tile by tile without
ever holding the T x T matrix (FlashAttention); NOTES.md tells that story.

Forward, for one (batch, head) and queries i, keys j, head size D:

    S_ij   = scale * q_i . k_j                      scale = 1/sqrt(D) unless given
    S_ij   = -inf  where key j is masked out        (key_mask[b, j] False, or causal and j > i + Tk - Tq)
    lse_i  = log sum_j exp(S_ij)                    computed as m_i + log sum_j exp(S_ij - m_i), m_i = max_j S_ij
    P_ij   = exp(S_ij - lse_i)                      the softmax, rows sum to 1
    out_i  = sum_j P_ij v_j

A row that may see no key at all has lse_i = -inf and out_i = 0 (and zero gradients), never NaN.

Backward, given dO = dL/dout (derivation in NOTES.md):

    dV    = P^T dO                                  out is linear in V
    dP    = dO V^T                                  out is linear in P
    Delta_i = sum_j P_ij dP_ij = sum_d dO_id out_id  the softmax Jacobian's rank-one part, via out = P V
    dS    = P * (dP - Delta)                        softmax backward, row by row
    dQ    = scale * dS K                            S = scale Q K^T
    dK    = scale * dS^T Q

Only lse is kept from the forward pass: P is recomputed from it as exp(S - lse), which is what lets the
tiled kernels drop the T x T matrix.

Shapes: B batch, H heads, Tq query length, Tk key length, D head size.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["attention_fwd", "attention_bwd", "attention_decode_fwd", "allowed_mask", "check_inputs",
           "check_decode_inputs"]


def check_inputs(op, q, k, v, key_mask=None, extra=()):
    """Validate shapes of attention inputs; raise a ValueError/TypeError a learner can act on.

    Args:
        op: name of the calling function, for the message.
        q: (B, H, Tq, D); k, v: (B, H, Tk, D); key_mask: None or (B, Tk) bool.
        extra: (name, array, expected_shape) triples to check as well (dout, out, lse).
    """
    arrays = [("q", q), ("k", k), ("v", v)] + [(n, a) for n, a, _ in extra]
    for name, a in arrays:
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{op}: {name} must be a NumPy array, got {type(a).__name__}")
        if not np.issubdtype(a.dtype, np.floating):
            raise TypeError(
                f"{op}: {name} has dtype {a.dtype}; attention needs floating-point arrays "
                f"(float32, or float64 for gradient checks). Convert with {name}.astype(np.float32)."
            )
    if q.ndim != 4:
        raise ValueError(f"{op}: q must be (B, H, Tq, D), got shape {q.shape}")
    if k.shape != v.shape:
        raise ValueError(f"{op}: k and v must have the same shape (B, H, Tk, D), got k {k.shape} and v {v.shape}")
    if k.ndim != 4 or k.shape[:2] != q.shape[:2] or k.shape[3] != q.shape[3]:
        raise ValueError(
            f"{op}: q (B, H, Tq, D) and k (B, H, Tk, D) must agree in B, H and D, got q {q.shape} and k {k.shape}"
        )
    if q.shape[3] == 0:
        raise ValueError(f"{op}: head size D must be at least 1 (scale = 1/sqrt(D)), got q {q.shape}")
    for name, a, shape in extra:
        if a.shape != shape:
            raise ValueError(
                f"{op}: {name} must have shape {shape} (from q {q.shape}, k {k.shape}), got {a.shape}"
            )
    if key_mask is not None:
        key_mask = np.asarray(key_mask)
        if key_mask.dtype != np.bool_:
            raise TypeError(f"{op}: key_mask must be bool (True = may be attended to), got dtype {key_mask.dtype}")
        if key_mask.shape != (k.shape[0], k.shape[2]):
            raise ValueError(
                f"{op}: key_mask must have shape (B, Tk) = {(k.shape[0], k.shape[2])} for k {k.shape}, "
                f"got {key_mask.shape}"
            )
    return key_mask


def allowed_mask(B, Tq, Tk, key_mask=None, causal=False):
    """Which keys each query may see, as a bool array broadcastable to (B, H, Tq, Tk).

    Causal with Tq != Tk is aligned bottom-right: query i sees key j when j <= i + Tk - Tq.
    """
    allowed = np.ones((B, 1, Tq, Tk), dtype=bool)
    if key_mask is not None:
        allowed &= key_mask[:, None, None, :]  # (B, Tk) -> (B, 1, 1, Tk)
    if causal:
        i = np.arange(Tq)[:, None]
        j = np.arange(Tk)[None, :]
        allowed &= j <= i + (Tk - Tq)  # (Tq, Tk)
    return allowed


def _scores(q, k, key_mask, causal, scale):
    """Scaled, masked scores S (B, H, Tq, Tk) with -inf where a key may not be seen, and the allowed mask."""
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    allowed = allowed_mask(B, Tq, Tk, key_mask, causal)  # (B, 1, Tq, Tk)
    S = (q @ k.swapaxes(-1, -2)) * q.dtype.type(scale)  # (B, H, Tq, D) @ (B, H, D, Tk) -> (B, H, Tq, Tk)
    return np.where(allowed, S, -np.inf).astype(q.dtype, copy=False), allowed


def _probabilities(S, lse):
    """P = exp(S - lse), with P = 0 on masked entries and on rows that see nothing (lse = -inf)."""
    seen = np.isfinite(lse)[..., None]  # (B, H, Tq, 1)
    lse_safe = np.where(seen, lse[..., None], 0).astype(S.dtype)  # avoid -inf - -inf = NaN
    return np.where(seen, np.exp(S - lse_safe), 0).astype(S.dtype, copy=False)  # exp(-inf) = 0 when masked


def attention_fwd(q, k, v, key_mask=None, causal=False, scale=None):
    """Attention forward: out = softmax(scale * q k^T, masked) v, and the row log-sum-exp.

    Args:
        q: (B, H, Tq, D) queries; k, v: (B, H, Tk, D) keys and values; float32 or float64.
        key_mask: optional (B, Tk) bool, True = key may be attended to (False = padding).
        causal: query i may only see keys j <= i + Tk - Tq (bottom-right aligned).
        scale: multiplies the scores; default 1/sqrt(D).

    Returns:
        out: (B, H, Tq, D), same dtype as q; 0 on rows that see no key.
        lse: (B, H, Tq), log sum_j exp(S_ij) over the allowed keys; -inf on rows that see no key.
    """
    key_mask = check_inputs("attention_fwd", q, k, v, key_mask)
    dtype = np.result_type(q, k, v)
    q, k, v = (a.astype(dtype, copy=False) for a in (q, k, v))
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)

    S, allowed = _scores(q, k, key_mask, causal, scale)  # (B, H, Tq, Tk)
    m = S.max(axis=-1)  # (B, H, Tq); -inf on rows that see nothing
    seen = np.isfinite(m)
    m_safe = np.where(seen, m, 0).astype(dtype)  # subtract the max for stability, 0 where there is none
    e = np.exp(S - m_safe[..., None])  # masked entries: exp(-inf) = 0
    l = e.sum(axis=-1)  # (B, H, Tq), >= 1 on rows that see something (the max term is exp(0))
    with np.errstate(divide="ignore"):
        lse = np.where(seen, m_safe + np.log(l), -np.inf).astype(dtype)
    P = e / np.where(seen, l, 1)[..., None]  # (B, H, Tq, Tk); all-zero rows stay zero
    out = (P @ v).astype(dtype, copy=False)  # (B, H, Tq, Tk) @ (B, H, Tk, D) -> (B, H, Tq, D)
    return out, lse


def attention_bwd(dout, q, k, v, out, lse, key_mask=None, causal=False, scale=None):
    """Attention backward from the saved (out, lse): gradients of the loss w.r.t. q, k and v.

    Args:
        dout: (B, H, Tq, D) gradient of the loss w.r.t. out.
        q, k, v, key_mask, causal, scale: as given to attention_fwd.
        out: (B, H, Tq, D), lse: (B, H, Tq): what attention_fwd returned.

    Returns:
        dq: (B, H, Tq, D), dk, dv: (B, H, Tk, D), same dtype as q; zero contributions from masked pairs.

    Math (see the module docstring and NOTES.md): P = exp(S - lse); dV = P^T dO; dP = dO V^T;
    Delta_i = sum_d dO_id out_id; dS = P * (dP - Delta); dQ = scale dS K; dK = scale dS^T Q.
    """
    extra = []  # with a malformed q, let check_inputs report q first
    if isinstance(q, np.ndarray) and q.ndim == 4:
        extra = [("dout", dout, q.shape), ("out", out, q.shape), ("lse", lse, q.shape[:3])]
    key_mask = check_inputs("attention_bwd", q, k, v, key_mask, extra)
    D = q.shape[-1]
    dtype = np.result_type(q, k, v, dout, out)
    q, k, v, dout, out = (a.astype(dtype, copy=False) for a in (q, k, v, dout, out))
    lse = lse.astype(dtype, copy=False)
    scale = 1.0 / math.sqrt(D) if scale is None else float(scale)

    S, _ = _scores(q, k, key_mask, causal, scale)  # (B, H, Tq, Tk), recomputed: the forward kept only lse
    P = _probabilities(S, lse)  # (B, H, Tq, Tk)
    dv = P.swapaxes(-1, -2) @ dout  # (B, H, Tk, Tq) @ (B, H, Tq, D) -> (B, H, Tk, D)
    dP = dout @ v.swapaxes(-1, -2)  # (B, H, Tq, D) @ (B, H, D, Tk) -> (B, H, Tq, Tk)
    delta = (dout * out).sum(axis=-1, keepdims=True)  # (B, H, Tq, 1) = rowsum(P * dP)
    dS = P * (dP - delta)  # (B, H, Tq, Tk)
    s = dtype.type(scale)
    dq = (dS @ k) * s  # (B, H, Tq, Tk) @ (B, H, Tk, D) -> (B, H, Tq, D)
    dk = (dS.swapaxes(-1, -2) @ q) * s  # (B, H, Tk, Tq) @ (B, H, Tq, D) -> (B, H, Tk, D)
    return dq.astype(dtype, copy=False), dk.astype(dtype, copy=False), dv.astype(dtype, copy=False)


def check_decode_inputs(q, k, v, key_mask=None):
    """check_inputs for attention_decode_fwd, which also needs exactly one query (Tq = 1)."""
    key_mask = check_inputs("attention_decode_fwd", q, k, v, key_mask)
    if q.shape[2] != 1:
        raise ValueError(f"attention_decode_fwd: q must hold one query per (batch, head), shape (B, H, 1, D); got "
                         f"{q.shape}. For several queries use attention_fwd (with causal=True on top of a cache).")
    return key_mask


def attention_decode_fwd(q, k, v, key_mask=None, scale=None):
    """Attention of one new token over a key/value cache: attention_fwd with Tq = 1 and no causal mask.

    When decoding, the one query (the newest position) may see every cached key, so the causal mask has
    nothing to hide; what hides keys is key_mask (padding, and positions of the cache not written yet).
    Not part of the kernel contract: the decoding loop (minillm/models/gpt2.py) calls it through
    `kernels.attention.decode_kernel(backend)`.

    Args:
        q: (B, H, 1, D); k, v: (B, H, Tk, D); key_mask: optional (B, Tk) bool; scale: default 1/sqrt(D).
    Returns:
        out (B, H, 1, D), lse (B, H, 1): as attention_fwd's (0 and -inf where the query sees no key).
    """
    key_mask = check_decode_inputs(q, k, v, key_mask)
    return attention_fwd(q, k, v, key_mask, causal=False, scale=scale)

"""Attention v4 on the CPU: the matrix products in BLAS (sgemm called from Numba), the softmax in Numba.

Registered as v4 in cpu.py (its docstring lists the versions, NOTES.md has the measurements). v3 spends
most of its time in hand-written product loops that reach ~20% of the machine's float32 matmul rate;
here every product is an sgemm call (kernels/blas.py) and Numba does only what BLAS cannot: masks,
exp, the row max and sum. The layout is v3's: score tiles are held key-major, S^T (keys x queries), so
the softmax bookkeeping runs elementwise across QB query lanes (no reduction inside any loop, so it
vectorizes without reassociation).

Per (batch, head) and per block of QB queries, over the block's keys [lo, hi_blk) (the span of visible
keys: trailing padding and, when causal, keys after the block's last diagonal are never computed):

    forward    S^T = scale K Q_blk^T                 sgemm (nk, D) x (D, QB)
               m = max_j S^T, P^T = exp(S^T - m), l = sum_j P^T   Numba, elementwise over the lanes
               O_blk = (P^T)^T V / l, lse = m + log l   sgemm (QB, nk) x (nk, D), a divide per row
    backward   S^T = scale K Q_blk^T, dP^T = V dO_blk^T            sgemm x 2
               P^T = exp(S^T - lse), dS^T = P^T (dP^T - Delta)    Numba   (Delta_i = dO_i . O_i)
               dV += P^T dO_blk, dK += scale dS^T Q_blk, dQ_blk = scale (dS^T)^T K   sgemm x 3

No online softmax: the block's scores over all its keys (nk x QB floats; QB shrinks so that this stays
within QB_BYTES, 256 KiB, L2-resident) are held at once, so each query's max and sum are exact before
the product with V. Memory per thread: two such tiles and the transposed Q, dO, O of one block (D x QB),
never the (B, H, Tq, Tk) matrix.

How the products are fed to OpenBLAS (each choice measured, NOTES.md): Q_blk (and dO_blk, O_blk) is
transposed by OpenBLAS's somatcopy, with the scale folded in, so that S^T = K (scale Q^T) is a plain NN
product (the NT form, K times Q_blk transposed inside sgemm, misses OpenBLAS's small-matrix kernels and ran
1.2-1.5x slower); and every sgemm call is cut to M*N*K <= SMALL_GEMM by taking KC keys at a time (the later
pieces of a product summed over keys accumulate with beta = 1), small enough for those unpacked kernels.

Parallelism: `prange` over tasks, one per Numba thread; task t owns the (b, h) pairs t, t + n, t + 2n, ...
(interleaved, so padded and unpadded sequences spread over the threads). Each pair's dq, dk, dv are written
by its owner only: no atomics, and the result is bitwise the same run to run. OpenBLAS runs on the calling
thread (kernels/blas.single_threaded, set by the wrapper in cpu.py).

fastmath: the softmax loops are compiled with {"contract"} only (a*b + c may become one FMA, which
rounds once instead of twice: the exp polynomial gets no less accurate, 1.4x faster measured); no
reassociation, no assumptions about inf or NaN, which the masks rely on. tests/test_kernels_attention.py
pins the effect (test_v4_softmax_tile_matches_float64).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from kernels.blas import sgemm, transpose
from kernels.fastexp import fast_exp_bounded

NEG_INF = np.float32(-np.inf)
POS_INF = np.float32(np.inf)
ZERO = np.float32(0.0)
ONE = np.float32(1.0)
QB_MAX = 128  # query lanes per block at most
QB_MIN = 16
QB_BYTES = 256 * 1024  # one score tile (nk x QB float32) at most this big, while QB >= QB_MIN
SMALL_GEMM = 524288  # M*N*K of each sgemm call at most (2^19): OpenBLAS's unpacked small-matrix kernels


@njit(cache=True)
def blocking(Tq, Tk, D):
    """(QB, KC): query lanes per block, keys per sgemm call.

    QB: QB_MAX, fewer when a tile of scores over Tk keys would pass QB_BYTES. KC: every product of a
    block (S, P V, dP, dV, dK, dQ) has M*N*K = KC*QB*D; keeping that <= SMALL_GEMM lets OpenBLAS take its
    small-matrix path (no packing, always on the calling thread), whose rate here is 1.2-1.4 times the
    packed path's (NOTES.md).
    """
    qb = max(QB_MIN, min(QB_MAX, Tq, QB_BYTES // (4 * max(Tk, 1))))
    kc = max(16, SMALL_GEMM // (qb * D) // 16 * 16)
    return qb, kc


@njit(cache=True)
def visible_span(key_mask_b):
    """(lo, hi, holes): the visible keys lie in [lo, hi); holes = some key inside is masked (lo = hi: none)."""
    Tk = key_mask_b.shape[0]
    lo = 0
    while lo < Tk and not key_mask_b[lo]:
        lo += 1
    hi = Tk
    while hi > lo and not key_mask_b[hi - 1]:
        hi -= 1
    holes = False
    for j in range(lo, hi):
        if not key_mask_b[j]:
            holes = True
    return lo, hi, holes


# ---- products, cut into sgemm calls of at most KC keys ----------------------------------------------------
@njit(cache=True)
def _keys_by_lanes(x, lo, hi, alpha, yt, st, kc):
    """st[j - lo] = alpha * x[j] @ yt for keys j in [lo, hi): (nk, D) x (D, QB) -> (nk, QB), e.g. S^T = K Q^T."""
    for c0 in range(lo, hi, kc):
        c1 = min(hi, c0 + kc)
        sgemm(False, False, alpha, x[c0:c1], yt, ZERO, st[c0 - lo:c1 - lo])


@njit(cache=True)
def _sum_over_keys(st, x, lo, hi, alpha, c, kc):
    """c = alpha * st^T @ x[lo:hi] with st (nk, QB): (QB, nk) x (nk, D), kc keys per call, the later calls
    accumulating (beta = 1). O = P V and dQ = scale dS K."""
    for c0 in range(lo, hi, kc):
        c1 = min(hi, c0 + kc)
        sgemm(True, False, alpha, st[c0 - lo:c1 - lo], x[c0:c1], ZERO if c0 == lo else ONE, c)


@njit(cache=True)
def _add_per_key(st, y, lo, hi, alpha, c, kc):
    """c[lo:hi] += alpha * st @ y with st (nk, QB), y (QB, D): dV += P^T dO, dK += scale dS^T Q."""
    for c0 in range(lo, hi, kc):
        c1 = min(hi, c0 + kc)
        sgemm(False, False, alpha, st[c0 - lo:c1 - lo], y, ONE, c[c0:c1])


# ---- the softmax pieces, elementwise over the query lanes --------------------------------------------------
@njit(cache=True)
def _cut(causal, shift, key, q0, nq):
    """Lanes i < cut cannot see key `key`: causal query q0 + i sees keys <= q0 + i + shift."""
    return min(nq, max(0, key - shift - q0)) if causal else 0


@njit(cache=True, fastmath={"contract"})
def _softmax_tile(st, key_mask_b, lo, holes, causal, shift, q0, m, l):
    """In place: st (nk, nq) scores S^T -> unnormalized P^T = exp(S^T - m); m, l (nq,) the max and the sum.

    A lane that sees no key keeps l = 0, and its column of P^T is 0 (exp against m = 0). Shapes of the
    loops, measured: every lane loop runs from 0 (`for i in range(cut, nq)` did not vectorize: scalar
    FMAs in the asm); the causal cut is a select only in the rows that have one (a select in every row
    cost 1.3x); one 1-D view per row (st[j, i] in the loop: 1.2x slower).
    """
    nk, nq = st.shape
    m[:] = NEG_INF
    for j in range(nk):
        st_j = st[j]
        if holes and not key_mask_b[lo + j]:  # a masked key inside the span
            st_j[:] = NEG_INF
            continue
        cut = _cut(causal, shift, lo + j, q0, nq)
        if cut > 0:  # lanes i < cut cannot see this key
            for i in range(nq):
                s = st_j[i] if i >= cut else NEG_INF
                st_j[i] = s
                m[i] = max(m[i], s)
        else:
            for i in range(nq):
                m[i] = max(m[i], st_j[i])
    for i in range(nq):
        l[i] = ZERO
        if m[i] == NEG_INF:  # the lane sees no key
            m[i] = ZERO  # exp(-inf - 0) = 0: its P is 0 and l stays 0, never exp(-inf + inf) = NaN
    for j in range(nk):
        st_j = st[j]
        for i in range(nq):
            e = fast_exp_bounded(st_j[i] - m[i])  # <= 0 (m is the max); -inf -> exactly 0
            st_j[i] = e
            l[i] += e


@njit(cache=True, fastmath={"contract"})
def _grad_tile(pt, dst, key_mask_b, lo, holes, causal, shift, q0, lse_q, delta_q):
    """In place: pt = S^T -> P^T = exp(S^T - lse), dst = dP^T -> dS^T = P^T (dP^T - Delta); masked -> 0.

    lse_q holds +inf for lanes that saw nothing (their P is exp(-inf) = 0). Loop shapes as in
    _softmax_tile.
    """
    nk, nq = pt.shape
    for j in range(nk):
        pt_j, dst_j = pt[j], dst[j]
        if holes and not key_mask_b[lo + j]:
            pt_j[:] = ZERO
            dst_j[:] = ZERO
            continue
        cut = _cut(causal, shift, lo + j, q0, nq)
        if cut > 0:
            for i in range(nq):
                p = fast_exp_bounded(pt_j[i] - lse_q[i])  # S - lse <= ~0: lse is the row's log-sum-exp
                p = p if i >= cut else ZERO  # lanes i < cut cannot see this key
                pt_j[i] = p
                dst_j[i] = p * (dst_j[i] - delta_q[i])
        else:
            for i in range(nq):
                p = fast_exp_bounded(pt_j[i] - lse_q[i])
                pt_j[i] = p
                dst_j[i] = p * (dst_j[i] - delta_q[i])


@njit(cache=True, fastmath={"contract"})
def _block_rows(dot, ot, lse_q, delta, lse_safe):
    """delta[i] = dO_i . O_i from the transposed blocks dot, ot (D, nq), elementwise over the lanes (a dot
    product per row, dot8, measured ~2x slower); lse_safe = lse with -inf (a query that saw nothing) -> +inf,
    so that its P = exp(S - inf) = 0."""
    D, nq = dot.shape
    for i in range(nq):
        delta[i] = ZERO
        lse_safe[i] = lse_q[i] if lse_q[i] > NEG_INF else POS_INF
    for d in range(D):
        dot_d, ot_d = dot[d], ot[d]
        for i in range(nq):
            delta[i] += dot_d[i] * ot_d[i]


# ---- the kernels -------------------------------------------------------------------------------------------
@njit(cache=True, parallel=True)
def fwd_v4(q, k, v, key_mask, causal, scale, out, lse, n_tasks):
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    shift = Tk - Tq  # causal: query i sees keys j <= i + shift
    QB, KC = blocking(Tq, Tk, D)
    n_tasks = max(1, min(B * H, n_tasks))
    for t in prange(n_tasks):
        s_flat = np.empty(Tk * QB, np.float32)  # S^T, then P^T, of one block
        qt_flat = np.empty(D * QB, np.float32)  # Q_blk^T
        m = np.empty(QB, np.float32)  # per query lane: max, sum
        l = np.empty(QB, np.float32)
        for bh in range(t, B * H, n_tasks):
            b, h = bh // H, bh % H
            lo, hi, holes = visible_span(key_mask[b])
            for q0 in range(0, Tq, QB):
                nq = min(QB, Tq - q0)
                o = out[b, h, q0:q0 + nq]
                hi_blk = min(hi, q0 + nq + shift) if causal else hi  # the block's last query sees keys < hi_blk
                if hi_blk <= lo:  # no query of the block sees a key
                    o[:] = ZERO
                    lse[b, h, q0:q0 + nq] = NEG_INF
                    continue
                nk = hi_blk - lo
                st = s_flat[:nk * nq].reshape((nk, nq))  # contiguous rows: the lane loops vectorize
                qt = qt_flat[:D * nq].reshape((D, nq))
                transpose(scale, q[b, h, q0:q0 + nq], qt)  # scale Q_blk^T
                _keys_by_lanes(k[b, h], lo, hi_blk, ONE, qt, st, KC)  # S^T = K (scale Q^T)
                _softmax_tile(st, key_mask[b], lo, holes, causal, shift, q0, m[:nq], l[:nq])
                _sum_over_keys(st, v[b, h], lo, hi_blk, ONE, o, KC)  # O = P V, unnormalized
                for i in range(nq):
                    if l[i] > ZERO:
                        inv = ONE / l[i]
                        o_i = o[i]
                        for d in range(D):
                            o_i[d] *= inv
                        lse[b, h, q0 + i] = m[i] + np.float32(math.log(l[i]))
                    else:  # the query saw no key (its P column is 0, so o_i is already 0)
                        lse[b, h, q0 + i] = NEG_INF


@njit(cache=True, parallel=True)
def bwd_v4(dout, q, k, v, out, lse, key_mask, causal, scale, dq, dk, dv, n_tasks):
    """dq, dk, dv must come in zeroed: dk, dv are accumulated over query blocks (beta = 1)."""
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    shift = Tk - Tq
    QB, KC = blocking(Tq, Tk, D)
    n_tasks = max(1, min(B * H, n_tasks))
    for t in prange(n_tasks):
        p_flat = np.empty(Tk * QB, np.float32)  # S^T, then P^T, of one block
        ds_flat = np.empty(Tk * QB, np.float32)  # dP^T, then dS^T
        qt_flat = np.empty(D * QB, np.float32)  # Q_blk^T and dO_blk^T
        dot_flat = np.empty(D * QB, np.float32)
        ot_flat = np.empty(D * QB, np.float32)  # O_blk^T
        delta = np.empty(QB, np.float32)  # Delta_i = dO_i . O_i
        lse_safe = np.empty(QB, np.float32)  # +inf for queries that saw nothing: P = exp(S - inf) = 0
        for bh in range(t, B * H, n_tasks):
            b, h = bh // H, bh % H
            lo, hi, holes = visible_span(key_mask[b])
            if hi <= lo:
                continue  # nothing is visible: every gradient stays 0
            for q0 in range(0, Tq, QB):
                nq = min(QB, Tq - q0)
                hi_blk = min(hi, q0 + nq + shift) if causal else hi
                if hi_blk <= lo:
                    continue  # dq stays 0 for queries that see nothing
                nk = hi_blk - lo
                pt = p_flat[:nk * nq].reshape((nk, nq))
                dst = ds_flat[:nk * nq].reshape((nk, nq))
                qt, dot = qt_flat[:D * nq].reshape((D, nq)), dot_flat[:D * nq].reshape((D, nq))
                ot = ot_flat[:D * nq].reshape((D, nq))
                transpose(scale, q[b, h, q0:q0 + nq], qt)  # scale Q_blk^T
                transpose(ONE, dout[b, h, q0:q0 + nq], dot)  # dO_blk^T
                transpose(ONE, out[b, h, q0:q0 + nq], ot)  # O_blk^T
                _block_rows(dot, ot, lse[b, h, q0:q0 + nq], delta[:nq], lse_safe[:nq])
                _keys_by_lanes(k[b, h], lo, hi_blk, ONE, qt, pt, KC)  # S^T = K (scale Q^T)
                _keys_by_lanes(v[b, h], lo, hi_blk, ONE, dot, dst, KC)  # dP^T = V dO^T
                _grad_tile(pt, dst, key_mask[b], lo, holes, causal, shift, q0, lse_safe[:nq], delta[:nq])
                _add_per_key(pt, dout[b, h, q0:q0 + nq], lo, hi_blk, ONE, dv[b, h], KC)  # dV += P^T dO
                _add_per_key(dst, q[b, h, q0:q0 + nq], lo, hi_blk, scale, dk[b, h], KC)  # dK += scale dS^T Q
                _sum_over_keys(dst, k[b, h], lo, hi_blk, scale, dq[b, h, q0:q0 + nq], KC)  # dQ = scale dS K

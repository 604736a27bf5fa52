"""Attention on the CPU with Numba: from a naive row-by-row kernel to FlashAttention-style tiles.

Same math as reference.py (read that first), computed without ever holding the T x T score matrix.
Numbered versions, each checked against the reference by tests/test_kernels_attention.py; NOTES.md has the
derivations and the measured times:

    v1  naive: one query row at a time, the full score row s (Tk floats) materialized, dot products as
        scalar loops over D, exp through libm (math.exp); backward recomputes the row from lse
    v2  FlashAttention: key tiles with an online softmax (running max m, running sum l, rescaled
        accumulator); K (and V in the backward) transposed once per (b, h) so that every inner loop
        runs over a contiguous axis without a reduction and vectorizes; the vectorizable float32 exp
        of kernels/fastexp.py; fully masked key tiles skipped, causal rows stop at their last key
    v3  queries in the vector lanes: tiles are held transposed (key-major, 128 queries side by side), so
        the online-softmax max, exp and sum run elementwise across lanes and every matrix product is an
        axpy over 128 contiguous floats; register blocking (4 d x 2 keys for scores, 4 keys for
        P V, dQ, dK, dV) cuts loads per multiply-add; the backward loops over key tiles, owning dK, dV
    v4  the products in BLAS: v3's layout (score tiles key-major, queries in the lanes), but S^T, P V,
        dP^T, dV, dK and dQ are sgemm calls into NumPy's own OpenBLAS from inside Numba (kernels/blas.py),
        each cut small enough for OpenBLAS's unpacked kernels; Numba keeps the masks, exp, max and sum;
        whole key spans per block of 128 queries, so each softmax is exact without online rescaling.
        In cpu_gemm.py. Registered only where kernels/blas.py loads (UNAVAILABLE says why not).
        Its inputs are read in place when they are float32 views with a contiguous last axis (`_rows_f32`):
        the packed QKV projection output seen as (B, H, T, D), rows 3C floats apart, goes to BLAS with
        that row stride; v1-v3 get contiguous copies. Its output is a (B, H, T, D) view of (B, T, H, D)
        memory, the layout the output projection reads (docs/design.md, "The packed Q, K, V layout").

`attention_fwd` / `attention_bwd` are bound to the winner, v4, where it is registered, else v3 (see
VERSIONS and NOTES.md).

Beyond the kernel contract, one more forward for a special case (not a numbered version: it does not
take the contract's arguments): `attention_decode_fwd`, one query per (batch, head) against a key/value
cache, as in text generation after the prompt. v3 puts 128 queries side by side in the vector lanes;
with one query its lanes sit empty and its tiles cost more than the work. This kernel reads each key once
(a dot product in 8 independent partial sums, `dot8`), keeps the Tk scores of its row, and sums
p_j v_j in axpy form over D; masked keys (the cache's unwritten positions) are never read.

Parallelism: `prange` over the B*H (batch, head) pairs. The thread that owns a pair writes all of its dq,
dk and dv, so there are no atomics and no races, and the result is bitwise the same run to run.
Extra memory per thread: O(T*D) (the transposed K/V of one head) plus O(tile) buffers.

No fastmath in v1-v3: float reductions are kept in program order, and every loop that must vectorize is
written so its innermost axis carries no reduction (axpy form: acc[j] += a * x[j]). v4's softmax loops
allow FMA contraction only (cpu_gemm.py says why; a test pins it); its products are OpenBLAS's.

Tip: `NUMBA_DISABLE_JIT=1 python ...` runs these kernels as plain Python for stepping through in a debugger
(very slow: use tiny shapes; v4 is not registered then, since compiled code cannot be bypassed to call BLAS).
"""
from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange

from kernels import blas
from kernels.attention.reference import check_decode_inputs, check_inputs
from kernels.fastexp import dot8, fast_exp_scalar

__all__ = ["attention_fwd", "attention_bwd", "attention_decode_fwd", "VERSIONS", "UNAVAILABLE"]

KEY_TILE = 64  # keys per tile: 8 AVX2 vectors per score row; a K+V tile is 16 KiB at D = 32
QUERY_TILE = 32  # query rows that share one pass over a K/V tile (v2)
LANE_TILE = 128  # queries side by side in the vector lanes (v3); 128 beat 32 and 64 (NOTES.md)
NEG_INF = np.float32(-np.inf)
ZERO = np.float32(0.0)


# ---------------------------------------------------------------------------------------------- v1: naive
@njit(cache=True, parallel=True)
def _fwd_v1(q, k, v, key_mask, causal, scale, out, lse):
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    for bh in prange(B * H):
        b, h = bh // H, bh % H
        s = np.empty(Tk, np.float32)  # one row of scores: O(T) per thread
        for i in range(Tq):
            hi = min(Tk, i + Tk - Tq + 1) if causal else Tk  # keys j < hi are visible to query i
            m = NEG_INF
            for j in range(hi):
                if key_mask[b, j]:
                    acc = ZERO
                    for d in range(D):  # a reduction: without fastmath LLVM keeps it scalar
                        acc += q[b, h, i, d] * k[b, h, j, d]
                    s[j] = acc * scale
                    m = max(m, s[j])
                else:
                    s[j] = NEG_INF
            if m == NEG_INF:  # the row sees no key: output 0, lse -inf
                out[b, h, i, :] = ZERO
                lse[b, h, i] = NEG_INF
                continue
            l = ZERO
            for j in range(hi):
                s[j] = math.exp(s[j] - m)  # libm expf: a call per element
                l += s[j]
            for d in range(D):
                acc = ZERO
                for j in range(hi):
                    acc += s[j] * v[b, h, j, d]
                out[b, h, i, d] = acc / l
            lse[b, h, i] = m + math.log(l)


@njit(cache=True, parallel=True)
def _bwd_v1(dout, q, k, v, out, lse, key_mask, causal, scale, dq, dk, dv):
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    for bh in prange(B * H):
        b, h = bh // H, bh % H
        p = np.empty(Tk, np.float32)
        for i in range(Tq):
            L = lse[b, h, i]
            if L == NEG_INF:  # a row that saw nothing contributes nothing
                continue
            hi = min(Tk, i + Tk - Tq + 1) if causal else Tk
            delta = ZERO  # Delta_i = dO_i . O_i
            for d in range(D):
                delta += dout[b, h, i, d] * out[b, h, i, d]
            for j in range(hi):
                if not key_mask[b, j]:
                    continue
                sij = ZERO
                dpij = ZERO
                for d in range(D):
                    sij += q[b, h, i, d] * k[b, h, j, d]
                    dpij += dout[b, h, i, d] * v[b, h, j, d]
                pij = math.exp(sij * scale - L)  # P_ij recomputed from lse
                dsij = pij * (dpij - delta) * scale  # scale * dS_ij
                for d in range(D):
                    dq[b, h, i, d] += dsij * k[b, h, j, d]
                    dk[b, h, j, d] += dsij * q[b, h, i, d]
                    dv[b, h, j, d] += pij * dout[b, h, i, d]


# ------------------------------------------------------------------------------ shared pieces of v2 and v3
@njit(cache=True)
def _transpose_into(x, xt):
    """xt[d, j] = x[j, d] for x (T, D): the layout that makes 'q . k_j for all j' an axpy over j."""
    T, D = x.shape
    for j in range(T):
        for d in range(D):
            xt[d, j] = x[j, d]


@njit(cache=True)
def _tile_visible(key_mask_b, k0, nk):
    """Number of keys in [k0, k0+nk) that the padding mask lets through (0 -> skip the tile)."""
    n = 0
    for j in range(nk):
        n += key_mask_b[k0 + j]
    return n


@njit(cache=True)
def _scores_row(qi, kt, k0, nk, s):
    """s[j] = qi . k_(k0+j) for j < nk, as D axpy passes over the transposed keys kt (D, Tk)."""
    for j in range(nk):
        s[j] = ZERO
    for d in range(qi.shape[0]):
        qd = qi[d]
        krow = kt[d, k0:k0 + nk]  # a 1-D view: with kt[d, k0 + j] in the loop LLVM did not vectorize (8x slower)
        for j in range(nk):  # contiguous, no reduction: vectorizes
            s[j] += qd * krow[j]


@njit(cache=True)
def _mask_row(key_mask_b, k0, nk, s):
    for j in range(nk):
        if not key_mask_b[k0 + j]:
            s[j] = NEG_INF


# --------------------------------------------------------------------------- v2: FlashAttention, one row
@njit(cache=True, parallel=True)
def _fwd_v2(q, k, v, key_mask, causal, scale, out, lse):
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    for bh in prange(B * H):
        b, h = bh // H, bh % H
        kt = np.empty((D, Tk), np.float32)  # (Tk, D) -> (D, Tk), once per (b, h): O(T*D) per thread
        _transpose_into(k[b, h], kt)
        qi = np.empty(D, np.float32)
        s = np.empty(KEY_TILE, np.float32)
        lvec = np.empty((QUERY_TILE, KEY_TILE), np.float32)  # per-lane partial row sums: no scalar reduction
        acc = np.empty((QUERY_TILE, D), np.float32)  # unnormalized output rows of the query tile
        m = np.empty(QUERY_TILE, np.float32)  # running max per row
        for q0 in range(0, Tq, QUERY_TILE):
            nq = min(QUERY_TILE, Tq - q0)
            m[:] = NEG_INF
            lvec[:] = ZERO
            acc[:] = ZERO
            hi_tile = min(Tk, q0 + nq + Tk - Tq) if causal else Tk  # last query of the tile sees keys < hi
            for k0 in range(0, hi_tile, KEY_TILE):
                nk = min(KEY_TILE, hi_tile - k0)
                if _tile_visible(key_mask[b], k0, nk) == 0:
                    continue  # a fully padded tile: nothing to add
                for r in range(nq):
                    i = q0 + r
                    nkr = min(nk, i + Tk - Tq + 1 - k0) if causal else nk  # stop at the diagonal
                    if nkr <= 0:
                        continue
                    for d in range(D):
                        qi[d] = q[b, h, i, d] * scale
                    _scores_row(qi, kt, k0, nkr, s)
                    _mask_row(key_mask[b], k0, nkr, s)
                    m_tile = NEG_INF
                    for j in range(nkr):
                        m_tile = max(m_tile, s[j])
                    m_new = max(m[r], m_tile)
                    if m_new == NEG_INF:
                        continue  # nothing visible yet
                    if m_new > m[r]:  # rescale what was summed under the old max: exp(m_old - m_new)
                        alpha = fast_exp_scalar(m[r] - m_new)  # m_old = -inf -> 0
                        for j in range(KEY_TILE):
                            lvec[r, j] *= alpha
                        for d in range(D):
                            acc[r, d] *= alpha
                        m[r] = m_new
                    for j in range(nkr):
                        s[j] = fast_exp_scalar(s[j] - m_new)  # masked: exp(-inf) = 0
                        lvec[r, j] += s[j]
                    acc_r = acc[r]
                    for j in range(nkr):
                        pj = s[j]
                        v_j = v[b, h, k0 + j]
                        for d in range(D):  # acc_r += p_j v_j, vectorized over D
                            acc_r[d] += pj * v_j[d]
            for r in range(nq):
                i = q0 + r
                l = ZERO
                for j in range(KEY_TILE):
                    l += lvec[r, j]
                if l == ZERO:  # the row saw no key
                    out[b, h, i, :] = ZERO
                    lse[b, h, i] = NEG_INF
                else:
                    inv = np.float32(1.0) / l
                    for d in range(D):
                        out[b, h, i, d] = acc[r, d] * inv
                    lse[b, h, i] = m[r] + np.float32(math.log(l))


@njit(cache=True, parallel=True)
def _bwd_v2(dout, q, k, v, out, lse, key_mask, causal, scale, dq, dk, dv):
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    for bh in prange(B * H):
        b, h = bh // H, bh % H
        kt = np.empty((D, Tk), np.float32)
        vt = np.empty((D, Tk), np.float32)
        _transpose_into(k[b, h], kt)
        _transpose_into(v[b, h], vt)
        delta = np.empty(Tq, np.float32)  # Delta_i = dO_i . O_i, once per row
        for i in range(Tq):
            acc = ZERO
            for d in range(D):
                acc += dout[b, h, i, d] * out[b, h, i, d]
            delta[i] = acc
        qi = np.empty(D, np.float32)
        p = np.empty(KEY_TILE, np.float32)
        dp = np.empty(KEY_TILE, np.float32)
        dk_t = np.empty((KEY_TILE, D), np.float32)  # dK, dV of one key tile, accumulated over all queries
        dv_t = np.empty((KEY_TILE, D), np.float32)
        for k0 in range(0, Tk, KEY_TILE):
            nk = min(KEY_TILE, Tk - k0)
            dk_t[:] = ZERO
            dv_t[:] = ZERO
            if _tile_visible(key_mask[b], k0, nk) > 0:
                i0 = max(0, k0 - (Tk - Tq)) if causal else 0  # earlier queries see none of this tile
                for i in range(i0, Tq):
                    L = lse[b, h, i]
                    if L == NEG_INF:
                        continue
                    nkr = min(nk, i + Tk - Tq + 1 - k0) if causal else nk
                    for d in range(D):
                        qi[d] = q[b, h, i, d] * scale
                    _scores_row(qi, kt, k0, nkr, p)
                    _mask_row(key_mask[b], k0, nkr, p)
                    for j in range(nkr):
                        p[j] = fast_exp_scalar(p[j] - L)  # P_ij = exp(S_ij - lse_i)
                    _scores_row(dout[b, h, i], vt, k0, nkr, dp)  # dP_ij = dO_i . v_j
                    di = delta[i]
                    for j in range(nkr):
                        dp[j] = p[j] * (dp[j] - di) * scale  # scale * dS_ij
                    dq_i, q_i, do_i = dq[b, h, i], q[b, h, i], dout[b, h, i]
                    for j in range(nkr):
                        dsj = dp[j]
                        pj = p[j]
                        k_j, dk_j, dv_j = k[b, h, k0 + j], dk_t[j], dv_t[j]
                        for d in range(D):  # three axpys over D
                            dq_i[d] += dsj * k_j[d]
                            dk_j[d] += dsj * q_i[d]
                            dv_j[d] += pj * do_i[d]
            dk[b, h, k0:k0 + nk] = dk_t[:nk]
            dv[b, h, k0:k0 + nk] = dv_t[:nk]


# ------------------------------------------------------------------ v3: FlashAttention, queries in lanes
@njit(cache=True)
def _tile_scores_t(x, x0, n, yt, y0, m, st):
    """st[r, i] = x_(x0+r) . y_(y0+i) for r < n, i < m, with x (T, D) row-major and yt (D, T') transposed.

    The lane index i is innermost: each update is an axpy over m contiguous floats, with no reduction, so
    it vectorizes without fastmath. Register blocking, measured at D = 32 and 64 (NOTES.md): four d at a
    time (one load and store of st[r] feed four multiply-adds: 1.5x), and two rows r at a time (each loaded
    y vector feeds both rows: another 1.5x).
    """
    D = x.shape[1]
    D4 = D - D % 4
    n2 = n - n % 2
    for r in range(0, n2, 2):
        x_r, x_s = x[x0 + r], x[x0 + r + 1]
        st_r, st_s = st[r, :m], st[r + 1, :m]
        for i in range(m):
            st_r[i] = ZERO
            st_s[i] = ZERO
        for d in range(0, D4, 4):
            a0, a1, a2, a3 = x_r[d], x_r[d + 1], x_r[d + 2], x_r[d + 3]
            c0, c1, c2, c3 = x_s[d], x_s[d + 1], x_s[d + 2], x_s[d + 3]
            y_0, y_1 = yt[d, y0:y0 + m], yt[d + 1, y0:y0 + m]
            y_2, y_3 = yt[d + 2, y0:y0 + m], yt[d + 3, y0:y0 + m]
            for i in range(m):
                u0, u1, u2, u3 = y_0[i], y_1[i], y_2[i], y_3[i]
                st_r[i] += a0 * u0 + a1 * u1 + a2 * u2 + a3 * u3
                st_s[i] += c0 * u0 + c1 * u1 + c2 * u2 + c3 * u3
        for d in range(D4, D):
            a0, c0 = x_r[d], x_s[d]
            y_0 = yt[d, y0:y0 + m]
            for i in range(m):
                st_r[i] += a0 * y_0[i]
                st_s[i] += c0 * y_0[i]
    for r in range(n2, n):  # the odd row out
        x_r = x[x0 + r]
        st_r = st[r, :m]
        for i in range(m):
            st_r[i] = ZERO
        for d in range(D):
            a0 = x_r[d]
            y_0 = yt[d, y0:y0 + m]
            for i in range(m):
                st_r[i] += a0 * y_0[i]


@njit(cache=True)
def _accumulate_t(acc, a0, m, x, x0, n, pt):
    """acc[d, a0+i] += sum_r x[x0+r, d] * pt[r, i] for i < m, r < n: a transposed (D, m) += x^T pt.

    Lanes i innermost again; four r at a time so that each load and store of acc[d] serves four
    multiply-adds (2x faster than one r at a time, measured; two d at a time on top gained < 5%: dropped).
    """
    D = x.shape[1]
    n4 = n - n % 4
    for r in range(0, n4, 4):
        p_0, p_1, p_2, p_3 = pt[r, :m], pt[r + 1, :m], pt[r + 2, :m], pt[r + 3, :m]
        x_0, x_1, x_2, x_3 = x[x0 + r], x[x0 + r + 1], x[x0 + r + 2], x[x0 + r + 3]
        for d in range(D):
            b0, b1, b2, b3 = x_0[d], x_1[d], x_2[d], x_3[d]
            acc_d = acc[d, a0:a0 + m]
            for i in range(m):
                acc_d[i] += b0 * p_0[i] + b1 * p_1[i] + b2 * p_2[i] + b3 * p_3[i]
    for r in range(n4, n):
        p_0 = pt[r, :m]
        x_0 = x[x0 + r]
        for d in range(D):
            b0 = x_0[d]
            acc_d = acc[d, a0:a0 + m]
            for i in range(m):
                acc_d[i] += b0 * p_0[i]


@njit(cache=True)
def _mask_tile_t(key_mask_b, causal, shift, k0, nk, q0, nq, st):
    """-inf where key k0+j is padding, or (causal) lies after query q0+i's diagonal: k0+j > q0+i+shift."""
    for j in range(nk):
        st_j = st[j, :nq]
        if not key_mask_b[k0 + j]:
            for i in range(nq):
                st_j[i] = NEG_INF
        elif causal:
            for i in range(min(nq, max(0, k0 + j - shift - q0))):  # queries i < k0+j-shift-q0 cannot see j
                st_j[i] = NEG_INF


@njit(cache=True, parallel=True)
def _fwd_v3(q, k, v, key_mask, causal, scale, out, lse):
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    shift = Tk - Tq  # causal: query i sees keys j <= i + shift
    QB, KB = LANE_TILE, KEY_TILE
    for bh in prange(B * H):
        b, h = bh // H, bh % H
        qt = np.empty((D, Tq), np.float32)  # scaled queries, transposed: (Tq, D) -> (D, Tq)
        _transpose_into(q[b, h], qt)
        qt *= scale
        st = np.empty((KB, QB), np.float32)  # scores, then probabilities, of one tile: key-major
        ot = np.empty((D, QB), np.float32)  # unnormalized output, transposed
        m = np.empty(QB, np.float32)  # running max per query
        m_tile = np.empty(QB, np.float32)
        alpha = np.empty(QB, np.float32)
        l = np.empty(QB, np.float32)  # running sum per query
        for q0 in range(0, Tq, QB):
            nq = min(QB, Tq - q0)
            m[:] = NEG_INF
            l[:] = ZERO
            ot[:] = ZERO
            hi_tile = max(0, min(Tk, q0 + nq + shift)) if causal else Tk
            for k0 in range(0, hi_tile, KB):
                nk = min(KB, hi_tile - k0)
                if _tile_visible(key_mask[b], k0, nk) == 0:
                    continue
                _tile_scores_t(k[b, h], k0, nk, qt, q0, nq, st)  # S^T = K Q^T (q already scaled)
                _mask_tile_t(key_mask[b], causal, shift, k0, nk, q0, nq, st)
                m_tile[:nq] = m[:nq]
                for j in range(nk):  # new running max, elementwise over the query lanes
                    st_j = st[j, :nq]
                    for i in range(nq):
                        m_tile[i] = max(m_tile[i], st_j[i])
                for i in range(nq):
                    m_new = m_tile[i] if m_tile[i] > NEG_INF else ZERO  # a row that saw nothing: P = 0
                    alpha[i] = fast_exp_scalar(m[i] - m_new)  # rescales the old sums; m_old = -inf -> 0
                    m[i] = m_tile[i]
                    m_tile[i] = m_new
                    l[i] *= alpha[i]
                for d in range(D):
                    ot_d = ot[d, :nq]
                    for i in range(nq):
                        ot_d[i] *= alpha[i]
                for j in range(nk):
                    st_j = st[j, :nq]
                    for i in range(nq):
                        st_j[i] = fast_exp_scalar(st_j[i] - m_tile[i])  # P^T, masked -> exactly 0
                        l[i] += st_j[i]
                _accumulate_t(ot, 0, nq, v[b, h], k0, nk, st)  # O^T += V_tile^T P^T
            for i in range(nq):
                if l[i] == ZERO:  # the row saw no key
                    out[b, h, q0 + i, :] = ZERO
                    lse[b, h, q0 + i] = NEG_INF
                else:
                    inv = np.float32(1.0) / l[i]
                    for d in range(D):
                        out[b, h, q0 + i, d] = ot[d, i] * inv
                    lse[b, h, q0 + i] = m[i] + np.float32(math.log(l[i]))


@njit(cache=True, parallel=True)
def _bwd_v3(dout, q, k, v, out, lse, key_mask, causal, scale, dq, dk, dv):
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    shift = Tk - Tq
    QB, KB = LANE_TILE, KEY_TILE
    for bh in prange(B * H):
        b, h = bh // H, bh % H
        qt = np.empty((D, Tq), np.float32)  # scaled queries, transposed
        _transpose_into(q[b, h], qt)
        qt *= scale
        dot = np.empty((D, Tq), np.float32)  # dO, transposed
        _transpose_into(dout[b, h], dot)
        dqt = np.zeros((D, Tq), np.float32)  # dQ^T, accumulated over key tiles
        delta = np.empty(Tq, np.float32)  # Delta_i = dO_i . O_i
        lse_safe = np.empty(Tq, np.float32)  # rows that saw nothing: P = exp(-inf - 0) = 0
        for i in range(Tq):
            acc = ZERO
            for d in range(D):
                acc += dout[b, h, i, d] * out[b, h, i, d]
            delta[i] = acc
            lse_safe[i] = lse[b, h, i] if lse[b, h, i] > NEG_INF else np.float32(np.inf)
        pt = np.empty((KB, QB), np.float32)  # P^T of one tile
        dst = np.empty((KB, QB), np.float32)  # dP^T, then scale * dS^T
        p = np.empty((QB, KB), np.float32)  # P and scale * dS, query-major, for the dK and dV updates
        ds = np.empty((QB, KB), np.float32)
        dkt = np.empty((D, KB), np.float32)  # dK^T and dV^T of one key tile
        dvt = np.empty((D, KB), np.float32)
        for k0 in range(0, Tk, KB):
            nk = min(KB, Tk - k0)
            dkt[:] = ZERO
            dvt[:] = ZERO
            if _tile_visible(key_mask[b], k0, nk) > 0:
                q_first = max(0, k0 - shift) if causal else 0  # earlier queries see none of this tile
                for q0 in range(q_first - q_first % QB, Tq, QB):
                    nq = min(QB, Tq - q0)
                    _tile_scores_t(k[b, h], k0, nk, qt, q0, nq, pt)  # S^T
                    _mask_tile_t(key_mask[b], causal, shift, k0, nk, q0, nq, pt)
                    _tile_scores_t(v[b, h], k0, nk, dot, q0, nq, dst)  # dP^T = V dO^T
                    lse_q = lse_safe[q0:q0 + nq]
                    delta_q = delta[q0:q0 + nq]
                    for j in range(nk):
                        pt_j = pt[j, :nq]
                        dst_j = dst[j, :nq]
                        for i in range(nq):
                            pt_j[i] = fast_exp_scalar(pt_j[i] - lse_q[i])  # P = exp(S - lse)
                            dst_j[i] = pt_j[i] * (dst_j[i] - delta_q[i]) * scale  # scale * dS
                    _accumulate_t(dqt, q0, nq, k[b, h], k0, nk, dst)  # dQ^T[:, q tile] += K_tile^T dS^T
                    for j in range(nk):  # the tiles, query-major, so dK and dV updates run over keys
                        for i in range(nq):
                            p[i, j] = pt[j, i]
                            ds[i, j] = dst[j, i]
                    _accumulate_t(dvt, 0, nk, dout[b, h], q0, nq, p)  # dV^T += dO_tile^T P
                    _accumulate_t(dkt, 0, nk, q[b, h], q0, nq, ds)  # dK^T += Q_tile^T (scale dS)
            for j in range(nk):
                for d in range(D):
                    dk[b, h, k0 + j, d] = dkt[d, j]
                    dv[b, h, k0 + j, d] = dvt[d, j]
        for i in range(Tq):
            for d in range(D):
                dq[b, h, i, d] = dqt[d, i]


# -------------------------------------------------------------------- one query against a key/value cache
@njit(cache=True, parallel=True)
def _decode_fwd(q, k, v, key_mask, scale, out, lse):
    """out[b, h, 0] = softmax_j(scale q . k_j, masked) v_j for one query per (b, h): two passes over the keys.

    Pass 1: s_j = scale * q . k_j for the visible keys, and their max m. Pass 2: p_j = exp(s_j - m),
    l = sum p_j, acc += p_j v_j (axpy over D: vectorizes). Then out = acc / l, lse = m + log l. The exact
    two-pass softmax (no online rescaling: the Tk scores of one row fit in L1).
    """
    B, H, _, D = q.shape
    Tk = k.shape[2]
    for bh in prange(B * H):
        b, h = bh // H, bh % H
        qi = q[b, h, 0]
        s = np.empty(Tk, np.float32)                   # the row of scores: Tk floats per thread
        m = NEG_INF
        for j in range(Tk):
            if key_mask[b, j]:
                s[j] = dot8(qi, k[b, h, j]) * scale
                m = max(m, s[j])
        if m == NEG_INF:                               # the query sees no key: output 0, lse -inf
            out[b, h, 0, :] = ZERO
            lse[b, h, 0] = NEG_INF
            continue
        acc = np.zeros(D, np.float32)
        l = ZERO
        for j in range(Tk):
            if key_mask[b, j]:
                p = fast_exp_scalar(s[j] - m)
                l += p
                vj = v[b, h, j]
                for d in range(D):
                    acc[d] += p * vj[d]
        for d in range(D):
            out[b, h, 0, d] = acc[d] / l
        lse[b, h, 0] = m + math.log(l)


def attention_decode_fwd(q, k, v, key_mask=None, scale=None):
    """Attention forward for one query per (batch, head) (see reference.attention_decode_fwd): returns
    (out (B, H, 1, D), lse (B, H, 1)). k, v and key_mask are read in place when C-contiguous, as a
    key/value cache's preallocated buffers are (its unwritten positions masked out)."""
    key_mask = check_decode_inputs(q, k, v, key_mask)
    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # copies only when needed
    B, H, _, D = q.shape
    key_mask = np.ones((B, k.shape[2]), np.bool_) if key_mask is None else np.ascontiguousarray(key_mask)
    scale = np.float32(1.0 / math.sqrt(D) if scale is None else scale)
    q, k, v = f32(q), f32(k), f32(v)
    out = np.empty(q.shape, np.float32)
    lse = np.empty(q.shape[:3], np.float32)
    _decode_fwd(q, k, v, key_mask, scale, out, lse)
    return out, lse


# ----------------------------------------------------------------------------------- the Python wrappers
def _rows_f32(a):
    """a as float32 whose last axis is contiguous, its other axes strided as they come: a view needs no copy.

    For v4, which passes each (b, h) slice to BLAS with its row stride as BLAS's lda: the packed
    layout's q = qkv[:, :, 0].transpose(0, 2, 1, 3) is such a view (rows 3C floats apart), and so is the
    gradient that reaches the attention from the output projection, (B, T, H, D) read as (B, H, T, D).
    A broadcast axis (stride 0) or any other unusual layout is copied."""
    if (isinstance(a, np.ndarray) and a.dtype == np.float32 and a.ndim == 4 and a.strides[3] == 4
            and a.strides[2] >= 4 * a.shape[3] and min(a.strides[:2]) > 0):
        return a
    return np.ascontiguousarray(a, dtype=np.float32)


def _prepare(op, q, k, v, key_mask, scale, extra=(), strided=False):
    """Validate (before any compiled code runs) and bring inputs to float32: contiguous, or for a kernel that
    takes strided rows (`strided`, v4), any layout `_rows_f32` accepts."""
    key_mask = check_inputs(op, q, k, v, key_mask, extra)
    f32 = _rows_f32 if strided else (lambda a: np.ascontiguousarray(a, dtype=np.float32))  # copies only if needed
    B, _, _, D = q.shape
    Tk = k.shape[2]
    key_mask = np.ones((B, Tk), np.bool_) if key_mask is None else np.ascontiguousarray(key_mask)
    scale = np.float32(1.0 / math.sqrt(D) if scale is None else scale)
    return f32(q), f32(k), f32(v), key_mask, scale, f32


def _make_fwd(kernel, strided=False):
    def attention_fwd(q, k, v, key_mask=None, causal=False, scale=None):
        """Attention forward (see reference.attention_fwd): returns (out (B, H, Tq, D), lse (B, H, Tq))."""
        q, k, v, key_mask, scale, _ = _prepare("attention_fwd", q, k, v, key_mask, scale, strided=strided)
        B, H, Tq, D = q.shape
        # v4 writes the output as (B, T, H, D) in memory, the layout the output projection reads as (B, T, C):
        # the (B, H, T, D) result is a view of it, and the model's transpose and reshape copy nothing
        out = np.empty((B, Tq, H, D), np.float32).transpose(0, 2, 1, 3) if strided else np.empty(q.shape, np.float32)
        lse = np.empty(q.shape[:3], np.float32)
        kernel(q, k, v, key_mask, bool(causal), scale, out, lse)
        return out, lse

    return attention_fwd


def _make_bwd(kernel, strided=False):
    def attention_bwd(dout, q, k, v, out, lse, key_mask=None, causal=False, scale=None):
        """Attention backward (see reference.attention_bwd): returns (dq, dk, dv), float32."""
        extra = []  # with a malformed q, let check_inputs report q first
        if isinstance(q, np.ndarray) and q.ndim == 4:
            extra = [("dout", dout, q.shape), ("out", out, q.shape), ("lse", lse, q.shape[:3])]
        q, k, v, key_mask, scale, f32 = _prepare("attention_bwd", q, k, v, key_mask, scale, extra, strided)
        dq = np.zeros(q.shape, np.float32)  # accumulated over key tiles
        dk = np.zeros(k.shape, np.float32)
        dv = np.zeros(v.shape, np.float32)
        lse = np.ascontiguousarray(lse, dtype=np.float32)
        kernel(f32(dout), q, k, v, f32(out), lse, key_mask, bool(causal), scale, dq, dk, dv)
        return dq, dk, dv

    return attention_bwd


def _on_blas(kernel):
    """Run a v4 kernel with OpenBLAS on the calling thread (the prange already fills every core) and one
    task per Numba thread (its last argument)."""
    def run(*args):
        with blas.single_threaded():
            kernel(*args, numba.get_num_threads())

    return run


VERSIONS = {
    "attention_fwd": {"v1": _make_fwd(_fwd_v1), "v2": _make_fwd(_fwd_v2), "v3": _make_fwd(_fwd_v3)},
    "attention_bwd": {"v1": _make_bwd(_bwd_v1), "v2": _make_bwd(_bwd_v2), "v3": _make_bwd(_bwd_v3)},
}
UNAVAILABLE = {}  # version -> why it is not registered on this machine
if blas.AVAILABLE:
    from kernels.attention import cpu_gemm

    VERSIONS["attention_fwd"]["v4"] = _make_fwd(_on_blas(cpu_gemm.fwd_v4), strided=True)
    VERSIONS["attention_bwd"]["v4"] = _make_bwd(_on_blas(cpu_gemm.bwd_v4), strided=True)
else:
    UNAVAILABLE["v4"] = f"v4 calls OpenBLAS from Numba (kernels/blas.py), which did not load: {blas.WHY_NOT}"

# The winner: v4, 2.5-3.4x v3 in the same run (benchmarks/results/kernels_attention.md); v3 where v4 is absent.
_ENGINE = "v4" if "v4" in VERSIONS["attention_fwd"] else "v3"
attention_fwd = VERSIONS["attention_fwd"][_ENGINE]
attention_bwd = VERSIONS["attention_bwd"][_ENGINE]

// attention.cu -- CUDA C twin of kernels/attention/cpu.py (backend "cupy", launched by gpu.py).
//
// FlashAttention-style tiled attention in FP32, for head size D <= 128. Math (see reference.py):
//     S_ij = scale * q_i . k_j   (-inf where key j is padding, or causal and j > i + Tk - Tq)
//     lse_i = log sum_j exp(S_ij)      P_ij = exp(S_ij - lse_i)      out_i = sum_j P_ij v_j
//     backward: Delta_i = dO_i . out_i,  dP_ij = dO_i . v_j,  dS_ij = P_ij (dP_ij - Delta_i)
//               dV_j = sum_i P_ij dO_i,  dK_j = scale sum_i dS_ij q_i,  dQ_i = scale sum_j dS_ij k_j
// A row that sees no key gets lse = -inf and out = 0 (and zero gradients), never NaN.
//
// Work mapping (the same tiling as the Numba version, with a warp where Numba has a loop):
//   attention_fwd_dXX   grid (ceil(Tq / ROWS), B*H). A block owns ROWS query rows (NWARPS warps x RPW
//       rows each) and streams the keys in tiles of 32: K/V tile in shared memory, lane j scores key j of
//       the tile for each of its warp's rows, an online softmax (running max m, running sum l, output
//       accumulator o rescaled by exp(m_old - m_new)) folds the tile in, p_j is broadcast to all lanes
//       with __shfl_sync for o += p_j v_j, lane l owning head dims l, l+32, l+64, l+96. Saves lse.
//   attention_bwd_delta one warp per row: Delta_i = sum_d dO_id out_id.
//   attention_bwd_dkdv_dXX grid (ceil(Tk / ROWS), B*H). A block owns ROWS keys and streams the queries
//       in tiles of 32 (lane i = query i of the tile), recomputing P from lse -- never storing T x T.
//   attention_bwd_dq_dXX grid (ceil(Tq / ROWS), B*H), like the forward: recomputes P and dS per key tile.
// Determinism: dK/dV and dQ are computed in two separate passes, each output element owned by exactly one
// warp lane, so there are no atomics and results are bit-reproducible. The price is computing S, P and dP
// twice in the backward (about 1.4x the FLOPs of FlashAttention-2's single pass with atomic dQ).
//
// Shared memory: the block's own rows (Q in forward/dQ, K and V in dK/dV) are read as broadcasts (every
// lane the same address), so they are unpadded; the streamed tile is read "lane j -> row j, column d",
// which would be a 32-way bank conflict at a row stride of 32/64/128 floats, so those rows are padded to
// DMAX + 1. Loops run "rows innermost": each shared-memory load of K or V feeds RPW FMAs in registers.
//
// Templates: DMAX in {32, 64, 128} fixes register arrays and shared-memory sizes; D itself is a runtime
// argument <= DMAX, so D = 48 runs in the DMAX = 64 variant. RPW shrinks to 2 at DMAX = 128 so that each
// kernel's static shared memory stays under the 48 KiB that needs no opt-in.
//
// What this is not: a tensor-core (TF32/BF16) kernel, or split-K decoding; it is the FP32 algorithm, kept
// readable, that the Numba kernel also implements.

#define NWARPS 4
#define TILE 32  // keys per streamed tile (forward, dQ) and queries per streamed tile (dK/dV): one per lane
#define FULL_MASK 0xffffffffu
// NVRTC, which CuPy compiles with, has no <math.h> and so no INFINITY / NAN: spell out the IEEE-754 bits.
#define NEG_INF (-__int_as_float(0x7f800000))

template <int DMAX> struct Cfg {
    static constexpr int RPW = DMAX >= 128 ? 2 : 4;  // rows per warp (gpu.py mirrors this)
    static constexpr int ROWS = NWARPS * RPW;         // rows owned by one block
    static constexpr int DPL = DMAX / 32;             // head dims per lane: lane l owns d = l + 32 c
};

__device__ __forceinline__ float warp_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(FULL_MASK, v, offset);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, offset));
    return v;
}

// May query i see key j? Out-of-range rows/keys (tile padding) never see anything.
__device__ __forceinline__ bool visible(int i, int j, int Tq, int Tk, const unsigned char* km, int causal) {
    if (i >= Tq || j >= Tk) return false;
    if (km && !km[j]) return false;
    if (causal && j > i + Tk - Tq) return false;  // bottom-right aligned causal mask
    return true;
}

// Copy `rows` rows starting at row r0 of a (T, D) matrix into smem columns [0, DMAX) (row stride LD),
// zero-filling rows past T and columns past D -- so no lane ever reads uninitialized shared memory, and
// the accumulators of dims >= D stay 0. All NWARPS * 32 threads cooperate; consecutive threads read
// consecutive floats; dividing by the compile-time DMAX is a shift, not a division by D.
template <int DMAX, int LD>
__device__ __forceinline__ void load_rows(float (*dst)[LD], const float* src, int r0, int rows, int T, int D,
                                          float mult) {
    for (int idx = threadIdx.x; idx < rows * DMAX; idx += NWARPS * 32) {
        int r = idx / DMAX, d = idx % DMAX;
        dst[r][d] = (r0 + r < T && d < D) ? src[(long long)(r0 + r) * D + d] * mult : 0.0f;
    }
}

// ------------------------------------------------------------------------------------------------ forward
template <int DMAX>
__device__ void attention_fwd_impl(const float* __restrict__ q, const float* __restrict__ k,
                                   const float* __restrict__ v, const unsigned char* __restrict__ key_mask,
                                   float* __restrict__ out, float* __restrict__ lse,
                                   int H, int Tq, int Tk, int D, int causal, float scale) {
    constexpr int RPW = Cfg<DMAX>::RPW, ROWS = Cfg<DMAX>::ROWS, DPL = Cfg<DMAX>::DPL;
    __shared__ float Qs[ROWS][DMAX];      // the block's queries, pre-multiplied by scale (broadcast reads)
    __shared__ float Ks[TILE][DMAX + 1];  // streamed key tile, padded (lane j reads row j)
    __shared__ float Vs[TILE][DMAX];      // streamed value tile (lanes read consecutive columns of a row)

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int bh = blockIdx.y, b = bh / H, q0 = blockIdx.x * ROWS;
    const float* kb = k + (long long)bh * Tk * D;
    const float* vb = v + (long long)bh * Tk * D;
    const unsigned char* km = key_mask ? key_mask + (long long)b * Tk : nullptr;

    load_rows<DMAX, DMAX>(Qs, q + (long long)bh * Tq * D, q0, ROWS, Tq, D, scale);

    float m[RPW], l[RPW], o[RPW][DPL];
#pragma unroll
    for (int r = 0; r < RPW; ++r) {
        m[r] = NEG_INF; l[r] = 0.0f;
#pragma unroll
        for (int c = 0; c < DPL; ++c) o[r][c] = 0.0f;
    }
    // causal: the block's last query sees keys up to (q0 + ROWS - 1) + Tk - Tq; skip the tiles after that
    const int k_end = causal ? max(0, min(Tk, q0 + ROWS + Tk - Tq)) : Tk;

    for (int k0 = 0; k0 < k_end; k0 += TILE) {
        __syncthreads();  // the previous tile is consumed (and, first time round, Qs is written)
        load_rows<DMAX, DMAX + 1>(Ks, kb, k0, TILE, Tk, D, 1.0f);
        load_rows<DMAX, DMAX>(Vs, vb, k0, TILE, Tk, D, 1.0f);
        __syncthreads();

        // S for RPW rows x (key k0 + lane): one Ks load feeds RPW FMAs
        float s[RPW];
#pragma unroll
        for (int r = 0; r < RPW; ++r) s[r] = 0.0f;
        for (int d = 0; d < D; ++d) {
            float kd = Ks[lane][d];
#pragma unroll
            for (int r = 0; r < RPW; ++r) s[r] += Qs[warp * RPW + r][d] * kd;
        }
        float p[RPW];
#pragma unroll
        for (int r = 0; r < RPW; ++r) {
            if (!visible(q0 + warp * RPW + r, k0 + lane, Tq, Tk, km, causal)) s[r] = NEG_INF;
            float m_new = fmaxf(m[r], warp_max(s[r]));
            if (m_new == NEG_INF) { p[r] = 0.0f; continue; }  // warp-uniform: row has seen nothing yet
            float alpha = expf(m[r] - m_new);  // rescales the old state; 0 when m was -inf
            p[r] = expf(s[r] - m_new);         // 0 on masked keys
            l[r] = l[r] * alpha + warp_sum(p[r]);
            m[r] = m_new;
#pragma unroll
            for (int c = 0; c < DPL; ++c) o[r][c] *= alpha;
        }
        // o += P V: p_j broadcast from lane j; one Vs load feeds RPW FMAs
        for (int j = 0; j < TILE; ++j) {
            float pj[RPW];
#pragma unroll
            for (int r = 0; r < RPW; ++r) pj[r] = __shfl_sync(FULL_MASK, p[r], j);
#pragma unroll
            for (int c = 0; c < DPL; ++c) {
                float vd = Vs[j][lane + 32 * c];  // 0 for columns >= D
#pragma unroll
                for (int r = 0; r < RPW; ++r) o[r][c] += pj[r] * vd;
            }
        }
    }

#pragma unroll
    for (int r = 0; r < RPW; ++r) {
        int i = q0 + warp * RPW + r;
        if (i >= Tq) continue;
        bool seen = l[r] > 0.0f;  // l >= 1 once any key was seen (the max term is exp(0))
        float inv = seen ? 1.0f / l[r] : 0.0f;
        float* orow = out + ((long long)bh * Tq + i) * D;
#pragma unroll
        for (int c = 0; c < DPL; ++c) {
            int d = lane + 32 * c;
            if (d < D) orow[d] = o[r][c] * inv;
        }
        if (lane == 0) lse[(long long)bh * Tq + i] = seen ? m[r] + logf(l[r]) : NEG_INF;
    }
}

// ------------------------------------------------------------------------------------------------ backward
// Delta_i = dO_i . out_i, one warp per row of the (B*H*Tq, D) matrices; NWARPS rows per block.
extern "C" __global__ void attention_bwd_delta(const float* __restrict__ dout, const float* __restrict__ out,
                                               float* __restrict__ delta, long long rows, int D) {
    int lane = threadIdx.x % 32;
    long long row = (long long)blockIdx.x * NWARPS + threadIdx.x / 32;
    if (row >= rows) return;
    float acc = 0.0f;
    for (int d = lane; d < D; d += 32) acc += dout[row * D + d] * out[row * D + d];
    acc = warp_sum(acc);
    if (lane == 0) delta[row] = acc;
}

// P_ij and dS_ij for one (query i, key j) pair from the recomputed score, or zeros when not visible.
__device__ __forceinline__ void prob_and_dscore(float qk, float dov, float lse_i, float delta_i, float scale,
                                                bool vis, float& p, float& ds) {
    if (vis && lse_i != NEG_INF) {  // lse = -inf: the row sees nothing, exp(S - lse) would be inf
        p = expf(qk * scale - lse_i);
        ds = p * (dov - delta_i);
    } else {
        p = 0.0f; ds = 0.0f;
    }
}

template <int DMAX>
__device__ void attention_bwd_dkdv_impl(const float* __restrict__ q, const float* __restrict__ k,
                                        const float* __restrict__ v, const float* __restrict__ dout,
                                        const float* __restrict__ lse, const float* __restrict__ delta,
                                        const unsigned char* __restrict__ key_mask,
                                        float* __restrict__ dk, float* __restrict__ dv,
                                        int H, int Tq, int Tk, int D, int causal, float scale) {
    constexpr int RPW = Cfg<DMAX>::RPW, ROWS = Cfg<DMAX>::ROWS, DPL = Cfg<DMAX>::DPL;
    __shared__ float Ks[ROWS][DMAX];       // the block's keys and values (broadcast reads)
    __shared__ float Vs[ROWS][DMAX];
    __shared__ float Qs[TILE][DMAX + 1];   // streamed query tile, padded (lane i reads row i)
    __shared__ float dOs[TILE][DMAX + 1];
    __shared__ float lse_s[TILE], delta_s[TILE];

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int bh = blockIdx.y, b = bh / H, k0 = blockIdx.x * ROWS;
    const float* qb = q + (long long)bh * Tq * D;
    const float* dob = dout + (long long)bh * Tq * D;
    const unsigned char* km = key_mask ? key_mask + (long long)b * Tk : nullptr;

    load_rows<DMAX, DMAX>(Ks, k + (long long)bh * Tk * D, k0, ROWS, Tk, D, 1.0f);
    load_rows<DMAX, DMAX>(Vs, v + (long long)bh * Tk * D, k0, ROWS, Tk, D, 1.0f);

    float dk_acc[RPW][DPL], dv_acc[RPW][DPL];
#pragma unroll
    for (int r = 0; r < RPW; ++r)
#pragma unroll
        for (int c = 0; c < DPL; ++c) { dk_acc[r][c] = 0.0f; dv_acc[r][c] = 0.0f; }

    // causal: key k0 is first seen by query k0 - (Tk - Tq); earlier query tiles contribute nothing
    const int q_start = causal ? max(0, k0 - (Tk - Tq)) / TILE * TILE : 0;
    for (int qt = q_start; qt < Tq; qt += TILE) {
        __syncthreads();
        load_rows<DMAX, DMAX + 1>(Qs, qb, qt, TILE, Tq, D, 1.0f);
        load_rows<DMAX, DMAX + 1>(dOs, dob, qt, TILE, Tq, D, 1.0f);
        if (threadIdx.x < TILE) {
            int i = qt + threadIdx.x;
            lse_s[threadIdx.x] = i < Tq ? lse[(long long)bh * Tq + i] : NEG_INF;
            delta_s[threadIdx.x] = i < Tq ? delta[(long long)bh * Tq + i] : 0.0f;
        }
        __syncthreads();

        // lane = query qt + lane; rows r = this warp's keys
        float qk[RPW], dov[RPW];
#pragma unroll
        for (int r = 0; r < RPW; ++r) { qk[r] = 0.0f; dov[r] = 0.0f; }
        for (int d = 0; d < D; ++d) {
            float qd = Qs[lane][d], dod = dOs[lane][d];
#pragma unroll
            for (int r = 0; r < RPW; ++r) {
                qk[r] += qd * Ks[warp * RPW + r][d];
                dov[r] += dod * Vs[warp * RPW + r][d];
            }
        }
        float p[RPW], ds[RPW];
#pragma unroll
        for (int r = 0; r < RPW; ++r) {
            bool vis = visible(qt + lane, k0 + warp * RPW + r, Tq, Tk, km, causal);
            prob_and_dscore(qk[r], dov[r], lse_s[lane], delta_s[lane], scale, vis, p[r], ds[r]);
        }
        // dV_j += sum_i P_ij dO_i,  dK_j += sum_i dS_ij q_i  (scale applied once at the end)
        for (int i = 0; i < TILE; ++i) {
            float pi[RPW], dsi[RPW];
#pragma unroll
            for (int r = 0; r < RPW; ++r) {
                pi[r] = __shfl_sync(FULL_MASK, p[r], i);
                dsi[r] = __shfl_sync(FULL_MASK, ds[r], i);
            }
#pragma unroll
            for (int c = 0; c < DPL; ++c) {
                float dod = dOs[i][lane + 32 * c], qd = Qs[i][lane + 32 * c];
#pragma unroll
                for (int r = 0; r < RPW; ++r) {
                    dv_acc[r][c] += pi[r] * dod;
                    dk_acc[r][c] += dsi[r] * qd;
                }
            }
        }
    }

#pragma unroll
    for (int r = 0; r < RPW; ++r) {
        int j = k0 + warp * RPW + r;
        if (j >= Tk) continue;
        long long base = ((long long)bh * Tk + j) * D;
#pragma unroll
        for (int c = 0; c < DPL; ++c) {
            int d = lane + 32 * c;
            if (d < D) { dk[base + d] = dk_acc[r][c] * scale; dv[base + d] = dv_acc[r][c]; }
        }
    }
}

template <int DMAX>
__device__ void attention_bwd_dq_impl(const float* __restrict__ q, const float* __restrict__ k,
                                      const float* __restrict__ v, const float* __restrict__ dout,
                                      const float* __restrict__ lse, const float* __restrict__ delta,
                                      const unsigned char* __restrict__ key_mask, float* __restrict__ dq,
                                      int H, int Tq, int Tk, int D, int causal, float scale) {
    constexpr int RPW = Cfg<DMAX>::RPW, ROWS = Cfg<DMAX>::ROWS, DPL = Cfg<DMAX>::DPL;
    __shared__ float Qs[ROWS][DMAX];       // the block's queries and their output gradients (broadcast)
    __shared__ float dOs[ROWS][DMAX];
    __shared__ float Ks[TILE][DMAX + 1];   // streamed key/value tile, padded (lane j reads row j)
    __shared__ float Vs[TILE][DMAX + 1];

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int bh = blockIdx.y, b = bh / H, q0 = blockIdx.x * ROWS;
    const float* kb = k + (long long)bh * Tk * D;
    const float* vb = v + (long long)bh * Tk * D;
    const unsigned char* km = key_mask ? key_mask + (long long)b * Tk : nullptr;

    load_rows<DMAX, DMAX>(Qs, q + (long long)bh * Tq * D, q0, ROWS, Tq, D, 1.0f);
    load_rows<DMAX, DMAX>(dOs, dout + (long long)bh * Tq * D, q0, ROWS, Tq, D, 1.0f);
    float lse_r[RPW], delta_r[RPW], dq_acc[RPW][DPL];
#pragma unroll
    for (int r = 0; r < RPW; ++r) {
        int i = q0 + warp * RPW + r;
        lse_r[r] = i < Tq ? lse[(long long)bh * Tq + i] : NEG_INF;
        delta_r[r] = i < Tq ? delta[(long long)bh * Tq + i] : 0.0f;
#pragma unroll
        for (int c = 0; c < DPL; ++c) dq_acc[r][c] = 0.0f;
    }
    const int k_end = causal ? max(0, min(Tk, q0 + ROWS + Tk - Tq)) : Tk;

    for (int k0 = 0; k0 < k_end; k0 += TILE) {
        __syncthreads();
        load_rows<DMAX, DMAX + 1>(Ks, kb, k0, TILE, Tk, D, 1.0f);
        load_rows<DMAX, DMAX + 1>(Vs, vb, k0, TILE, Tk, D, 1.0f);
        __syncthreads();

        float qk[RPW], dov[RPW];
#pragma unroll
        for (int r = 0; r < RPW; ++r) { qk[r] = 0.0f; dov[r] = 0.0f; }
        for (int d = 0; d < D; ++d) {
            float kd = Ks[lane][d], vd = Vs[lane][d];
#pragma unroll
            for (int r = 0; r < RPW; ++r) {
                qk[r] += Qs[warp * RPW + r][d] * kd;
                dov[r] += dOs[warp * RPW + r][d] * vd;
            }
        }
        float p, ds[RPW];
#pragma unroll
        for (int r = 0; r < RPW; ++r) {
            bool vis = visible(q0 + warp * RPW + r, k0 + lane, Tq, Tk, km, causal);
            prob_and_dscore(qk[r], dov[r], lse_r[r], delta_r[r], scale, vis, p, ds[r]);
        }
        // dQ_i += sum_j dS_ij k_j  (scale applied once at the end)
        for (int j = 0; j < TILE; ++j) {
            float dsj[RPW];
#pragma unroll
            for (int r = 0; r < RPW; ++r) dsj[r] = __shfl_sync(FULL_MASK, ds[r], j);
#pragma unroll
            for (int c = 0; c < DPL; ++c) {
                float kd = Ks[j][lane + 32 * c];
#pragma unroll
                for (int r = 0; r < RPW; ++r) dq_acc[r][c] += dsj[r] * kd;
            }
        }
    }

#pragma unroll
    for (int r = 0; r < RPW; ++r) {
        int i = q0 + warp * RPW + r;
        if (i >= Tq) continue;
        long long base = ((long long)bh * Tq + i) * D;
#pragma unroll
        for (int c = 0; c < DPL; ++c) {
            int d = lane + 32 * c;
            if (d < D) dq[base + d] = dq_acc[r][c] * scale;
        }
    }
}

// ------------------------------------------------------------------------ extern "C" entry points per DMAX
// One name per head-size bucket, so CuPy can fetch them by plain name (no C++ name mangling).
#define ATTENTION_ENTRY_POINTS(DM)                                                                          \
    extern "C" __global__ void __launch_bounds__(NWARPS * 32) attention_fwd_d##DM(                          \
        const float* q, const float* k, const float* v, const unsigned char* key_mask, float* out,         \
        float* lse, int H, int Tq, int Tk, int D, int causal, float scale) {                               \
        attention_fwd_impl<DM>(q, k, v, key_mask, out, lse, H, Tq, Tk, D, causal, scale);                   \
    }                                                                                                       \
    extern "C" __global__ void __launch_bounds__(NWARPS * 32) attention_bwd_dkdv_d##DM(                     \
        const float* q, const float* k, const float* v, const float* dout, const float* lse,               \
        const float* delta, const unsigned char* key_mask, float* dk, float* dv, int H, int Tq, int Tk,    \
        int D, int causal, float scale) {                                                                   \
        attention_bwd_dkdv_impl<DM>(q, k, v, dout, lse, delta, key_mask, dk, dv, H, Tq, Tk, D, causal,     \
                                    scale);                                                                 \
    }                                                                                                       \
    extern "C" __global__ void __launch_bounds__(NWARPS * 32) attention_bwd_dq_d##DM(                       \
        const float* q, const float* k, const float* v, const float* dout, const float* lse,               \
        const float* delta, const unsigned char* key_mask, float* dq, int H, int Tq, int Tk, int D,        \
        int causal, float scale) {                                                                          \
        attention_bwd_dq_impl<DM>(q, k, v, dout, lse, delta, key_mask, dq, H, Tq, Tk, D, causal, scale);   \
    }

ATTENTION_ENTRY_POINTS(32)
ATTENTION_ENTRY_POINTS(64)
ATTENTION_ENTRY_POINTS(128)

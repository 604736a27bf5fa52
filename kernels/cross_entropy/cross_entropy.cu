// cross_entropy.cu -- CUDA C twin of kernels/cross_entropy/cpu.py (backend "cupy", launched by gpu.py).
//
// Softmax cross-entropy fused over the vocabulary, never materializing the (N, V) probabilities:
//     lse_i  = log sum_j exp(z_ij)                   loss_i = lse_i - z_{i, t_i}
//     loss   = (1 / n_valid) sum_{i valid} loss_i    (rows with t_i == ignore_index do not count; 0 if none)
//     dloss/dz_ij = dloss * (exp(z_ij - lse_i) - [j == t_i]) / n_valid   for valid rows, 0 for ignored rows
//
// Work mapping:
//   cross_entropy_fwd_rows  one block (256 threads) per row: with V ~ 30k a row is too long for one warp.
//       Thread t keeps an online (max, sum) pair over columns t, t+256, ... (coalesced), the warp merges
//       pairs with __shfl_xor_sync, the 8 warp results meet in shared memory, warp 0 merges them. One read
//       of the row. Writes lse_i and loss_i (0 for ignored rows).
//   cross_entropy_fwd_mean  a single block sums loss_i (in double) and counts the valid rows in a fixed
//       order: deterministic, and the mean never leaves the GPU (no host round trip per step).
//   cross_entropy_bwd       one block per row, one pass: each dlogit is written once from z, lse and t.
// Out-of-range targets (not ignore_index, not in [0, V)) are not checked on the host -- that would need a
// device-to-host copy every step -- so they make that row's loss and gradient NaN, visibly.
//
// What this is not: a kernel fused with the final matmul (logits are still materialized, as in the Numba
// version); that fusion is where the remaining memory savings are (see NOTES.md).

#define THREADS 256
#define NWARPS (THREADS / 32)
#define FULL_MASK 0xffffffffu
// NVRTC, which CuPy compiles with, has no <math.h> and so no INFINITY / NAN: spell out the IEEE-754 bits.
#define NEG_INF (-__int_as_float(0x7f800000))
#define QNAN __int_as_float(0x7fffffff)

__device__ __forceinline__ void merge_state(float& m, float& s, float m2, float s2) {
    float m_new = fmaxf(m, m2);
    if (m_new == NEG_INF) { m = m_new; s = 0.0f; return; }  // both empty: avoid -inf - (-inf) = NaN
    s = s * expf(m - m_new) + s2 * expf(m2 - m_new);
    m = m_new;
}

// logits: (N, V); targets: (N,) int64; lse, row_loss: (N,).
extern "C" __global__ void cross_entropy_fwd_rows(const float* __restrict__ logits,
                                                  const long long* __restrict__ targets,
                                                  float* __restrict__ lse, float* __restrict__ row_loss,
                                                  int V, long long ignore_index) {
    __shared__ float sm_m[NWARPS], sm_s[NWARPS];
    const long long row = blockIdx.x;
    const float* z = logits + row * V;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;

    float m = NEG_INF, s = 0.0f;
    for (int j = threadIdx.x; j < V; j += THREADS) {
        float x = z[j];
        if (x == NEG_INF) continue;  // contributes exp(-inf) = 0
        if (x > m) { s = s * expf(m - x) + 1.0f; m = x; }
        else       { s += expf(x - m); }
    }
    for (int offset = 16; offset > 0; offset >>= 1) {
        float m2 = __shfl_xor_sync(FULL_MASK, m, offset), s2 = __shfl_xor_sync(FULL_MASK, s, offset);
        merge_state(m, s, m2, s2);
    }
    if (lane == 0) { sm_m[warp] = m; sm_s[warp] = s; }
    __syncthreads();
    if (warp == 0) {
        m = lane < NWARPS ? sm_m[lane] : NEG_INF;
        s = lane < NWARPS ? sm_s[lane] : 0.0f;
        for (int offset = 16; offset > 0; offset >>= 1) {
            float m2 = __shfl_xor_sync(FULL_MASK, m, offset), s2 = __shfl_xor_sync(FULL_MASK, s, offset);
            merge_state(m, s, m2, s2);
        }
        if (lane == 0) {
            float l = m + logf(s);  // -inf only for a row of all -inf logits
            lse[row] = l;
            long long t = targets[row];
            float loss_i = 0.0f;
            if (t != ignore_index) loss_i = (t >= 0 && t < V) ? l - z[t] : QNAN;
            row_loss[row] = loss_i;
        }
    }
}

// One block: loss[0] = sum of row_loss over valid rows / n_valid (0 if none); fixed summation order.
extern "C" __global__ void cross_entropy_fwd_mean(const float* __restrict__ row_loss,
                                                  const long long* __restrict__ targets,
                                                  float* __restrict__ loss, long long N, long long ignore_index) {
    __shared__ double sm_sum[NWARPS];
    __shared__ long long sm_cnt[NWARPS];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    double sum = 0.0;  // double: N can be ~1e5 rows, and the reference sums in float64 too
    long long cnt = 0;
    for (long long i = threadIdx.x; i < N; i += THREADS) {
        if (targets[i] != ignore_index) { sum += row_loss[i]; ++cnt; }
    }
    for (int offset = 16; offset > 0; offset >>= 1) {
        sum += __shfl_xor_sync(FULL_MASK, sum, offset);
        cnt += __shfl_xor_sync(FULL_MASK, cnt, offset);
    }
    if (lane == 0) { sm_sum[warp] = sum; sm_cnt[warp] = cnt; }
    __syncthreads();
    if (threadIdx.x == 0) {
        double total = 0.0;
        long long n_valid = 0;
        for (int w = 0; w < NWARPS; ++w) { total += sm_sum[w]; n_valid += sm_cnt[w]; }
        loss[0] = n_valid > 0 ? (float)(total / (double)n_valid) : 0.0f;
    }
}

// dlogits: (N, V). dloss: pointer to one float (the upstream gradient, on the device); n_valid: pointer
// to one int64 (the number of rows that are not ignored, counted on the device).
extern "C" __global__ void cross_entropy_bwd(const float* __restrict__ logits,
                                             const long long* __restrict__ targets,
                                             const float* __restrict__ lse, const float* __restrict__ dloss,
                                             const long long* __restrict__ n_valid,
                                             float* __restrict__ dlogits, int V, long long ignore_index) {
    const long long row = blockIdx.x;
    const float* z = logits + row * V;
    float* dz = dlogits + row * V;
    const long long t = targets[row];
    const bool valid = t != ignore_index;
    // valid implies n_valid >= 1, so no division by zero
    const float coef = valid ? dloss[0] / (float)n_valid[0] : 0.0f;
    const float l = lse[row];
    const float bad = (valid && (t < 0 || t >= V)) ? QNAN : 0.0f;  // NaN-poison rows with a bad target
    for (int j = threadIdx.x; j < V; j += THREADS) {
        float p = valid ? expf(z[j] - l) : 0.0f;
        dz[j] = coef * (p - (j == t ? 1.0f : 0.0f)) + bad;
    }
}

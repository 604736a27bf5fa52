// layernorm.cu -- CUDA C twin of kernels/layernorm/cpu.py (backend "cupy", launched by gpu.py).
//
// Forward, per row x of length C (biased variance, as torch.nn.LayerNorm and BERT):
//     mean = (1/C) sum_j x_j         var = (1/C) sum_j (x_j - mean)^2        rstd = 1 / sqrt(var + eps)
//     xhat_j = (x_j - mean) * rstd   y_j = xhat_j * w_j + b_j
// Backward, with g_j = dy_j * w_j (the gradient reaching xhat):
//     dx_j = rstd * (g_j - mean_k(g_k) - xhat_j * mean_k(g_k * xhat_k))
//     dw_j = sum_rows dy_j * xhat_j      db_j = sum_rows dy_j
//
// Numerics (as reference.py and cpu.py; the why is in reference.py's docstring): with eps = 1e-12 a
// (nearly) constant row has rstd up to 1e6, which magnifies any rounding in x - mean. So
//   forward:  statistics of the row shifted by its first element, d = x - x_0 (exact for such a row):
//             mean = x_0 + mean(d), xhat = (d - mean(d)) * rstd; a constant row gives xhat = 0, y = bias.
//   backward: x - mean is re-centred on its own row average `off` (the rounding of the float32 mean)
//             before use; layernorm_bwd_dx stores `off` per row for the parameter-gradient kernel.
//
// Work mapping (as the Numba version's `prange` over rows):
//   layernorm_fwd / layernorm_bwd_dx: one warp per row, WARPS_PER_BLOCK rows per block, lane l handles
//       columns l, l+32, ...; row sums by __shfl_xor_sync butterflies. The forward takes two passes over
//       the row (mean, then the centred sum of squares) instead of E[x^2] - mean^2, which cancels
//       catastrophically when |mean| >> std; the second read of the row hits L1/L2, not HBM.
//   dweight / dbias, deterministically and without atomics, in two small kernels:
//       layernorm_bwd_params_partial: block (cx, cy) covers 256 columns x ROWS_PER_CHUNK rows; thread
//           = column, loops over its chunk's rows (coalesced across threads) -> partial[cy, 2, C]
//       layernorm_bwd_params_reduce: thread = column, sums partial[:, ., c] over chunks in fixed order.
//   The same inputs always give bit-identical dweight/dbias, which atomicAdd could not promise.
//
// What this is not: the fully fused llm.c-style backward that accumulates dw/db in shared memory while
// computing dx; that saves re-reading x and dy (see NOTES.md) at the cost of a much longer kernel.

#define WARPS_PER_BLOCK 4
#define ROWS_PER_CHUNK 64
#define COLS_PER_BLOCK 256
#define FULL_MASK 0xffffffffu

__device__ __forceinline__ float warp_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(FULL_MASK, v, offset);
    return v;
}

// x, y: (N, C); weight, bias: (C,); mean, rstd: (N,).
extern "C" __global__ void layernorm_fwd(const float* __restrict__ x, const float* __restrict__ weight,
                                         const float* __restrict__ bias, float* __restrict__ y,
                                         float* __restrict__ mean, float* __restrict__ rstd,
                                         int N, int C, float eps) {
    int lane = threadIdx.x % 32;
    long long row = (long long)blockIdx.x * WARPS_PER_BLOCK + threadIdx.x / 32;
    if (row >= N) return;
    const float* xr = x + row * C;
    float* yr = y + row * C;

    float x0 = xr[0];  // the shift: every lane reads the same address (one broadcast load)
    float s = 0.0f;
    for (int j = lane; j < C; j += 32) s += xr[j] - x0;
    float dmu = warp_sum(s) / C;  // mean of the shifted row d = x - x0

    float ss = 0.0f;
    for (int j = lane; j < C; j += 32) { float d = (xr[j] - x0) - dmu; ss += d * d; }
    float r = 1.0f / sqrtf(warp_sum(ss) / C + eps);  // not rsqrtf: its ~2 ulp error would show in tests

    for (int j = lane; j < C; j += 32) yr[j] = ((xr[j] - x0) - dmu) * r * weight[j] + bias[j];
    if (lane == 0) { mean[row] = x0 + dmu; rstd[row] = r; }
}

// dx for each row: the re-centring offset (one read of x), two warp sums (of g and of g * xhat) in one
// read pass, then one write pass. off: (N,), written here for layernorm_bwd_params_partial.
extern "C" __global__ void layernorm_bwd_dx(const float* __restrict__ dy, const float* __restrict__ x,
                                            const float* __restrict__ weight, const float* __restrict__ mean,
                                            const float* __restrict__ rstd, float* __restrict__ dx,
                                            float* __restrict__ off, int N, int C) {
    int lane = threadIdx.x % 32;
    long long row = (long long)blockIdx.x * WARPS_PER_BLOCK + threadIdx.x / 32;
    if (row >= N) return;
    const float* xr = x + row * C;
    const float* dyr = dy + row * C;
    float* dxr = dx + row * C;
    float mu = mean[row], r = rstd[row];

    float so = 0.0f;
    for (int j = lane; j < C; j += 32) so += xr[j] - mu;
    float o = warp_sum(so) / C;  // mean_k(x_k - mu): the rounding of the float32 mean, removed below

    float sum_g = 0.0f, sum_gx = 0.0f;
    for (int j = lane; j < C; j += 32) {
        float g = dyr[j] * weight[j];
        sum_g += g;
        sum_gx += g * ((xr[j] - mu) - o) * r;
    }
    float mean_g = warp_sum(sum_g) / C;
    float mean_gx = warp_sum(sum_gx) / C;
    for (int j = lane; j < C; j += 32) {
        float xhat = ((xr[j] - mu) - o) * r;
        dxr[j] = r * (dyr[j] * weight[j] - mean_g - xhat * mean_gx);
    }
    if (lane == 0) off[row] = o;
}

// Grid (ceil(C / COLS_PER_BLOCK), ceil(N / ROWS_PER_CHUNK)). partial: (n_chunks, 2, C), [.., 0, c] = dw
// and [.., 1, c] = db of the chunk's rows. Threads of a warp read 32 consecutive columns of one row.
extern "C" __global__ void layernorm_bwd_params_partial(const float* __restrict__ dy, const float* __restrict__ x,
                                                        const float* __restrict__ mean,
                                                        const float* __restrict__ off,
                                                        const float* __restrict__ rstd,
                                                        float* __restrict__ partial, int N, int C) {
    int c = blockIdx.x * COLS_PER_BLOCK + threadIdx.x;
    if (c >= C) return;
    long long r0 = (long long)blockIdx.y * ROWS_PER_CHUNK;
    long long r1 = min(r0 + ROWS_PER_CHUNK, (long long)N);
    float dw = 0.0f, db = 0.0f;
    for (long long row = r0; row < r1; ++row) {
        float d = dy[row * C + c];
        dw += d * ((x[row * C + c] - mean[row]) - off[row]) * rstd[row];
        db += d;
    }
    float* out = partial + (long long)blockIdx.y * 2 * C;
    out[c] = dw;
    out[C + c] = db;
}

// Grid ceil(C / COLS_PER_BLOCK): dweight[c] = sum over chunks of partial[k, 0, c], in chunk order.
extern "C" __global__ void layernorm_bwd_params_reduce(const float* __restrict__ partial,
                                                       float* __restrict__ dweight, float* __restrict__ dbias,
                                                       int n_chunks, int C) {
    int c = blockIdx.x * COLS_PER_BLOCK + threadIdx.x;
    if (c >= C) return;
    float dw = 0.0f, db = 0.0f;
    for (int k = 0; k < n_chunks; ++k) {
        dw += partial[(long long)k * 2 * C + c];
        db += partial[(long long)k * 2 * C + C + c];
    }
    dweight[c] = dw;
    dbias[c] = db;
}

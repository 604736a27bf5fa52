// softmax.cu -- CUDA C twin of kernels/softmax/cpu.py (backend "cupy", launched by gpu.py).
//
//   y_j = exp(x_j - m) / sum_k exp(x_k - m),   m = max_k x_k        (over the last axis, one row at a time)
//   dx_j = y_j * (dy_j - sum_k y_k dy_k)                              (the softmax Jacobian-vector product)
//
// Work mapping: one warp per row, WARPS_PER_BLOCK rows per block. Lane l reads columns l, l+32, l+64, ...
// so that a warp's 32 loads of one step are 32 consecutive floats: one 128-byte transaction.
//
// The forward keeps an *online* (max, sum) pair per lane: when a new value beats the running max, the
// running sum is rescaled by exp(old_max - new_max). (The Numba kernel the CPU engine uses makes separate
// max and sum passes instead; its unused v3 is the online one, see NOTES.md.) Lanes then merge
// their pairs with __shfl_xor_sync (a butterfly: after 5 steps every lane holds the row's result). So the
// row is read twice (once for (m, s), once to write y), never three times as in max -> sum -> write.
//
// Masked entries (mask == 0) count as -inf: they get probability 0. A row with every entry masked has
// m = -inf and s = 0 and is written as zeros, never NaN (the kernel contract, docs/design.md).
//
// What this is not: a kernel for very long rows (V ~ 30k); one warp per row is right for attention rows
// (T <= 512) and hidden sizes. Cross-entropy has its own block-per-row kernel for the vocabulary.

#define WARPS_PER_BLOCK 4
#define FULL_MASK 0xffffffffu
// NVRTC, which CuPy compiles with, has no <math.h> and so no INFINITY / NAN: spell out the IEEE-754 bits.
#define NEG_INF (-__int_as_float(0x7f800000))

// Merge two online-softmax states (m1, s1) and (m2, s2) into (m, s) with s relative to m = max(m1, m2).
// exp(-inf - finite) = 0 handles empty states, but -inf - (-inf) is NaN, hence the explicit check.
__device__ __forceinline__ void merge_state(float& m, float& s, float m2, float s2) {
    float m_new = fmaxf(m, m2);
    if (m_new == NEG_INF) { s = 0.0f; m = m_new; return; }  // both empty (every entry masked so far)
    s = s * expf(m - m_new) + s2 * expf(m2 - m_new);
    m = m_new;
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(FULL_MASK, v, offset);
    return v;
}

// x, y: (N, C) row-major float32. mask: (N, C) bytes (1 = keep) or nullptr for no mask.
extern "C" __global__ void softmax_fwd(const float* __restrict__ x, const unsigned char* __restrict__ mask,
                                       float* __restrict__ y, int N, int C) {
    int lane = threadIdx.x % 32;
    long long row = (long long)blockIdx.x * WARPS_PER_BLOCK + threadIdx.x / 32;
    if (row >= N) return;  // whole warp leaves together, so the shuffles below stay full-warp
    const float* xr = x + row * C;
    const unsigned char* mr = mask ? mask + row * C : nullptr;
    float* yr = y + row * C;

    // pass 1: per-lane online (max, sum), then the butterfly merge across the warp
    float m = NEG_INF, s = 0.0f;
    for (int j = lane; j < C; j += 32) {
        if (mr && !mr[j]) continue;
        float v = xr[j];
        if (v == NEG_INF) continue;  // exp(-inf) = 0 adds nothing, and -inf - (-inf) would be NaN
        if (v > m) { s = s * expf(m - v) + 1.0f; m = v; }  // first value: s = 0 * 0 + 1
        else       { s += expf(v - m); }
    }
    for (int offset = 16; offset > 0; offset >>= 1) {
        float m2 = __shfl_xor_sync(FULL_MASK, m, offset);
        float s2 = __shfl_xor_sync(FULL_MASK, s, offset);
        merge_state(m, s, m2, s2);
    }

    // pass 2: write probabilities; a fully masked row (s == 0) becomes zeros
    float inv = s > 0.0f ? 1.0f / s : 0.0f;
    for (int j = lane; j < C; j += 32) {
        bool keep = (!mr || mr[j]) && s > 0.0f;
        yr[j] = keep ? expf(xr[j] - m) * inv : 0.0f;
    }
}

// y, dy, dx: (N, C). dx_j = y_j * (dy_j - <y, dy>): one warp-sum per row, then one write pass.
extern "C" __global__ void softmax_bwd(const float* __restrict__ y, const float* __restrict__ dy,
                                       float* __restrict__ dx, int N, int C) {
    int lane = threadIdx.x % 32;
    long long row = (long long)blockIdx.x * WARPS_PER_BLOCK + threadIdx.x / 32;
    if (row >= N) return;
    const float* yr = y + row * C;
    const float* dyr = dy + row * C;
    float* dxr = dx + row * C;

    float dot = 0.0f;
    for (int j = lane; j < C; j += 32) dot += yr[j] * dyr[j];
    dot = warp_sum(dot);
    for (int j = lane; j < C; j += 32) dxr[j] = yr[j] * (dyr[j] - dot);
}

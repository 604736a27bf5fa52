// gelu.cu -- CUDA C twin of kernels/gelu/cpu.py (backend "cupy", launched by gpu.py).
//
// The exact (erf) GELU that BERT uses, elementwise:
//     y  = x * Phi(x) = 0.5 * x * (1 + erf(x / sqrt(2)))
//     dy/dx = Phi(x) + x * phi(x) = 0.5 * (1 + erf(x / sqrt(2))) + x * exp(-x^2 / 2) / sqrt(2 pi)
// so gelu_bwd writes dx = dy * (Phi(x) + x * phi(x)).
//
// Work mapping: a grid-stride loop, one element per thread per step; consecutive threads touch
// consecutive floats, so each warp's access is one 128-byte transaction. Purely memory-bound: 8 bytes
// per element forward, 12 backward (see NOTES.md). erff costs ~20 FP32 instructions, far below the
// ~60 FLOP/byte an H100 can spend before compute, not bandwidth, limits.
//
// What this is not: the tanh approximation of GELU (GPT-2's); erff is the exact form.

#define INV_SQRT2 0.70710678118654752f
#define INV_SQRT_2PI 0.39894228040143268f

extern "C" __global__ void gelu_fwd(const float* __restrict__ x, float* __restrict__ y, long long n) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        float v = x[i];
        y[i] = 0.5f * v * (1.0f + erff(v * INV_SQRT2));
    }
}

extern "C" __global__ void gelu_bwd(const float* __restrict__ x, const float* __restrict__ dy,
                                    float* __restrict__ dx, long long n) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        float v = x[i];
        float cdf = 0.5f * (1.0f + erff(v * INV_SQRT2));     // Phi(x)
        float pdf = INV_SQRT_2PI * expf(-0.5f * v * v);      // phi(x)
        dx[i] = dy[i] * (cdf + v * pdf);
    }
}

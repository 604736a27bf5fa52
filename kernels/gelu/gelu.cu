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
// The tanh approximation that GPT-2 uses is here too, as gelu_tanh_fwd / gelu_tanh_bwd, computed as on the
// CPU with tanh written as a sigmoid (exact identity (1 + tanh u)/2 = 1/(1 + exp(-2u))):
//     u = sqrt(2/pi) (x + 0.044715 x^3),   s = 1/(1 + exp(-2u))
//     y = x s,    dy/dx = s + 2 x s (1 - s) u',   u' = sqrt(2/pi) (1 + 3 * 0.044715 x^2)

#define INV_SQRT2 0.70710678118654752f
#define INV_SQRT_2PI 0.39894228040143268f
#define SQRT_2_OVER_PI 0.79788456080286536f
#define GELU_TANH_A 0.044715f
// Beyond |u| = 44, s is exactly 0 or 1 in float32 and the slope term is below the smallest normal float;
// x u' may have overflowed to inf there (|x| > ~1e13), and inf * 0 is NaN, so the slope takes its limit 0.
#define GELU_TANH_U_FLAT 44.0f

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

extern "C" __global__ void gelu_tanh_fwd(const float* __restrict__ x, float* __restrict__ y, long long n) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        float v = x[i];
        float u = SQRT_2_OVER_PI * (v + GELU_TANH_A * v * v * v);
        y[i] = v / (1.0f + expf(-2.0f * u));                 // x sigmoid(2u) = x (1 + tanh u) / 2
    }
}

extern "C" __global__ void gelu_tanh_bwd(const float* __restrict__ x, const float* __restrict__ dy,
                                         float* __restrict__ dx, long long n) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        float v = x[i];
        float u = SQRT_2_OVER_PI * (v + GELU_TANH_A * v * v * v);
        float e = expf(-2.0f * u);
        float s = 1.0f / (1.0f + e);                                         // sigmoid(2u)
        float du = SQRT_2_OVER_PI * (1.0f + 3.0f * GELU_TANH_A * v * v);     // u'
        // 1 - s as e s: where s rounds to 1, 1 - s would be 0 and lose the slope (see cpu.py)
        float slope = fabsf(u) < GELU_TANH_U_FLAT ? 2.0f * v * du * s * (e * s) : 0.0f;
        dx[i] = dy[i] * (s + slope);
    }
}

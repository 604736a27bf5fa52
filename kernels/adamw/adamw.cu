// adamw.cu -- CUDA C twin of kernels/adamw/cpu.py (backend "cupy", launched by gpu.py).
//
// One AdamW step, elementwise, in exactly the order of reference.py and torch.optim.AdamW:
//     p <- p * (1 - lr * wd)                                   decoupled weight decay
//     m <- m + (1 - beta1) * (g - m)                           first moment (torch's lerp form)
//     v <- beta2 * v + (1 - beta2) * g^2                       second moment
//     p <- p - (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps)    bc1 = 1 - beta1^step, bc2 = 1 - beta2^step
// The scalars (decay = 1 - lr wd, 1 - beta1, 1 - beta2, step_size = lr / bc1, sqrt_bc2) are computed once
// on the host in float64 and rounded to float32 once, as NumPy does in the reference, so the kernel does 4 loads, 3 stores and a
// dozen FLOPs per element: one pass over the 16 bytes of (p, g, m, v), purely bandwidth-bound.
//
// Work mapping: grid-stride loop, consecutive threads on consecutive elements (coalesced).
//
// What this is not: a multi-tensor kernel that updates all parameters in one launch (torch's foreach /
// fused AdamW); minillm launches it once per parameter, which costs a few microseconds of launch each.

extern "C" __global__ void adamw_step(float* __restrict__ p, const float* __restrict__ g,
                                      float* __restrict__ m, float* __restrict__ v, long long n,
                                      float decay, float one_minus_beta1, float beta2, float one_minus_beta2,
                                      float step_size, float sqrt_bc2, float eps) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        float gi = g[i];
        float mi = m[i] + one_minus_beta1 * (gi - m[i]);
        float vi = v[i] * beta2 + one_minus_beta2 * gi * gi;
        float pi = p[i] * decay;
        p[i] = pi - step_size * mi / (sqrtf(vi) / sqrt_bc2 + eps);
        m[i] = mi;
        v[i] = vi;
    }
}

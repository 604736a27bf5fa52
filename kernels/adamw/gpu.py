"""AdamW on the GPU: the CuPy launcher of adamw.cu (backend "cupy" of the kernel contract).

    adamw_step(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step) -> None

Updates param, m and v in place, exactly as kernels/adamw/reference.py (torch.optim.AdamW's order):
p *= 1 - lr*wd; m, v moment updates; p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps) with the bias
corrections bc1 = 1 - beta1**step, bc2 = 1 - beta2**step (step is 1-based). The step-dependent scalars
are computed here in float64, so the kernel is one pass over memory. No host round trip: nothing is read
back from the GPU.

Importing this module needs neither CuPy nor a GPU; the first call compiles adamw.cu with NVRTC.
"""
from __future__ import annotations

import math

from kernels._cuda import cdiv, check_array, cu_path, f32, get_kernel, i64

_CU = cu_path(__file__, "adamw")
THREADS = 256
MAX_BLOCKS = 65536  # the grid-stride loop covers the rest


def adamw_step(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step):
    """One in-place AdamW update of `param` and its moment buffers `m`, `v` (float32 CuPy arrays)."""
    check_array("adamw_step", "param", param)
    for name, a in (("grad", grad), ("m", m), ("v", v)):
        check_array("adamw_step", name, a, shape=param.shape)
    if int(step) < 1:
        raise ValueError(f"adamw_step: step is 1-based (the first update is step=1), got {step}")
    bc1 = 1.0 - beta1 ** int(step)
    sqrt_bc2 = math.sqrt(1.0 - beta2 ** int(step))
    n = param.size
    if n == 0:
        return None
    get_kernel(_CU, "adamw_step")(
        (min(cdiv(n, THREADS), MAX_BLOCKS),), (THREADS,),
        (param, grad, m, v, i64(n), f32(1.0 - lr * weight_decay), f32(1.0 - beta1), f32(beta2), f32(1.0 - beta2),
         f32(lr / bc1), f32(sqrt_bc2), f32(eps)),
    )
    return None

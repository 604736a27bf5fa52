"""GELU on the GPU: the CuPy launcher of gelu.cu (backend "cupy" of the kernel contract).

    gelu_fwd(x) -> y        y = 0.5 x (1 + erf(x / sqrt(2)))        (exact form, as BERT)
    gelu_bwd(x, dy) -> dx   dx = dy (Phi(x) + x phi(x))
    gelu_tanh_fwd(x) -> y   y = x/2 (1 + tanh u) = x s, u = sqrt(2/pi)(x + 0.044715 x^3), s = sigmoid(2u)  (GPT-2)
    gelu_tanh_bwd(x, dy)    dx = dy (s + 2 x s (1 - s) u'),  u' = sqrt(2/pi)(1 + 3 * 0.044715 x^2)

Any shape; elementwise. Importing this module needs neither CuPy nor a GPU.
"""
from __future__ import annotations

from kernels._cuda import as_f32, cdiv, cu_path, get_kernel, i64, require_cupy

_CU = cu_path(__file__, "gelu")
THREADS = 256
MAX_BLOCKS = 65536  # the grid-stride loop covers the rest; enough blocks to fill any current GPU


def _grid(n):
    return (min(cdiv(n, THREADS), MAX_BLOCKS),)


def _forward(kernel, x):
    """y = f(x) elementwise by the named kernel of gelu.cu (x float32 CuPy, any shape)."""
    cp = require_cupy()
    x = as_f32(kernel, "x", x)
    y = cp.empty_like(x)
    if x.size:
        get_kernel(_CU, kernel)(_grid(x.size), (THREADS,), (x, y, i64(x.size)))
    return y


def _backward(kernel, x, dy):
    """dx = dy * f'(x) elementwise by the named kernel of gelu.cu."""
    cp = require_cupy()
    x = as_f32(kernel, "x", x)
    dy = as_f32(kernel, "dy", dy, shape=x.shape)
    dx = cp.empty_like(x)
    if x.size:
        get_kernel(_CU, kernel)(_grid(x.size), (THREADS,), (x, dy, dx, i64(x.size)))
    return dx


def gelu_fwd(x):
    """Exact GELU of a float32 CuPy array, elementwise."""
    return _forward("gelu_fwd", x)


def gelu_bwd(x, dy):
    """Gradient of exact GELU: dx = dy * (Phi(x) + x * phi(x))."""
    return _backward("gelu_bwd", x, dy)


def gelu_tanh_fwd(x):
    """tanh-approximate GELU (GPT-2's) of a float32 CuPy array, elementwise."""
    return _forward("gelu_tanh_fwd", x)


def gelu_tanh_bwd(x, dy):
    """Gradient of the tanh-approximate GELU: dx = dy * (s + 2 x s (1 - s) u')."""
    return _backward("gelu_tanh_bwd", x, dy)

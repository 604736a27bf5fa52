"""Central finite differences in float64, the yardstick for every backward pass.

For f: R^n -> R (we always reduce an op's output to a scalar with a fixed random projection, so every
output entry contributes), the numerical gradient is (f(x + h e_i) - f(x - h e_i)) / 2h. Its truncation
error is O(h^2 f''') and its rounding error O(eps f / h); with h = 1e-6 in float64 (eps = 2.2e-16) both
are ~1e-10 relative for smooth functions of O(1) inputs, so a tolerance of 1e-6 leaves a wide margin
while still catching any wrong derivative (those are off by O(1)).
"""
import numpy as np

import minillm as mm

H = 1e-6
RTOL = 1e-6
ATOL = 1e-7


def central_differences(f, x, h=H):
    """d f() / d x by central differences, for a scalar function f of no arguments that reads the array x
    (each entry is nudged in place and restored)."""
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        old = x[idx]
        x[idx] = old + h
        plus = f()
        x[idx] = old - h
        minus = f()
        x[idx] = old
        grad[idx] = (plus - minus) / (2 * h)
    return grad


def numerical_grad(f, arrays, i, h=H):
    """d f(arrays) / d arrays[i] by central differences; f takes the list of arrays, returns a float."""
    return central_differences(lambda: f(arrays), arrays[i], h)


def check_gradients(op, *arrays, wrt=None, seed=0, rtol=RTOL, atol=ATOL):
    """Compare autograd and finite-difference gradients of sum(op(*tensors) * R) for a random R.

    Args:
        op: function of Tensors returning a Tensor.
        arrays: float64 inputs (modified in place during the check, restored after).
        wrt: indices of the inputs to check (default: all).
    """
    arrays = [np.array(a, dtype=np.float64) for a in arrays]
    wrt = range(len(arrays)) if wrt is None else wrt
    out_shape = op(*[mm.Tensor(a) for a in arrays]).shape
    projection = np.random.default_rng(seed).standard_normal(out_shape)

    def f(arrs):
        with mm.no_grad():
            return float((op(*[mm.Tensor(a) for a in arrs]).data * projection).sum())

    tensors = [mm.Tensor(a.copy(), requires_grad=(i in wrt)) for i, a in enumerate(arrays)]
    out = op(*tensors)
    out.backward(projection)
    for i in wrt:
        want = numerical_grad(f, arrays, i)
        got = tensors[i].grad
        assert got is not None, f"input {i} got no gradient"
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=f"gradient of input {i}")

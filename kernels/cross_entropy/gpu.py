"""Cross-entropy on the GPU: the CuPy launcher of cross_entropy.cu (backend "cupy" of the kernel contract).

    cross_entropy_fwd(logits, targets, ignore_index=-100) -> (loss, lse)
    cross_entropy_bwd(logits, targets, lse, dloss, ignore_index=-100) -> dlogits
    cross_entropy_fwd_device(logits, targets, ignore_index=-100) -> (loss, lse)   (no host round trip)

Same math as kernels/cross_entropy/reference.py: logits (N, V), targets (N,) integers, loss the mean of
lse_i - z_{i, t_i} over rows whose target is not ignore_index (0.0 if there are none).

The contract's `loss` is a Python float, so `cross_entropy_fwd` copies one number back to the host and
waits for the GPU; since it waits anyway, it also checks the targets and raises like the reference. A
training loop that wants no host round trip per step calls `cross_entropy_fwd_device`, whose loss is a
0-d float32 CuPy array and which leaves targets unchecked: a target outside [0, V) then turns the loss
and that row's gradient into NaN (see cross_entropy.cu). `cross_entropy_bwd` never waits: `dloss` may be
a float or a 0-d CuPy array, and the count of valid rows is taken on the device.

Importing this module needs neither CuPy nor a GPU; the first call compiles cross_entropy.cu with NVRTC.
"""
from __future__ import annotations

from kernels._cuda import as_f32, cu_path, get_kernel, i32, i64, require_cupy

_CU = cu_path(__file__, "cross_entropy")
THREADS = 256  # must match #define THREADS in cross_entropy.cu: one block of 256 per row


def _check(op, logits, targets):
    """Validate (logits (N, V), targets (N,) int); return float32 logits, int64 targets, N, V."""
    cp = require_cupy()
    logits = as_f32(op, "logits", logits, ndim=2)
    N, V = logits.shape
    if not isinstance(targets, cp.ndarray):
        raise TypeError(f"{op}: targets must be a CuPy array of class ids, got {type(targets).__name__}")
    if targets.shape != (N,):
        raise ValueError(f"{op}: want logits (N, V) and targets (N,); got logits {logits.shape}, targets {targets.shape}")
    if targets.dtype.kind not in "iu":
        raise ValueError(f"{op}: targets must be integers (class ids), got dtype {targets.dtype}")
    if V == 0:
        raise ValueError(f"{op}: logits have V = 0 classes; there is nothing to take a softmax over")
    # int64 is what the kernel reads; a no-op for the usual int64 targets
    return logits, cp.ascontiguousarray(targets, dtype=cp.int64), N, V


def cross_entropy_fwd_device(logits, targets, ignore_index=-100):
    """Mean cross-entropy, all on the GPU: (loss as a 0-d float32 CuPy array, lse (N,))."""
    cp = require_cupy()
    logits, targets, N, V = _check("cross_entropy_fwd", logits, targets)
    lse = cp.empty((N,), dtype=cp.float32)       # (N,)
    row_loss = cp.empty((N,), dtype=cp.float32)  # (N,), 0 on ignored rows
    loss = cp.zeros((), dtype=cp.float32)        # ()
    if N == 0:
        return loss, lse
    get_kernel(_CU, "cross_entropy_fwd_rows")((N,), (THREADS,), (logits, targets, lse, row_loss, i32(V), i64(ignore_index)))
    get_kernel(_CU, "cross_entropy_fwd_mean")((1,), (THREADS,), (row_loss, targets, loss, i64(N), i64(ignore_index)))
    return loss, lse


def cross_entropy_fwd(logits, targets, ignore_index=-100):
    """Mean cross-entropy; returns (loss as a Python float, lse (N,) CuPy array). Waits for the GPU."""
    cp = require_cupy()
    _, t, N, V = _check("cross_entropy_fwd", logits, targets)
    bad = (t != ignore_index) & ((t < 0) | (t >= V))  # (N,)
    if N and bool(bad.any()):  # the host round trip the contract's float needs anyway
        i = int(cp.argmax(bad))
        raise ValueError(
            f"cross_entropy_fwd: targets[{i}] = {int(t[i])} is not a class id in [0, {V}) nor ignore_index={ignore_index}"
        )
    loss, lse = cross_entropy_fwd_device(logits, targets, ignore_index)
    return float(loss), lse


def cross_entropy_bwd(logits, targets, lse, dloss, ignore_index=-100):
    """dlogits (N, V) = dloss * (softmax(logits) - onehot(targets)) / n_valid, zero on ignored rows."""
    cp = require_cupy()
    logits, targets, N, V = _check("cross_entropy_bwd", logits, targets)
    lse = as_f32("cross_entropy_bwd", "lse", lse, shape=(N,))
    dlogits = cp.empty_like(logits)
    if N == 0:
        return dlogits
    # dloss and n_valid stay on the device (pointers to one value each): no host round trip
    dloss = cp.asarray(dloss, dtype=cp.float32).reshape(1)
    n_valid = cp.count_nonzero(targets != ignore_index).astype(cp.int64).reshape(1)
    get_kernel(_CU, "cross_entropy_bwd")(
        (N,), (THREADS,), (logits, targets, lse, dloss, n_valid, dlogits, i32(V), i64(ignore_index)),
    )
    return dlogits

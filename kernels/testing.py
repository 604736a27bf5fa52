"""One comparison helper for tests and benchmarks: `assert_close(got, want, atol, rtol)`.

A failure message names the worst index, both values there, the largest absolute and relative error and
how many entries are out of tolerance, so a learner sees at once *where* a kernel went wrong.
"""
from __future__ import annotations

import numpy as np

# Default tolerances per dtype. float32 carries ~7 decimal digits (eps = 1.2e-7); a kernel that sums a
# few hundred terms in a different order than the reference legitimately differs by ~1e-6 relative.
TOLERANCES = {
    np.dtype(np.float32): dict(atol=1e-5, rtol=1e-4),
    np.dtype(np.float64): dict(atol=1e-10, rtol=1e-8),
}


def to_numpy(a):
    """Bring an array (NumPy, CuPy, scalar) to the host as a NumPy array."""
    if hasattr(a, "get"):  # a CuPy array
        a = a.get()
    return np.asarray(a)


def assert_close(got, want, atol=None, rtol=None, mask=None, name="result"):
    """Assert |got - want| <= atol + rtol * |want| elementwise, with a useful message.

    Args:
        got, want: arrays of the same shape (NumPy or CuPy).
        atol, rtol: tolerances; default from TOLERANCES by want's dtype.
        mask: optional bool array broadcastable to the shape; False entries are skipped.
        name: what is compared, for the message.
    """
    got, want = to_numpy(got), to_numpy(want)
    if got.shape != want.shape:
        raise AssertionError(f"{name}: shape {got.shape} != expected {want.shape}")
    defaults = TOLERANCES.get(np.dtype(want.dtype), TOLERANCES[np.dtype(np.float32)])
    atol = defaults["atol"] if atol is None else atol
    rtol = defaults["rtol"] if rtol is None else rtol
    g = got.astype(np.float64)
    w = want.astype(np.float64)
    same_inf = (g == w)  # equal infinities (e.g. lse = -inf on fully masked rows) count as equal
    both_nan = np.isnan(g) & np.isnan(w)
    with np.errstate(invalid="ignore"):
        err = np.abs(g - w)
        bad = ~(same_inf | both_nan | (err <= atol + rtol * np.abs(w)))
    if mask is not None:
        bad &= np.broadcast_to(np.asarray(to_numpy(mask), bool), bad.shape)
    if bad.any():
        err = np.where(bad, np.nan_to_num(err, nan=np.inf), 0.0)
        idx = np.unravel_index(np.argmax(err), err.shape)
        rel = err[idx] / max(abs(w[idx]), 1e-300)
        raise AssertionError(
            f"{name}: {int(bad.sum())} of {bad.size} entries differ beyond atol={atol:g}, rtol={rtol:g}; "
            f"worst at index {tuple(int(i) for i in idx)}: got {g[idx]!r}, want {w[idx]!r} "
            f"(abs err {err[idx]:.3g}, rel err {rel:.3g})"
        )

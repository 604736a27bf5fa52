"""One comparison helper for tests and benchmarks: `assert_close(got, want, atol, rtol)`.

A failure message names the worst index, both values there, the largest absolute and relative error and
how many entries are out of tolerance, so a learner sees at once *where* a kernel went wrong.

Non-finite values: an infinity matches only the same infinity (a finite value never "approximates" one,
though |inf - x| <= rtol * inf would say so), and NaN matches nothing, not even NaN, unless the caller
passes `equal_nan=True` for a result where NaN is the expected answer. A kernel that starts producing
NaN must fail a test, not pass it because the reference produced NaN too.
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


def assert_close(got, want, atol=None, rtol=None, mask=None, name="result", equal_nan=False):
    """Assert |got - want| <= atol + rtol * |want| elementwise, with a useful message.

    Args:
        got, want: arrays of the same shape (NumPy or CuPy).
        atol, rtol: tolerances; default from TOLERANCES by want's dtype.
        mask: optional bool array broadcastable to the shape; False entries are skipped.
        name: what is compared, for the message.
        equal_nan: count NaN in both at the same index as a match (default: any NaN is a mismatch).
            Infinities always match only an equal infinity.
    """
    got, want = to_numpy(got), to_numpy(want)
    if got.shape != want.shape:
        raise AssertionError(f"{name}: shape {got.shape} != expected {want.shape}")
    defaults = TOLERANCES.get(np.dtype(want.dtype), TOLERANCES[np.dtype(np.float32)])
    atol = defaults["atol"] if atol is None else atol
    rtol = defaults["rtol"] if rtol is None else rtol
    g = got.astype(np.float64)
    w = want.astype(np.float64)
    with np.errstate(invalid="ignore"):
        err = np.abs(g - w)
        finite = np.isfinite(g) & np.isfinite(w)
        # finite pairs: within tolerance; otherwise only equal infinities (e.g. lse = -inf on fully masked
        # rows) match, as g == w is False for NaN and for an infinity against anything else
        ok = np.where(finite, err <= atol + rtol * np.abs(w), g == w)
        if equal_nan:
            ok |= np.isnan(g) & np.isnan(w)
        bad = ~ok
    if mask is not None:
        bad &= np.broadcast_to(np.asarray(to_numpy(mask), bool), bad.shape)
    if bad.any():
        err = np.where(bad, np.nan_to_num(err, nan=np.inf), 0.0)
        idx = np.unravel_index(np.argmax(err), err.shape)
        rel = err[idx] / max(abs(w[idx]), 1e-300)
        n_nan = int((bad & (np.isnan(g) | np.isnan(w))).sum())
        nan_note = f"; {n_nan} of them NaN (pass equal_nan=True if NaN is expected)" if n_nan else ""
        raise AssertionError(
            f"{name}: {int(bad.sum())} of {bad.size} entries differ beyond atol={atol:g}, rtol={rtol:g}; "
            f"worst at index {tuple(int(i) for i in idx)}: got {g[idx]!r}, want {w[idx]!r} "
            f"(abs err {err[idx]:.3g}, rel err {rel:.3g}){nan_note}"
        )

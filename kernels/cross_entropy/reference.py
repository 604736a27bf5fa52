"""Softmax cross-entropy over a vocabulary, in plain NumPy: the ground truth for every faster backend.

For N rows of logits over V classes and integer targets t_i (rows with t_i == ignore_index are skipped,
as the MLM loss skips unmasked positions):

    lse_i  = log sum_j exp(z_ij)                      (log-sum-exp, computed max-subtracted)
    loss_i = lse_i - z_{i, t_i}                       (= -log softmax(z_i)[t_i])
    loss   = (1 / n_valid) sum_{i valid} loss_i       (mean over the rows that are not ignored)

If every target is ignored (n_valid = 0), the mean is over nothing: we return loss = 0.0 and a zero
gradient, rather than torch's NaN (0/0), because a batch that happens to contain no masked token should not
poison training.

Backward, with p_i = softmax(z_i) = exp(z_i - lse_i):

    dloss/dz_ij = (p_ij - [j == t_i]) / n_valid      for valid rows, 0 for ignored rows

which is why the forward saves only lse (N floats), not the (N, V) probabilities: the backward recomputes
p from z and lse in the same pass that writes the gradient.

Works in float32 and float64 (dtype of the logits kept for lse and dlogits; the loss is a Python float).
"""
from __future__ import annotations

import numpy as np

from kernels._inputs import as_float


def _check(op, logits, targets, ignore_index):
    if logits.ndim != 2 or targets.shape != logits.shape[:1]:
        raise ValueError(
            f"{op}: want logits (N, V) and targets (N,); got logits {logits.shape}, targets {targets.shape}"
        )
    if not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(f"{op}: targets must be integers (class ids), got dtype {targets.dtype}")
    V = logits.shape[1]
    bad = (targets != ignore_index) & ((targets < 0) | (targets >= V))
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            f"{op}: targets[{i}] = {int(targets[i])} is not a class id in [0, {V}) nor ignore_index={ignore_index}"
        )


def cross_entropy_fwd(logits, targets, ignore_index=-100):
    """Mean cross-entropy of softmax(logits) against targets.

    Args:
        logits: (N, V) floats; targets: (N,) ints, ignore_index marks rows that do not count.
    Returns:
        (loss, lse): loss a Python float (0.0 if every row is ignored); lse (N,) for every row.
    """
    logits, targets = as_float(logits), np.asarray(targets)
    _check("cross_entropy_fwd", logits, targets, ignore_index)
    m = logits.max(axis=1)  # (N,)
    lse = m + np.log(np.exp(logits - m[:, None]).sum(axis=1))  # (N,)
    valid = targets != ignore_index  # (N,)
    n_valid = int(valid.sum())
    if n_valid == 0:
        return 0.0, lse
    rows = np.nonzero(valid)[0]
    picked = logits[rows, targets[rows]]  # (n_valid,) z_{i, t_i}
    loss = float((lse[rows] - picked).astype(np.float64).sum() / n_valid)
    return loss, lse


def cross_entropy_bwd(logits, targets, lse, dloss, ignore_index=-100):
    """dlogits = dloss * (softmax(logits) - onehot(targets)) / n_valid, zero on ignored rows. (N, V)."""
    logits, targets, lse = as_float(logits), np.asarray(targets), as_float(lse)
    _check("cross_entropy_bwd", logits, targets, ignore_index)
    if lse.shape != logits.shape[:1]:
        raise ValueError(f"cross_entropy_bwd: lse must be ({logits.shape[0]},), got {lse.shape}")
    valid = targets != ignore_index  # (N,)
    n_valid = int(valid.sum())
    if n_valid == 0:
        return np.zeros_like(logits)
    p = np.exp(logits - lse[:, None])  # (N, V) softmax, recomputed from the saved lse
    rows = np.nonzero(valid)[0]
    p[rows, targets[rows]] -= 1.0
    p *= (float(dloss) / n_valid) * valid[:, None]  # ignored rows -> 0
    return p.astype(logits.dtype)

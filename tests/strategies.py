"""Hypothesis strategies made once and reused by every kernel test.

Shapes include size 1 and odd sizes on purpose (non-multiples of any tile size); values are bounded
floats, with separate strategies for extreme logits (around +-1e4) and rows of equal values.
"""
import numpy as np
from hypothesis import strategies as st

ODD_DIMS = st.sampled_from([1, 2, 3, 5, 7, 13, 17, 31, 33, 64, 65, 127])
SMALL_DIMS = st.sampled_from([1, 2, 3, 5, 7, 8, 13])


@st.composite
def arrays(draw, shape, dtype=np.float32, scale=None, kind=None):
    """A random array of `shape`. kind: None (normal * scale), "extreme" (around +-1e4), "constant"."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    kind = kind or draw(st.sampled_from(["normal", "normal", "normal", "extreme", "constant", "tiny"]))
    if kind == "normal":
        s = scale if scale is not None else draw(st.sampled_from([0.1, 1.0, 10.0]))
        x = rng.standard_normal(shape) * s
    elif kind == "extreme":
        x = rng.uniform(-1e4, 1e4, shape)
    elif kind == "tiny":
        x = rng.standard_normal(shape) * 1e-6
    else:  # every entry of a row equal
        x = np.broadcast_to(rng.standard_normal(shape[:-1] + (1,)) * 3, shape).copy()
    return x.astype(dtype)


@st.composite
def masks(draw, shape, p_masked=None):
    """A bool mask (True = keep), sometimes with fully masked rows."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    p = p_masked if p_masked is not None else draw(st.sampled_from([0.0, 0.3, 0.7, 1.0]))
    return rng.random(shape) >= p


def rng_from(draw):
    return np.random.default_rng(draw(st.integers(0, 2**32 - 1)))

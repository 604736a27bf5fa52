"""Attention kernels: reference.py (NumPy), cpu.py (Numba), gpu.py + attention.cu (CuPy); see NOTES.md.

The contract's attention_fwd / attention_bwd come through `kernels.get(backend)`. One more forward lives
here, outside the contract: `attention_decode_fwd`, one query against a key/value cache (text generation);
`decode_kernel(backend)` returns the backend's version of it.
"""
from __future__ import annotations

import importlib

_MODULE_OF_BACKEND = {"numpy": "reference", "numba": "cpu", "cupy": "gpu"}
_decode: dict = {}


def decode_kernel(backend: str):
    """attention_decode_fwd(q, k, v, key_mask=None, scale=None) -> (out, lse) of backend "numpy", "numba" or
    "cupy" (reference.attention_decode_fwd has the math). Looked up once per backend: it is called once per
    layer and generated token."""
    if backend not in _decode:
        if backend not in _MODULE_OF_BACKEND:
            raise ValueError(f"unknown kernel backend {backend!r}; known backends: {', '.join(_MODULE_OF_BACKEND)}")
        module = importlib.import_module(f"kernels.attention.{_MODULE_OF_BACKEND[backend]}")
        _decode[backend] = module.attention_decode_fwd
    return _decode[backend]

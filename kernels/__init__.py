"""The kernels: every hot operation of a BERT, written three times.

One folder per kernel family (softmax, layernorm, gelu, attention, cross_entropy, adamw). Each holds

    reference.py   the math in NumPy: readable, float64-capable, the ground truth of every test
    cpu.py         numbered Numba versions (v1 naive, v2 fused, ...) and the winner that `get` hands out
    <family>.cu    the CUDA C twin of the CPU algorithm
    gpu.py         the thin CuPy launcher for the .cu file
    NOTES.md       motivation in bytes and FLOPs, the backward derived by hand, measured results

`get(name)` returns a namespace with exactly the functions of the kernel contract (docs/design.md):

    softmax_fwd, softmax_bwd, layernorm_fwd, layernorm_bwd, gelu_fwd, gelu_bwd, gelu_tanh_fwd, gelu_tanh_bwd,
    attention_fwd, attention_bwd, cross_entropy_fwd, cross_entropy_bwd, adamw_step

for the backend `name` in "numpy" (the reference), "numba" (CPU) or "cupy" (GPU).

This package never imports minillm: kernels sit below the engine.
"""
from __future__ import annotations

import importlib
from types import SimpleNamespace

BACKENDS = ("numpy", "numba", "cupy")
FAMILIES = ("softmax", "layernorm", "gelu", "attention", "cross_entropy", "adamw")
CONTRACT = {
    "softmax": ("softmax_fwd", "softmax_bwd"),
    "layernorm": ("layernorm_fwd", "layernorm_bwd"),
    "gelu": ("gelu_fwd", "gelu_bwd", "gelu_tanh_fwd", "gelu_tanh_bwd"),
    "attention": ("attention_fwd", "attention_bwd"),
    "cross_entropy": ("cross_entropy_fwd", "cross_entropy_bwd"),
    "adamw": ("adamw_step",),
}
_MODULE_OF_BACKEND = {"numpy": "reference", "numba": "cpu", "cupy": "gpu"}
_cache: dict[str, SimpleNamespace] = {}


def get(name: str = "numpy") -> SimpleNamespace:
    """Return the kernel namespace of backend `name` ("numpy", "numba" or "cupy")."""
    if name not in BACKENDS:
        raise ValueError(f"unknown kernel backend {name!r}; known backends: {', '.join(BACKENDS)}")
    if name == "cupy":
        from ._cuda import require_cupy

        require_cupy()  # fail here, with the install hint, not inside the first forward pass
    if name not in _cache:
        functions = {"backend": name}
        for family, names in CONTRACT.items():
            module = importlib.import_module(f"kernels.{family}.{_MODULE_OF_BACKEND[name]}")
            for fn in names:
                functions[fn] = getattr(module, fn)
        _cache[name] = SimpleNamespace(**functions)
    return _cache[name]

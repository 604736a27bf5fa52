"""A stand-in "GPU" for testing the device plumbing on a CPU: a `cupy` module whose arrays are NumPy arrays
that know they are "on the device".

tests/test_cuda_compile.py's `fake_cupy` checks what the CUDA launchers pass to their kernels; its arrays are
plain NumPy arrays, so it cannot tell a host array from a device one. This stand-in can. `DeviceArray` is a
NumPy array subclass whose type lives in a module named `cupy...`, so `minillm.backend.is_cupy` takes it for a
CuPy array, `.get()` copies it to the host, and, as with CuPy:

- an elementwise op mixing it with a host (NumPy) array raises TypeError;
- a `cupy.*` function given a host array raises TypeError (except `asarray`, `array`, the host-to-device copy);
- the "cupy" kernels refuse host arrays (the CUDA launchers' `_check_device` does the same), and compute with
  the NumPy reference kernels otherwise.

So a path that moves its model to "cuda" but feeds a kernel a NumPy target, mask or index fails here as it
would on a GPU. What it cannot catch: `np.asarray(device_array)` (CuPy raises, an ndarray subclass converts).

    with device_standin(monkeypatch):
        ...  # mm.Module.to("cuda"), to_device(x, "cuda"), kernels.get("cupy") all work
"""
from __future__ import annotations

import contextlib
import sys
import types

import numpy as np

import kernels


class DeviceArray(np.ndarray):
    """A NumPy array standing in for a CuPy array on the GPU."""

    __module__ = "cupy._standin"  # what is_cupy() looks at

    def get(self):
        """A host copy, as cupy.ndarray.get()."""
        return np.array(self.view(np.ndarray))

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        _refuse_host(inputs, f"{ufunc.__name__}.{method}" if method != "__call__" else ufunc.__name__)
        if out is not None:
            _refuse_host(out, ufunc.__name__)
            kwargs["out"] = tuple(_host_view(o) for o in out)
        result = getattr(ufunc, method)(*(_host_view(i) for i in inputs), **kwargs)
        return _to_device_view(result)


def _is_host_array(a) -> bool:
    return isinstance(a, np.ndarray) and not isinstance(a, DeviceArray)


def _refuse_host(values, what: str) -> None:
    for v in values:
        if isinstance(v, (list, tuple)):
            _refuse_host(v, what)
        elif _is_host_array(v):
            raise TypeError(f"{what}: a host (NumPy) array {v.shape} {v.dtype} mixed with device arrays; "
                            "CuPy refuses this: move it with to_device(x, 'cuda')")


def _host_view(a):
    if isinstance(a, DeviceArray):
        return a.view(np.ndarray)
    if isinstance(a, (list, tuple)):
        return type(a)(_host_view(x) for x in a)
    return a


def _to_device_view(a):
    if isinstance(a, np.ndarray) and not isinstance(a, DeviceArray):
        return a.view(DeviceArray)
    if isinstance(a, np.generic):  # CuPy reductions give 0-d device arrays, not host scalars
        return np.asarray(a).view(DeviceArray)
    if isinstance(a, tuple):
        return tuple(_to_device_view(x) for x in a)
    if isinstance(a, list):
        return [_to_device_view(x) for x in a]
    return a


_HOST_TO_DEVICE = ("asarray", "array", "ascontiguousarray")


def _device_function(name, fn):
    def call(*args, **kwargs):
        if name in _HOST_TO_DEVICE and args and _is_host_array(args[0]):
            args = (np.array(args[0]), *args[1:])  # a host-to-device copy: never a view of host memory
        elif name not in _HOST_TO_DEVICE:
            _refuse_host(args, f"cupy.{name}")
            _refuse_host(kwargs.values(), f"cupy.{name}")
        return _to_device_view(fn(*_host_view(args), **{k: _host_view(v) for k, v in kwargs.items()}))

    call.__name__ = name
    return call


def _make_cupy():
    cp = types.ModuleType("cupy")
    cp.ndarray = DeviceArray
    rng = np.random.default_rng(0)
    cp.random = types.SimpleNamespace(
        random=lambda shape, dtype=np.float64: rng.random(shape, dtype=dtype).view(DeviceArray))

    def __getattr__(name):
        obj = getattr(np, name)
        if isinstance(obj, type) or not callable(obj):  # dtypes (cupy.float32), constants
            return obj
        return _device_function(name, obj)

    cp.__getattr__ = __getattr__
    cupyx = types.ModuleType("cupyx")

    def scatter_add(target, index, values):
        _refuse_host([target, values], "cupyx.scatter_add")
        np.add.at(_host_view(target), _host_view(index), _host_view(values))

    cupyx.scatter_add = scatter_add
    return cp, cupyx


def _device_kernel(name, fn):
    def launch(*args, **kwargs):
        for i, a in enumerate([*args, *kwargs.values()]):
            if _is_host_array(a):  # as kernels/_cuda.py's _check_device
                raise TypeError(f"{name}: argument {i} must be a CuPy array for the 'cupy' backend, got a NumPy "
                                f"array {a.shape} {a.dtype}")
        return _to_device_view(fn(*_host_view(args), **{k: _host_view(v) for k, v in kwargs.items()}))

    launch.__name__ = name
    return launch


def _device_kernels():
    reference = kernels.get("numpy")
    fns = {name: _device_kernel(name, getattr(reference, name))
           for names in kernels.CONTRACT.values() for name in names}
    return types.SimpleNamespace(backend="cupy", **fns)


@contextlib.contextmanager
def device_standin(monkeypatch):
    """Install the stand-in `cupy`, `cupyx` and "cupy" kernels; restore the kernel backend afterwards."""
    import minillm as mm

    cp, cupyx = _make_cupy()
    monkeypatch.setitem(sys.modules, "cupy", cp)
    monkeypatch.setitem(sys.modules, "cupyx", cupyx)
    monkeypatch.setitem(kernels._cache, "cupy", _device_kernels())
    previous = mm.get_backend()
    try:
        yield cp
    finally:
        mm.set_backend(previous)

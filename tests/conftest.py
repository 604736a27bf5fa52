"""Shared pytest set-up: the hypothesis profile and the backends to parametrize over."""
import os

import pytest
from hypothesis import HealthCheck, settings

# JIT compilation (Numba) outlasts hypothesis' default 200 ms deadline on a first call: no deadline.
settings.register_profile(
    "minillm", deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "ci", deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "minillm"))


def _cupy_skip_reason():
    try:
        import cupy  # noqa: F401
    except Exception as e:  # ImportError, or a CUDA runtime that cannot load
        return f"CuPy is not installed or cannot load ({type(e).__name__}: {e})"
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "CuPy is installed but no GPU is visible"
    except Exception as e:
        return f"CuPy is installed but no GPU is usable ({type(e).__name__})"
    return None


CUPY_SKIP_REASON = _cupy_skip_reason()

BACKEND_PARAMS = [
    "numpy",
    "numba",
    pytest.param("cupy", marks=pytest.mark.skipif(CUPY_SKIP_REASON is not None, reason=str(CUPY_SKIP_REASON))),
]


@pytest.fixture(params=BACKEND_PARAMS)
def backend(request):
    """A kernel backend name; the cupy case skips with a reason when no GPU is usable."""
    return request.param


@pytest.fixture
def reference_backend():
    """The NumPy reference kernels for the duration of a test: they keep float64, which finite differences need."""
    import minillm as mm

    previous = mm.get_backend()
    mm.set_backend("numpy")
    yield
    mm.set_backend(previous)


@pytest.fixture(scope="session")
def torch():
    """PyTorch, the oracle of parity tests: a test that asks for it skips (with the reason) without it, and only
    that test; the tests beside it that do not need torch still run."""
    return pytest.importorskip("torch", reason="torch is a test oracle only (pip install '.[test]')")


@pytest.fixture(scope="session")
def transformers():
    """Hugging Face transformers, the parity oracle for the BERT classes and the tokenizer (as `torch`)."""
    return pytest.importorskip("transformers", reason="transformers is a test oracle only (pip install '.[test]')")


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Tokenized corpora and downloads go to a temporary cache, never the user's ~/.cache/minillm."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MINILLM_CACHE", str(tmp_path_factory.mktemp("minillm-cache")))
    yield
    mp.undo()

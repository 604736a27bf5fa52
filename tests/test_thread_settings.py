"""Thread-pool settings that hold whatever the import order: `import numpy` before `import minillm` must not
leave NumPy's OpenBLAS spinning (backend.settle_thread_pools), and what cannot be fixed is named in a warning.

Each case runs in a fresh interpreter: the point is what happens when a library loads before minillm, which
an already-running pytest process (minillm imported, the variables set) cannot show.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_fresh(code: str, **env_overrides) -> dict:
    """Run `code` in a new interpreter without minillm's thread variables (this process set them when it
    imported minillm, and children inherit them); its last stdout line is JSON, returned parsed."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT")}
    env.update(PYTHONPATH=ROOT + os.pathsep + env.get("PYTHONPATH", ""), **env_overrides)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


NUMPY_FIRST = """
    import json, os, time, warnings
    import numpy as np
    a = np.ones((512, 512), np.float32)
    a @ a                                   # OpenBLAS loaded and its worker threads started, timeout unset
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import minillm
    import ctypes                           # OpenBLAS's own answer, read here without minillm's help
    maps = open("/proc/self/maps").read().splitlines() if os.path.exists("/proc/self/maps") else []
    paths = {l.split()[-1] for l in maps if "openblas" in l.rsplit("/", 1)[-1].lower()}
    libs = [lib for lib in map(ctypes.CDLL, sorted(paths)) if hasattr(lib, "openblas_thread_timeout")]
    for _ in range(5):
        a @ a                               # multi-threaded calls, after which idle workers spin or sleep
    c0 = time.process_time(); time.sleep(0.2); burnt = time.process_time() - c0
    print(json.dumps({"settings": getattr(minillm, "thread_settings", {}),
                      "timeouts": [lib.openblas_thread_timeout() for lib in libs],
                      "burnt_s": burnt, "warnings": [str(w.message) for w in caught]}))
"""


def test_numpy_imported_first_gets_sleeping_openblas_threads():
    got = run_fresh(NUMPY_FIRST)
    if not got["timeouts"]:
        pytest.skip("NumPy here is not built on OpenBLAS (or /proc/self/maps is unreadable): nothing to settle")
    assert got["timeouts"] == [4] * len(got["timeouts"]), got      # what OpenBLAS itself now holds
    assert got["settings"].get("OPENBLAS_THREAD_TIMEOUT") == "fixed now", got
    assert got["warnings"] == [], got                             # fixed, so nothing to warn about
    # Spinning workers burn a core for ~0.1 s after each call (2^28 cycles); sleeping ones ~0.1 ms. 0.03 s
    # is far above the sleeping figure even on a loaded machine, and far below one spin.
    assert got["burnt_s"] < 0.03, got


def test_user_setting_wins_and_is_left_alone():
    got = run_fresh(NUMPY_FIRST, OPENBLAS_THREAD_TIMEOUT="6")
    if not got["timeouts"]:
        pytest.skip("NumPy here is not built on OpenBLAS (or /proc/self/maps is unreadable): nothing to settle")
    assert got["timeouts"] == [6] * len(got["timeouts"]), got
    assert got["settings"].get("OPENBLAS_THREAD_TIMEOUT") == "in effect", got


NUMBA_POOL_FIRST = """
    import json, sys, warnings
    import numba, numpy as np
    numba.config.THREADING_LAYER = "omp"

    @numba.njit(parallel=True)
    def total(x):
        s = 0.0
        for i in numba.prange(x.size):
            s += x[i]
        return s

    try:
        total(np.ones(100))                 # Numba's OpenMP pool starts and reads OMP_WAIT_POLICY now
    except ValueError as e:                 # "No threading layer could be loaded"
        print(json.dumps({"skip": str(e)}))
        sys.exit(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import minillm
    print(json.dumps({"settings": getattr(minillm, "thread_settings", {}),
                      "warnings": [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]}))
"""


def test_numba_pool_started_first_warns_naming_the_variable():
    got = run_fresh(NUMBA_POOL_FIRST)
    if "skip" in got:
        pytest.skip(f"Numba's OpenMP threading layer is not available here: {got['skip']}")
    assert len(got["warnings"]) == 1 and "OMP_WAIT_POLICY" in got["warnings"][0], got
    assert "before Python starts" in got["warnings"][0], got       # says what to do
    assert got["settings"]["OMP_WAIT_POLICY"] == "not in effect", got


def test_numba_pool_started_first_with_the_users_policy_is_quiet():
    got = run_fresh(NUMBA_POOL_FIRST, OMP_WAIT_POLICY="PASSIVE")
    if "skip" in got:
        pytest.skip(f"Numba's OpenMP threading layer is not available here: {got['skip']}")
    assert got["warnings"] == [] and got["settings"].get("OMP_WAIT_POLICY") == "in effect", got


class OldOpenBLAS:
    """A stand-in for an OpenBLAS that read OPENBLAS_THREAD_TIMEOUT unset and cannot re-read it (no
    openblas_read_env / blas_thread_shutdown_ exported)."""

    @staticmethod
    def openblas_thread_timeout():
        return 0


def test_an_openblas_that_cannot_be_fixed_is_named_in_one_warning(monkeypatch):
    from minillm import backend

    monkeypatch.setattr(backend, "loaded_openblas", lambda: [OldOpenBLAS()])
    monkeypatch.setattr(backend, "_warned", set())
    monkeypatch.setenv("OPENBLAS_THREAD_TIMEOUT", "4")
    with pytest.warns(RuntimeWarning, match="OPENBLAS_THREAD_TIMEOUT=4 is not in effect") as record:
        state = backend.settle_thread_pools()
        backend.settle_thread_pools()            # once per process
    assert state["OPENBLAS_THREAD_TIMEOUT"] == "not in effect"
    assert len([w for w in record if "OPENBLAS_THREAD_TIMEOUT" in str(w.message)]) == 1


FRESH_ARRAYS = """
    import json, resource
    import numpy as np
    import minillm
    try:
        np._core.multiarray._set_madvise_hugepage(False)   # count 4 KiB pages, not 2 MiB ones
    except AttributeError:
        pass
    n = 10 * 2**20                                         # 40 MiB of float32: past glibc's largest mmap threshold
    np.ones(n, np.float32).sum()                           # the first one is taken from the system either way
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        np.ones(n, np.float32).sum()                       # allocated, written, freed: what every step does
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    print(json.dumps({"setting": minillm.malloc_setting, "faults": faults, "pages": 5 * n * 4 // 4096}))
"""


def test_freed_arrays_are_reused_without_page_faults():
    """backend.keep_freed_memory: 5 fresh 40 MiB arrays in a row take the same memory again. glibc's defaults
    map and unmap each (an array above 32 MiB always gets its own mapping: 5 x 10,240 page faults); kept, only
    a handful of faults remain."""
    got = run_fresh(FRESH_ARRAYS)
    if got["setting"] == "not glibc":
        pytest.skip("not glibc's malloc (another C library or not Linux): minillm leaves the allocator alone")
    if got["setting"] == "user":
        pytest.skip("this environment sets MALLOC_* or GLIBC_TUNABLES itself, and those win over minillm's")
    assert got["setting"] == "set", got
    assert got["faults"] < got["pages"] // 10, got


def test_malloc_variables_of_your_own_win():
    got = run_fresh(FRESH_ARRAYS, MALLOC_TRIM_THRESHOLD_="131072")
    assert got["setting"] in ("user", "not glibc"), got


def test_keeping_freed_memory_can_be_turned_off():
    """MINILLM_KEEP_FREED_MEMORY=0 leaves glibc's defaults: every fresh 40 MiB array is faulted in again."""
    try:
        glibc = bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (AttributeError, ValueError, OSError):
        glibc = False
    if not glibc:
        pytest.skip("not glibc's malloc (another C library or not Linux): there are no defaults to compare with")
    got = run_fresh(FRESH_ARRAYS, MINILLM_KEEP_FREED_MEMORY="0")
    if got["setting"] == "user":
        pytest.skip("this environment sets MALLOC_* or GLIBC_TUNABLES itself, and those win over minillm's")
    assert got["setting"] == "off", got
    assert got["faults"] >= got["pages"], got

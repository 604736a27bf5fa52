"""The benchmarks measure what they claim, and the docs state only what the results files say.

- README's results table and the measured tables in kernels/*/NOTES.md are exactly what
  benchmarks/render_docs.py renders from the committed results JSON (no benchmarking here: it reads files),
  and a changed figure in a results file makes that check fail;
- outside those generated parts, NOTES.md states no measured speed of its own;
- every results file starts with the command that regenerates it, and its JSON twin carries the same one;
- the method: each engine in its own worker processes, alternating, with its own settings and without the
  OpenBLAS overrides; PyTorch's gradients never accumulate across timed calls; the first-call (compile)
  time holds no reference run; the two engines must agree on the loss before a training step is timed.
"""
import copy
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
sys.path.insert(0, str(REPO))

from benchmarks import _harness as H  # noqa: E402
from benchmarks import kernels as K  # noqa: E402
from benchmarks import render_docs as R  # noqa: E402
from benchmarks import train_step as TS  # noqa: E402
from minillm import backend  # noqa: E402

RESULT_STEMS = ["kernels", "train_step"] + [f"kernels_{f}" for f in R.FAMILIES]


# ---- the documents and the results files


def test_generated_parts_match_the_committed_results():
    stale = R.stale()
    assert not stale, f"{stale} disagree with benchmarks/results: run python benchmarks/render_docs.py --write"


def test_a_changed_figure_in_a_results_file_is_caught(tmp_path):
    names = ["kernels.json", "train_step.json", "sst2.md"] + [f"kernels_{f}.json" for f in R.FAMILIES]
    names += [f"{d.name}/report.json" for d in RESULTS.glob("demo*") if (d / "report.json").is_file()]
    for name in names:
        if (RESULTS / name).is_file():
            (tmp_path / name).parent.mkdir(exist_ok=True)
            shutil.copy(RESULTS / name, tmp_path / name)
    assert R.stale(str(tmp_path)) == [], "a faithful copy of the results must render the same documents"
    train = json.loads((tmp_path / "train_step.json").read_text())
    train["results"][0]["torch"]["tokens_per_s"] *= 1.5
    (tmp_path / "train_step.json").write_text(json.dumps(train))
    kern = json.loads((tmp_path / "kernels.json").read_text())
    row = next(r for r in kern["rows"] if r["family"] == "gelu")
    row["impls"]["minillm"]["ms"] *= 2
    (tmp_path / "kernels.json").write_text(json.dumps(kern))
    assert set(R.stale(str(tmp_path))) == {"README.md", os.path.join("kernels", "gelu", "NOTES.md")}


MEASURED = re.compile(r"\d\s*(ms|us|ns|GB/s|GFLOP/s|tokens/s)\b|\d(\.\d+)?x (faster|slower)")


@pytest.mark.parametrize("family", R.FAMILIES)
def test_notes_cite_the_results_instead_of_stating_figures(family):
    text = (REPO / "kernels" / family / "NOTES.md").read_text(encoding="utf-8")
    assert text.count(R.BEGIN) == 1 and text.count(R.END) == 1, "NOTES.md needs one generated part"
    assert f"kernels_{family}.png" in text, "the family's chart from the version lab is linked"
    cpu_part = text.split("\n## GPU")[0]  # the GPU sections hold expectations from spec sheets, not results
    prose = re.sub(re.escape(R.BEGIN) + ".*?" + re.escape(R.END), "", cpu_part, flags=re.S)
    hits = [line for line in prose.splitlines() if MEASURED.search(line)]
    assert not hits, f"kernels/{family}/NOTES.md states measured figures outside its generated part: {hits}"


def test_readme_results_section_is_only_the_generated_table():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Results at a glance", 1)[1].split("\n## ", 1)[0]
    outside = re.sub(re.escape(R.BEGIN) + ".*?" + re.escape(R.END), "", section, flags=re.S)
    assert not re.search(r"\d", outside), f"figures typed by hand next to the generated table: {outside!r}"


@pytest.mark.parametrize("stem", RESULT_STEMS)
def test_results_files_start_with_the_command_that_regenerates_them(stem):
    md, js = RESULTS / f"{stem}.md", RESULTS / f"{stem}.json"
    assert md.is_file() and js.is_file(), f"{stem}.md and {stem}.json are both committed"
    first = md.read_text(encoding="utf-8").splitlines()[0]
    m = re.fullmatch(r"Regenerate: `(python benchmarks/\w+\.py[^`]*)`", first)
    assert m, f"{md.name} must start with 'Regenerate: `python benchmarks/...`', starts with {first!r}"
    assert json.loads(js.read_text())["command"] == m.group(1)
    assert "/" not in m.group(1).replace("benchmarks/", "", 1), "relative paths only"


# ---- the method


def test_each_engine_gets_its_own_settings_and_no_openblas_overrides():
    base = {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "262144", "OMP_WAIT_POLICY": "ACTIVE",
            "PATH": "/bin"}
    ours, peer = H.engine_env("minillm", 3, base), H.engine_env("torch", 3, base)
    for env in (ours, peer):
        assert not set(H.BLAS_OVERRIDES) & set(env), "both OpenBLAS overrides are removed, together"
        assert env["OMP_NUM_THREADS"] == env["NUMBA_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "3"
    assert ours["OMP_WAIT_POLICY"] == "PASSIVE" and ours["OPENBLAS_NUM_THREADS"] == "3"
    assert "OMP_WAIT_POLICY" not in peer and peer["OPENBLAS_NUM_THREADS"] == "1"
    # minillm keeps freed memory by mallopt at import (backend.keep_freed_memory); the peer runs both with the
    # same settings (its "kept" allocator) and with glibc's defaults, and the faster one counts
    assert int(peer["MALLOC_MMAP_THRESHOLD_"]) == backend.MMAP_THRESHOLD
    assert int(peer["MALLOC_TRIM_THRESHOLD_"]) == backend.TRIM_THRESHOLD
    glibc = H.engine_env("torch", 3, {**base, "MALLOC_TRIM_THRESHOLD_": "1"}, allocator="glibc")
    assert not set(H.KEPT_MEMORY_ENV) & set(glibc), "glibc's defaults: no MALLOC_ variable, not even the caller's"
    assert not set(H.KEPT_MEMORY_ENV) & set(ours), "minillm sets its own at import"
    with pytest.raises(ValueError, match="allocator"):
        H.engine_env("minillm", 3, base, allocator="glibc")
    assert H.fastest({"kept": [[3.0, 3.2]], "glibc": [[2.0, 2.5], [2.1]]}) == {
        "median": pytest.approx(2.175), "min": 2.0, "max": 2.5, "rounds": 2, "calls": 3, "allocator": "glibc"}
    assert base["OPENBLAS_CORETYPE"] == "Haswell", "the caller's environment is left alone"
    assert [H.engine_order(r)[0] for r in range(4)] == ["minillm", "torch", "minillm", "torch"]


def fake_step_worker(losses):
    """A stand-in for train_step's worker processes: records who ran, returns plausible measurements."""
    calls = []

    def run_worker(script, argv, engine, threads, timeout=None, allocator="kept"):
        e, shape, head = argv[argv.index("--_worker") + 1:][:3]
        assert e == engine, "a worker runs exactly the engine whose environment it was started with"
        calls.append((engine, shape, head, allocator))
        slower = 2.0 if (engine, allocator) == ("torch", "kept") else 1.0  # PyTorch's glibc run is its faster
        return dict(engine=engine, shape=shape, head=head, machine={"matmul_gflops": 100.0}, blas="test",
                    times=[0.5 * slower, 0.4 * slower, 0.6 * slower], first_s=2.0, first_loss=losses[engine],
                    last_loss=9.0, params=1000,
                    masked=307, peak_mb=100.0, baseline_mb=50.0, peak_reset=True, minillm_version="0",
                    versions="test")

    return calls, run_worker


def test_a_run_of_some_families_leaves_the_table_of_every_family_alone():
    assert K.parse_args([]).out == H.RESULTS
    assert K.parse_args(["--family", "gelu", "--versions"]).out == H.RESULTS  # writes kernels_gelu.md only
    assert K.parse_args(["--family", "gelu"]).out != H.RESULTS  # kernels.md would lose every other family


def test_train_step_runs_engines_in_separate_alternating_processes(monkeypatch):
    calls, fake = fake_step_worker({"minillm": 10.0, "torch": 10.0})
    monkeypatch.setattr(H, "run_worker", fake)
    args = TS.parse_args(["--rounds", "2", "--steps", "3"])
    data = TS.collect(args)
    assert len(calls) == 2 * 4 * 3, "rounds x (shape, head) x (minillm + PyTorch's two allocators), a process each"
    firsts = [calls[i][0] for i in range(0, len(calls), 3)]
    assert firsts.count("minillm") == firsts.count("torch"), "neither engine always goes first"
    r = data["results"][0]
    assert r["minillm"]["tokens_per_s"] == pytest.approx(2048 / 0.5)  # median of [0.5, 0.4, 0.6] s, 2048 tokens
    assert r["torch"]["allocator"] == "glibc", "PyTorch's faster allocator setting counts"
    assert r["ratio"] == pytest.approx(1.0)


def test_train_step_refuses_to_time_engines_that_disagree(monkeypatch):
    _, fake = fake_step_worker({"minillm": 10.0, "torch": 10.1})
    monkeypatch.setattr(H, "run_worker", fake)
    with pytest.raises(SystemExit, match="disagree"):
        TS.collect(TS.parse_args(["--rounds", "1", "--shapes", "mini", "--heads", "sparse"]))


def test_first_call_time_holds_no_reference_run(monkeypatch):
    """The compile column once included the NumPy reference that validation ran inside the clock."""
    import kernels.softmax.reference as ref
    from kernels.softmax import cpu

    slow = 0.5  # seconds added to every reference call: far above a warm Numba call at this shape

    def slowed(f):
        def g(*a, **k):
            time.sleep(slow)
            return f(*a, **k)
        return g

    monkeypatch.setattr(K, "CASES", [("softmax", (6, 5), "")])
    monkeypatch.setattr(H, "numba_copy_gbs", lambda: 1.0)
    monkeypatch.setattr(H, "numpy_matmul_gflops", lambda: 1.0)
    monkeypatch.setattr(ref, "softmax_fwd", slowed(ref.softmax_fwd))
    monkeypatch.setattr(ref, "softmax_bwd", slowed(ref.softmax_bwd))
    x = np.ones((6, 5), np.float32)
    cpu.softmax_bwd(cpu.softmax_fwd(x), x)  # compiled (or loaded) here, so the worker's first call is warm
    out = K.minillm_worker(K.parse_args(["--_worker", "minillm", "--family", "softmax", "--quick", "--repeats", "1"]))
    compile_s = {k: v["compile_s"] for k, v in out["first"].items() if k.endswith("|minillm")}
    assert set(compile_s) == {"softmax (6, 5)|fwd|minillm", "softmax (6, 5)|fwd+bwd|minillm"}
    assert all(s < slow / 2 for s in compile_s.values()), compile_s  # half the sleep: any reference call shows


TINY = [("softmax", (6, 5), ""), ("layernorm", (6, 7), ""), ("gelu", (6, 7), ""), ("cross_entropy", (16, 11), ""),
        ("attention", (2, 3, 8, 4), "padding"), ("attention", (2, 3, 8, 4), "causal"), ("adamw", (13,), "")]


@pytest.mark.parametrize("case", TINY, ids=lambda c: K.case_name(c))
def test_torch_peers_compute_the_reference_gradients_without_accumulating(case, monkeypatch):
    torch = pytest.importorskip("torch", reason="the benchmark's PyTorch peers need torch")
    import importlib

    import torch.nn.functional as F

    def no_backward(*a, **k):
        raise AssertionError("a peer called .backward(): timed calls would accumulate into .grad")

    monkeypatch.setattr(torch.Tensor, "backward", no_backward)
    bench = K.BENCHES[case[0]](case)
    ref = importlib.import_module(f"kernels.{bench.family}.reference")
    peer = bench.torch(torch, F)
    if bench.family == "adamw":
        want = bench.step(ref.adamw_step, copy=True)()
        K.check(peer["check"](), want, "adamw torch")
        K.check(peer["check"](), want, "adamw torch, again")
        return
    rf, rb = getattr(ref, bench.fwd_name), getattr(ref, bench.bwd_name)
    want = bench.fwd_bwd(rf, rb)()
    for _ in range(3):  # the same gradients every call: nothing accumulates
        K.check(peer["fwd+bwd"](), want, f"{case} torch fwd+bwd")
    K.check(peer["fwd"](), bench.fwd(rf)(), f"{case} torch fwd")
    K.check(peer["bwd"](), bench.bwd(rb, bench.saved(bench.fwd(rf)))(), f"{case} torch bwd")


def test_the_checks_catch_a_wrong_peer():
    wrong = (np.ones(4, np.float32),)
    with pytest.raises(AssertionError):
        K.check(wrong, (np.ones(4, np.float32) * 1.001,), "a result 0.1% off")


def test_minillm_bench_forwards_every_flag_to_the_kernel_benchmark(monkeypatch):
    import runpy

    from minillm import cli

    seen = {}
    monkeypatch.setattr(runpy, "run_path", lambda path, run_name: seen.update(path=path, argv=list(sys.argv)))
    monkeypatch.setattr(sys, "argv", ["minillm"])
    assert cli.main(["bench", "--family", "softmax", "--versions", "--quick"]) == 0
    assert seen["path"].endswith(os.path.join("benchmarks", "kernels.py"))
    assert seen["argv"][1:] == ["--family", "softmax", "--versions", "--quick"]

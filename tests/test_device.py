"""`--device cuda` through every command, tested on a CPU with a stand-in GPU (tests/device_standin.py): a
`cupy` whose arrays know they are on the device and refuse host arrays where CuPy does. Every path must move
its model there and put every batch (inputs, targets, masks, positions) there, and give the numbers the same
NumPy reference kernels give on the CPU."""
import json

import numpy as np
import pytest

import minillm as mm
from device_standin import DeviceArray, device_standin
from minillm import functional as F
from minillm.backend import is_cupy, to_device
from minillm.cli import main

WORDS = {0: "bad awful dull boring", 1: "good great fine lovely"}
FILLER = "the movie film story plot was a and of it very".split()


@pytest.fixture
def gpu(monkeypatch):
    with device_standin(monkeypatch) as cp:
        yield cp




@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)

    def sentence(y):
        return " ".join([*rng.choice(FILLER, 4), rng.choice(WORDS[y].split()), *rng.choice(FILLER, 2)])

    (d / "corpus.txt").write_text("\n".join(" ".join(sentence(int(rng.integers(2))) for _ in range(5))
                                            for _ in range(40)) + "\n")
    for name, n in (("train", 60), ("dev", 12)):
        (d / f"{name}.tsv").write_text("sentence\tlabel\n" + "".join(
            f"{sentence(y)}\t{y}\n" for y in rng.integers(0, 2, n)))
    return d


def test_the_standin_refuses_host_arrays_where_cupy_does(gpu):
    logits = mm.Tensor(to_device(np.zeros((3, 5), np.float32), "cuda"))
    assert is_cupy(logits.data) and isinstance(logits.data, DeviceArray) and logits.device == "cuda"
    with pytest.raises(TypeError, match="CuPy array"):
        F.cross_entropy(logits, np.array([0, 1, 2]))  # a NumPy target into the GPU cross-entropy
    with pytest.raises(TypeError, match="host"):
        logits.data + np.ones((3, 5), np.float32)
    loss = F.cross_entropy(logits, to_device(np.array([0, 1, 2]), "cuda"))
    assert loss.device == "cuda" and abs(loss.item() - np.log(5)) < 1e-6  # uniform logits: log V, float32


def run(argv, capsys):
    capsys.readouterr()
    assert main(argv) == 0, capsys.readouterr().err
    return capsys.readouterr().out.strip().splitlines()


def test_every_command_runs_on_the_device(data, tmp_path, capsys, monkeypatch, reference_backend):
    pre, ft = tmp_path / "pre", tmp_path / "ft"
    dev = str(data / "dev.tsv")
    with device_standin(monkeypatch):
        run(["pretrain", "--preset", "tiny", "--corpus", str(data / "corpus.txt"), "--out", str(pre), "--steps", "2",
             "--batch-size", "4", "--seq-len", "16", "--vocab-size", "120", "--eval-every", "1", "--device", "cuda"],
            capsys)
        run(["finetune", "--model", str(pre), "--train", str(data / "train.tsv"), "--eval", dev, "--out", str(ft),
             "--max-steps", "3", "--batch-size", "8", "--eval-every", "2", "--device", "cuda"], capsys)
        on_gpu = {
            "evaluate": run(["evaluate", "--model", str(ft), "--data", dev, "--device", "cuda"], capsys),
            "zero-shot": run(["evaluate", "--model", str(pre), "--data", dev, "--zero-shot", "--label-words",
                              "bad,awful;good,great", "--device", "cuda"], capsys),
            "predict": run(["predict", "--model", str(ft), "a good film", "a dull plot", "--device", "cuda"], capsys),
        }
    evals = [json.loads(line) for line in (pre / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["split"] == "eval"]
    assert len(evals) == 2 and all(np.isfinite(r["loss"]) for r in evals)  # pretraining's evaluation ran
    on_cpu = {
        "evaluate": run(["evaluate", "--model", str(ft), "--data", dev], capsys),
        "zero-shot": run(["evaluate", "--model", str(pre), "--data", dev, "--zero-shot", "--label-words",
                          "bad,awful;good,great"], capsys),
        "predict": run(["predict", "--model", str(ft), "a good film", "a dull plot"], capsys),
    }
    # The same reference kernels on the same weights: the printed metrics and predictions agree exactly.
    assert on_gpu == on_cpu


def test_device_runs_on_the_device(data, tmp_path, capsys, monkeypatch):
    """Not a silent CPU run: with --device cuda the model's parameters and its outputs are device arrays."""
    from minillm.train.finetune import load_classifier
    from minillm.train.pretrain import PretrainArgs, pretrain

    pre = tmp_path / "pre"
    pretrain(PretrainArgs(corpus=[str(data / "corpus.txt")], out=str(pre), preset="tiny", steps=1, batch_size=4,
                          seq_len=16, vocab_size=120))
    with device_standin(monkeypatch):
        model, tok = load_classifier(pre, 2, device="cuda")
        assert all(p.device == "cuda" for p in model.parameters())
        out = model(**tok(["a good film"], return_tensors="np"))
        assert isinstance(out.logits.data, DeviceArray)


def test_conflicting_device_and_backend_are_refused(data, tmp_path, capsys):
    assert main(["predict", "--model", str(tmp_path), "x", "--device", "cuda", "--backend", "numba"]) == 2
    assert "--device cuda" in capsys.readouterr().err
    assert main(["predict", "--model", str(tmp_path), "x", "--backend", "cupy"]) == 2
    assert "--backend cupy needs --device cuda" in capsys.readouterr().err


def test_demo_runs_on_the_device(tmp_path, monkeypatch):
    from test_demo import make_data

    from minillm.train.demo import DemoArgs, demo

    data = make_data(tmp_path / "data")
    with device_standin(monkeypatch):
        demo(DemoArgs(out=str(tmp_path / "out"), pretrain_steps=2, finetune_steps=2, data=str(data), device="cuda"))
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["device"] == "cuda" and report["command"].endswith("--device cuda")
    assert all(0.0 <= report[k]["accuracy"] <= 1.0 for k in ("zero_shot", "finetuned", "from_scratch"))

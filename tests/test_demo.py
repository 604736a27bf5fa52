"""`minillm demo` on a small generated data folder: the data it checks before the first step, the corpora it
says it used, the report rendered from report.json, and the committed report in benchmarks/results/demo,
which must be exactly what the current writer makes of the committed report.json."""
import json
import re
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from minillm.cli import build_parser
from minillm.data import read_tsv
from minillm.train import pretrain as pretrain_module
from minillm.train.demo import DemoArgs, command_line, demo, render_report, step_budget
from minillm.train.finetune import evaluate_path

COMMITTED = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "demo"
WORDS = {0: "bad awful dull boring terrible", 1: "good great fine lovely wonderful"}
FILLER = "the movie film story plot was is a an and of it this that very".split()


def make_data(root: Path, wikitext=("valid", "test")) -> Path:
    rng = np.random.default_rng(0)

    def sentence(y):
        return " ".join([*rng.choice(FILLER, 5), rng.choice(WORDS[y].split()), *rng.choice(FILLER, 3)])

    (root / "sst2").mkdir(parents=True)
    (root / "wikitext2").mkdir()
    for name, n in (("train", 200), ("dev", 30)):
        (root / "sst2" / f"{name}.tsv").write_text(
            "sentence\tlabel\n" + "".join(f"{sentence(y)} \t{y}\n" for y in rng.integers(0, 2, n)))
    for name in wikitext:
        (root / "wikitext2" / f"{name}.txt").write_text(
            "".join(" ".join(sentence(int(rng.integers(2))) for _ in range(8)) + "\n" for _ in range(60)))
    return root


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    data = make_data(tmp_path_factory.mktemp("data"))
    out = tmp_path_factory.mktemp("demo")
    corpora = []
    real = pretrain_module.pretrain
    mp = pytest.MonkeyPatch()
    mp.setattr(pretrain_module, "pretrain", lambda a: (corpora.append(list(a.corpus)), real(a))[1])
    try:
        demo(DemoArgs(out=str(out), pretrain_steps=3, finetune_steps=3, data=str(data)))
    finally:
        mp.undo()
    return out, data, corpora[0]


def test_demo_leaves_three_models_and_a_report_rendered_from_its_json(demo_run):
    out, data, corpora = demo_run
    report = json.loads((out / "report.json").read_text())
    assert (out / "report.md").read_text() == render_report(report)
    for run in ("pretrained", "finetuned", "from_scratch"):  # each loadable by `evaluate --model`
        assert (out / run / "config.json").is_file() and (out / run / "model.safetensors").is_file()
    for run in ("finetuned", "from_scratch"):  # the dev numbers are those of the kept checkpoints
        assert report[run]["eval_split"] == "dev" and report[run]["n"] == 30
        assert evaluate_path(out / run, data / "sst2" / "dev.tsv", max_length=64)["accuracy"] == \
            report[run]["accuracy"]
    assert 0.0 <= report["zero_shot"]["accuracy"] <= 1.0 and report["zero_shot"]["n"] == 30
    few = report["few_labels"]  # the same comparison on a sample of the labelled rows, the sample kept
    train_rows = set(zip(*read_tsv(data / "sst2" / "train.tsv", num_labels=2)))
    sample = list(zip(*read_tsv(out / "few_labels" / "train.tsv", num_labels=2)))
    assert len(sample) == few["rows"] == len(train_rows) // 2 and set(sample) <= train_rows
    for run in ("finetuned", "from_scratch"):
        assert evaluate_path(out / "few_labels" / run, data / "sst2" / "dev.tsv", max_length=64)["accuracy"] == \
            few[run]["accuracy"] and few[run]["eval_split"] == "dev"
    for link in re.findall(r"!\[[^]]*\]\(([^)]+)\)", (out / "report.md").read_text()):
        assert (out / link).is_file(), link


def test_demo_reports_the_corpora_it_pretrained_on(demo_run):
    out, data, corpora = demo_run
    report = json.loads((out / "report.json").read_text())
    used = [str(Path(c).relative_to(data)) for c in corpora]
    assert used == report["data"]["corpora"] == ["wikitext2/valid.txt", "wikitext2/test.txt", "sst2/train.tsv"]
    assert report["data"]["not_found"] == ["imdb/unsup.txt", "wikitext2/train.txt"]
    text = (out / "report.md").read_text()
    assert "`wikitext2/valid.txt` + `wikitext2/test.txt` + `sst2/train.tsv`" in text
    assert "so not used: `imdb/unsup.txt`, `wikitext2/train.txt`" in text


@pytest.mark.parametrize("missing", ["sst2/dev.tsv", "sst2/train.tsv", "wikitext2/valid.txt"])
def test_demo_checks_its_data_before_the_first_step(missing, tmp_path):
    data = make_data(tmp_path / "data")
    (data / missing).unlink()
    with pytest.raises(FileNotFoundError, match=missing):
        demo(DemoArgs(out=str(tmp_path / "out"), pretrain_steps=3, finetune_steps=3, data=str(data)))
    assert not (tmp_path / "out").exists()  # nothing was tokenized or trained


def test_demo_reports_a_bad_data_row_before_the_first_step(tmp_path):
    data = make_data(tmp_path / "data")
    with open(data / "sst2" / "dev.tsv", "a") as f:
        f.write("a sentence with a bad label\t7\n")
    with pytest.raises(ValueError, match=r"dev.tsv:32"):
        demo(DemoArgs(out=str(tmp_path / "out"), data=str(data)))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args", [DemoArgs(), DemoArgs(minutes=5.0, preset="mini", seed=3, device="cuda"),
                                  DemoArgs(out="runs/x", pretrain_steps=100, finetune_steps=50, data="data")])
def test_command_line_reproduces_the_arguments(args):
    parsed = build_parser().parse_args(command_line(args).split()[1:])
    assert DemoArgs(**{k: getattr(parsed, k) for k in asdict(args)}) == args


# ---- the committed report ---------------------------------------------------------------------------

def shape_of(value):
    """The keys of a JSON value, recursively (lists by their first element): what a writer produces."""
    if isinstance(value, dict):
        return {k: shape_of(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape_of(value[0])] if value else []
    return type(value).__name__ if not isinstance(value, (int, float)) or isinstance(value, bool) else "number"


def test_committed_report_is_what_the_current_demo_writes(demo_run):
    """benchmarks/results/demo must be regenerated whenever the demo's report changes: its report.md is
    exactly render_report(its report.json), that json has the shape the demo writes today, its step counts
    are the budget of the command written at its top, and every image it links to is there."""
    committed = json.loads((COMMITTED / "report.json").read_text())
    assert (COMMITTED / "report.md").read_text() == render_report(committed)
    fresh = json.loads((demo_run[0] / "report.json").read_text())
    assert shape_of(committed) == shape_of(fresh)
    command = committed["command"]
    assert command.startswith("minillm demo") and "/" not in command.replace("runs/demo", "")  # no machine path
    parsed = build_parser().parse_args(command.split()[1:])
    args = DemoArgs(**{k: getattr(parsed, k) for k in asdict(DemoArgs())})
    pretrain_steps, finetune_steps = step_budget(args)  # pretraining: None when the run plans its own steps
    assert committed["finetuned"]["steps"] == finetune_steps
    assert pretrain_steps is None or committed["pretrain"]["steps"] == pretrain_steps
    assert committed["from_scratch"]["steps"] == committed["finetuned"]["steps"]
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", (COMMITTED / "report.md").read_text())
    assert links and all((COMMITTED / link).is_file() for link in links)


def test_demo_takes_a_minillm_data_folder_without_imdb(tmp_path, monkeypatch):
    """IMDb is optional pretraining text: a MINILLM_DATA folder with only SST-2 and WikiText-2 is used as it is
    (the attempt to find IMDb there fails and the demo goes on without it), never a download elsewhere."""
    from minillm.train.demo import find_data

    data = make_data(tmp_path / "data")
    monkeypatch.setenv("MINILLM_DATA", str(data))
    root, source = find_data(DemoArgs())
    assert root == data and source == "`$MINILLM_DATA`"

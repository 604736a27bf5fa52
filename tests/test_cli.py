"""The command line refuses bad input with a one-line error that names the flag or the file, before any
heavy work: numeric flags at parse time (argparse's usage error, exit status 2), --out that is a file,
a broken latest.json. Every test here runs `minillm.cli.main` in-process and takes well under a second."""
import argparse
import dataclasses
import json
import math

import pytest

from minillm.cli import build_parser, main
from minillm.train import checks
from minillm.train.finetune import FinetuneArgs
from minillm.train.loop import TrainConfig
from minillm.train.pretrain import PretrainArgs

PRETRAIN = ["pretrain", "--corpus", "corpus.txt", "--out", "run"]
FINETUNE = ["finetune", "--model", "m", "--train", "t.tsv", "--eval", "e.tsv", "--out", "run"]
DEMO = ["demo"]

BAD_FLAGS = [
    (PRETRAIN, "--batch-size", "0"), (PRETRAIN, "--batch-size", "-4"), (PRETRAIN, "--grad-accum", "0"),
    (PRETRAIN, "--grad-accum", "-1"), (PRETRAIN, "--steps", "0"), (PRETRAIN, "--steps", "2.5"),
    (PRETRAIN, "--seq-len", "4"), (PRETRAIN, "--seq-len", "1024"), (PRETRAIN, "--lr", "0"),
    (PRETRAIN, "--lr", "-1e-3"), (PRETRAIN, "--lr", "nan"), (PRETRAIN, "--lr", "inf"), (PRETRAIN, "--seed", "-1"),
    (PRETRAIN, "--vocab-size", "0"), (PRETRAIN, "--eval-every", "-1"), (PRETRAIN, "--checkpoint-every", "-5"),
    (FINETUNE, "--epochs", "0"), (FINETUNE, "--lr", "-5e-5"), (FINETUNE, "--batch-size", "0"),
    (FINETUNE, "--max-length", "2"), (FINETUNE, "--max-steps", "-1"), (FINETUNE, "--evals-per-epoch", "0"),
    (FINETUNE, "--eval-every", "-2"), (FINETUNE, "--num-labels", "1"), (FINETUNE, "--validation-fraction", "1"),
    (FINETUNE, "--seed", "x"),
    (DEMO, "--minutes", "-3"), (DEMO, "--pretrain-steps", "0"), (DEMO, "--finetune-steps", "-1"),
    (DEMO, "--seed", "-2"),
]


@pytest.mark.parametrize("command, flag, value", BAD_FLAGS, ids=[f"{c[0]} {f} {v}" for c, f, v in BAD_FLAGS])
def test_a_bad_numeric_flag_is_a_usage_error_naming_the_flag(command, flag, value, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written, but if it were, it lands here
    with pytest.raises(SystemExit) as exit_:
        main(command + [f"{flag}={value}"])  # the = form: argparse reads "-1e-3" alone as an option
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: must be" in err and repr(value) in err
    assert list(tmp_path.iterdir()) == []


def test_every_numeric_flag_of_every_subcommand_is_checked():
    """A numeric flag added with a bare type=int / type=float would let 0 or -1 through to the run."""
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    unchecked = [f"{name} {'/'.join(action.option_strings)}"
                 for name, sub in subparsers.choices.items() for action in sub._actions
                 if action.type in (int, float)]
    assert unchecked == []


@pytest.mark.parametrize("command, args_class", [("pretrain", PretrainArgs), ("finetune", FinetuneArgs)])
def test_flags_and_dataclass_fields_share_one_check(command, args_class):
    """The Python API (PretrainArgs / FinetuneArgs) refuses exactly what the flags refuse: same Check objects,
    and every int / float field has one."""
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    flags = {a.dest: a for a in subparsers.choices[command]._actions}
    for f in dataclasses.fields(args_class):
        check = f.metadata.get("check")
        if f.type in ("int", "float"):
            assert isinstance(check, checks.Check), f"{args_class.__name__}.{f.name} has no check"
        if check is not None and f.name in flags:
            assert flags[f.name].type is check, f"--{f.name.replace('_', '-')} and {args_class.__name__}.{f.name}"
    for f in dataclasses.fields(TrainConfig):
        if f.type in ("int", "float"):
            assert isinstance(f.metadata.get("check"), checks.Check), f"TrainConfig.{f.name} has no check"


@pytest.mark.parametrize("make, field, value", [
    (lambda **kw: PretrainArgs(corpus=["c.txt"], out="run", **kw), "batch_size", 0),
    (lambda **kw: PretrainArgs(corpus=["c.txt"], out="run", **kw), "grad_accum", -1),
    (lambda **kw: PretrainArgs(corpus=["c.txt"], out="run", **kw), "lr", math.nan),
    (lambda **kw: PretrainArgs(corpus=["c.txt"], out="run", **kw), "steps", 10.0),
    (lambda **kw: PretrainArgs(corpus=["c.txt"], out="run", **kw), "steps", True),
    (lambda **kw: FinetuneArgs(model="m", train="t", eval="e", out="run", **kw), "batch_size", -32),
    (lambda **kw: FinetuneArgs(model="m", train="t", eval="e", out="run", **kw), "epochs", 0.0),
    (lambda **kw: TrainConfig(**{"steps": 10, **kw}), "steps", 0),
    (lambda **kw: TrainConfig(**{"steps": 10, **kw}), "grad_accum", 0),
    (lambda **kw: TrainConfig(**{"steps": 10, **kw}), "warmup_fraction", 1.5),
    (lambda **kw: TrainConfig(**{"steps": 10, **kw}), "max_grad_norm", 0.0),
])
def test_the_python_api_refuses_the_same_values(make, field, value):
    with pytest.raises(ValueError, match=rf"\.{field} = .*: must be"):
        make(**{field: value})


@pytest.mark.parametrize("command", [PRETRAIN, FINETUNE, DEMO + ["--out", "run"]])
def test_out_that_is_a_file_is_a_usage_error_naming_it(command, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run").write_text("a file, not a folder")
    with pytest.raises(SystemExit) as exit_:
        main(command)
    assert exit_.value.code == 2
    assert "argument --out: run is a file; --out must be a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([a if a != "run" else "run/inside" for a in command])
    assert "run/inside lies inside run, which is a file" in capsys.readouterr().err


def test_out_that_is_a_file_in_the_python_api(tmp_path):
    (tmp_path / "run").write_text("a file")
    with pytest.raises(ValueError, match=r"--out: .*run is a file"):
        PretrainArgs(corpus=["c.txt"], out=str(tmp_path / "run"))


def test_a_broken_latest_json_is_a_one_line_error_before_any_work(tmp_path, capsys):
    """--resume reads latest.json first: its problem is reported before the corpus is even opened."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a few words of text\n")
    out = tmp_path / "run"
    out.mkdir()
    (out / "latest.json").write_text(json.dumps({"checkpoint": "../elsewhere"}))
    assert main(["pretrain", "--corpus", str(corpus), "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("minillm: error: ") and "latest.json" in err and "'../elsewhere'" in err
    assert err.count("\n") == 1

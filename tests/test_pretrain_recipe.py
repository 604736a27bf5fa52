"""The pretraining recipe's machinery, on small synthetic data: a time budget (`--minutes`) that fixes a step
count before the first step and lays the schedule over it, with exact resume; the recipe flags (mask rate,
dropout, warm-up, weight decay) used and recorded; tokens seen and minutes on every metrics row; evaluation
data refused as a corpus; the fine-tuning recipe flags; and the study driver end to end."""
import dataclasses
import json
import math
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minillm as mm
from minillm.cli import main
from minillm.data import read_corpus, read_tsv
from minillm.models.checkpoint import read_safetensors
from minillm.train import budget, loop
from minillm.train import pretrain as pretrain_module
from minillm.train.finetune import FinetuneArgs, finetune
from minillm.train.metrics import read_metrics
from minillm.train.pretrain import EVAL_MASK_RATE, PretrainArgs, mlm_batch, pretrain, train_config

REPO = Path(__file__).resolve().parents[1]
WORDS = {0: "bad awful dull boring terrible weak", 1: "good great fine lovely wonderful strong"}
FILLER = "the movie film story plot was is a an and of it this that very quite rather".split()


def sentence(rng, label):
    pool = WORDS[label].split()
    return " ".join(list(rng.choice(FILLER, 5)) + [rng.choice(pool)] + list(rng.choice(FILLER, 3)) + [rng.choice(pool)])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A data folder shaped like $MINILLM_DATA: corpus.txt and sst2/{train,dev}.tsv, all generated."""
    d = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    lines = [" ".join(sentence(rng, int(rng.integers(2))) for _ in range(6)) for _ in range(120)]
    (d / "corpus.txt").write_text("\n".join(lines) + "\n")
    (d / "sst2").mkdir()
    for name, n in (("train", 160), ("dev", 40)):
        labels = rng.integers(0, 2, n)
        (d / "sst2" / f"{name}.tsv").write_text(
            "sentence\tlabel\n" + "".join(f"{sentence(rng, int(y))}\t{y}\n" for y in labels))
    return d


def args_for(data, out, **kw):
    base = dict(corpus=[str(data / "corpus.txt")], out=str(out), preset="tiny", batch_size=8, seq_len=32,
                vocab_size=120, checkpoint_every=3, eval_every=3, lr=1e-3)
    base.update(kw)
    return PretrainArgs(**base)


def rows_of(folder, keys=("step", "split", "loss", "grad_norm", "lr", "mlm_accuracy", "tokens_seen")):
    return [tuple(r.get(k) for k in keys) for r in read_metrics(Path(folder) / "metrics.jsonl")]


@pytest.fixture
def plan_of_six(monkeypatch):
    """Budgets that always afford exactly 6 steps, so that budgeted runs are short and comparable."""
    monkeypatch.setattr(budget, "plan_steps", lambda *a, **k: 6)


# ---- the time budget ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def budget_and_steps_runs(data, tmp_path_factory):
    """A budgeted run whose plan is forced to 6 steps, and the plain 6-step run with the same settings."""
    mp = pytest.MonkeyPatch()
    mp.setattr(budget, "plan_steps", lambda *a, **k: 6)
    timed = tmp_path_factory.mktemp("budget")
    try:
        pretrain(args_for(data, timed, minutes=0.5))
    finally:
        mp.undo()
    steps = tmp_path_factory.mktemp("steps")
    pretrain(args_for(data, steps, steps=6))
    return timed, steps


def test_a_budget_run_is_the_step_run_it_planned(budget_and_steps_runs):
    """The measured steps before the first real one change no weight (AdamW at lr 0): the budgeted run is,
    row for row and weight for weight, the `--steps N` run with the N it planned."""
    timed, steps = budget_and_steps_runs
    plan = json.loads((timed / "run.json").read_text())
    assert plan["budget"]["steps"] == 6 and plan["train_config"]["steps"] == 6
    assert plan["budget"]["seconds_per_step"] > 0 and plan["budget"]["timed_steps"] >= 5
    first, *rest = rows_of(timed)
    assert first[:2] == (0, "eval") and first[-1] == 0  # the calibration's evaluation of the untrained model
    assert rest == rows_of(steps)                       # bit for bit: losses, gradient norms, lr, tokens
    a, b = read_safetensors(timed / "model.safetensors"), read_safetensors(steps / "model.safetensors")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_every_row_says_tokens_seen_and_minutes_elapsed(budget_and_steps_runs):
    timed, _ = budget_and_steps_runs
    records = read_metrics(timed / "metrics.jsonl")
    assert all({"tokens_seen", "elapsed_minutes"} <= set(r) for r in records)
    assert all(r["tokens_seen"] == r["step"] * 8 * 32 for r in records)  # B x T input tokens per step
    evals = [r for r in records if r["split"] == "eval"]
    assert [r["step"] for r in evals] == [0, 3, 6]
    minutes = [r["elapsed_minutes"] for r in evals]
    assert minutes == sorted(minutes) and minutes[0] > 0  # the clock started with the calibration


class VirtualClock:
    """time.perf_counter for the budget code: it moves only when the test says, so the step time a run
    measures is exactly what its steps take (a shared machine's load would make a real-time test flaky)."""

    def __init__(self):
        self.now = 1000.0

    def perf_counter(self):
        return self.now


def test_a_budget_stops_at_it_and_the_lr_decays_to_zero(data, tmp_path, monkeypatch):
    """On a clock where a step takes 1 s and an evaluation 0.1 s (checkpoints nothing), a 30-second budget:
    7 measured steps and one evaluation, then N = floor((30 - 7.1 - 0.1 - 10 x 0.1) / 1) = 21 steps with
    11 evaluations end at 29.2 s, inside the budget and less than a step before its end."""
    from types import SimpleNamespace

    clock = VirtualClock()
    for module in (budget, loop, pretrain_module):
        monkeypatch.setattr(module, "time", SimpleNamespace(perf_counter=clock.perf_counter))
    real_step, real_eval = loop.forward_backward, pretrain_module.evaluate_mlm

    def step_of_one_second(*args, **kwargs):
        clock.now += 1.0
        return real_step(*args, **kwargs)

    def evaluation_of_a_tenth(*args, **kwargs):
        clock.now += 0.1
        return real_eval(*args, **kwargs)

    monkeypatch.setattr(loop, "forward_backward", step_of_one_second)
    monkeypatch.setattr(budget, "forward_backward", step_of_one_second)
    monkeypatch.setattr(pretrain_module, "evaluate_mlm", evaluation_of_a_tenth)
    pretrain(args_for(data, tmp_path, minutes=0.5, checkpoint_every=0, eval_every=0))
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["budget"]["timed_steps"] == 5 and run["budget"]["seconds_per_step"] == pytest.approx(1.0)
    assert run["budget"]["steps"] == run["finished"]["step"] == 21
    # elapsed_minutes keeps 4 decimals, 0.006 s: half of that either way
    assert 60 * run["finished"]["elapsed_minutes"] == pytest.approx(29.2, abs=0.003)
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records if r["split"] == "eval"] == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 21]
    lrs = [r["lr"] for r in records if r["split"] == "train"]
    peak, n_warm = 1e-3, round(0.06 * 21)
    assert lrs[n_warm:] == sorted(lrs[n_warm:], reverse=True)          # linear decay after the warm-up
    assert lrs[-1] == pytest.approx(peak / (21 - n_warm), rel=1e-9)    # one step from 0: float rounding only


def test_a_budget_run_resumes_its_own_schedule_exactly(data, budget_and_steps_runs, plan_of_six, tmp_path,
                                                       monkeypatch):
    """A crash after the checkpoint of step 3: --resume --minutes takes the step count from the checkpoint
    (it does not measure again) and finishes the same run; another budget, or --steps, is refused."""
    straight, _ = budget_and_steps_runs
    out = tmp_path / "run"
    real_step = loop.Trainer.train_step

    def crash_in_step_5(self):
        if self.step == 4:
            raise KeyboardInterrupt
        return real_step(self)

    monkeypatch.setattr(loop.Trainer, "train_step", crash_in_step_5)
    with pytest.raises(KeyboardInterrupt):
        pretrain(args_for(data, out, minutes=0.5))
    monkeypatch.setattr(loop.Trainer, "train_step", real_step)
    for other in (dict(minutes=0.7), dict(steps=6)):
        with pytest.raises(ValueError, match="was made with (minutes|steps)="):
            pretrain(args_for(data, out, resume=True, **other))

    def no_new_measurement(*args, **kwargs):
        raise AssertionError("a resumed budget run must continue its recorded plan, not measure again")

    monkeypatch.setattr(budget, "plan_budget", no_new_measurement)
    pretrain(args_for(data, out, minutes=0.5, resume=True))
    assert rows_of(out) == rows_of(straight)  # tokens_seen included: it is restored from the checkpoint
    assert json.loads((out / "run.json").read_text())["budget"]["steps"] == 6  # the first process's plan kept


@given(minutes=st.floats(0.5, 60), spent=st.floats(0, 20), step=st.floats(0.01, 5), evaluation=st.floats(0, 10),
       checkpoint=st.floats(0, 5), eval_every=st.integers(0, 50), checkpoint_every=st.integers(0, 500))
def test_plan_steps_fills_the_budget_and_no_more(minutes, spent, step, evaluation, checkpoint, eval_every,
                                                 checkpoint_every):
    def cost(n):  # spent + n steps + the evaluations and checkpoints of n steps, the final ones included
        evals = (n / eval_every if eval_every else 10) + 1
        checkpoints = (n / checkpoint_every if checkpoint_every else 0) + 1
        return spent + n * step + evals * evaluation + checkpoints * checkpoint

    n = budget.plan_steps(minutes, spent, step, evaluation, checkpoint, eval_every, checkpoint_every)
    # floor() of a float quotient: the bound holds to a relative 1e-9 of the budget, not exactly
    assert cost(max(n, 0)) <= 60 * minutes * (1 + 1e-9) or n <= 0
    assert cost(n + 1) > 60 * minutes * (1 - 1e-9)


def test_a_budget_too_small_for_one_step_is_refused(data, tmp_path):
    with pytest.raises(ValueError, match=r"--minutes 0\.0001: the budget leaves no time for a training step"):
        pretrain(args_for(data, tmp_path, minutes=0.0001))


# ---- the recipe flags ----------------------------------------------------------------------------------

def test_every_recipe_setting_is_used_and_recorded(data, tmp_path, monkeypatch):
    """--mask-rate trains (evaluation always masks 15%), --dropout builds the model, --warmup in steps shapes
    the lr, --weight-decay reaches AdamW, and run.json / config.json / trainer_state.json say so."""
    rates = []
    real_mask = pretrain_module.mask_tokens

    def recording_mask(*args, mlm_probability, **kwargs):
        rates.append(mlm_probability)
        return real_mask(*args, mlm_probability=mlm_probability, **kwargs)

    groups = []
    real_groups = loop.parameter_groups
    monkeypatch.setattr(pretrain_module, "mask_tokens", recording_mask)
    monkeypatch.setattr(loop, "parameter_groups", lambda m, wd: groups.append(wd) or real_groups(m, wd))
    args = args_for(data, tmp_path, steps=4, mask_rate=0.4, dropout=0.2, warmup=2, weight_decay=0.05,
                    whole_word=True, eval_every=4, checkpoint_every=4)
    pretrain(args)
    assert set(rates) == {0.4, EVAL_MASK_RATE}
    assert groups == [0.05]
    lrs = [r["lr"] for r in read_metrics(tmp_path / "metrics.jsonl") if r["split"] == "train"]
    assert lrs == pytest.approx([0.5e-3, 1e-3, 1e-3, 0.5e-3])  # 2 warm-up steps, then linear decay over 2
    run = json.loads((tmp_path / "run.json").read_text())
    for name in ("mask_rate", "dropout", "warmup", "weight_decay", "whole_word", "batch_size", "sparse_head", "lr"):
        assert run["args"][name] == getattr(args, name), name
    assert run["train_config"]["warmup_steps"] == 2 and run["train_config"]["weight_decay"] == 0.05
    assert run["eval_mask_rate"] == EVAL_MASK_RATE and run["data"][0]["sha256"]
    model = mm.BertForMaskedLM.from_pretrained(tmp_path)
    assert model.config.hidden_dropout_prob == 0.2
    assert {m.p for m in model.modules() if isinstance(m, mm.nn.Dropout)} == {0.2}
    state = json.loads((tmp_path / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["run"]["mask_rate"] == 0.4 and state["config"]["warmup_steps"] == 2


def test_the_defaults_are_the_recipe_the_docstring_states():
    args = PretrainArgs(corpus=["c.txt"], out="run")
    assert (args.steps, args.minutes, args.mask_rate, args.dropout, args.warmup, args.weight_decay) == \
        (1000, None, 0.15, 0.0, 0.06, 0.01)
    assert args.sparse_head and not args.whole_word
    cfg = train_config(args, 1000)
    assert (cfg.warmup, cfg.weight_decay) == (60, 0.01)


def test_mask_rate_sets_the_share_of_predicted_tokens():
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = mm.BertTokenizer.from_vocab_list(specials + [f"w{i}" for i in range(50)])
    rows = np.random.default_rng(0).integers(5, 55, size=(64, 128))  # (B, T), no special tokens
    for rate in (0.15, 0.4):
        labels = mlm_batch(rows, tok, np.random.default_rng(1), mask_rate=rate)["labels"]
        share, n = (labels != -100).mean(), labels.size
        # 5 standard errors of a Bernoulli(rate) mean over n tokens: fails by chance with probability ~6e-7
        assert abs(share - rate) < 5 * math.sqrt(rate * (1 - rate) / n), (rate, share)


def test_warmup_is_a_fraction_or_steps_and_never_the_whole_run(data, tmp_path):
    assert train_config(args_for(data, tmp_path, warmup=0.5), 6).warmup == 3
    assert train_config(args_for(data, tmp_path, warmup=5), 6).warmup == 5
    with pytest.raises(ValueError, match="--warmup 6 steps is not below --steps 6"):
        train_config(args_for(data, tmp_path, warmup=6), 6)
    with pytest.raises(ValueError, match=r"PretrainArgs\.warmup = 1\.5: must be a fraction"):
        args_for(data, tmp_path, warmup=1.5)
    with pytest.raises(ValueError, match="warmup_steps = 8 is not below steps = 8"):
        loop.TrainConfig(steps=8, warmup_steps=8)


@pytest.mark.parametrize("flag, value", [("--mask-rate", "0"), ("--mask-rate", "1"), ("--dropout", "1"),
                                         ("--dropout", "-0.1"), ("--warmup", "1.5"), ("--warmup", "-1"),
                                         ("--warmup", "nan"), ("--weight-decay", "-0.01"), ("--minutes", "0"),
                                         ("--minutes", "inf")])
def test_a_bad_recipe_flag_is_a_usage_error_naming_it(flag, value, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(["pretrain", "--corpus", "c.txt", "--out", "run", f"{flag}={value}"])
    assert exit_.value.code == 2 and f"argument {flag}: must be" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_steps_and_minutes_are_one_or_the_other(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        main(["pretrain", "--corpus", "c.txt", "--out", "run", "--steps", "5", "--minutes", "1"])
    assert "not allowed with argument" in capsys.readouterr().err
    with pytest.raises(ValueError, match="both given"):
        PretrainArgs(corpus=["c.txt"], out="run", steps=5, minutes=1.0)


# ---- evaluation data is never a corpus -----------------------------------------------------------------

def test_a_glue_tsv_corpus_is_its_sentence_column_only(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("label\tsentence\n1\ta fine film \n0\tdull and long\n")  # the label column first
    assert read_corpus(path) == read_tsv(path)[0] == ["a fine film", "dull and long"]


@pytest.mark.parametrize("where", ["sst2/dev.tsv", "SST2/Dev.tsv", "sst2/test.tsv", "link", "link named dev"])
def test_sst2_dev_by_name_is_refused(data, tmp_path, where):
    if where == "link":
        path = tmp_path / "reviews.txt"
        path.symlink_to(data / "sst2" / "dev.tsv")
    elif where == "link named dev":
        path = tmp_path / "sst2" / "dev.tsv"
        path.parent.mkdir()
        path.symlink_to(data / "corpus.txt")
    else:
        path = tmp_path / where
        path.parent.mkdir(parents=True)
        shutil.copy(data / "sst2" / "dev.tsv", path)
    with pytest.raises(ValueError, match=r"evaluation data, never pretraining text"):
        args_for(data, tmp_path / "run", corpus=[str(data / "corpus.txt"), str(path)])
    assert not (tmp_path / "run").exists()


def test_sst2_dev_under_another_name_is_refused_by_its_bytes(data, tmp_path, monkeypatch):
    """The digest minillm records for SST-2's dev.tsv names it whatever the copy is called."""
    from minillm.data import datasets

    copy = tmp_path / "my_reviews.tsv"
    shutil.copy(data / "sst2" / "dev.tsv", copy)
    digest = datasets.sha256_file(copy)
    sst2 = datasets.DATASETS["sst2"]
    members = tuple(dataclasses.replace(m, sha256=digest) if m.dest == "sst2/dev.tsv" else m for m in sst2.members)
    monkeypatch.setitem(datasets.DATASETS, "sst2", dataclasses.replace(sst2, members=members))
    with pytest.raises(ValueError, match=r"has the bytes of sst2/dev\.tsv"):
        pretrain(args_for(data, tmp_path / "run", corpus=[str(copy)]))
    assert not (tmp_path / "run").exists()


def test_the_real_sst2_dev_file_is_refused_under_another_name(tmp_path):
    data = Path(os.environ.get("MINILLM_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
    real = data / "sst2" / "dev.tsv"
    if not real.is_file():
        pytest.skip(f"no SST-2 dev copy at {real} (set MINILLM_DATA): the recorded digest is of the real file")
    copy = tmp_path / "reviews.tsv"
    shutil.copy(real, copy)
    with pytest.raises(ValueError, match=r"has the bytes of sst2/dev\.tsv"):
        pretrain(PretrainArgs(corpus=[str(copy)], out=str(tmp_path / "run"), preset="tiny", steps=1))


# ---- the fine-tuning recipe --------------------------------------------------------------------------

def test_finetune_recipe_flags_are_used_and_recorded(data, budget_and_steps_runs, tmp_path, capsys):
    _, pretrained = budget_and_steps_runs  # pretrained with dropout 0: fine-tuning sets its own
    out = tmp_path / "ft"
    assert main(["finetune", "--model", str(pretrained), "--train", str(data / "sst2" / "train.tsv"),
                 "--eval", str(data / "sst2" / "dev.tsv"), "--out", str(out), "--max-steps", "4",
                 "--batch-size", "16", "--warmup", "2", "--dropout", "0.3", "--weight-decay", "0"]) == 0
    state = json.loads(next(out.glob("checkpoint-*/trainer_state.json")).read_text())
    assert state["config"]["warmup_steps"] == 2 and state["config"]["weight_decay"] == 0.0
    assert (state["run"]["dropout"], state["run"]["warmup"], state["run"]["weight_decay"]) == (0.3, 2, 0.0)
    config = json.loads((out / "config.json").read_text())
    assert config["hidden_dropout_prob"] == 0.3 and config.get("classifier_dropout") is None
    with pytest.raises(SystemExit):
        main(["finetune", "--model", "m", "--train", "t", "--eval", "e", "--out", str(tmp_path / "x"),
              "--dropout=1"])
    assert "argument --dropout: must be" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--warmup 4 steps is not below the 4 steps"):
        finetune(FinetuneArgs(model=str(pretrained), train=str(data / "sst2" / "train.tsv"),
                              eval=str(data / "sst2" / "dev.tsv"), out=str(tmp_path / "y"), max_steps=4, warmup=4))


# ---- the study driver ----------------------------------------------------------------------------------

@pytest.fixture
def study_module():
    sys.path.insert(0, str(REPO))
    try:
        from benchmarks import pretraining_study
    finally:
        sys.path.remove(str(REPO))
    return pretraining_study


def test_study_driver_end_to_end(data, tmp_path, study_module, capsys):
    """One tiny configuration, one seed: pretraining in its own process, fine-tuning of the pretrained model
    and of random weights, the results files (starting with the command that regenerates them) and the
    curves; a second call reuses every record."""
    configs = tmp_path / "configs.json"
    configs.write_text(json.dumps([{"name": "tiny", "corpus": ["corpus.txt", "sst2/train.tsv"], "flags": {
        "preset": "tiny", "seq-len": 32, "batch-size": 8, "vocab-size": 120, "lr": 1e-3, "eval-every": 5}}]))
    argv = ["--configs", str(configs), "--data", str(data), "--minutes", "0.05", "--seeds", "0",
            "--out", str(tmp_path / "runs"), "--results", str(tmp_path / "results"), "--finetune-max-steps", "4",
            "--finetune-batch-size", "16"]
    assert study_module.main(argv) == 0
    md = (tmp_path / "results" / "pretraining.md").read_text()
    first = md.splitlines()[0]
    m = re.fullmatch(r"Regenerate: `(python benchmarks/pretraining_study\.py [^`]*)`", first)
    assert m and str(data) not in first and str(tmp_path / "results") not in first
    result = json.loads((tmp_path / "results" / "pretraining.json").read_text())
    assert result["command"] == m.group(1)
    (c,) = result["configs"]
    assert set(c["finetuned"]) == set(c["from_scratch"]) == {"0"}
    assert c["gain_mean"] == pytest.approx(c["finetuned"]["0"] - c["from_scratch"]["0"])
    assert c["pretrain"]["steps"] >= 1 and c["pretrain"]["curve"][0]["tokens_seen"] == 0
    assert all(r["tokens_seen"] is not None and r["elapsed_minutes"] is not None for r in c["pretrain"]["curve"])
    assert (tmp_path / "results" / "pretraining.png").stat().st_size > 0
    records = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "runs" / "records").glob("*.json")}
    assert len(records) == 3 and all(r["rc"] == 0 for r in records.values())
    pre = records["tiny-pretrain"]["command"]
    assert "--minutes" in pre and not any(w.endswith("dev.tsv") for w in pre)
    for r in records.values():  # dev is only ever the fine-tuning's --eval
        cmd = r["command"]
        assert [i for i, w in enumerate(cmd) if w.endswith("dev.tsv")] in ([], [cmd.index("--eval") + 1]
                                                                           if "--eval" in cmd else [])
    capsys.readouterr()
    assert study_module.main(argv) == 0
    assert capsys.readouterr().out.count("done before, skipped") == 3


def test_study_configurations_are_checked(study_module, tmp_path):
    for bad, why in [([{"name": "a", "corpus": ["x"], "flags": {"minutes": 3}}], "sets"),
                     ([{"name": "a b", "corpus": ["x"]}], "unique 'name'"),
                     ([{"name": "a", "corpus": ["x"]}, {"name": "a", "corpus": ["x"]}], "unique 'name'"),
                     ([{"name": "a"}], "'corpus' must be")]:
        path = tmp_path / "c.json"
        path.write_text(json.dumps(bad))
        with pytest.raises(SystemExit, match=why):
            study_module.load_configs(str(path))
    assert [c["name"] for c in study_module.load_configs(None)] == ["recipe", "mask-0.25", "dropout-0.1"]


def test_study_reports_when_its_first_command_began(study_module):
    """A study continued or re-rendered from its records reports the start of its earliest command and the
    commands' own hours, not the moment of the last invocation."""
    records = [{"finished": 100.0, "wall_s": 30.0}, {"finished": 200.0, "wall_s": 50.0}]
    assert study_module.first_start(records, default=999.0) == 70.0
    assert study_module.first_start([], default=999.0) == 999.0

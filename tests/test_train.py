"""The training paths end to end on small synthetic data: pretraining, exact resume, crash safety,
fine-tuning, zero-shot, the CLI, and the errors bad input gets before any training starts."""
import json
import re
from types import SimpleNamespace

import numpy as np
import pytest
from synthetic_text import sentence

import minillm as mm
from minillm.cli import main
from minillm.train import loop
from minillm.train.metrics import read_metrics
from minillm.train.pretrain import PretrainArgs, pretrain



@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A plain-text corpus and SST-2-shaped TSVs, all generated."""
    d = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    lines = [" ".join(sentence(rng, int(rng.integers(2))) for _ in range(6)) for _ in range(120)]
    (d / "corpus.txt").write_text("\n".join(lines) + "\n")
    for name, n in (("train", 160), ("dev", 40)):
        labels = rng.integers(0, 2, n)
        rows = "".join(f"{sentence(rng, int(y))}\t{y}\n" for y in labels)
        (d / f"{name}.tsv").write_text("sentence\tlabel\n" + rows)
    return d


def args_for(data, out, **kw):
    base = dict(corpus=[str(data / "corpus.txt")], out=str(out), preset="tiny", steps=6, batch_size=8,
                seq_len=32, vocab_size=120, checkpoint_every=3, eval_every=3, lr=1e-3)
    base.update(kw)
    return PretrainArgs(**base)


@pytest.fixture(scope="module")
def pretrained(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("pre")
    pretrain(args_for(corpus, out))
    return out


def test_pretrain_writes_metrics_curve_and_hf_checkpoint(pretrained):
    records = read_metrics(pretrained / "metrics.jsonl")
    train = [r for r in records if r["split"] == "train"]
    evals = [r for r in records if r["split"] == "eval"]
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in evals] == [3, 6]  # periodic, and once more at the end
    assert all({"loss", "mlm_accuracy", "perplexity", "tokens_seen", "elapsed_minutes"} <= set(r) for r in evals)
    assert [r["tokens_seen"] for r in evals] == [3 * 8 * 32, 6 * 8 * 32]  # steps x B x T input tokens
    for name in ("config.json", "model.safetensors", "vocab.txt", "loss.png", "latest.json"):
        assert (pretrained / name).is_file(), name
    model = mm.BertForMaskedLM.from_pretrained(pretrained)
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 128


def test_pretraining_learns(corpus, tmp_path):
    """30 steps on a 40-word language: the held-out MLM loss must fall well below its start (log V)."""
    pretrain(args_for(corpus, tmp_path, steps=30, checkpoint_every=0, eval_every=30, lr=2e-3))
    evals = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["split"] == "eval"]
    first_train = read_metrics(tmp_path / "metrics.jsonl")[0]["loss"]
    assert evals[-1]["loss"] < first_train - 1.0


def test_resume_continues_exactly(corpus, tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    pretrain(args_for(corpus, straight))
    interrupted = tmp_path / "interrupted"
    real_step = loop.Trainer.train_step

    def crash_after_3(self):
        if self.step == 3:
            raise KeyboardInterrupt
        return real_step(self)

    monkeypatch.setattr(loop.Trainer, "train_step", crash_after_3)
    with pytest.raises(KeyboardInterrupt):
        pretrain(args_for(corpus, interrupted))
    monkeypatch.setattr(loop.Trainer, "train_step", real_step)
    pretrain(args_for(corpus, interrupted, resume=True))
    a = [(r["step"], r["split"], r["loss"], r["tokens_seen"]) for r in read_metrics(straight / "metrics.jsonl")]
    b = [(r["step"], r["split"], r["loss"], r["tokens_seen"]) for r in read_metrics(interrupted / "metrics.jsonl")]
    assert a == b  # bit-identical losses: every random draw is a function of (seed, step); tokens carry over


def test_crash_while_writing_a_checkpoint_keeps_the_last_good_one(corpus, tmp_path, monkeypatch):
    """The disk fills up halfway through writing checkpoint-6: checkpoint-3 and latest.json stay as they were,
    no half-written checkpoint-6 is left, and --resume finishes the run."""
    out = tmp_path / "run"
    real_write = loop.write_safetensors

    def disk_full_at_step_6(path, tensors, metadata=None):
        if "checkpoint-6" in str(path):
            path.write_bytes(b"half")
            raise OSError("disk full")
        return real_write(path, tensors, metadata)

    monkeypatch.setattr(loop, "write_safetensors", disk_full_at_step_6)
    with pytest.raises(OSError):
        pretrain(args_for(corpus, out))
    assert json.loads((out / "latest.json").read_text())["checkpoint"] == "checkpoint-3"
    assert sorted(p.name for p in out.iterdir() if "checkpoint-" in p.name) == ["checkpoint-3"]
    # a process killed mid-write (no clean-up ran) leaves its temporary folder; the resumed run removes it
    run_id = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())["run_id"]
    (out / f".checkpoint-6.tmp-{run_id}").mkdir()
    monkeypatch.setattr(loop, "write_safetensors", real_write)
    pretrain(args_for(corpus, out, resume=True))
    assert json.loads((out / "latest.json").read_text())["step"] == 6
    assert sorted(p.name for p in out.iterdir() if "checkpoint-" in p.name) == ["checkpoint-6"]


def test_resume_after_a_crash_between_checkpoints(corpus, pretrained, tmp_path, monkeypatch):
    """Checkpoints at steps 3 and 6; the run dies in step 5 (get_batch raises). --resume restarts from
    checkpoint-3 and reproduces the uninterrupted run's losses and gradient norms bit for bit, and
    metrics.jsonl ends with exactly one train row per step (step 4's row of the dead run is dropped)."""
    out = tmp_path / "run"
    real_init = loop.Trainer.__init__

    def init_with_dying_get_batch(self, model, config, out_dir, get_batch, *args, **kwargs):
        def get_batch_dies_in_step_5(step, micro, rng):
            if step == 4:  # 0-based: the fifth optimizer step
                raise RuntimeError("the machine went away")
            return get_batch(step, micro, rng)

        real_init(self, model, config, out_dir, get_batch_dies_in_step_5, *args, **kwargs)

    monkeypatch.setattr(loop.Trainer, "__init__", init_with_dying_get_batch)
    with pytest.raises(RuntimeError, match="went away"):
        pretrain(args_for(corpus, out))
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl") if r["split"] == "train"] == [1, 2, 3, 4]
    monkeypatch.setattr(loop.Trainer, "__init__", real_init)
    pretrain(args_for(corpus, out, resume=True))

    def rows(folder):
        return [(r["step"], r["split"], r["loss"], r.get("grad_norm")) for r in read_metrics(folder / "metrics.jsonl")]

    assert rows(out) == rows(pretrained)
    assert [r[0] for r in rows(out) if r[1] == "train"] == [1, 2, 3, 4, 5, 6]


def test_bad_pretraining_input_fails_before_training(corpus, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty"):
        pretrain(args_for(corpus, tmp_path / "a", corpus=[str(empty)]))
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(ValueError, match="UTF-8"):
        pretrain(args_for(corpus, tmp_path / "b", corpus=[str(latin)]))
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("hello\nworld\n")
    with pytest.raises(ValueError, match=r"\[PAD\]|\[CLS\]|special"):
        pretrain(args_for(corpus, tmp_path / "c", vocab=str(vocab)))
    with pytest.raises(ValueError, match="position"):
        pretrain(args_for(corpus, tmp_path / "d", seq_len=1024))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        pretrain(args_for(corpus, tmp_path / "e", resume=True))


def test_resume_from_incompatible_checkpoint_is_refused(corpus, pretrained, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(pretrained, out)
    with pytest.raises(ValueError, match="does not fit|was made with"):
        pretrain(args_for(corpus, out, preset="mini", resume=True))


def test_finetune_evaluate_predict_and_zero_shot_via_cli(corpus, pretrained, tmp_path, capsys):
    out = tmp_path / "ft"
    assert main(["finetune", "--model", str(pretrained), "--train", str(corpus / "train.tsv"),
                 "--eval", str(corpus / "dev.tsv"), "--out", str(out), "--epochs", "4", "--lr", "2e-3",
                 "--batch-size", "16"]) == 0
    records = read_metrics(out / "metrics.jsonl")
    assert any(r["split"] == "eval" and "accuracy" in r for r in records)
    assert (out / "loss.png").is_file() and (out / "model.safetensors").is_file()
    capsys.readouterr()
    assert main(["evaluate", "--model", str(out), "--data", str(corpus / "dev.tsv")]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(last) == {"accuracy", "n"} and last["n"] == 40
    # the sentiment words decide the label: four epochs of a tiny model already beat chance clearly
    assert last["accuracy"] >= 0.7
    assert main(["predict", "--model", str(out), "a great lovely film", "a dull boring film"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all(line.split("\t")[0] in ("negative", "positive") for line in lines)
    assert main(["evaluate", "--model", str(pretrained), "--data", str(corpus / "dev.tsv"), "--zero-shot",
                 "--label-words", "bad,awful;good,great"]) == 0
    zero = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert zero["n"] == 40


def test_cli_errors_name_the_problem(corpus, pretrained, tmp_path, capsys):
    assert main(["evaluate", "--model", str(pretrained), "--data", str(corpus / "dev.tsv")]) == 2
    assert "no classification head" in capsys.readouterr().err
    bad = tmp_path / "bad.tsv"
    bad.write_text("sentence\tlabel\ngood film\t1\nbad film\t7\n")
    assert main(["finetune", "--model", str(pretrained), "--train", str(bad), "--eval", str(bad),
                 "--out", str(tmp_path / "x")]) == 2
    assert "bad.tsv:3" in capsys.readouterr().err
    assert main(["pretrain", "--preset", "tiny", "--corpus", str(tmp_path / "missing.txt"), "--out",
                 str(tmp_path / "y")]) == 2
    assert "missing.txt" in capsys.readouterr().err


def test_sparse_mlm_head_gives_the_dense_loss():
    mm.manual_seed(3)
    config = mm.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = mm.BertForMaskedLM(config).eval()
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 50, (3, 9))
    labels = np.where(rng.random(ids.shape) < 0.3, ids, -100)
    dense = model(input_ids=ids, labels=labels).loss.item()
    model.sparse_head = True
    sparse = model(input_ids=ids, labels=labels).loss.item()
    # the same rows through the same kernels, only fewer of them: float32 rounding only
    assert abs(dense - sparse) <= 1e-6 * abs(dense)


# -- non-finite steps ------------------------------------------------------------------------------------
class Toy(mm.nn.Module):
    """loss = mean((x * w - y)^2) over 3 numbers: a model small enough to steer every step of a Trainer."""

    def __init__(self):
        self.weight = mm.nn.Parameter(np.ones(3, np.float32))

    def forward(self, x, y):
        err = mm.Tensor(x) * self.weight - mm.Tensor(y)
        return SimpleNamespace(loss=(err * err).mean())


def toy_trainer(out, bad_steps=(), **config):
    """A Trainer of Toy whose batch is NaN in the (0-based) steps listed in bad_steps."""
    from minillm.models.checkpoint import write_safetensors

    model = Toy()

    def get_batch(step, micro, rng):
        x = rng.standard_normal(3).astype(np.float32)
        return {"x": np.full(3, np.nan, np.float32) if step in bad_steps else x, "y": 2 * x}

    config = {"steps": 8, "lr": 0.1, "warmup_fraction": 0.0, **config}
    return loop.Trainer(model, loop.TrainConfig(**config), out, get_batch, evaluate=lambda m: {"loss": 0.0},
                        save_model=lambda path: write_safetensors(path / "model.safetensors", model.state_dict()),
                        count_tokens=lambda batch: 3, desc="toy")


def all_saved_weights_finite(out) -> bool:
    from minillm.models.checkpoint import read_safetensors

    files = list(out.rglob("*.safetensors"))
    assert files
    return all(np.isfinite(a).all() for f in files for a in read_safetensors(f).values())


def test_a_nan_gradient_skips_the_update_and_the_run_goes_on(corpus, tmp_path, monkeypatch):
    """Step 3's gradient turns NaN (its loss is finite): the update is skipped and said so in metrics.jsonl;
    the other five steps update, every weight stays finite, and the checkpoints are clean."""
    real_clip = loop.clip_grad_norm
    calls = []

    def nan_gradient_in_step_3(parameters, max_norm):
        parameters = list(parameters)
        calls.append(1)
        if len(calls) == 3:
            parameters[0].grad = np.full_like(parameters[0].grad, np.nan)
        return real_clip(parameters, max_norm)

    monkeypatch.setattr(loop, "clip_grad_norm", nan_gradient_in_step_3)
    out = tmp_path / "run"
    pretrain(args_for(corpus, out))
    train = [r for r in read_metrics(out / "metrics.jsonl") if r["split"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5, 6]
    assert [r.get("skipped", False) for r in train] == [False, False, True, False, False, False]
    assert train[2]["grad_norm"] is None and np.isfinite(train[2]["loss"])  # NaN is written as null
    assert all(np.isfinite(r["loss"]) for r in train)
    state = json.loads((out / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["optimizer"]["step"] == 5  # AdamW made 5 updates in 6 steps (bias correction counts those)
    assert all_saved_weights_finite(out)


def test_one_bad_batch_is_skipped_and_a_diverged_run_stops(tmp_path, capsys):
    """A NaN loss in one step is skipped like a NaN gradient; three in a row (max_skipped_steps=3) stop the
    run with a FloatingPointError naming the step and --lr, and nothing non-finite is ever written."""
    toy_trainer(tmp_path / "one", bad_steps={2}, max_skipped_steps=3).fit()
    train = [r for r in read_metrics(tmp_path / "one" / "metrics.jsonl") if r["split"] == "train"]
    assert [r["step"] for r in train if r.get("skipped")] == [3] and train[2]["loss"] is None
    assert "step 3: loss is nan; update skipped" in capsys.readouterr().out
    assert all_saved_weights_finite(tmp_path / "one")

    out = tmp_path / "diverged"
    trainer = toy_trainer(out, bad_steps={4, 5, 6, 7}, max_skipped_steps=3, checkpoint_every=2)
    with pytest.raises(FloatingPointError, match=r"step 7: 3 updates in a row skipped.*--lr"):
        trainer.fit()
    assert json.loads((out / "latest.json").read_text())["checkpoint"] == "checkpoint-6"
    assert not (out / "model.safetensors").exists()  # the final model is written only by a finished run
    assert all_saved_weights_finite(out)


def test_non_finite_weights_are_never_written(tmp_path):
    """The one writer of weights refuses NaN / inf, for a model (save_pretrained) and for a training
    checkpoint alike, naming the tensor and leaving no file behind."""
    config = mm.BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=16)
    model = mm.BertForMaskedLM(config)
    model.bert.embeddings.word_embeddings.weight.data[3, 1] = np.inf
    with pytest.raises(FloatingPointError, match=r"bert.embeddings.word_embeddings.weight \(1 of 240\)"):
        model.save_pretrained(tmp_path / "model")
    assert not (tmp_path / "model" / "model.safetensors").exists()

    trainer = toy_trainer(tmp_path / "run", steps=2, checkpoint_every=1)
    trainer.fit()
    trainer.model.weight.data[0] = np.nan
    trainer.step = 3
    with pytest.raises(FloatingPointError, match="weight"):
        trainer.save_checkpoint()
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if "checkpoint-" in p.name) == ["checkpoint-2"]
    assert json.loads((tmp_path / "run" / "latest.json").read_text())["step"] == 2


# -- resume: the same run, from a sound checkpoint ----------------------------------------------------------
@pytest.fixture()
def run_copy(pretrained, tmp_path):
    """A copy of the finished 6-step pretraining run, to break or resume."""
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(pretrained, out)
    return out


@pytest.mark.parametrize("latest, problem", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", 'no "checkpoint" entry'),
    ('{"step": 6}', 'no "checkpoint" entry'),
    ('{"checkpoint": 6}', "not the name of a checkpoint-<step> folder"),
    ('{"checkpoint": "../checkpoint-6"}', "not the name of a checkpoint-<step> folder"),
    ('{"checkpoint": "/tmp/checkpoint-6"}', "not the name of a checkpoint-<step> folder"),
    ('{"checkpoint": "checkpoint-9", "step": 9}', "no such folder"),
    ('{"checkpoint": "checkpoint-6", "step": 3}', '"step" is 3'),
])
def test_a_broken_latest_json_gets_a_clear_error(corpus, run_copy, latest, problem):
    (run_copy / "latest.json").write_text(latest)
    with pytest.raises(ValueError, match=r"latest\.json: .*" + re.escape(problem)):
        pretrain(args_for(corpus, run_copy, resume=True))


def test_a_broken_trainer_state_gets_a_clear_error(corpus, run_copy):
    state = run_copy / "checkpoint-6" / "trainer_state.json"
    state.write_text('{"step": 6}')
    with pytest.raises(ValueError, match=r"trainer_state\.json: no 'optimizer', 'config' entry"):
        pretrain(args_for(corpus, run_copy, resume=True))
    state.unlink()
    with pytest.raises(ValueError, match=r"trainer_state\.json: missing"):
        pretrain(args_for(corpus, run_copy, resume=True))


@pytest.mark.parametrize("change, field", [
    ({"batch_size": 4}, "batch_size"),
    ({"lr": 2e-3}, "lr"),
    ({"seq_len": 16}, "seq_len"),
    ({"whole_word": True}, "whole_word"),
    ({"vocab_size": 100}, "vocab_size"),
    ({"vocab": "VOCAB"}, "vocab"),
    ({"corpus": "OTHER"}, "corpus"),
])
def test_resume_with_other_settings_is_refused(corpus, run_copy, tmp_path, change, field):
    if change.get("vocab") == "VOCAB":
        change = {"vocab": str(run_copy / "vocab.txt")}
    if change.get("corpus") == "OTHER":
        other = tmp_path / "other.txt"
        other.write_text((corpus / "corpus.txt").read_text() + "one more line of text\n")
        change = {"corpus": [str(other)]}
    with pytest.raises(ValueError, match=rf"was made with {field}=.*this run asks for {field}="):
        pretrain(args_for(corpus, run_copy, resume=True, **change))


def test_resume_accepts_a_moved_corpus_and_a_new_checkpoint_interval(corpus, run_copy, tmp_path):
    """The corpus counts by its bytes, not its path; checkpoint_every may change. The resumed run is finished,
    so it only evaluates once more."""
    import shutil

    moved = tmp_path / "moved.txt"
    shutil.copy(corpus / "corpus.txt", moved)
    result = pretrain(args_for(corpus, run_copy, resume=True, corpus=[str(moved)], checkpoint_every=2))
    assert set(result) >= {"loss", "mlm_accuracy"}


@pytest.fixture(scope="module")
def finetuned(corpus, pretrained, tmp_path_factory):
    from minillm.train.finetune import FinetuneArgs, finetune

    out = tmp_path_factory.mktemp("ft")
    args = dict(model=str(pretrained), train=str(corpus / "train.tsv"), eval=str(corpus / "dev.tsv"), out=str(out),
                max_steps=2, batch_size=16, lr=1e-3)
    finetune(FinetuneArgs(**args))
    return args


@pytest.mark.parametrize("change, field", [
    ({"batch_size": 8}, "batch_size"),
    ({"lr": 5e-4}, "lr"),
    ({"max_length": 64}, "max_length"),
    ({"train": "OTHER"}, "train"),
])
def test_finetune_resume_with_other_settings_is_refused(corpus, finetuned, tmp_path, change, field):
    from minillm.train.finetune import FinetuneArgs, finetune

    if change.get("train") == "OTHER":
        other = tmp_path / "train.tsv"
        other.write_text((corpus / "train.tsv").read_text() + "one more good film\t1\n")
        change = {"train": str(other)}
    with pytest.raises(ValueError, match=rf"was made with {field}=.*this run asks for {field}="):
        finetune(FinetuneArgs(**{**finetuned, "resume": True, **change}))


# -- whose checkpoint folders ------------------------------------------------------------------------------
def test_checkpoint_folders_minillm_did_not_write_survive(corpus, tmp_path):
    out = tmp_path / "run"
    (out / "checkpoint-7").mkdir(parents=True)
    (out / "checkpoint-7" / "notes.txt").write_text("mine")
    pretrain(args_for(corpus, out))
    assert (out / "checkpoint-7" / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-6", "checkpoint-7"]
    # a second, fresh run into the same folder replaces the first run's checkpoint-6 in its way
    pretrain(args_for(corpus, out))
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-6", "checkpoint-7"]
    # a folder in the way that minillm did not write stops the run, untouched
    (out / "checkpoint-3").mkdir()
    (out / "checkpoint-3" / "notes.txt").write_text("also mine")
    with pytest.raises(ValueError, match="checkpoint-3 is in the way .* minillm did not write it"):
        pretrain(args_for(corpus, out))
    assert (out / "checkpoint-3" / "notes.txt").read_text() == "also mine"

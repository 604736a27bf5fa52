"""The training paths end to end on small synthetic data: pretraining, exact resume, crash safety,
fine-tuning, zero-shot, the CLI, and the errors bad input gets before any training starts."""
import json

import numpy as np
import pytest

import minillm as mm
from minillm.cli import main
from minillm.train import loop
from minillm.train.metrics import read_metrics
from minillm.train.pretrain import PretrainArgs, pretrain

WORDS = {0: "bad awful dull boring terrible weak", 1: "good great fine lovely wonderful strong"}
FILLER = "the movie film story plot was is a an and of it this that very quite rather".split()


def sentence(rng, label):
    pool = WORDS[label].split()
    words = list(rng.choice(FILLER, 5)) + [rng.choice(pool)] + list(rng.choice(FILLER, 3)) + [rng.choice(pool)]
    return " ".join(words)


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
    assert all({"loss", "mlm_accuracy", "perplexity"} <= set(r) for r in evals)
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
    a = [(r["step"], r["split"], r["loss"]) for r in read_metrics(straight / "metrics.jsonl")]
    b = [(r["step"], r["split"], r["loss"]) for r in read_metrics(interrupted / "metrics.jsonl")]
    assert a == b  # bit-identical losses: every random draw is a function of (seed, step)


def test_crash_while_writing_a_checkpoint_keeps_the_last_good_one(corpus, tmp_path, monkeypatch):
    out = tmp_path / "run"
    real_save = loop.Trainer.save_checkpoint

    def failing_save(self):
        if self.step == 6:
            (self.out_dir / f"checkpoint-{self.step}").mkdir()
            (self.out_dir / f"checkpoint-{self.step}" / "model.safetensors").write_bytes(b"half")
            raise OSError("disk full")
        return real_save(self)

    monkeypatch.setattr(loop.Trainer, "save_checkpoint", failing_save)
    with pytest.raises(OSError):
        pretrain(args_for(corpus, out))
    assert json.loads((out / "latest.json").read_text())["checkpoint"] == "checkpoint-3"
    monkeypatch.setattr(loop.Trainer, "save_checkpoint", real_save)
    pretrain(args_for(corpus, out, resume=True))
    assert json.loads((out / "latest.json").read_text())["step"] == 6


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

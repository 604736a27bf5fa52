"""Fine-tuning, evaluation and zero-shot on a tiny random BERT: which data chooses the checkpoint and which
scores it, the number of labels a checkpoint carries, and the cloze scores checked against a computation
written out here (the MLM head's logits at [MASK] through the model's plain forward, softmax in NumPy)."""
import json

import numpy as np
import pytest

import minillm as mm
from minillm.cli import main
from minillm.train import loop
from minillm.train.finetune import (FinetuneArgs, encode_cloze, evaluate_path, finetune, predict,
                                    validation_split, zero_shot_scores, sentence_validation_split)
from minillm.train.metrics import read_metrics

WORDS = ["bad", "awful", "dull", "good", "great", "fine", "okay", "so", "the", "film", "plot", "was", "it", "a",
         "very", "and", ".", ","]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
LABEL_WORDS = (("bad", "awful"), ("good", "great"))
SENTIMENT = {0: ["bad", "awful", "dull"], 1: ["okay", "so", "fine"], 2: ["good", "great", "fine"]}
FILLER = ["the", "film", "plot", "was", "very", "and", "a"]


@pytest.fixture(scope="module")
def tok():
    return mm.BertTokenizer.from_vocab_list(VOCAB)


@pytest.fixture(scope="module")
def mlm(tok):
    """A random MLM with large initial weights, so that its label-word probabilities differ visibly."""
    mm.manual_seed(5)
    config = mm.BertConfig(vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=32, max_position_embeddings=64, initializer_range=0.4,
                           hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return mm.BertForMaskedLM(config).eval()


@pytest.fixture(scope="module")
def checkpoint(mlm, tok, tmp_path_factory):
    path = tmp_path_factory.mktemp("mlm")
    mlm.save_pretrained(path, tokenizer=tok)
    return path


def write_tsv(path, n, num_labels, seed):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        y = int(rng.integers(num_labels))
        words = list(rng.choice(FILLER, 3)) + [rng.choice(SENTIMENT[y if num_labels == 3 else 2 * y])]
        rows.append(f"{' '.join(words)} {i % 7 * 'very '}.\t{y}\n")  # "very" repeats: sentences mostly distinct
    path.write_text("sentence\tlabel\n" + "".join(rows))
    return path


# ---- zero-shot --------------------------------------------------------------------------------------

def cloze_oracle(model, tok, sentence, prompt, label_words):
    """Label scores for one sentence, computed directly: tokenize the whole prompt text, run the model's
    dense forward (logits at every position), take the [MASK] row, softmax in float64, sum label words."""
    enc = tok(prompt.replace("{sentence}", sentence), return_tensors="np")
    ids = enc["input_ids"][0]
    assert list(ids).count(tok.mask_token_id) == 1
    logits = model(input_ids=enc["input_ids"]).logits.numpy()[0, list(ids).index(tok.mask_token_id)]  # (V,)
    z = logits.astype(np.float64) - logits.max()
    p = np.exp(z) / np.exp(z).sum()
    scores = np.array([sum(p[tok.vocab[w]] for w in words) for words in label_words])
    return scores / scores.sum()


def calibrated_oracle(model, tok, sentence, prompt, label_words):
    s = cloze_oracle(model, tok, sentence, prompt, label_words) / cloze_oracle(model, tok, "", prompt, label_words)
    return s / s.sum()


SENTENCES = ["the film was good", "a very dull plot", "", "great great great . and the plot was awful , so"]


@pytest.mark.parametrize("prompt", ["{sentence} it was [MASK] .", "[MASK] : {sentence} ."])
def test_zero_shot_scores_match_an_independent_computation(mlm, tok, prompt):
    raw = zero_shot_scores(mlm, tok, SENTENCES, prompt, LABEL_WORDS, calibrate=False)
    calibrated = zero_shot_scores(mlm, tok, SENTENCES, prompt, LABEL_WORDS)
    want_raw = np.stack([cloze_oracle(mlm, tok, s, prompt, LABEL_WORDS) for s in SENTENCES])
    want_cal = np.stack([calibrated_oracle(mlm, tok, s, prompt, LABEL_WORDS) for s in SENTENCES])
    assert np.ptp(want_raw[:, 0]) > 1e-3  # the check can fail: the sentences' scores differ
    # the same float32 weights; padded batches and the mask-row-only head vs one unpadded row through the
    # dense head change only the summation order (measured relative differences up to 1.4e-6)
    np.testing.assert_allclose(raw, want_raw, rtol=1e-5)
    np.testing.assert_allclose(calibrated, want_cal, rtol=1e-5)


def test_zero_shot_cuts_a_long_sentence_never_the_mask(mlm, tok):
    prompt, max_length = "{sentence} it was [MASK] .", 24
    long = " ".join(["the", "plot", "was", "great", "and", "very", "dull"] * 10)  # 70 one-token words
    rows, positions = encode_cloze(tok, [long, "good"], prompt, max_length)
    assert len(rows[0]) == max_length and rows[0][positions[0]] == tok.mask_token_id
    assert rows[1][positions[1]] == tok.mask_token_id
    scores = zero_shot_scores(mlm, tok, [long, "good"], prompt, LABEL_WORDS, max_length=max_length)
    assert np.isfinite(scores).all()
    room = max_length - 2 - len(tok.tokenize(prompt.replace("{sentence}", "")))
    cut = " ".join(long.split()[:room])
    # as in the test above: summation order only
    np.testing.assert_allclose(scores[0], calibrated_oracle(mlm, tok, cut, prompt, LABEL_WORDS), rtol=1e-5)


def test_search_label_words_ranks_words_by_calibrated_log_ratio_between_classes(tok, monkeypatch):
    from minillm.train import finetune as ft

    V = len(VOCAB)
    good, bad, rare, sub = (VOCAB.index(w) for w in ("good", "bad", "great", "[MASK]"))
    prior = np.full(V, 1.0 / V)

    def fake(model, tok, sentences, prompt, *args):   # the [MASK] distribution: a designed one per sentence
        if sentences == [""]:
            yield 0, prior[None]
            return
        rows = []
        for s in sentences:
            p = prior.copy()
            p[good if s == "pos" else bad] *= 4       # each class raises its own word
            p[rare] = 1e-9 if s == "pos" else 1e-12  # a huge log-ratio, but never predicted: must not compete
            p[sub] *= 8 if s == "pos" else 1          # not a word (special token): must not compete
            rows.append(p / p.sum())
        for start in range(0, len(rows), 3):        # in batches, as the real one
            yield start, np.array(rows[start:start + 3])

    monkeypatch.setattr(ft, "mask_probabilities", fake)
    sentences = ["pos", "neg"] * 5
    found = ft.search_label_words(None, tok, sentences, [1, 0] * 5, k_values=(1, 2))
    assert found[1] == (("bad",), ("good",))
    assert found[2][0][0] == "bad" and found[2][1][0] == "good"
    assert "great" not in found[2][0] + found[2][1] and "[MASK]" not in found[2][0] + found[2][1]


def test_cloze_prompt_errors(tok):
    with pytest.raises(ValueError, match="once"):
        encode_cloze(tok, ["a"], "{sentence} [MASK] [MASK]")
    with pytest.raises(ValueError, match="no room"):
        encode_cloze(tok, ["a"], "{sentence} it was very very very [MASK] .", max_length=8)


# ---- validation split and the final evaluation --------------------------------------------------------

def test_validation_split_is_disjoint_seeded_and_capped():
    train, val = validation_split(1000, 0.05, seed=3)
    assert len(val) == 50 and len(train) == 950 and not set(train) & set(val)
    assert sorted([*train, *val]) == list(range(1000))
    again, _ = validation_split(1000, 0.05, seed=3)
    other, _ = validation_split(1000, 0.05, seed=4)
    assert (again == train).all() and not (other == train).all()
    assert len(validation_split(67349, 0.05, seed=0)[1]) == 1000
    with pytest.raises(ValueError, match="validation-fraction"):
        validation_split(100, 0.0, seed=0)


def test_sentence_validation_split_trains_on_no_part_of_a_validation_sentence():
    # SST-2's layout: each sentence and the phrases of its parse tree are rows of their own
    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(50)]
    sentences = []
    for _ in range(40):
        words = list(rng.choice(vocab, size=int(rng.integers(8, 15))))
        sentences.append(" ".join(words))
        sentences += [" ".join(words[a:a + 3]) for a in range(0, len(words) - 3, 2)]  # its phrases
    sentences.append("  ".join(sentences[0].split()[:2]) + " ")       # a phrase spelt with other spaces
    train, val = sentence_validation_split(sentences, 0.03, seed=1)  # pool: 4 x n_val < 40 sentences
    assert len(val) == round(0.03 * len(sentences)) and not set(train) & set(val)
    spans = {" ".join(sentences[i].split()[a:b]) for i in val for a in range(20) for b in range(a + 1, 21)}
    trained = {" ".join(sentences[i].split()) for i in train}
    assert not trained & spans                          # not one phrase of a validation sentence
    assert min(len(sentences[i].split()) for i in val) >= 8   # whole sentences, not fragments
    kept = [i for i in range(len(sentences)) if " ".join(sentences[i].split()) not in spans]
    assert list(train) == kept                          # and nothing else is dropped
    again = sentence_validation_split(sentences, 0.03, seed=1)
    assert all((a == b).all() for a, b in zip(again, (train, val)))
    assert not np.array_equal(sentence_validation_split(sentences, 0.03, seed=2)[1], val)
    # the random split of the same rows leaves phrases of validation sentences in training
    rtrain, rval = validation_split(len(sentences), 0.03, seed=1)
    rspans = {" ".join(sentences[i].split()[a:b]) for i in rval for a in range(20) for b in range(a + 1, 21)}
    assert {" ".join(sentences[i].split()) for i in rtrain} & rspans
    with pytest.raises(ValueError, match="nothing is left"):
        sentence_validation_split(["a b c", "a b c", "a b"], 0.5, seed=0)  # any 2 cover all 3


def test_finetune_chooses_on_validation_and_scores_eval_once(checkpoint, tok, tmp_path, monkeypatch):
    train_tsv = write_tsv(tmp_path / "train.tsv", 120, 2, seed=1)
    dev_tsv = write_tsv(tmp_path / "dev.tsv", 30, 2, seed=2)
    seen = []
    real = loop.on_device

    def record(batch, device):  # the Trainer's batches: what is trained on
        seen.extend(tuple(int(i) for i in row if i != tok.pad_token_id) for row in batch["input_ids"])
        return real(batch, device)

    monkeypatch.setattr(loop, "on_device", record)
    out = tmp_path / "ft"
    result = finetune(FinetuneArgs(model=str(checkpoint), train=str(train_tsv), eval=str(dev_tsv), out=str(out),
                                   epochs=3, lr=3e-3, batch_size=16, eval_every=5, validation_fraction=0.1))
    monkeypatch.setattr(loop, "on_device", real)

    sentences, labels = mm.data.read_tsv(train_tsv)
    train_rows, val_rows = validation_split(len(sentences), 0.1, seed=0)
    val_ids = {tuple(tok.encode(sentences[i])) for i in val_rows}
    train_ids = {tuple(tok.encode(sentences[i])) for i in train_rows}
    assert len(seen) == 3 * 108  # 3 epochs over the 120 - 12 rows left for training
    assert set(seen) <= train_ids and not set(seen) & (val_ids - train_ids)  # never trained on validation rows

    evals = [r for r in read_metrics(out / "metrics.jsonl") if r["split"] == "eval"]
    validation = [r for r in evals if r["eval_split"] == "validation"]
    dev = [r for r in evals if r["eval_split"] == "dev"]
    assert len(dev) == 1 and evals[-1] is dev[0] and dev[0]["n"] == 30
    assert len(validation) >= 3 and all(r["n"] == len(val_rows) == 12 for r in validation)
    assert result["eval_split"] == "dev" and result["accuracy"] == dev[0]["accuracy"]
    assert result["validation_accuracy"] == max(r["accuracy"] for r in validation)
    # the kept checkpoint is the one validation chose, and the dev row is its score
    assert evaluate_path(out, dev_tsv)["accuracy"] == dev[0]["accuracy"]
    val_tsv = tmp_path / "val.tsv"
    val_tsv.write_text("sentence\tlabel\n" + "".join(f"{sentences[i]}\t{labels[i]}\n" for i in val_rows))
    assert evaluate_path(out, val_tsv)["accuracy"] == result["validation_accuracy"]


def test_finetune_without_eval_file_scores_only_the_sentence_validation_split(checkpoint, tmp_path, capsys):
    # comparing recipes must not look at dev: without --eval nothing but the validation split is scored
    train_tsv = write_tsv(tmp_path / "train.tsv", 80, 2, seed=5)
    out = tmp_path / "ft"
    assert main(["finetune", "--model", str(checkpoint), "--train", str(train_tsv), "--out", str(out),
                 "--epochs", "1", "--batch-size", "16", "--validation", "sentences",
                 "--validation-fraction", "0.1"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    sentences, _ = mm.data.read_tsv(train_tsv)
    _, val_rows = sentence_validation_split(sentences, 0.1, seed=0)
    assert set(result) == {"validation_accuracy", "validation_n"} and result["validation_n"] == len(val_rows)
    evals = [r for r in read_metrics(out / "metrics.jsonl") if r["split"] == "eval"]
    assert evals and all(r["eval_split"] == "validation" for r in evals)
    assert result["validation_accuracy"] == max(r["accuracy"] for r in evals)


def test_extend_positions_repeats_the_learned_rows_and_changes_nothing_on_short_inputs(checkpoint, tmp_path):
    model = mm.BertForMaskedLM.from_pretrained(checkpoint).eval()
    ids = np.arange(4, 24)[None] % len(VOCAB)
    before = model(ids).logits.numpy()
    table = model.bert.embeddings.position_embeddings.weight.numpy().copy()
    model.extend_positions(150)
    grown = model.bert.embeddings.position_embeddings.weight.numpy()
    assert grown.shape == (150, table.shape[1]) and model.config.max_position_embeddings == 150
    assert (grown[:64] == table).all() and (grown[64:128] == table).all() and (grown[128:] == table[:22]).all()
    np.testing.assert_array_equal(model(ids).logits.numpy(), before)  # the first 64 rows are untouched
    assert model(np.arange(150)[None] % len(VOCAB)).logits.shape == (1, 150, len(VOCAB))
    model.save_pretrained(tmp_path / "long", tokenizer=mm.BertTokenizer.from_pretrained(checkpoint))
    again = mm.BertForMaskedLM.from_pretrained(tmp_path / "long")
    assert again.config.max_position_embeddings == 150
    np.testing.assert_array_equal(again.bert.embeddings.position_embeddings.weight.numpy(), grown)
    with pytest.raises(ValueError, match="already has 150"):
        model.extend_positions(100)


def test_finetune_longer_than_the_positions_is_cut_or_extended(checkpoint, tmp_path, capsys):
    rng = np.random.default_rng(7)
    rows = "".join(f"{' '.join(rng.choice(FILLER, 140))} {SENTIMENT[2 * (i % 2)][0]}\t{i % 2}\n" for i in range(40))
    train_tsv = tmp_path / "long.tsv"
    train_tsv.write_text("sentence\tlabel\n" + rows)
    args = dict(model=str(checkpoint), train=str(train_tsv), eval=str(train_tsv), epochs=1, batch_size=8,
                max_length=150)
    finetune(FinetuneArgs(out=str(tmp_path / "cut"), **args))     # rows cut at the model's 64 positions
    assert "rows are cut at 64 tokens" in capsys.readouterr().out
    assert json.loads((tmp_path / "cut" / "config.json").read_text())["max_position_embeddings"] == 64
    result = finetune(FinetuneArgs(out=str(tmp_path / "ft"), extend_positions=True, **args))
    assert json.loads((tmp_path / "ft" / "config.json").read_text())["max_position_embeddings"] == 150
    # evaluate reads as far as the fine-tuned model does (it cut every row at 128 tokens before: a model
    # fine-tuned on 256-token reviews was scored on half of each); the same inputs give the same loss
    again = evaluate_path(tmp_path / "ft", train_tsv)
    assert (again["loss"], again["accuracy"]) == (result["loss"], result["accuracy"])


# ---- the number of labels ---------------------------------------------------------------------------

def test_three_label_model_evaluates_and_predicts(checkpoint, tmp_path, capsys):
    train_tsv = write_tsv(tmp_path / "train.tsv", 60, 3, seed=3)
    dev_tsv = write_tsv(tmp_path / "dev.tsv", 15, 3, seed=4)
    out = tmp_path / "ft3"
    assert main(["finetune", "--model", str(checkpoint), "--train", str(train_tsv), "--eval", str(dev_tsv),
                 "--out", str(out), "--num-labels", "3", "--max-steps", "4", "--batch-size", "16"]) == 0
    assert json.loads((out / "config.json").read_text())["id2label"] == {"0": "LABEL_0", "1": "LABEL_1",
                                                                         "2": "LABEL_2"}
    capsys.readouterr()
    assert main(["evaluate", "--model", str(out), "--data", str(dev_tsv)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert json.loads(printed[-1])["n"] == 15
    assert len([line for line in printed if line.strip()[:2] in ("0:", "1:", "2:")]) == 3  # a 3 x 3 confusion
    assert main(["predict", "--model", str(out), "the film was good", "a dull plot"]) == 0
    labels = [line.split("\t")[0] for line in capsys.readouterr().out.strip().splitlines()]
    assert len(labels) == 2 and set(labels) <= {"LABEL_0", "LABEL_1", "LABEL_2"}
    assert [r["label"] for r in predict(out, ["the film was good", "a dull plot"])] == labels


def test_mean_pooling_reads_the_mean_over_real_tokens_and_ignores_padding():
    mm.manual_seed(3)
    config = mm.BertConfig(vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=32, max_position_embeddings=64, hidden_dropout_prob=0.0,
                           attention_probs_dropout_prob=0.0, classifier_pooling="mean")
    model = mm.BertForSequenceClassification(config).eval()
    ids = np.array([[2, 7, 9, 11, 3, 0, 0], [2, 8, 3, 0, 0, 0, 0]])
    mask = (ids != 0).astype(np.int64)
    hidden = model.bert(ids, mask).last_hidden_state.numpy()
    mean = np.stack([hidden[b, mask[b] == 1].mean(0) for b in range(2)])          # the reference, by hand
    pooler = model.bert.pooler.dense
    want = np.tanh(mean @ pooler.weight.numpy().T + pooler.bias.numpy())
    # float32 throughout: a 16-long dot product and tanh, a few ulps of 1
    np.testing.assert_allclose(model.bert(ids, mask).pooler_output.numpy(), want, rtol=1e-5, atol=1e-6)
    # padding changes nothing: the second row alone, unpadded, gives the same logits (float32 reassociation)
    np.testing.assert_allclose(model(ids[1:, :3]).logits.numpy(), model(ids, mask).logits.numpy()[1:],
                               rtol=1e-5, atol=1e-6)
    cls = mm.BertForSequenceClassification(mm.BertConfig(**{**config.to_dict(), "classifier_pooling": "cls",
                                                             "model_type": "bert"}))
    cls.load_state_dict(model.state_dict())
    assert not np.allclose(cls.eval()(ids, mask).logits.numpy(), model(ids, mask).logits.numpy())


def test_mean_pooling_gradient_matches_finite_differences():
    from gradcheck import check_gradients

    config = mm.BertConfig(vocab_size=len(VOCAB), hidden_size=4, num_hidden_layers=1, num_attention_heads=1,
                           intermediate_size=8, max_position_embeddings=16, classifier_pooling="mean")
    pooler = mm.models.bert.BertPooler(config)
    pooler.dense.weight.data = np.random.default_rng(0).standard_normal((4, 4))  # float64 for the check
    pooler.dense.bias.data = np.zeros(4)
    key_mask = np.array([[True, True, False], [True, True, True]])
    check_gradients(lambda h: pooler(h, key_mask), np.random.default_rng(1).standard_normal((2, 3, 4)))


def test_pooling_is_a_config_field_with_its_own_model_type_and_a_finetune_flag(checkpoint, tmp_path):
    plain = mm.BertConfig(vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=32)
    assert "classifier_pooling" not in plain.to_dict() and plain.model_type == "bert"  # HF's config.json exactly
    mean = mm.BertConfig(**{**plain.to_dict(), "classifier_pooling": "mean", "model_type": "bert"})
    assert mean.model_type == "minillm-bert-mean-pooling"  # transformers refuses it rather than pool [CLS]
    with pytest.raises(ValueError, match="classifier_pooling"):
        mm.BertConfig(classifier_pooling="max")
    with pytest.raises(ValueError, match="model_type"):  # a name that promises mean pooling, on a [CLS] config
        mm.BertConfig(classifier_pooling="cls", model_type="minillm-bert-mean-pooling")
    train_tsv = write_tsv(tmp_path / "train.tsv", 60, 2, seed=5)
    out = tmp_path / "ft"
    assert main(["finetune", "--model", str(checkpoint), "--train", str(train_tsv), "--out", str(out),
                 "--epochs", "1", "--batch-size", "16", "--pooling", "mean"]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["classifier_pooling"] == "mean" and saved["model_type"] == "minillm-bert-mean-pooling"
    model = mm.BertForSequenceClassification.from_pretrained(out)
    assert model.config.classifier_pooling == "mean" and model.bert.pooler.mean
    again = tmp_path / "ft-cls"                                            # and back: --pooling cls on top of it
    assert main(["finetune", "--model", str(out), "--train", str(train_tsv), "--out", str(again),
                 "--epochs", "1", "--batch-size", "16", "--pooling", "cls"]) == 0
    assert json.loads((again / "config.json").read_text())["model_type"] == "bert"

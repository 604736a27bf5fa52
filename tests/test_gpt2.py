"""GPT-2 parity with transformers on the same (random) weights: logits, loss, every parameter's gradient,
checkpoints both ways; causality and the padding mask; the config; and checkpointing that knows no model
family (BERT and GPT-2 share it without either knowing the other)."""
import ast
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import minillm as mm
from kernels.testing import assert_close
from minillm.models.checkpoint import read_safetensors, write_safetensors

# torch + transformers are the parity oracle: the tests that compare with them take the `torch` and
# `transformers` fixtures (tests/conftest.py), which skip those tests alone when the oracle is missing.

REPO = Path(__file__).resolve().parent.parent
SMALL = dict(vocab_size=67, n_positions=16, n_embd=24, n_layer=2, n_head=3, resid_pdrop=0.0, embd_pdrop=0.0,
             attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)


@pytest.fixture(params=["numpy", "numba"])
def backend(request):
    previous = mm.get_backend()
    mm.set_backend(request.param)
    yield request.param
    mm.set_backend(previous)


def hf_model(torch, transformers, hf_class="GPT2LMHeadModel", **kw):
    """A small transformers GPT-2 in eval mode with every parameter random (LayerNorm weights around 1, all
    biases non-zero), so that no parameter is checked only at its trivial initial value."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(**{**SMALL, **kw}, attn_implementation="eager")
    model = getattr(transformers, hf_class)(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_((1.0 if "ln_" in name and name.endswith("weight") else 0.0) + 0.1 * torch.randn_like(p))
    return model


def batch(B=3, T=11, vocab=67, seed=0):
    ids = np.random.default_rng(seed).integers(0, vocab, (B, T))
    labels = ids.copy()
    labels[0, 4] = labels[-1, -1] = -100  # ignored targets
    return ids, labels


@pytest.mark.parametrize("activation", ["gelu_new", "gelu"])
def test_logits_loss_and_every_gradient_match_transformers(activation, backend, tmp_path, torch, transformers):
    theirs = hf_model(torch, transformers, activation_function=activation)
    theirs.save_pretrained(tmp_path)
    ours = mm.GPT2LMHeadModel.from_pretrained(tmp_path)
    ids, labels = batch()
    out = ours(input_ids=ids, labels=labels)
    out.loss.backward()
    ref = theirs(input_ids=torch.tensor(ids), labels=torch.tensor(labels))
    ref.loss.backward()
    # 1e-4 is the bound; measured: logits (magnitude ~1.7) differ by <= 1.1e-6 and the loss by
    # <= 5e-7 (float32, two layers, another summation order than PyTorch's); erf GELU in place of the tanh
    # one moves the logits by more than 1e-4, so the bound also tells the two forms apart
    assert_close(out.logits.data, ref.logits.detach().numpy(), atol=1e-4, rtol=0, name="logits")
    assert abs(float(out.loss.data) - ref.loss.item()) < 1e-4, (float(out.loss.data), ref.loss.item())
    want = {n: p.grad.numpy() for n, p in theirs.named_parameters()}
    got = dict(ours.named_parameters())
    assert sorted(got) == sorted(want), "parameter names differ from transformers'"
    for name, p in got.items():
        assert p.grad is not None, f"{name} got no gradient"
        assert p.grad.shape == want[name].shape, name
        # 1e-4, the bound; measured max ~7e-8 on gradients of magnitude up to ~0.17
        assert_close(p.grad, want[name], atol=1e-4, rtol=0, name=f"grad {name}")


def test_checkpoint_written_here_loads_in_transformers_and_back(tmp_path, torch, transformers):
    mm.manual_seed(1)
    ours = mm.GPT2LMHeadModel(mm.GPT2Config(**SMALL))
    ours.save_pretrained(tmp_path)
    saved = read_safetensors(tmp_path / "model.safetensors")
    assert saved["transformer.h.0.attn.c_attn.weight"].shape == (24, 72)  # Conv1D layout: (in, out)
    assert saved["transformer.h.0.mlp.c_proj.weight"].shape == (96, 24)
    theirs = transformers.GPT2LMHeadModel.from_pretrained(str(tmp_path), attn_implementation="eager").eval()
    for name, p in theirs.state_dict().items():  # every weight arrives unchanged, transposed nowhere
        np.testing.assert_array_equal(p.numpy(), ours.transformer.wte.weight.data if name == "lm_head.weight"
                                      else dict(ours.named_parameters())[name].data, err_msg=name)
    ids, _ = batch(seed=1)
    with torch.no_grad():
        ref = theirs(input_ids=torch.tensor(ids)).logits.numpy()
    # 1e-4, the bound (measured ~1e-7)
    assert_close(ours(input_ids=ids).logits.data, ref, atol=1e-4, rtol=0, name="logits in transformers")
    again = mm.GPT2LMHeadModel.from_pretrained(tmp_path)  # and back: bit for bit
    for (n1, p1), (n2, p2) in zip(ours.named_parameters(), again.named_parameters()):
        assert n1 == n2
        np.testing.assert_array_equal(p1.data, p2.data, err_msg=n1)
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == ["GPT2LMHeadModel"]


def test_bare_model_matches_transformers_and_loads_under_the_head(tmp_path, torch, transformers):
    theirs = hf_model(torch, transformers, "GPT2Model")
    theirs.save_pretrained(tmp_path)  # keys without the `transformer.` prefix
    ours = mm.GPT2Model.from_pretrained(tmp_path)
    ids, _ = batch(seed=2)
    with torch.no_grad():
        ref = theirs(input_ids=torch.tensor(ids)).last_hidden_state.numpy()
    # 1e-4, the bound (measured ~1.5e-6 on hidden states of magnitude up to ~2.8)
    assert_close(ours(ids).last_hidden_state.data, ref, atol=1e-4, rtol=0, name="last_hidden_state")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing missing, nothing unused: the prefix is added, the head tied
        lm = mm.GPT2LMHeadModel.from_pretrained(tmp_path)
    np.testing.assert_array_equal(lm.transformer(ids).last_hidden_state.data, ours(ids).last_hidden_state.data)


def test_old_checkpoint_buffers_are_ignored_and_never_a_parameter(tmp_path):
    """The original GPT-2 checkpoints carry causal-mask buffers (`h.0.attn.bias`, `h.0.attn.masked_bias`)
    and some a copy of the tied head (`lm_head.weight`): they load without a warning, while the real
    parameters whose names end alike (`h.0.attn.c_attn.bias`) are loaded, not skipped."""
    mm.manual_seed(2)
    model = mm.GPT2LMHeadModel(mm.GPT2Config(**SMALL))
    model.save_pretrained(tmp_path)
    state = read_safetensors(tmp_path / "model.safetensors")
    state = {k[len("transformer."):]: v for k, v in state.items()}  # the bare-model layout of the Hub's gpt2
    for i in range(2):
        state[f"h.{i}.attn.bias"] = np.tril(np.ones((16, 16), np.float32))[None, None]
        state[f"h.{i}.attn.masked_bias"] = np.array(-1e4, np.float32)
    state["lm_head.weight"] = state["wte.weight"]
    state["h.0.attn.c_attn.bias"] = np.full(72, 0.5, np.float32)
    write_safetensors(tmp_path / "model.safetensors", state)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = mm.GPT2LMHeadModel.from_pretrained(tmp_path)
    np.testing.assert_array_equal(loaded.transformer.h[0].attn.c_attn.bias.data, 0.5)


def test_a_later_token_never_changes_earlier_logits():
    mm.manual_seed(3)
    model = mm.GPT2LMHeadModel(mm.GPT2Config(**SMALL)).eval()
    ids, _ = batch(B=2, T=9, seed=3)
    before = model(ids).logits.data
    changed = ids.copy()
    changed[:, 5] = (changed[:, 5] + 1) % 67
    after = model(changed).logits.data
    np.testing.assert_array_equal(after[:, :5], before[:, :5])  # positions 0..4 cannot see position 5
    assert np.abs(after[:, 5:] - before[:, 5:]).max() > 1e-3   # and the later ones do


def test_right_padding_matches_transformers(torch, transformers, tmp_path):
    """A padded batch: at real positions the logits equal transformers' (padding is causal-invisible to
    them anyway), and the loss over labels with -100 at the padding equals transformers'."""
    theirs = hf_model(torch, transformers)
    theirs.save_pretrained(tmp_path)
    ours = mm.GPT2LMHeadModel.from_pretrained(tmp_path)
    ids, _ = batch(B=2, T=10, seed=4)
    mask = np.ones_like(ids)
    mask[1, 6:] = 0
    labels = np.where(mask == 1, ids, -100)
    out = ours(input_ids=ids, attention_mask=mask, labels=labels)
    with torch.no_grad():
        ref = theirs(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), labels=torch.tensor(labels))
    real = mask.astype(bool)
    # 1e-4, the bound
    assert_close(out.logits.data[real], ref.logits.numpy()[real], atol=1e-4, rtol=0, name="logits at real tokens")
    assert abs(float(out.loss.data) - ref.loss.item()) < 1e-4


def test_config_reads_transformers_json_and_checks_values(tmp_path, transformers):
    path = tmp_path / "config.json"
    transformers.GPT2Config(**SMALL).to_json_file(str(path))
    config = mm.GPT2Config.from_json(path)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads,
            config.max_position_embeddings, config.intermediate_size) == (24, 2, 3, 16, 96)
    assert config.to_dict()["summary_type"] == "cls_index"  # unknown keys survive a round trip
    with pytest.raises(ValueError, match="n_embd.*divisible by n_head"):
        mm.GPT2Config(n_embd=10, n_head=3)
    with pytest.raises(ValueError, match="tie_word_embeddings"):
        mm.GPT2Config(tie_word_embeddings=False)
    with pytest.raises(ValueError, match="activation_function"):
        mm.GPT2Config(activation_function="relu")
    path.write_text(json.dumps({**json.loads(path.read_text()), "n_head": 0}))
    with pytest.raises(ValueError, match=r"config\.json.*n_head"):
        mm.GPT2LMHeadModel.from_pretrained(tmp_path)


def test_bad_labels_are_named():
    model = mm.GPT2LMHeadModel(mm.GPT2Config(**SMALL))
    with pytest.raises(ValueError, match="labels has shape"):
        model(input_ids=np.zeros((2, 5), int), labels=np.zeros((2, 4), int))
    with pytest.raises(ValueError, match="n_positions"):
        model(input_ids=np.zeros((1, 17), int))


# -- checkpointing knows no model family ------------------------------------------------------------------

def test_checkpoint_code_imports_no_model():
    """checkpoint.py reads config.json through the model class's `config_class`: it imports neither BERT
    nor GPT-2 (anywhere, deferred imports included), so the two families share it without an import circle."""
    tree = ast.parse((REPO / "minillm" / "models" / "checkpoint.py").read_text(encoding="utf-8"))
    imported = [(node.module or "") for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    imported += [a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names]
    assert not [m for m in imported if "bert" in m or "gpt2" in m or m.startswith("minillm")], imported


def test_each_family_loads_without_the_other():
    code = ("import sys, minillm.models.gpt2 as g, minillm.models.bert as b\n"
            "assert g.GPT2LMHeadModel.config_class is g.GPT2Config and b.BertModel.config_class is b.BertConfig\n"
            "import importlib; [sys.modules.pop(m) for m in list(sys.modules) if m.startswith('minillm.models')]\n"
            "import minillm.models.gpt2\n"
            "assert 'minillm.models.bert' not in sys.modules\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr


def test_a_model_class_without_config_class_is_told(tmp_path):
    from minillm.models.checkpoint import CheckpointMixin
    from minillm.nn import Module

    class Anonymous(CheckpointMixin, Module):
        pass

    with pytest.raises(TypeError, match="config_class"):
        Anonymous.from_pretrained(tmp_path)

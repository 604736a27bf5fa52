"""ALiBi (attention_bias = "alibi"): the written-out biased attention, the bias itself, the BERT layer that uses
it, and the config that keeps such a checkpoint away from transformers."""
import json

import numpy as np
import pytest
from gradcheck import check_gradients

import minillm as mm
import minillm.functional as F
from minillm.models.bert import ALIBI_MODEL_TYPE, BertConfig, BertForMaskedLM, BertModel, alibi_bias, alibi_slopes

rng = np.random.default_rng(0)


def softmax_rows(s):
    e = np.exp(s - s.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("tq,tk", [(5, 5), (1, 4), (3, 6)])
def test_biased_attention_gradient(reference_backend, tq, tk):
    key_mask = np.ones((2, tk), bool)
    key_mask[1, -2:] = False
    bias = alibi_bias(2, tq, tk).astype(np.float64)
    check_gradients(lambda q, k, v: F.biased_attention(q, k, v, bias, key_mask=key_mask),
                    rng.standard_normal((2, 2, tq, 4)), rng.standard_normal((2, 2, tk, 4)),
                    rng.standard_normal((2, 2, tk, 4)))


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_biased_attention_with_zero_bias_is_the_fused_kernel(backend):
    """Values and gradients of the written-out path against the fused kernel on the same numbers (float32)."""
    previous = mm.get_backend()
    mm.set_backend(backend)
    try:
        q, k, v = (rng.standard_normal((2, 3, 7, 8)).astype(np.float32) for _ in range(3))
        key_mask = np.ones((2, 7), bool)
        key_mask[0, 4:] = False
        dout = rng.standard_normal((2, 3, 7, 8)).astype(np.float32)
        results = []
        for fn in (lambda a, b, c: F.biased_attention(a, b, c, np.zeros((3, 7, 7), np.float32), key_mask=key_mask),
                   lambda a, b, c: F.scaled_dot_product_attention(a, b, c, key_mask=key_mask)):
            leaves = [mm.Tensor(x.copy(), requires_grad=True) for x in (q, k, v)]
            out = fn(*leaves)
            (out * mm.Tensor(dout)).sum().backward()
            results.append([out.data] + [leaf.grad for leaf in leaves])
        for got, want in zip(*results):
            # float32, sums over 7 keys and 8 channels in two different orders: a few ulps of O(1) values
            np.testing.assert_allclose(got, want, rtol=0, atol=2e-5)
    finally:
        mm.set_backend(previous)


def test_alibi_bias_values():
    np.testing.assert_array_equal(alibi_slopes(4), np.float32([0.5, 0.125, 0.03125, 0.0078125]))
    b = alibi_bias(2, 2, 4)  # two queries aligned with the last two of four keys
    np.testing.assert_array_equal(b[0], -0.5 * np.float32([[2, 1, 0, 1], [3, 2, 1, 0]]))
    np.testing.assert_array_equal(b[1], -0.125 * np.float32([[2, 1, 0, 1], [3, 2, 1, 0]]))


def tiny_config(**kw):
    return BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, max_position_embeddings=16, **kw)


def test_alibi_layer_is_softmax_of_biased_scores_times_v():
    """The first layer's attention, recomputed in NumPy from the layer's weights: softmax(QK^T/sqrt(D) -
    m_h|i-j|, padding masked) V. Also what output_attentions reports."""
    mm.manual_seed(0)
    model = BertModel(tiny_config(attention_bias="alibi"), add_pooling_layer=False)
    ids = rng.integers(5, 40, (2, 6))
    mask = np.ones((2, 6), bool)
    mask[1, 4:] = False
    out = model(input_ids=ids, attention_mask=mask, output_attentions=True)
    layer = model.encoder.layer[0].attention.self
    x = model.embeddings(ids, np.zeros_like(ids), np.broadcast_to(np.arange(6), ids.shape)).data.astype(np.float64)

    def heads(lin):
        return (x @ lin.weight.data.T + lin.bias.data).reshape(2, 6, 2, 8).transpose(0, 2, 1, 3)

    q, k, v = heads(layer.query), heads(layer.key), heads(layer.value)
    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(8) - alibi_slopes(2)[:, None, None] * np.abs(
        np.arange(6)[:, None] - np.arange(6)[None, :])
    s = np.where(mask[:, None, None, :], s, -np.inf)
    p = softmax_rows(s)                                                   # (B, H, T, T)
    want = (p @ v).transpose(0, 2, 1, 3).reshape(2, 6, 16)
    got = layer(mm.Tensor(x.astype(np.float32)), mask).data
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)              # float32 against float64, O(1) values
    np.testing.assert_allclose(out.attentions[0], p, rtol=0, atol=1e-6)   # probabilities in [0, 1], float32
    assert (out.attentions[0][1, :, :, 4:] == 0).all()                    # padding keys get exactly nothing


def test_alibi_changes_the_model_and_plain_bert_is_unchanged():
    """The same weights with and without the bias give different outputs; a plain config.json keeps HF's keys."""
    mm.manual_seed(0)
    plain = BertForMaskedLM(tiny_config())
    biased = BertForMaskedLM(tiny_config(attention_bias="alibi"))
    biased.load_state_dict(plain.state_dict())
    ids = rng.integers(5, 40, (1, 8))
    p0, p1 = (m(input_ids=ids, output_attentions=True).attentions[0] for m in (plain, biased))
    assert np.abs(p0 - p1).max() > 0.1  # near-uniform rows at random init; the bias moves mass to neighbours
    # the 0.02-std initial weights damp what reaches the logits; still far above float32 noise (~1e-7)
    assert np.abs(plain(input_ids=ids).logits.data - biased(input_ids=ids).logits.data).max() > 1e-5
    assert "attention_bias" not in plain.config.to_dict()


def test_alibi_config_round_trip_and_model_type(tmp_path):
    mm.manual_seed(0)
    model = BertForMaskedLM(tiny_config(attention_bias="alibi"))
    assert model.config.model_type == ALIBI_MODEL_TYPE
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["attention_bias"] == "alibi" and saved["model_type"] == ALIBI_MODEL_TYPE
    again = BertForMaskedLM.from_pretrained(tmp_path)
    ids = rng.integers(5, 40, (2, 5))
    np.testing.assert_array_equal(again(input_ids=ids).logits.data, model(input_ids=ids).logits.data)
    with pytest.raises(ValueError, match="model_type"):
        tiny_config(model_type=ALIBI_MODEL_TYPE)  # the alibi type without the bias
    with pytest.raises(ValueError, match="attention_bias"):
        tiny_config(attention_bias="rotary")


def test_transformers_refuses_an_alibi_checkpoint(tmp_path, transformers):
    """AutoConfig cannot read the folder (a plain BertForMaskedLM would silently drop the bias)."""
    mm.manual_seed(0)
    BertForMaskedLM(tiny_config(attention_bias="alibi")).save_pretrained(tmp_path)
    with pytest.raises((ValueError, KeyError)):
        transformers.AutoConfig.from_pretrained(tmp_path)


def test_fill_mask_and_attention_read_an_alibi_model(tmp_path):
    """The look commands take the ALiBi variant of BERT (its own model_type) like a plain one."""
    from minillm.look import attention_maps, fill_mask, load_masked_lm
    from minillm.tokenizer import BertTokenizer

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "movie", "was", "good", "bad", "."]
    tok = BertTokenizer.from_vocab_list(words)
    mm.manual_seed(0)
    config = BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16, attention_bias="alibi")
    BertForMaskedLM(config).save_pretrained(tmp_path, tokenizer=tok)
    model, tok = load_masked_lm(tmp_path)
    rows = fill_mask(model, tok, "the movie was [MASK] .", top_k=2)
    assert len(rows) == 1 and len(rows[0]) == 2
    tokens, maps = attention_maps(model.bert, tok, "the movie was good .")
    assert maps[0].shape == (2, len(tokens), len(tokens))

"""Looking at a model (minillm/look.py, `minillm fill-mask`, `minillm attention`, `output_attentions=True`).

fill-mask and the attention probabilities are checked against transformers on the same weights (a tiny random
BERT with a small vocabulary that has word pieces, saved with save_pretrained); the probabilities also against
the fused kernel itself (P V is the attention output); the normal forward pass is shown to be unchanged by
`output_attentions`; the figure is inspected as an object (panels, tick labels, the arrays it shows). Every
test runs in well under a few seconds.
"""
import re
from pathlib import Path

import numpy as np
import pytest

import minillm as mm
from minillm import look
from minillm.cli import main

REPO = Path(__file__).resolve().parents[1]
# A BertModel loaded from an MLM folder leaves out the head and starts a fresh pooler; said once, not per test.
QUIET_LOAD = pytest.mark.filterwarnings("ignore:.*(initialised fresh|were not used)")
WORDS = ["the", "movie", "was", "good", "bad", "great", "a", "film", ".", ",", "it", "is", "not", "fun", "dull",
         "!", "'", "t", "isn", "act", "##s", "##ing", "##ly", "##ed"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
POSITIONS = 16


def tiny_config(**kw):
    # initializer_range 0.5 (not BERT's 0.02): random weights that large give peaked, varied distributions,
    # so the ranking of tokens and the attention maps are not all near-uniform ties.
    return mm.BertConfig(vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=POSITIONS, hidden_dropout_prob=0.0,
                         attention_probs_dropout_prob=0.0, initializer_range=0.5, **kw)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A BertForMaskedLM folder ("mlm") and a BertForSequenceClassification folder ("classifier")."""
    root = tmp_path_factory.mktemp("look")
    tok = mm.BertTokenizer.from_vocab_list(VOCAB)
    mm.manual_seed(0)
    mm.BertForMaskedLM(tiny_config()).save_pretrained(root / "mlm", tokenizer=tok)
    mm.manual_seed(1)
    mm.BertForSequenceClassification(tiny_config()).save_pretrained(root / "classifier", tokenizer=tok)
    return {"mlm": root / "mlm", "classifier": root / "classifier"}


# --------------------------------------------------------------------------------------------------
# fill-mask

FILL_TEXTS = ["the movie was [MASK] .", "the [MASK] was [MASK] !", "it isn ' t [MASK] , the film was act [MASK] ."]


@pytest.mark.parametrize("text", FILL_TEXTS)
def test_fill_mask_matches_the_transformers_pipeline(folders, transformers, text):
    """Every token's score, token_str (word pieces keep their ##) and sequence equal the fill-mask pipeline's on
    the same weights, for one mask and for several; and the top 5 come in the pipeline's order."""
    fill = transformers.pipeline("fill-mask", model=str(folders["mlm"]), tokenizer=str(folders["mlm"]), device="cpu")
    want = fill(text, top_k=len(VOCAB))
    want = [want] if isinstance(want[0], dict) else want  # the pipeline unwraps a single mask's list
    model, tok = look.load_masked_lm(folders["mlm"])
    got = look.fill_mask(model, tok, text, top_k=len(VOCAB))
    assert len(got) == len(want) == text.count("[MASK]")
    # Probabilities of two float32 forward passes that sum in different orders: ~1e-7 apart; 1e-5 leaves room.
    tol = 1e-5
    for got_rows, want_rows in zip(got, want):
        by_token = {r["token"]: r for r in want_rows}
        assert sorted(by_token) == sorted(r["token"] for r in got_rows) == list(range(len(VOCAB)))
        for r in got_rows:
            w = by_token[r["token"]]
            assert abs(r["score"] - w["score"]) < tol, (r, w)
            assert (r["token_str"], r["sequence"]) == (w["token_str"], w["sequence"])
        scores = [w["score"] for w in want_rows[:6]]
        assert min(a - b for a, b in zip(scores, scores[1:])) > 10 * tol, "near-tie in the top 6: change the seed"
        assert [r["token"] for r in got_rows[:5]] == [w["token"] for w in want_rows[:5]]
    assert any(r["token_str"].startswith("##") for rows in got for r in rows), "no word piece was compared"


def test_fill_mask_top_k_is_the_head_of_the_ranking(folders):
    model, tok = look.load_masked_lm(folders["mlm"])
    text = FILL_TEXTS[1]
    everything = look.fill_mask(model, tok, text, top_k=10 * len(VOCAB))  # more than V: the whole vocabulary
    five = look.fill_mask(model, tok, text)
    for all_rows, rows in zip(everything, five):
        assert len(all_rows) == len(VOCAB) and rows == all_rows[:5]
        assert sum(r["score"] for r in all_rows) == pytest.approx(1.0, abs=1e-5)  # float32 softmax, V=29 terms
        assert all(a["score"] >= b["score"] for a, b in zip(all_rows, all_rows[1:]))


@pytest.mark.parametrize("text, message", [
    ("the movie was good .", r"no \[MASK\] in the text"),
    ("   ", "the text is empty"),
    ("the movie " * POSITIONS + "[MASK]", f"tokens long .* at most {POSITIONS} \\(max_position_embeddings"),
])
def test_fill_mask_refuses_what_it_cannot_read(folders, text, message):
    model, tok = look.load_masked_lm(folders["mlm"])
    with pytest.raises(ValueError, match=message):
        look.fill_mask(model, tok, text)


def test_fill_mask_refuses_a_classifier_without_an_mlm_head(folders, capsys):
    with pytest.raises(ValueError, match=r"BertForSequenceClassification without an MLM head"):
        look.load_masked_lm(folders["classifier"])
    assert main(["fill-mask", "--model", str(folders["classifier"]), "the movie was [MASK] ."]) == 2
    err = capsys.readouterr().err
    assert err.startswith("minillm: error: fill-mask:") and "MLM head" in err and len(err.splitlines()) == 1


def test_fill_mask_command_prints_the_rows(folders, capsys):
    text = FILL_TEXTS[1]
    assert main(["fill-mask", "--model", str(folders["mlm"]), text, "--top-k", "3"]) == 0
    printed = capsys.readouterr().out.splitlines()
    model, tok = look.load_masked_lm(folders["mlm"])
    rows = look.fill_mask(model, tok, text, top_k=3)
    assert len(printed) == 2 * (1 + 3)  # per mask: a header and three rows
    table = [line.split() for line in printed if line.startswith("  ")]
    want = [[f"{r['score']:.4f}", r["token_str"]] for mask in rows for r in mask]
    assert [line[:2] for line in table] == want


# --------------------------------------------------------------------------------------------------
# output_attentions

def batch_with_padding():
    rng = np.random.default_rng(0)
    ids = rng.integers(5, len(VOCAB), (2, 9))
    ids[:, 0], ids[0, -1] = 2, 3
    mask = np.ones_like(ids)
    mask[1, 5:] = 0                      # the second sequence is 5 tokens long, 4 of padding
    ids[1, 4], ids[1, 5:] = 3, 0
    return ids, mask


@QUIET_LOAD
@pytest.mark.parametrize("cls_name", ["BertModel", "BertForMaskedLM", "BertForSequenceClassification"])
def test_output_attentions_match_transformers_with_padding(folders, torch, transformers, cls_name):
    folder = folders["classifier" if cls_name == "BertForSequenceClassification" else "mlm"]
    ids, mask = batch_with_padding()
    theirs = getattr(transformers, cls_name).from_pretrained(str(folder), attn_implementation="eager").eval()
    with torch.no_grad():
        want = theirs(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), output_attentions=True).attentions
    ours = getattr(mm, cls_name).from_pretrained(folder)
    got = ours(input_ids=ids, attention_mask=mask, output_attentions=True).attentions
    assert isinstance(got, tuple) and len(got) == len(want) == 2
    for g, w in zip(got, want):
        assert isinstance(g, np.ndarray) and g.shape == tuple(w.shape) == (2, 2, 9, 9)
        # float32 scores near |10| (weights of std 0.5) summed in another order: ~1e-6 apart after the softmax.
        np.testing.assert_allclose(g, w.numpy(), rtol=0, atol=1e-5)
        assert (g[1, :, :, 5:] == 0).all(), "a padding key must get probability exactly 0"
        np.testing.assert_allclose(g.sum(-1), 1.0, rtol=0, atol=1e-6)  # float32 sums of 9 probabilities


@QUIET_LOAD
def test_attention_probs_times_v_is_the_fused_kernels_output(folders):
    """P V with P from output_attentions equals the fused attention kernel's output of the same layer: the
    probabilities shown are those the model computes, not a second opinion."""
    model = mm.BertModel.from_pretrained(folders["mlm"], add_pooling_layer=False)
    ids, mask = batch_with_padding()
    out = model(input_ids=ids, attention_mask=mask, output_attentions=True)
    layer = model.encoder.layer[0].attention.self
    x = model.embeddings(ids, np.zeros_like(ids), np.broadcast_to(np.arange(ids.shape[1]), ids.shape))  # (B, T, C)
    B, T, C = x.shape
    v = (x.data @ layer.value.weight.data.T + layer.value.bias.data).reshape(B, T, 2, C // 2).transpose(0, 2, 1, 3)
    want = layer(x, mask.astype(bool)).data                                          # (B, T, C), the fused kernel
    got = (out.attentions[0] @ v).transpose(0, 2, 1, 3).reshape(B, T, C)            # (B, H, T, D) -> (B, T, C)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)  # float32, |v| ~ 3: a few ulps of each sum


@QUIET_LOAD
@pytest.mark.parametrize("cls_name", ["BertModel", "BertForMaskedLM", "BertForSequenceClassification"])
def test_output_attentions_leaves_the_forward_pass_unchanged(folders, cls_name):
    """Bit for bit the same outputs and loss with and without output_attentions: the probabilities are computed
    on the side and the fused kernel still does the forward pass."""
    ids, mask = batch_with_padding()
    model = getattr(mm, cls_name).from_pretrained(folders["classifier" if "Sequence" in cls_name else "mlm"])
    extra = {}
    if cls_name == "BertForMaskedLM":
        model.sparse_head = True
        extra["labels"] = np.where(np.arange(ids.size).reshape(ids.shape) % 3 == 0, ids, -100)
    elif cls_name == "BertForSequenceClassification":
        extra["labels"] = np.array([0, 1])
    plain = model(input_ids=ids, attention_mask=mask, **extra)
    looked = model(input_ids=ids, attention_mask=mask, output_attentions=True, **extra)
    assert "attentions" not in plain and len(looked["attentions"]) == 2
    for key, value in plain.items():
        if value is not None:
            assert np.array_equal(value.data, looked[key].data), key


# --------------------------------------------------------------------------------------------------
# the attention figure

def tick_texts(labels):
    return [t.get_text() for t in labels]


def test_attention_figure_has_a_panel_per_layer_and_head(folders, tmp_path):
    out = tmp_path / "attn.png"
    text = "the movie was good ."
    fig = look.draw_attention(folders["mlm"], text, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    model, tok = look.load_encoder(folders["mlm"])
    tokens, maps = look.attention_maps(model, tok, text)
    assert tokens == ["[CLS]", "the", "movie", "was", "good", ".", "[SEP]"]
    panels = [ax for ax in fig.axes if ax.images and ax.get_title()]
    assert len(fig.axes) == len(panels) + 1 == 2 * 2 + 1  # one panel per (layer, head) and the colorbar
    assert "/".join(folders["mlm"].parts[-2:]) in fig.get_suptitle()  # the model: its folder and the one above
    for ax in panels:
        layer, head = map(int, re.fullmatch(r"layer (\d+), head (\d+)", ax.get_title()).groups())
        assert tick_texts(ax.get_xticklabels()) == tokens and tick_texts(ax.get_yticklabels()) == tokens
        np.testing.assert_array_equal(ax.images[0].get_array(), maps[layer][head])  # query rows, key columns


def test_attention_command_draws_one_layer_and_head(folders, tmp_path, capsys):
    out = tmp_path / "one.png"
    args = ["attention", "--model", str(folders["classifier"]), "--text", "it was fun !", "--out", str(out)]
    assert main(args + ["--layer", "1", "--head", "0"]) == 0
    assert out.is_file() and "wrote" in capsys.readouterr().out
    fig = look.draw_attention(folders["classifier"], "it was fun !", out, layer=1, head=0)
    assert len(fig.axes) == 2 and fig.axes[0].get_title() == "layer 1, head 0"


@pytest.mark.parametrize("case, message", [
    ("missing model", "model folder .* does not exist"),
    ("empty text", "the text is empty"),
    ("no such folder for --out", "the folder of --out .* does not exist"),
    ("layer out of range", "--layer 2 does not exist; the model has 2 layers"),
])
def test_attention_command_errors_are_one_line(folders, tmp_path, capsys, case, message):
    args = {"--model": str(folders["mlm"]), "--text": "the movie", "--out": str(tmp_path / "a.png")}
    extra = []
    if case == "missing model":
        args["--model"] = str(tmp_path / "nothing")
    elif case == "empty text":
        args["--text"] = " "
    elif case == "no such folder for --out":
        args["--out"] = str(tmp_path / "not" / "a.png")
    else:
        extra = ["--layer", "2"]
    assert main(["attention"] + [x for kv in args.items() for x in kv] + extra) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and err.startswith("minillm: error: attention:"), err
    assert not (tmp_path / "a.png").exists()


# --------------------------------------------------------------------------------------------------
# the README

def test_readme_shows_an_attention_map_that_exists():
    """The "Look at a model" section of README.md shows an attention PNG of the repository, small enough to
    keep in git, with the command that drew it."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^## Look at a model\n(.*?)(?=^## |\Z)", readme, re.S | re.M)
    assert section, "README.md has no '## Look at a model' section"
    images = re.findall(r"!\[[^\]]*\]\(([^)\s]+\.png)\)", section.group(1))
    assert images, "the section shows no image"
    for image in images:
        path = REPO / image
        assert path.is_file(), f"README.md shows {image}, which is not in the repository"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size < 1 << 20
        assert f"--out {image}" in section.group(1), f"no command in the section draws {image}"
    assert "minillm fill-mask --model" in section.group(1)

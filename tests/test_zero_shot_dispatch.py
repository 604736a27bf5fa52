"""`minillm evaluate --zero-shot` reads the checkpoint's model_type: a GPT-2 is scored by the next word after a
prompt (train/zero_shot_clm.py), a BERT masked LM by a cloze prompt (train/finetune.py), anything else is
refused with the types it could read. All on tiny random models saved in the test."""
import json

import numpy as np
import pytest

import minillm as mm
from minillm.bpe import train_bpe
from minillm.cli import main
from minillm.train import finetune, zero_shot_clm

SENTENCES = ["the cat sat on the mat", "a dog ran in the park", "the film was a dull mess",
             "a warm and funny story", "the plot made no sense", "great acting and a fine cast"]
LABELS = [0, 1, 0, 1, 0, 1]


@pytest.fixture(scope="module")
def gpt_folder(tmp_path_factory):
    """A tiny random GPT-2 with a byte-level BPE trained here, and an SST-2-style TSV beside it."""
    folder = tmp_path_factory.mktemp("gpt")
    tok = train_bpe(SENTENCES * 5 + ["overall the movie was great good terrible bad"] * 5, vocab_size=300)
    mm.manual_seed(0)
    model = mm.GPT2LMHeadModel(mm.GPT2Config(vocab_size=len(tok), n_positions=48, n_embd=24, n_layer=2, n_head=3,
                                             resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, initializer_range=0.5,
                                             bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    tsv = folder / "dev.tsv"
    tsv.write_text("sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in zip(SENTENCES, LABELS)))
    return folder, model, tok, tsv


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_zero_shot_on_a_gpt2_checkpoint_scores_the_next_word(gpt_folder, capsys):
    folder, model, tok, tsv = gpt_folder
    assert main(["evaluate", "--model", str(folder), "--data", str(tsv), "--zero-shot"]) == 0
    got = last_json(capsys.readouterr().out)
    probs = zero_shot_clm.zero_shot_clm_scores(model, tok, SENTENCES)   # the default prompt and words
    assert got == {"accuracy": float(np.mean(probs.argmax(-1) == LABELS)), "n": len(SENTENCES)}


def test_label_words_for_a_causal_model_get_their_leading_space(gpt_folder, capsys):
    """`--label-words bad;good` means the words as they follow another word: " bad", " good"."""
    folder, model, tok, tsv = gpt_folder
    prompt = "{sentence} so it was"
    assert main(["evaluate", "--model", str(folder), "--data", str(tsv), "--zero-shot", "--prompt", prompt,
                 "--label-words", "bad;good"]) == 0
    got = last_json(capsys.readouterr().out)
    probs = zero_shot_clm.zero_shot_clm_scores(model, tok, SENTENCES, prompt, ((" bad",), (" good",)))
    assert got["accuracy"] == float(np.mean(probs.argmax(-1) == LABELS))


def test_a_cloze_prompt_on_a_causal_model_is_refused(gpt_folder, capsys):
    folder, _, _, tsv = gpt_folder
    assert main(["evaluate", "--model", str(folder), "--data", str(tsv), "--zero-shot",
                 "--prompt", "{sentence} a [MASK] movie ."]) == 2
    assert "causal language model" in capsys.readouterr().err


@pytest.mark.parametrize("model_type", ["bert", "minillm-bert-alibi"])
def test_a_bert_checkpoint_still_goes_to_the_cloze_classifier(model_type, tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type}))
    calls = []
    monkeypatch.setattr(finetune, "evaluate_zero_shot", lambda *a, **kw: calls.append((a, kw)) or
                        {"accuracy": 1.0, "f1": 1.0, "n": 1, "confusion": [[1]]})
    assert main(["evaluate", "--model", str(tmp_path), "--data", "dev.tsv", "--zero-shot"]) == 0
    (path, data, prompt, words), kw = calls[0]
    assert prompt == finetune.DEFAULT_PROMPT and words == finetune.DEFAULT_LABEL_WORDS and kw["calibrate"]


def test_an_unknown_model_type_is_refused_naming_the_known_ones(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5"}))
    assert main(["evaluate", "--model", str(tmp_path), "--data", "dev.tsv", "--zero-shot"]) == 2
    err = capsys.readouterr().err
    assert "'t5'" in err and "'gpt2'" in err and "'bert'" in err
    assert main(["evaluate", "--model", str(tmp_path / "nowhere"), "--data", "dev.tsv", "--zero-shot"]) == 2
    assert "config.json" in capsys.readouterr().err

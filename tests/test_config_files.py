"""The files a checkpoint folder holds besides the weights: config.json (BertConfig) and the tokenizer's
tokenizer_config.json. Both must round-trip through minillm's own save and load, and a value the model
cannot use must be refused when the file is read, with the file and the field named."""
import json

import pytest

import minillm as mm

SMALL = dict(vocab_size=97, hidden_size=24, num_hidden_layers=2, num_attention_heads=3, intermediate_size=40,
             max_position_embeddings=16)
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "film", "good", "##s", ","]


# ---- config.json ----------------------------------------------------------------------------------

BAD_FIELDS = [  # (field, value, what the message must say)
    ("num_attention_heads", 0, "positive integer"),
    ("hidden_size", 25, "not divisible by num_attention_heads"),
    ("vocab_size", -3, "positive integer"),
    ("num_hidden_layers", 1.5, "positive integer"),
    ("intermediate_size", "40", "positive integer"),
    ("max_position_embeddings", True, "positive integer"),
    ("type_vocab_size", 0, "positive integer"),
    ("num_labels", 0, "positive integer"),
    ("hidden_dropout_prob", 1.0, r"probability in \[0, 1\)"),
    ("attention_probs_dropout_prob", -0.1, r"probability in \[0, 1\)"),
    ("classifier_dropout", 2, r"probability in \[0, 1\)"),
    ("layer_norm_eps", 0.0, "positive number"),
    ("initializer_range", float("nan"), "positive number"),
    ("pad_token_id", 97, r"token id in \[0, vocab_size"),
    ("hidden_act", "relu", "not supported"),
]


@pytest.mark.parametrize("field,value,message", BAD_FIELDS)
def test_bad_config_values_are_refused_at_construction(field, value, message):
    with pytest.raises(ValueError, match=rf"BertConfig: {field} = .*{message}"):
        mm.BertConfig(**{**SMALL, field: value})


@pytest.mark.parametrize("field,value,message", BAD_FIELDS)
def test_bad_config_json_names_the_file_and_the_field(field, value, message, tmp_path):
    mm.BertModel(mm.BertConfig(**SMALL)).save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    config = json.loads(path.read_text())
    config[field] = value
    path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=rf"config\.json: BertConfig: {field} = .*{message}"):
        mm.BertModel.from_pretrained(tmp_path)


def test_unsupported_position_embeddings_are_refused(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**SMALL, "position_embedding_type": "relative_key"}))
    with pytest.raises(ValueError, match="config.json: .*position_embedding_type"):
        mm.BertConfig.from_json(path)


def test_config_round_trips_through_json(tmp_path):
    config = mm.BertConfig(**SMALL, classifier_dropout=0.2, id2label={0: "neg", 1: "mid", 2: "pos"},
                           extra={"position_embedding_type": "absolute", "use_cache": True})
    config.to_json(tmp_path / "config.json")
    back = mm.BertConfig.from_json(tmp_path / "config.json")
    assert back.to_dict() == config.to_dict() and back.num_labels == 3 and back.id2label == config.id2label


def test_non_object_config_json_is_refused(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="config.json: expected a JSON object"):
        mm.BertConfig.from_json(path)


# ---- tokenizer_config.json ------------------------------------------------------------------------

@pytest.mark.parametrize("settings", [
    {"model_max_length": None},  # no limit: written as null, which the loader once compared with 10**9
    {"model_max_length": 64, "do_lower_case": False, "strip_accents": True, "never_split": ["the"],
     "tokenize_chinese_chars": False, "do_basic_tokenize": False, "clean_up_tokenization_spaces": False},
])
def test_tokenizer_settings_round_trip(settings, tmp_path):
    from minillm.tokenizer import SAVED_SETTINGS

    tok = mm.BertTokenizer.from_vocab_list(VOCAB, **settings)
    tok.save_pretrained(tmp_path)
    back = mm.BertTokenizer.from_pretrained(tmp_path)
    written = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert SAVED_SETTINGS <= written.keys()
    for key in SAVED_SETTINGS - {"never_split"}:
        assert getattr(back, key) == getattr(tok, key), key
    assert back.basic_tokenizer.never_split == tok.basic_tokenizer.never_split
    assert back.ids_to_tokens == tok.ids_to_tokens


def test_no_length_limit_is_kept_after_a_round_trip(tmp_path):
    tok = mm.BertTokenizer.from_vocab_list(VOCAB, model_max_length=None)
    tok.save_pretrained(tmp_path)
    back = mm.BertTokenizer.from_pretrained(tmp_path)
    ids = back("the film " * 600, truncation=True)["input_ids"]
    assert len(ids) == 1202  # 1200 words + [CLS] + [SEP]: nothing was cut


def test_transformers_no_limit_value_reads_as_no_limit(tmp_path):
    mm.BertTokenizer.from_vocab_list(VOCAB).save_pretrained(tmp_path)
    path = tmp_path / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config["model_max_length"] = 1e30  # what transformers writes for "no limit"
    path.write_text(json.dumps(config))
    assert mm.BertTokenizer.from_pretrained(tmp_path).model_max_length is None

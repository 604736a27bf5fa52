"""Checkpoints in the Hugging Face layout: a folder with config.json, model.safetensors and vocab.txt.

Parameter names are exactly those of transformers' BERT classes, so a folder written here loads with
`transformers.BertForMaskedLM.from_pretrained(dir)` and the other way round. Loading tolerates the two
differences between task models and the bare encoder (the `bert.` prefix, heads that are missing): missing
heads keep their fresh initialisation and are reported. Writing is atomic: each file goes to a temporary
name in the same folder and is renamed into place, so a crash never leaves a half-written checkpoint.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

# Keys a checkpoint may hold that have no parameter of their own here: tied or derived copies.
_TIED_OR_DERIVED = ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias", "position_ids")


def atomic_write(path: Path, write) -> None:
    """Call write(tmp_path), then rename tmp_path to path (atomic on POSIX within one folder)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """All tensors of a .safetensors file as NumPy arrays; a clear error for a missing or corrupt file."""
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for truncated or malformed files
        raise ValueError(f"{path}: cannot read safetensors file, it is truncated or corrupt ({e})") from e


def _to_model_names(state: dict, own: set[str], is_task_model: bool) -> dict:
    """Map checkpoint keys onto the model's names: add or strip the `bert.` prefix as needed."""
    mapped = {}
    for key, value in state.items():
        if key.endswith(_TIED_OR_DERIVED) or key.split(".")[-1] == "position_ids":
            continue
        if key not in own:
            if is_task_model and "bert." + key in own:
                key = "bert." + key
            elif key.startswith("bert.") and key[5:] in own:
                key = key[5:]
        mapped[key] = value
    return mapped


class CheckpointMixin:
    """from_pretrained / save_pretrained for the BERT classes (which define `config`)."""

    @classmethod
    def from_pretrained(cls, path, config=None, **kwargs):
        """Load config.json + model.safetensors from folder `path` (HF layout).

        Heads missing from the checkpoint (e.g. a classifier on top of a bare encoder) keep their fresh
        initialisation and are reported with a warning; unexpected keys are reported too.
        """
        from .bert import BertConfig

        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: not a directory (expected a folder with {CONFIG_NAME} and {WEIGHTS_NAME})")
        if config is None:
            config_path = path / CONFIG_NAME
            if not config_path.is_file():
                raise FileNotFoundError(f"{config_path}: missing; a checkpoint folder needs {CONFIG_NAME}")
            config = BertConfig.from_json(config_path)
        model = cls(config, **kwargs)
        weights = path / WEIGHTS_NAME
        state = read_safetensors(weights)
        own = dict(model._named_parameters_all(""))
        state = _to_model_names(state, set(own), is_task_model=hasattr(model, "bert"))
        for name, array in state.items():
            if name in own and tuple(array.shape) != own[name].shape:
                raise ValueError(
                    f"{weights}: tensor {name} has shape {tuple(array.shape)} but the config "
                    f"({path / CONFIG_NAME}) implies {own[name].shape}"
                )
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing:
            warnings.warn(f"{weights}: {len(missing)} parameters not in the checkpoint were initialised "
                          f"fresh: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}", stacklevel=2)
        if unexpected:
            warnings.warn(f"{weights}: {len(unexpected)} tensors were not used: "
                          f"{', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''}", stacklevel=2)
        model.eval()
        return model

    def save_pretrained(self, path, tokenizer=None) -> None:
        """Write config.json and model.safetensors (and vocab.txt when a tokenizer is given), atomically."""
        from safetensors.numpy import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {name: np.ascontiguousarray(a) for name, a in self.state_dict().items()}
        config = self.config.to_dict()
        config["architectures"] = [type(self).__name__]
        atomic_write(path / WEIGHTS_NAME, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
        atomic_write(path / CONFIG_NAME, lambda tmp: tmp.write_text(json.dumps(config, indent=2, sort_keys=True)))
        if tokenizer is not None:
            tokenizer.save_pretrained(path)

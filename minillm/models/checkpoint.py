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


def write_safetensors(path: Path, tensors: dict, metadata: dict | None = None) -> None:
    """Write `tensors` (name -> array) to a .safetensors file, atomically; the one place minillm writes
    weights (models and training checkpoints alike), so the one place that refuses non-finite ones.

    A NaN or inf weight means training diverged: such a file would load without complaint and poison
    everything after it, so it raises FloatingPointError (naming the tensors) and writes nothing.
    """
    from safetensors.numpy import save_file

    path = Path(path)
    arrays = {name: np.ascontiguousarray(a) for name, a in tensors.items()}
    bad = [(name, int(a.size - np.isfinite(a).sum())) for name, a in arrays.items()
           if a.dtype.kind in "fc" and not np.isfinite(a).all()]
    if bad:
        listed = ", ".join(f"{name} ({n} of {arrays[name].size})" for name, n in bad[:4])
        more = f" and {len(bad) - 4} more tensors" if len(bad) > 4 else ""
        raise FloatingPointError(
            f"{path}: refusing to save non-finite weights: NaN or inf values in {listed}{more}; training "
            "diverged: lower --lr, or resume from the last checkpoint")
    atomic_write(path, lambda tmp: save_file(arrays, str(tmp), metadata=metadata))


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
        """Write config.json and model.safetensors (and vocab.txt when a tokenizer is given), atomically.

        Raises FloatingPointError, writing nothing, when a weight is NaN or inf (see write_safetensors).
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        config = self.config.to_dict()
        config["architectures"] = [type(self).__name__]
        write_safetensors(path / WEIGHTS_NAME, self.state_dict(), metadata={"format": "pt"})
        atomic_write(path / CONFIG_NAME, lambda tmp: tmp.write_text(json.dumps(config, indent=2, sort_keys=True)))
        if tokenizer is not None:
            tokenizer.save_pretrained(path)

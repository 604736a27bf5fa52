"""Checkpoints in the Hugging Face layout: a folder with config.json, model.safetensors and vocab.txt.

Model-agnostic: this file knows no model family. A model class that mixes in `CheckpointMixin` says what
it needs, as transformers' PreTrainedModel subclasses do:

    config_class          the config dataclass whose `from_json` reads config.json (e.g. BertConfig)
    base_model_prefix     the attribute under which a task model holds its bare model ("bert", "transformer")
    ignored_checkpoint_keys   suffixes of checkpoint keys that are copies, not parameters (a tied decoder
                          weight, a `position_ids` buffer, GPT-2's causal-mask buffer `attn.bias`)

Parameter names are exactly those of the transformers classes, so a folder written here loads with e.g.
`transformers.BertForMaskedLM.from_pretrained(dir)` and the other way round. Loading tolerates the two
differences between task models and the bare model (the `bert.` / `transformer.` prefix, heads that are
missing): missing heads keep their fresh initialisation and are reported. Writing is atomic: each file
goes to a temporary name in the same folder and is renamed into place, so a crash never leaves a
half-written checkpoint.
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"



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


class PretrainedConfig:
    """config.json <-> a config dataclass, for every model family: the dataclass's fields are read by name,
    unknown keys are kept in its `extra` dict (so a transformers config.json survives a round trip), and
    the dataclass's `validate()` (run by its __post_init__) names the field of a bad value."""

    @classmethod
    def from_dict(cls, d: dict):
        known = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in d.items() if k in known}, extra={k: v for k, v in d.items() if k not in known})

    @classmethod
    def from_json(cls, path):
        """Read a config.json; a value the model cannot use raises ValueError naming the file and the field."""
        with open(path, encoding="utf-8") as f:
            try:
                d = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: not valid JSON ({e})") from e
        if not isinstance(d, dict):
            raise ValueError(f"{path}: expected a JSON object of config fields, got {type(d).__name__}")
        try:
            return cls.from_dict(d)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e

    def to_dict(self) -> dict:
        """The fields (None left out) over the unknown keys that were read."""
        d = asdict(self)
        extra = d.pop("extra")
        return {**extra, **{k: v for k, v in d.items() if v is not None}}

    def to_json(self, path) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=True)


def _to_model_names(state: dict, own: set[str], prefix: str, is_task_model: bool, ignored: tuple) -> dict:
    """Map checkpoint keys onto the model's names: drop the copies named in `ignored` (never a key that is
    a parameter here), add or strip the `prefix.` of the bare model as needed."""
    mapped = {}
    p = prefix + "."
    for key, value in state.items():
        if key not in own and key.endswith(ignored):
            continue
        if key not in own:
            if is_task_model and p + key in own:
                key = p + key
            elif key.startswith(p) and key[len(p):] in own:
                key = key[len(p):]
        mapped[key] = value
    return mapped


class CheckpointMixin:
    """from_pretrained / save_pretrained for a model class that defines `config_class` and
    `base_model_prefix` (and optionally `ignored_checkpoint_keys`), and whose instances hold `config`."""

    config_class = None
    base_model_prefix = ""
    ignored_checkpoint_keys: tuple = ()

    @classmethod
    def from_pretrained(cls, path, config=None, **kwargs):
        """Load config.json + model.safetensors from folder `path` (HF layout).

        Heads missing from the checkpoint (e.g. a classifier on top of a bare encoder) keep their fresh
        initialisation and are reported with a warning; unexpected keys are reported too.
        """
        if cls.config_class is None:
            raise TypeError(f"{cls.__name__}.from_pretrained: the class names no config_class (the config "
                            "dataclass that reads config.json); set it as a class attribute")
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: not a directory (expected a folder with {CONFIG_NAME} and {WEIGHTS_NAME})")
        if config is None:
            config_path = path / CONFIG_NAME
            if not config_path.is_file():
                raise FileNotFoundError(f"{config_path}: missing; a checkpoint folder needs {CONFIG_NAME}")
            config = cls.config_class.from_json(config_path)
        model = cls(config, **kwargs)
        weights = path / WEIGHTS_NAME
        state = read_safetensors(weights)
        own = dict(model._named_parameters_all(""))
        prefix = cls.base_model_prefix
        state = _to_model_names(state, set(own), prefix, is_task_model=bool(prefix) and hasattr(model, prefix),
                                ignored=tuple(cls.ignored_checkpoint_keys))
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

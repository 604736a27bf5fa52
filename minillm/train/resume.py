"""Resuming a run: what a checkpoint records about the run that wrote it, and the checks made before
a run continues from one.

    latest.json           {"checkpoint": "checkpoint-<step>", "step": <step>}: the newest complete checkpoint
    checkpoint-<step>/    model.safetensors, optimizer.safetensors, trainer_state.json
    trainer_state.json    step, optimizer scalars, best metric, TrainConfig, the run record, the run id

The run record is what the caller says defines the run (the command's arguments, each data file replaced
by its SHA-256); `check_resume` refuses to continue a checkpoint whose record or TrainConfig differs from
this run's, naming the field, the old and the new value. Every problem with latest.json or
trainer_state.json (hand-edited, truncated, pointing outside the run folder) is a ValueError that names
the file and what is wrong, before any data is read. What this is not: a way to change a run's settings
halfway; start a fresh --out for that.
"""
from __future__ import annotations

import hashlib
import json
import re
import warnings
from dataclasses import asdict, fields
from pathlib import Path

RESUMABLE = ("checkpoint_every", "log_every")   # TrainConfig fields a resumed run may change
CHECKPOINT_NAME = re.compile(r"checkpoint-(\d+)")
# What a resumed run still reads from a checkpoint or vocabulary folder named in its arguments (the
# weights in it are replaced by the checkpoint's own): these files are its fingerprint.
FOLDER_FINGERPRINT = ("config.json", "vocab.txt", "tokenizer_config.json")


def fingerprint(path) -> dict:
    """{"path": ..., "sha256": ...} of a data file, or of a folder by the files FOLDER_FINGERPRINT names.

    Runs are compared by the digest only: a moved or renamed file is the same file, an edited one is not.
    """
    path = Path(path)
    if not path.exists():  # the run itself reports the missing file; the record just says so
        return {"path": str(path), "sha256": None}
    h = hashlib.sha256()
    files = [path / n for n in FOLDER_FINGERPRINT if (path / n).is_file()] if path.is_dir() else [path]
    for f in files:
        h.update(f"{f.name}\0".encode() if path.is_dir() else b"")
        with open(f, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                h.update(block)
    return {"path": str(path), "sha256": h.hexdigest()}


def run_record(args, files=(), exclude=("out", "resume")) -> dict:
    """The settings that define a run, from dataclass `args`: every field but `exclude`, and each field in
    `files` (a path or a list of paths; None stays None) replaced by its fingerprint."""
    record = {}
    for f in fields(args):
        value = getattr(args, f.name)
        if f.name in exclude:
            continue
        if f.name in files and value is not None:
            value = [fingerprint(v) for v in value] if isinstance(value, (list, tuple)) else fingerprint(value)
        record[f.name] = value
    return record


def _comparable(value):
    """A record value as compared: JSON's view of it (tuples are lists), fingerprints by digest alone."""
    value = json.loads(json.dumps(value))
    if isinstance(value, dict) and set(value) == {"path", "sha256"}:
        return value["sha256"]
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    return value


def _show(value) -> str:
    if isinstance(value, dict) and set(value) == {"path", "sha256"}:
        return f"{value['path']} ({'sha256 ' + value['sha256'][:12] if value['sha256'] else 'missing'})"
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return json.dumps(value)


def find_checkpoint(out_dir) -> tuple[Path, dict]:
    """The checkpoint folder `out_dir/latest.json` points at and its trainer state, or a clear error that
    names the file and what is wrong with it."""
    out_dir = Path(out_dir)
    pointer = out_dir / "latest.json"
    if not pointer.is_file():
        raise FileNotFoundError(f"--resume: {pointer} not found; there is no checkpoint in {out_dir} to resume")

    def broken(problem: str) -> ValueError:
        return ValueError(f"{pointer}: {problem}; minillm writes {{\"checkpoint\": \"checkpoint-<step>\", "
                          f"\"step\": <step>}} there, naming a folder inside {out_dir}. Point it at one of the "
                          "checkpoint-<step> folders there, or start a fresh --out")

    try:
        latest = json.loads(pointer.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise broken(f"not valid JSON ({e})") from None
    if not isinstance(latest, dict) or "checkpoint" not in latest:
        raise broken('no "checkpoint" entry')
    name = latest["checkpoint"]
    match = CHECKPOINT_NAME.fullmatch(name) if isinstance(name, str) else None
    if match is None:  # also keeps the pointer inside the run folder: no "../x", no absolute path
        raise broken(f'"checkpoint" is {name!r}, not the name of a checkpoint-<step> folder')
    step = int(match.group(1))
    if "step" in latest and latest["step"] != step:
        raise broken(f'"step" is {latest["step"]!r} but "checkpoint" is {name}')
    folder = out_dir / name
    if not folder.is_dir():
        raise broken(f'"checkpoint" is {name}, but there is no such folder in {out_dir}')
    state_path = folder / "trainer_state.json"
    if not state_path.is_file():
        raise ValueError(f"{state_path}: missing; {folder} is not a complete checkpoint")
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{state_path}: not valid JSON ({e})") from None
    missing = [k for k in ("step", "optimizer", "config") if not isinstance(state, dict) or k not in state]
    if missing:
        raise ValueError(f"{state_path}: no {', '.join(repr(k) for k in missing)} entry; not a minillm trainer state")
    if not (isinstance(state["config"], dict) and isinstance(state["optimizer"], dict)):
        raise ValueError(f"{state_path}: 'config' and 'optimizer' must be JSON objects; not a minillm trainer state")
    if state["step"] != step:
        raise ValueError(f"{state_path}: step {state['step']!r}, but the folder is {name}")
    return folder, state


def check_same_run(folder, state: dict, config=None, run: dict | None = None) -> None:
    """Refuse (ValueError) to resume checkpoint `folder` with settings that differ from the ones it recorded.

    Fields the checkpoint does not record (written before they existed) are not compared; a checkpoint
    with no run record at all gets a warning.
    """
    def differs(key, old, new):
        return ValueError(
            f"--resume: the checkpoint in {folder} was made with {key}={_show(old)}, this run asks for "
            f"{key}={_show(new)}; resuming would not continue the same run (resume with the settings it was "
            "made with, or start a fresh --out)")

    if run is not None:
        saved = state.get("run")
        if saved is None:
            warnings.warn(f"{folder}: this checkpoint does not record its run's settings (an older minillm "
                          "wrote it); resuming without comparing them", stacklevel=2)
        else:
            for key, new in run.items():
                if key in saved and _comparable(saved[key]) != _comparable(new):
                    raise differs(key, saved[key], new)
    if config is not None:
        saved = state["config"]
        for key, new in asdict(config).items():
            if key not in RESUMABLE and key in saved and _comparable(saved[key]) != _comparable(new):
                raise differs(key, saved[key], new)


def check_resume(out_dir, run: dict | None = None, config=None) -> Path:
    """Everything `--resume` can check before any data is read: latest.json, the checkpoint's trainer
    state, and that `run` / `config` are the ones it was made with. Returns the checkpoint folder."""
    folder, state = find_checkpoint(out_dir)
    check_same_run(folder, state, config, run)
    return folder


def read_trainer_state(folder: Path) -> dict | None:
    """A checkpoint folder's trainer state, or None when it has no readable minillm trainer_state.json."""
    try:
        state = json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return state if isinstance(state, dict) and {"step", "optimizer", "config"} <= set(state) else None

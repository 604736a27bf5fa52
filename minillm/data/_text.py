"""Reading a text file strictly: whole-file UTF-8 with errors that name the file and the byte offset.

Shared by the TSV loader and the corpus readers so that both fail the same way, *before* any work starts,
on the two mistakes people make most with text data: an empty file and a file in another encoding.
"""
from __future__ import annotations

from pathlib import Path


def read_bytes_checked(path) -> bytes:
    """The bytes of `path`; raises FileNotFoundError / ValueError with an actionable message."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (check the path, or set MINILLM_DATA; see minillm.data)")
    data = path.read_bytes()
    if not data.strip():
        raise ValueError(f"{path}: the file is empty (0 bytes or only whitespace); nothing to read")
    return data


def decode_utf8(data: bytes, path) -> str:
    """Decode `data` as UTF-8 (a leading byte-order mark is dropped); on failure name file and offset."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        bad = data[e.start:e.start + 4]
        raise ValueError(
            f"{path}: not valid UTF-8 at byte offset {e.start} (bytes {bad!r}: {e.reason}). "
            f"Re-save the file as UTF-8, e.g. `iconv -f latin1 -t utf-8 {path} > fixed.txt`."
        ) from None
    return text[1:] if text.startswith("\ufeff") else text


def read_text(path) -> str:
    """Whole file as a str, strict UTF-8; empty file or bad bytes -> ValueError naming the file."""
    return decode_utf8(read_bytes_checked(path), path)


def split_lines(text: str) -> list[str]:
    """Split on "\\n" only (str.splitlines would also split on \\x1c, \\u2028 ... inside sentences),
    dropping a trailing "\\r" (files edited on Windows) and the empty string after a final newline."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]

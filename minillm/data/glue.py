"""GLUE-style TSV files: a header line, then one example per line, columns separated by tabs.

SST-2 as GLUE distributes it looks like this (note the trailing space GLUE leaves before the tab):

    sentence<TAB>label
    hide new secretions from the parental units <TAB>0

What this is: a strict reader for single-sentence classification files (SST-2, CoLA-style), that stops
at the first bad row with the file and line number, so a broken data file is found before training.
What it is not: a CSV parser. GLUE text is not quoted (SST-2 sentences contain bare `"`), so fields are
split on tabs only, and a tab inside a sentence is not representable.
"""
from __future__ import annotations

import re

import numpy as np

from ._text import read_text, split_lines

_INT = re.compile(r"[+-]?\d+")


def read_tsv(path, label_column: str | None = "label", text_column: str = "sentence",
             num_labels: int | None = None):
    """Read a GLUE-style TSV into sentences and integer labels.

    Args:
        path: the .tsv file (UTF-8, header line required; blank lines are skipped).
        label_column: header name of the label column; None for unlabelled files (GLUE test sets).
        text_column: header name of the sentence column.
        num_labels: when given, every label must lie in {0, ..., num_labels - 1}.

    Returns:
        (sentences, labels): list[str] of N sentences, whitespace stripped at both ends, and an (N,) int64
        array (None when label_column is None).

    Raises:
        ValueError naming `file:line` and the offending row for: a row with the wrong number of columns,
        an empty sentence, a label that is not an integer, a label outside range(num_labels); naming the
        columns found and expected when the header lacks a column; and for a file with no rows.
    """
    lines = split_lines(read_text(path))
    header = [c.strip() for c in lines[0].split("\t")]
    wanted = [text_column] + ([label_column] if label_column is not None else [])
    absent = [c for c in wanted if c not in header]
    if absent:
        raise ValueError(
            f"{path}:1: header has columns {header}, expected columns {wanted} (missing {absent}). "
            f"A GLUE-style TSV starts with a header line such as 'sentence<TAB>label'; add one, or pass "
            f"text_column= / label_column= naming the columns this file uses.")
    ti = header.index(text_column)
    li = header.index(label_column) if label_column is not None else None

    sentences, labels, line_numbers = [], [], []
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(header):
            raise ValueError(f"{path}:{lineno}: expected {len(header)} tab-separated columns {header}, "
                             f"found {len(fields)}: {line!r}")
        sentence = fields[ti].strip()
        if not sentence:
            raise ValueError(f"{path}:{lineno}: empty sentence in column {text_column!r}: {line!r}")
        if li is not None:
            value = fields[li].strip()
            if not _INT.fullmatch(value):
                raise ValueError(f"{path}:{lineno}: label {value!r} in column {label_column!r} is not an "
                                 f"integer: {line!r}")
            labels.append(int(value))
        sentences.append(sentence)
        line_numbers.append(lineno)
    if not sentences:
        raise ValueError(f"{path}: header only, no examples")
    if li is None:
        return sentences, None

    labels = np.asarray(labels, dtype=np.int64)  # (N,)
    if num_labels is not None:
        bad = (labels < 0) | (labels >= num_labels)  # (N,)
        if bad.any():
            i = int(np.argmax(bad))  # first offender
            raise ValueError(
                f"{path}:{line_numbers[i]}: label {labels[i]} is outside the model's label set "
                f"0..{num_labels - 1} ({int(bad.sum())} such rows): {lines[line_numbers[i] - 1]!r}")
    return sentences, labels

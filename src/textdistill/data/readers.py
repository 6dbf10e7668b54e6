"""Readers for the GLUE folder layout and for a user's own CSV / TSV / JSONL files.

* TSV files are read the GLUE way: split on tabs, no quoting (GLUE texts contain bare quotes).
  A UTF-8 BOM (MRPC's header) and CRLF line endings (PAWS) are handled.
* CSV files use the standard quoting rules (:mod:`csv`).
* JSONL files (optionally ``.gz``) hold one object per line.
* Files without a header (CoLA train/dev) are recognised when the task declares their columns.

Every problem is reported with the file and the 1-based line number.
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .. import TextDistillError
from .tasks import Task


@dataclass
class Examples:
    """Texts and labels read from one file; ``labels`` is None for an unlabelled (test) file."""

    text_a: list[str]
    text_b: list[str] | None
    labels: list[int] | list[float] | None
    source: str
    lines: list[int]  # 1-based line number of each example in its file (for error messages)

    def __len__(self) -> int:
        return len(self.text_a)

    def subset(self, indices) -> "Examples":
        pick = lambda xs: None if xs is None else [xs[i] for i in indices]  # noqa: E731
        return Examples(pick(self.text_a), pick(self.text_b), pick(self.labels), self.source, pick(self.lines))


def _open_text(path: Path):
    raw = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
    # utf-8-sig drops a BOM; newline="" keeps "\r\n" visible so we strip it ourselves.
    return io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")


def _format_of(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    for ext in ("tsv", "csv", "jsonl", "json"):
        if name.endswith("." + ext):
            return "jsonl" if ext == "json" else ext
    raise TextDistillError(f"{path}: unknown file type (use .tsv, .csv, .jsonl or .jsonl.gz)")


def read_table(path: str | os.PathLike, headerless_columns: tuple[str, ...] | None = None,
               expect_columns: tuple[str, ...] = ()) -> tuple[list[str], list[tuple[int, dict]]]:
    """Read a table; returns ``(columns, [(line_number, row_dict), ...])``.

    For TSV/CSV the first line is the header unless ``headerless_columns`` is given and the
    first line contains none of ``expect_columns`` (the GLUE CoLA files have no header).
    """
    path = Path(path)
    if not path.is_file():
        raise TextDistillError(f"{path}: no such file")
    fmt = _format_of(path)
    rows: list[tuple[int, dict]] = []
    with _open_text(path) as f:
        if fmt == "jsonl":
            columns: list[str] = []
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise TextDistillError(f"{path}:{n}: invalid JSON ({e.msg})") from None
                if not isinstance(obj, dict):
                    raise TextDistillError(f"{path}:{n}: expected a JSON object per line")
                if not columns:
                    columns = list(obj)
                rows.append((n, {k: "" if v is None else str(v) for k, v in obj.items()}))
            if not rows:
                raise TextDistillError(f"{path}: the file is empty")
            return columns, rows
        if fmt == "tsv":
            records = ((n, line.rstrip("\r\n").split("\t")) for n, line in enumerate(f, 1))
        else:
            records = ((reader.line_num, rec) for reader in [csv.reader(f)] for rec in reader)
        header = None
        for n, rec in records:
            if header is None:
                if rec == [""] or not rec:
                    continue
                if headerless_columns and not (set(rec) & set(expect_columns)) and len(rec) == len(headerless_columns):
                    header = list(headerless_columns)
                else:
                    header = [c.strip() for c in rec]
                    continue
            if rec == [""] or not rec:
                continue  # blank line (e.g. trailing newline)
            if len(rec) != len(header):
                raise TextDistillError(f"{path}:{n}: expected {len(header)} fields as in the header, found {len(rec)}")
            rows.append((n, dict(zip(header, rec))))
    if header is None:
        raise TextDistillError(f"{path}: the file is empty")
    if not rows:
        raise TextDistillError(f"{path}: the file has a header but no rows")
    return header, rows


def resolve_file(task: Task, split: str, data_dir: str | os.PathLike) -> Path:
    """Find ``split``'s file of ``task`` under ``data_dir`` (a GLUE root or the task's own folder)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise TextDistillError(f"{data_dir}: data directory not found")
    candidates = task.files.get(split)
    if not candidates:
        raise TextDistillError(f"task {task.name} has no '{split}' split (splits: {', '.join(task.files) or 'none'}); "
                               f"give the file path instead")
    roots = [data_dir / task.folder, data_dir] if task.folder else [data_dir]
    for root in roots:
        for name in candidates:
            if (root / name).is_file():
                return root / name
    tried = ", ".join(str(r / c) for r in roots for c in candidates)
    raise TextDistillError(f"task {task.name}: no {split} file found (tried {tried})")


def load_examples(task: Task, path: str | os.PathLike, max_rows: int | None = None,
                  require_labels: bool = True) -> Examples:
    """Read examples of ``task`` from ``path``; labels are mapped to class ids in the task's order."""
    path = Path(path)
    columns, rows = read_table(path, task.headerless_columns, task.text_columns)
    for col in task.text_columns:
        if col not in columns:
            raise TextDistillError(f"{path}: no column '{col}' for task {task.name} (columns: {', '.join(columns)})")
    label_col = next((c for c in task.label_columns if c in columns), None)
    if label_col is None and require_labels:
        raise TextDistillError(f"{path}: no label column {' or '.join(repr(c) for c in task.label_columns)} "
                               f"for task {task.name} (columns: {', '.join(columns)})")
    if max_rows is not None:
        rows = rows[:max_rows]
    text_a, text_b, labels, lines = [], [] if len(task.text_columns) > 1 else None, [], []
    index = {v: i for i, v in enumerate(task.labels)} if task.labels else None
    for n, row in rows:
        text_a.append(row[task.text_columns[0]])
        if text_b is not None:
            text_b.append(row[task.text_columns[1]])
        lines.append(n)
        if label_col is None:
            continue
        raw = row[label_col].strip()
        if index is None:
            try:
                labels.append(float(raw))
            except ValueError:
                raise TextDistillError(f"{path}:{n}: label '{raw}' in column '{label_col}' is not a number "
                                       f"(task {task.name} is a regression)") from None
        else:
            if raw not in index:
                raise TextDistillError(f"{path}:{n}: unseen label '{raw}' in column '{label_col}' "
                                       f"(task {task.name} labels: {', '.join(task.labels)})")
            labels.append(index[raw])
    return Examples(text_a, text_b, labels if label_col else None, str(path), lines)

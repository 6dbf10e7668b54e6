"""Readers for the GLUE folder layout and for a user's own CSV / TSV / JSONL files.

* TSV files are read the GLUE way: split on tabs, no quoting (GLUE texts contain bare quotes).
  A UTF-8 BOM (MRPC's header) and CRLF line endings (PAWS) are handled.
* CSV files use the standard quoting rules (:mod:`csv`).
* JSONL files (optionally ``.gz``) hold one object per line.
* Files without a header (CoLA train/dev) are recognised when the task declares their columns.

Every problem is reported with the file and the 1-based line number: bytes that are not UTF-8 (with
their byte offset), malformed CSV quoting (strict dialect; an unclosed quote names the line where its
row starts), a quote that swallows the following rows into one field, a field above the csv module's
size limit, a wrong number of fields, and texts that are empty, null or "NaN" (refused, never
trained on: a row without text is a damaged row).
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import math
import os
import zlib
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


def _not_utf8(path: Path) -> TextDistillError:
    """Where the first byte that is not UTF-8 is: line and byte offset in the (decompressed) file."""
    with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
        data = f.read()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        return TextDistillError(f"{path}:{line}: not UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start}: "
                                f"{e.reason}); save the file as UTF-8")
    return TextDistillError(f"{path}: not UTF-8; save the file as UTF-8")


class _Lines:
    """The file's lines as csv.reader consumes them, remembering those of the record being read."""

    def __init__(self, f):
        self.f, self.record = f, []

    def __iter__(self):
        return self

    def __next__(self):
        line = next(self.f)
        self.record.append(line)
        return line


def _csv_records(f, path: Path, header_width: list, row_like):
    """``(first_line, fields)`` of each CSV record, read with the strict dialect (a quote must close its field).
    ``row_like(fields)`` says whether a line, split on commas alone, looks like a row of its own: a quoted field
    that runs over several lines holding such a line is an unbalanced quote that merged rows."""
    lines = _Lines(f)
    reader = csv.reader(lines, strict=True)
    start = 1
    while True:
        lines.record = []
        try:
            rec = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            msg = str(e)
            if "field larger than field limit" in msg:
                raise TextDistillError(f"{path}:{start}: a field longer than {csv.field_size_limit():,} characters in "
                                       f"the row starting here (an unclosed quote?); texts that long belong in a "
                                       f".jsonl file") from None
            if "unexpected end of data" in msg:
                raise TextDistillError(f"{path}:{start}: unclosed quote: a quoted field of the row starting on line "
                                       f"{start} is never closed (it runs to the end of the file, line "
                                       f"{reader.line_num}); a quote inside a field is written \"\"") from None
            raise TextDistillError(f"{path}:{reader.line_num}: malformed CSV ({msg}); quote the whole field and "
                                   f"write a quote inside it as \"\"") from None
        end = reader.line_num
        if end > start and row_like is not None and header_width:
            # the inner lines only: the first holds the row's start, the last the field's end (both partial rows)
            for k, line in enumerate(lines.record[1:-1], 1):
                fields = next(csv.reader([line.rstrip("\r\n")], quoting=csv.QUOTE_NONE), [])
                if len(fields) == header_width[0] and row_like([x.strip().strip('"') for x in fields]):
                    raise TextDistillError(
                        f"{path}:{start}: unbalanced quote: a quoted field opened in the row on line {start} runs on "
                        f"to line {end}, merging lines {start}-{end} into one row (line {start + k} looks like a "
                        f"complete row by itself); check the quotes (a quote inside a field is written \"\")")
        yield start, rec
        start = end + 1


def _format_of(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    for ext in ("tsv", "csv", "jsonl", "json"):
        if name.endswith("." + ext):
            return "jsonl" if ext == "json" else ext
    raise TextDistillError(f"{path}: unknown file type (use .tsv, .csv, .jsonl or .jsonl.gz)")


def read_table(path: str | os.PathLike, headerless_columns: tuple[str, ...] | None = None,
               expect_columns: tuple[str, ...] = (), row_like=None) -> tuple[list[str], list[tuple[int, dict]]]:
    """Read a table; returns ``(columns, [(line_number, row_dict), ...])`` (the line where a row starts).

    For TSV/CSV the first line is the header unless ``headerless_columns`` is given and the
    first line contains none of ``expect_columns`` (the GLUE CoLA files have no header).
    ``row_like(row_dict)`` (CSV): whether a line inside a multi-line quoted field looks like a row of its own
    (then the quote is unbalanced and the rows were merged: refused).
    """
    path = Path(path)
    if not path.is_file():
        raise TextDistillError(f"{path}: no such file")
    unreadable = (OSError, EOFError, zlib.error)  # no permission, not gzip (BadGzipFile), a truncated or damaged .gz
    try:
        try:
            return _read_table(path, headerless_columns, expect_columns, row_like)
        except UnicodeDecodeError:
            raise _not_utf8(path) from None  # (which reads the file again: a damaged .gz fails there)
    except unreadable as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e) or type(e).__name__
        raise TextDistillError(f"{path}: cannot read the file ({why})") from None


def _read_table(path: Path, headerless_columns, expect_columns, row_like):
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
        width: list[int] = []  # the header's number of fields, once read
        if fmt == "tsv":
            records = ((n, line.rstrip("\r\n").split("\t")) for n, line in enumerate(f, 1))
        else:
            like = None if row_like is None else (lambda fields: row_like(dict(zip(header, fields))))
            records = _csv_records(f, path, width, like)
        header = None
        for n, rec in records:
            if header is None:
                if rec == [""] or not rec:
                    continue
                if headerless_columns and not (set(rec) & set(expect_columns)) and len(rec) == len(headerless_columns):
                    header = list(headerless_columns)
                    width.append(len(header))
                else:
                    header = [c.strip() for c in rec]
                    width.append(len(header))
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
    columns, rows = read_table(path, task.headerless_columns, task.text_columns, row_like=_row_like(task))
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
    missing: dict[str, list[tuple[int, str]]] = {}
    needed = [*task.text_columns, *([label_col] if label_col else [])]
    for n, row in rows:
        absent = [c for c in needed if c not in row]  # (a JSONL row without a key its file's first row has)
        if absent:
            raise TextDistillError(f"{path}:{n}: no '{absent[0]}' in this row (task {task.name} reads "
                                   f"{', '.join(repr(c) for c in needed)})")
        text_a.append(row[task.text_columns[0]])
        if text_b is not None:
            text_b.append(row[task.text_columns[1]])
        for col in task.text_columns:
            if _missing_text(row[col]):
                missing.setdefault(col, []).append((n, row[col]))
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
            if not math.isfinite(labels[-1]):
                raise TextDistillError(f"{path}:{n}: label '{raw}' in column '{label_col}' is not a finite number "
                                       f"(a NaN label makes the loss NaN)")
        else:
            if raw not in index:
                raise TextDistillError(f"{path}:{n}: unseen label '{raw}' in column '{label_col}' "
                                       f"(task {task.name} labels: {', '.join(task.labels)})")
            labels.append(index[raw])
    for col, bad in missing.items():
        shown = ", ".join(str(n) for n, _ in bad[:5]) + (", ..." if len(bad) > 5 else "")
        raise TextDistillError(f"{path}:{bad[0][0]}: empty, null or NaN text {bad[0][1].strip()!r} in column '{col}' "
                               f"({len(bad)} such row{'s' if len(bad) > 1 else ''}: line{'s' if len(bad) > 1 else ''} "
                               f"{shown}); fill or remove them (rows without text are refused, not skipped)")
    return Examples(text_a, text_b, labels if label_col else None, str(path), lines)


MISSING_TEXTS = {"", "nan", "null", "none"}  # what pandas, JSON null and Python's None turn into


def _missing_text(text: str) -> bool:
    return text.strip().lower() in MISSING_TEXTS


def _row_like(task: Task):
    """Whether a line split on commas (a dict by column) looks like a row of ``task``: its label is valid."""
    def like(row: dict) -> bool:
        for col in task.label_columns:
            if col in row:
                value = row[col].strip()
                if task.labels is not None:
                    return value in task.labels
                try:
                    float(value)
                    return True
                except ValueError:
                    return False
        return False
    return like

#!/usr/bin/env python
"""Replace the generated block of a markdown file -- the lines between ``<!-- NAME ... -->`` and
``<!-- /NAME -->`` -- with standard input; the file is left alone unless exactly one such block exists.
    .venv/bin/python scripts/aggregate_transfer.py | scripts/splice.py docs/results.md aggregate_transfer
    awk 'NR > 2 && /^## / {exit} NR > 2' runs/suite-mpnet12/summary.md | scripts/splice.py docs/results.md suite-mpnet12
(``spliced`` is also imported by scripts that put their own blocks in place, e.g. aggregate_schemes.py --splice.)"""
import re
import sys
from pathlib import Path


def spliced(path: Path, text: str, name: str, body: str) -> str:
    """``text`` (of ``path``) with ``body`` between its one ``<!-- name -->`` ... ``<!-- /name -->`` pair; exits
    with a one-line message unless there is exactly one such block and ``body`` is not empty."""
    pattern = re.compile(r"(^<!-- " + re.escape(name) + r"(?: [^\n]*)? -->\n)(.*?)(^<!-- /" + re.escape(name)
                         + r" -->$)", re.S | re.M)
    found = pattern.findall(text)
    if len(found) != 1:
        sys.exit(f"{path}: {len(found)} blocks <!-- {name} --> ... <!-- /{name} --> (need exactly one)")
    body = body.strip("\n") + "\n"
    if not body.strip():  # e.g. the aggregate script before the pipe failed
        sys.exit(f"{path}: empty input for <!-- {name} -->; the file is left alone")
    return pattern.sub(lambda m: m.group(1) + body + m.group(3), text)


def splice(path: Path, name: str, body: str) -> None:
    """Put ``body`` in the ``name`` block of ``path`` (the file untouched where ``spliced`` refuses)."""
    path.write_text(spliced(path, path.read_text(), name, body))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    splice(Path(sys.argv[1]), sys.argv[2], sys.stdin.read())

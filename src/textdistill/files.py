"""Files written whole or not at all, and files by content."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path


def write_text_atomic(path, text: str, encoding: str = "utf-8") -> None:
    """``text`` to ``path`` through a hidden ``.NAME.partial`` file beside it, renamed over ``path`` once written:
    an error or an interrupt part-way leaves ``path`` as it was (and no .partial)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    try:
        tmp.write_text(text, encoding=encoding)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def sha256_file(path, h=None):
    """``path``'s bytes fed to ``h`` (a new SHA-256 if None), read in blocks; returns ``h``."""
    h = h or hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h

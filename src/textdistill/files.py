"""Files written whole or not at all."""
from __future__ import annotations

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

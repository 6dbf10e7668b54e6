"""Files written whole or not at all, and files by content."""
from __future__ import annotations

import hashlib
import logging
import os
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)


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


@contextmanager
def build_lock(folder, what: str):
    """Held while ``folder`` -- a generated transfer set or a teacher cache, built once and reused by every run
    that names it -- is checked and built: a second process (two grids side by side) waits, then finds it
    built and reuses it instead of building it again over the first one's work. An OS lock on the hidden
    ``.<folder>.lock`` beside it (``filelock``), released by the OS if its process dies, the file removed once the
    folder is built."""
    from filelock import FileLock, Timeout

    from . import TextDistillError

    folder = Path(folder)
    path = folder.parent / f".{folder.name}.lock"
    if folder.parent.exists() and not folder.parent.is_dir():
        raise TextDistillError(f"{folder}: {folder.parent} is not a folder")
    try:  # (first by hand: a folder where no lock file can be made is one line, not a wait for ever)
        folder.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    except OSError as e:
        raise TextDistillError(f"{folder}: cannot create {path.name} beside it ({e.strerror or e})") from None
    lock = FileLock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("%s %s: another process is building it; waiting for it", what, folder)
        lock.acquire()
    try:
        yield
        # built (or found built): any run from now on finds it ready before it looks for the lock, and one
        # waiting on this lock file finds it ready once it has it -- the file can go. (After a failed build it
        # stays: a waiter builds under it, and a new file beside would let a third run build at the same time.)
        path.unlink(missing_ok=True)
    finally:
        lock.release()


@contextmanager
def output_lock(out_dir):
    """Held by the run writing ``out_dir`` from its first check to its last write (by rank 0 where a launcher
    started several processes): a second run naming the same output meanwhile is refused in one line, instead
    of emptying the first one's ``.partial`` (``--overwrite``, a resume) under it. The hidden ``.<out>.lock``
    beside the output, removed at the end (a run that starts in the instant between the removal and the release
    could still pass: the lock guards against runs minutes apart, not microseconds). Where no lock file can be
    made (the parent is a file, a read-only folder) there is none: the run's own check of the path says why."""
    from filelock import FileLock, Timeout

    from . import TextDistillError

    if os.environ.get("RANK", "0") != "0":
        yield
        return
    out = Path(out_dir)
    path = out.parent / f".{out.name}.lock"
    made = [p for p in [out.parent, *out.parent.parents] if not p.exists()]  # (removed again if still empty)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    except OSError:
        _remove_empty(made)
        yield
        return
    lock = FileLock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise TextDistillError(f"{out}: another run is writing it now (it holds {path}); wait for it to end or "
                               f"choose another output") from None
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        lock.release()
        _remove_empty(made)


def _remove_empty(folders) -> None:
    for p in folders:  # (deepest first)
        try:
            p.rmdir()
        except OSError:
            pass

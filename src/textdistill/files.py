"""Files written whole or not at all, and files by content."""
from __future__ import annotations

import hashlib
import logging
import os
from contextlib import contextmanager
from pathlib import Path

from . import TextDistillError

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


class OutputBusy(TextDistillError):
    """Another run holds the output folder (:func:`output_lock`)."""


def _lockable(folder: Path) -> bool:
    """Whether a lock file can be made beside ``folder``: its parent created if need be (parents made here and
    left empty are removed by the caller's :func:`_remove_empty`) and a file written there (a temporary one: an
    empty file at the lock's path would read as a lock held by an old filelock where ``flock`` is missing)."""
    import tempfile

    for _ in range(2):  # (once more if another run removed a parent it had made between the two steps)
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder.parent):
                return True
        except FileNotFoundError:
            continue
        except OSError:
            return False
    return False


@contextmanager
def build_lock(folder, what: str):
    """Held while ``folder`` -- a generated transfer set or a teacher cache, built once and reused by every run
    that names it -- is checked and built: a second process (two grids side by side) waits, then finds it
    built and reuses it instead of building it again over the first one's work. An OS lock (``filelock``) on
    the hidden ``.<folder>.lock`` beside it (:func:`_holding`), released by the OS if its process dies."""
    folder = Path(folder)
    if folder.parent.exists() and not folder.parent.is_dir():
        raise TextDistillError(f"{folder}: {folder.parent} is not a folder")
    if not _lockable(folder):
        raise TextDistillError(f"{folder}: cannot write in {folder.parent} (read-only, or not a folder)")
    def wait():  # (a warning: INFO is not shown before a run's log is set up, and this may take hours)
        log.warning("%s %s: another process is building it; waiting for it", what, folder)

    with _holding(folder, wait):
        yield


@contextmanager
def output_lock(out_dir, wait: str | None = None):
    """Held by the run writing ``out_dir`` from its first check to its last write (by rank 0 where a launcher
    started several processes): a second run naming the same output meanwhile is refused in one line
    (:class:`OutputBusy`), instead of emptying the first one's ``.partial`` (``--overwrite``, a resume) under it;
    with ``wait`` (what the output is, e.g. "teacher": one that several suites share) it says so and waits
    instead, and the caller checks again what is there once it holds the lock.
    The hidden ``.<out>.lock`` beside the output, removed at the end. Where no lock file can be made (the parent
    is a file, a read-only folder) there is none: the run's own check of the path says why."""
    from .dist import launched_rank

    if launched_rank() != 0:
        yield
        return
    out = Path(out_dir)
    made = [p for p in [out.parent, *out.parent.parents] if not p.exists()]  # (removed again if still empty)
    if not _lockable(out):
        _remove_empty(made)
        yield
        return
    def refuse():
        if wait:  # (a warning: this may take hours)
            log.warning("%s %s: another run is writing it now; waiting for it", wait, out)
            return
        raise OutputBusy(f"{out}: another run is writing it now (it holds {out.parent / f'.{out.name}.lock'}); "
                         f"wait for it to end or choose another output")

    try:
        with _holding(out, refuse):
            yield
    finally:
        _remove_empty(made)


@contextmanager
def _holding(folder: Path, busy):
    """The OS lock on the hidden ``.<folder>.lock`` beside ``folder``, held; where another process holds it,
    ``busy()`` first (it says so, or raises), then wait for it. The file is removed before the lock is released
    (filelock >= 4.3 makes a waiter that then holds the removed file lock the path again)."""
    from filelock import FileLock, Timeout

    path = folder.parent / f".{folder.name}.lock"
    lock = FileLock(path)
    try:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            busy()
            lock.acquire()
    except OSError as e:
        raise TextDistillError(f"{folder}: cannot lock {path.name} beside it ({e.strerror or e})") from None
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        lock.release()


def _remove_empty(folders) -> None:
    for p in folders:  # (deepest first)
        try:
            p.rmdir()
        except OSError:
            pass

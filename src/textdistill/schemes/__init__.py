"""Schemes: who learns from whom in a run (see ``base.py``). Importing this package registers them."""
from . import general, offline, online  # noqa: F401  (register "general", "offline", "online")
from . import selfdistill  # noqa: F401
from .base import SCHEMES, Scheme
from .teachers import LiveTeacher

__all__ = ["SCHEMES", "LiveTeacher", "Scheme"]

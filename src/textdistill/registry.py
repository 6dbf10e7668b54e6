"""A name -> function registry with a decorator and a clear error for unknown names."""
from __future__ import annotations

from . import TextDistillError


class Registry(dict):
    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, name: str):
        def deco(fn):
            if name in self:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self[name] = fn
            return fn
        return deco

    def get_or_fail(self, name: str, where: str | None = None):
        if name not in self:
            prefix = f"{where}: " if where else ""
            raise TextDistillError(f"{prefix}unknown {self.kind} '{name}' (known: {', '.join(sorted(self))})")
        return self[name]

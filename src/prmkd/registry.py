"""One registry helper for every extension point (students, teacher families).

An entry maps a name to "module:attribute", imported only when it is asked for, so `import prmkd` stays light.
`register` adds an entry (an object or a "module:attribute" string); the contract tests walk `names()`.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import ConfigError


class Registry:
    def __init__(self, kind: str, entries: dict[str, str] | None = None):
        self.kind = kind  # "model", "teacher family": what an unknown name is called in errors
        self._entries: dict[str, Any] = dict(entries or {})

    def register(self, name: str, target: Any) -> None:
        """Add `name` -> `target` (an object, or "module:attribute" imported when first used)."""
        if name in self._entries:
            raise ValueError(f"{self.kind} '{name}' is already registered")
        self._entries[name] = target

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def get(self, name: str) -> Any:
        if name not in self._entries:
            raise ConfigError(f"unknown {self.kind} '{name}' (known: {', '.join(self._entries)})")
        target = self._entries[name]
        if isinstance(target, str):
            module, attr = target.split(":")
            target = getattr(importlib.import_module(module), attr)
            self._entries[name] = target
        return target

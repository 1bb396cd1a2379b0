"""Name -> class registries with nearest-name suggestions for typos."""
from __future__ import annotations

import difflib
from typing import Generic, TypeVar

from trainables.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str):
        def decorator(obj: T) -> T:
            if name in self._items:
                raise RuntimeError(f"{self.kind} {name!r} registered twice")
            self._items[name] = obj
            return obj

        return decorator

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def get(self, name: str, key: str | None = None) -> T:
        if name not in self._items:
            raise ConfigError(unknown_name_message(key or self.kind, name, self.names()))
        return self._items[name]


def unknown_name_message(key: str, value: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(str(value), allowed, n=3, cutoff=0.5)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return f"{key}: unknown value {value!r}{hint}; allowed: {', '.join(allowed)}"

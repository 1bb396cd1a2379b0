"""Name -> object registries whose unknown names are one-line ConfigErrors with the nearest names."""
from __future__ import annotations

from typing import Generic, Iterator, TypeVar

from trainables.errors import ConfigError, unknown_value

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

    def items(self) -> Iterator[tuple[str, T]]:
        """(name, object) sorted by name."""
        return ((name, self._items[name]) for name in self.names())

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def get(self, name: str, key: str | None = None) -> T:
        if name not in self._items:
            raise ConfigError(f"{key or self.kind}: {unknown_value('value', name, self.names())}")
        return self._items[name]

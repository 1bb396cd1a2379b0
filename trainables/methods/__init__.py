"""Method registry: one file per method, each registering its class by name."""
from __future__ import annotations

from trainables.methods.base import FAMILIES, AsymmetricMethod, Method
from trainables.registry import Registry

METHODS: Registry[type[Method]] = Registry("method")


def register(cls: type[Method]) -> type[Method]:
    if cls.family not in FAMILIES:
        raise RuntimeError(f"{cls.__name__}.family must be one of {FAMILIES}")
    return METHODS.register(cls.name)(cls)


# Imported for their registration side effect.
from trainables.methods import byol, simclr, vicreg  # noqa: E402,F401

__all__ = ["METHODS", "Method", "AsymmetricMethod", "register"]

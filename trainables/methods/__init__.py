"""Method registry: one file per method, each registering its class by name."""
from __future__ import annotations

from typing import Any

from trainables.methods.base import FAMILIES, AsymmetricMethod, Method
from trainables.registry import Registry

METHODS: Registry[type[Method]] = Registry("method")


def register(cls: type[Method]) -> type[Method]:
    if cls.family not in FAMILIES:
        raise RuntimeError(f"{cls.__name__}.family must be one of {FAMILIES}")
    return METHODS.register(cls.name)(cls)


def describe_methods() -> list[dict[str, Any]]:
    """One entry per registered method, sorted by name: name, family, hyperparameters (name ->
    default) and source. What `dualsweep methods` prints."""
    entries = []
    for name in METHODS.names():
        cls = METHODS.get(name)
        entries.append({"name": name, "family": cls.family, "hyperparameters": cls.hyperparameters(), "source": cls.source})
    return entries


# Imported for their registration side effect.
from trainables.methods import (  # noqa: E402,F401
    barlow_twins,
    byol,
    dcl,
    dcl_abs,
    dcl_sq,
    directclr,
    directpred,
    generalized,
    simclr,
    simclr_abs,
    simclr_sq,
    simsiam,
    spectral,
    vicreg,
    vicreg_ctr,
    vicreg_exp,
)

__all__ = ["METHODS", "Method", "AsymmetricMethod", "register", "describe_methods"]

"""Every SSL method, one file each: importing this package registers them all in METHODS.

A method file subclasses Method or AsymmetricMethod (trainables.methods.base), declares its family,
hyperparameters, loss and loss terms, and registers itself with @register."""
from __future__ import annotations

from typing import Any

from trainables.methods import (  # noqa: F401  (registration)
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
from trainables.methods.base import FAMILIES, METHODS, AsymmetricMethod, Method, register


def describe_methods() -> list[dict[str, Any]]:
    """One entry per registered method, sorted by name: name, family, hyperparameters (name ->
    default), loss terms and source. What `dualsweep methods` prints."""
    return [{"name": name, "family": cls.family, "hyperparameters": cls.hyperparameters(),
             "loss_terms": list(cls.loss_terms), "source": cls.source} for name, cls in METHODS.items()]


__all__ = ["FAMILIES", "METHODS", "Method", "AsymmetricMethod", "register", "describe_methods"]

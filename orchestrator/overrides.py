"""Dotted keys: the one parser of `key=value` overrides (for `dualsweep train` and for a sweep
file's command-line overrides), and the helpers that move between nested and dotted configs."""
from __future__ import annotations

from typing import Any, Callable

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from orchestrator.messages import first_line, one_line


class OverrideError(ValueError):
    """A `key=value` argument that cannot be read; its message is one line."""

    def __init__(self, message: str):
        super().__init__(one_line(message))


def parse_overrides(pairs: list[str], example: str) -> dict:
    """`["optim.lr=0.3", "method=vicreg"]` -> `{"optim": {"lr": 0.3}, "method": "vicreg"}`, values
    typed as YAML reads them. `example` completes the message of a malformed pair."""
    config = OmegaConf.create()
    for pair in pairs:
        if "=" not in pair or pair.startswith("="):
            raise OverrideError(f"override {pair!r}: expected key=value with a dotted key, e.g. {example}")
        try:
            config.merge_with_dotlist([pair])
        except yaml.YAMLError as exc:
            # A MarkedYAMLError's first line is its context ("while parsing a flow node"), its problem the cause.
            reason = getattr(exc, "problem", None) or first_line(exc)
            raise OverrideError(f"override {pair!r}: the value is not valid YAML ({reason}); give a number, "
                                "a string (quoted where it holds YAML's characters), a [list] or a {mapping}") from None
        except OmegaConfBaseException as exc:
            raise OverrideError(f"override {pair!r}: {first_line(exc)}") from None
    return OmegaConf.to_container(config)


def dotted(tree: dict, is_leaf: Callable[[Any], bool] = lambda v: not isinstance(v, dict), prefix: str = "") -> dict:
    """Nested sections -> dotted keys, down to the values `is_leaf` accepts (or empty sections)."""
    flat: dict = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if is_leaf(value) or not value:
            flat[name] = value
        else:
            flat.update(dotted(value, is_leaf, name + "."))
    return flat


def set_dotted(config: dict, key: str, value: Any) -> None:
    """config["a"]["b"] = value for key "a.b"; a ValueError when "a" holds a value, not a section."""
    node = config
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"{key}: {part} is not a section of the trial config")
    node[parts[-1]] = value

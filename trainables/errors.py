"""The one exception type for mistakes a user can make in a trial config or on disk, and the one
"did you mean" helper that every message naming an unknown value uses (orchestrator included)."""
from __future__ import annotations

import difflib


class ConfigError(ValueError):
    """A user error: bad config value, unknown name, missing dataset root.

    The CLI prints its message on one line and exits non-zero, without a traceback.
    """


def did_you_mean(value: object, allowed: list[str]) -> str:
    """' (did you mean x?)' for the allowed names closest to `value`, or ''."""
    close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=3, cutoff=0.6)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def unknown_value(what: str, value: object, allowed: list[str]) -> str:
    """"unknown <what> 'x' (did you mean y?); allowed: a, b, c"."""
    return f"unknown {what} {value!r}{did_you_mean(value, allowed)}; allowed: {', '.join(map(str, allowed))}"

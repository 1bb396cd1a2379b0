"""The one exception type for mistakes a user can make in a trial config or on disk, the one for a
checkpoint that cannot be read, and the one "did you mean" helper that every message naming an unknown value uses (orchestrator included)."""
from __future__ import annotations

import difflib
import unicodedata

# Every character at which str.splitlines() breaks a line.
LINE_BREAKS = frozenset("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")


def one_line(text: str) -> str:
    """`text` with line breaks and other control characters escaped (\\n, \\x85): a message that
    quotes a user's key or path as typed stays one line."""
    return "".join(c.encode("unicode_escape").decode() if c in LINE_BREAKS or unicodedata.category(c) == "Cc" else c
                   for c in text)


class ConfigError(ValueError):
    """A user error: bad config value, unknown name, missing dataset root.

    The CLI prints its message on one line and exits non-zero, without a traceback; the message is
    one line whatever the user's keys and values hold.
    """

    def __init__(self, message: str):
        super().__init__(one_line(message))


class CheckpointError(ConfigError):
    """A checkpoint that cannot be read (truncated, corrupt, missing its state file): a one-line
    error for `dualsweep train --resume`; in a sweep the trial falls back to the checkpoint before."""


def did_you_mean(value: object, allowed: list[str]) -> str:
    """' (did you mean x?)' for the allowed names closest to `value`, or ''."""
    close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=3, cutoff=0.6)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def unknown_value(what: str, value: object, allowed: list[str]) -> str:
    """"unknown <what> 'x' (did you mean y?); allowed: a, b, c"."""
    return f"unknown {what} {value!r}{did_you_mean(value, allowed)}; allowed: {', '.join(map(str, allowed))}"

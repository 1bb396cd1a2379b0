"""How the orchestrator words a user's mistake: one line per problem, `<source>: <key>: <what is
allowed>`, collected so that one run of `validate` reports all of them. The "did you mean" wording
is trainables' own (trainables.errors), so a trial and a sweep say it the same way."""
from __future__ import annotations

from trainables.errors import did_you_mean, one_line, unknown_value

__all__ = ["SpecError", "Problems", "first_line", "did_you_mean", "one_line", "unknown_value"]


class SpecError(Exception):
    """Every problem found in a sweep file or a command's arguments, one line each; the CLI prints
    them and exits 2."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


class Problems:
    """Collects one-line problems as `<source>: <key>: <message>`."""

    def __init__(self, source: str):
        self.source = source
        self.lines: list[str] = []

    def add(self, key: str, message: str) -> None:
        # Keys and values are quoted as the file or command line has them: escaped to stay one line.
        line = one_line(f"{self.source}: {key}: {message}" if key else f"{self.source}: {message}")
        if line not in self.lines:
            self.lines.append(line)

    def raise_if_any(self) -> None:
        if self.lines:
            raise SpecError(self.lines)


def first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__

"""Errors of the policy language.

::

    PolicyError                 root: catch this to handle anything the package raises
    └── PolicyValidationError   the policy text is wrong; ``.issues`` lists every problem

Validation collects *all* problems before raising, so an operator fixing a policy file sees
every mistake in one run instead of one per attempt. Each problem is an :class:`Issue` that
names the source (file name), the path inside it, the line, and what is wrong.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "InvalidValueError",
    "Issue",
    "PolicyError",
    "PolicyValidationError",
    "Reporter",
    "format_path",
    "suggest",
]

PathKey = tuple[str | int, ...]


def format_path(path: PathKey) -> str:
    """Render ``("policies", 0, "rules", 1, "when")`` as ``policies[0].rules[1].when``."""
    out: list[str] = []
    for part in path:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif out:
            out.append(f".{part}")
        else:
            out.append(part)
    return "".join(out)


def suggest(word: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or ``""`` when none is close."""
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem in one policy source, precise enough to jump to in an editor."""

    source: str
    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class PolicyError(Exception):
    """Root of every error the policies package raises."""


class PolicyValidationError(PolicyError):
    """The policy text is invalid. ``issues`` holds every problem found, in source order."""

    def __init__(self, issues: Iterable[Issue]) -> None:
        self.issues: list[Issue] = list(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))


class InvalidValueError(ValueError):
    """Internal: a value in the policy is wrong; the message is shown to the policy author.

    Raised by the small validators (durations, paths, operands) and turned into an
    :class:`Issue` by the caller, which knows the path and line.
    """


class Reporter:
    """Collects issues for one source, resolving each path to the nearest known line.

    Validation code calls :meth:`add` and keeps going, so all mistakes are reported at once.
    """

    def __init__(self, source: str, lines: Mapping[PathKey, int] | None = None) -> None:
        self.source = source
        self.lines: Mapping[PathKey, int] = lines or {}
        self.issues: list[Issue] = []

    def line_of(self, path: PathKey) -> int | None:
        """Line of ``path``, or of its closest ancestor that has one."""
        for cut in range(len(path), -1, -1):
            line = self.lines.get(path[:cut])
            if line is not None:
                return line
        return None

    def add(self, path: PathKey, message: str, *, line: int | None = None) -> None:
        """Record one problem at ``path``."""
        self.issues.append(
            Issue(self.source, format_path(path), line if line is not None else self.line_of(path), message)
        )

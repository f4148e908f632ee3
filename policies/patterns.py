"""Tool patterns: exact names and fnmatch-style globs, and which one wins.

A ``tool`` containing ``*``, ``?`` or a ``[...]`` set is a glob with :func:`fnmatch.fnmatchcase`
semantics (case-sensitive; ``*`` also crosses dots, so ``stripe.*`` matches
``stripe.refunds.create``). Anything else is an exact name.

Precedence, deterministic and independent of how often a tool is called:

1. an exact-name entry always beats every glob;
2. among matching globs, the longest literal prefix (characters before the first wildcard)
   wins: ``stripe.issue_*`` beats ``stripe.*`` beats ``*``;
3. then the most literal characters overall: ``stripe.*_refund`` beats ``stripe.*``;
4. then the earlier entry (source order, then file order).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable

__all__ = ["compile_glob", "glob_rank", "is_glob"]

# A wildcard token as fnmatch reads it: ``*``, ``?`` or a closed bracket set such as ``[a-z]``
# (an unclosed ``[`` is a literal character, as in fnmatch).
_WILDCARDS = re.compile(r"\[!?\]?[^\]]*\]|[*?]")


def is_glob(pattern: str) -> bool:
    """True when ``pattern`` has a wildcard and so needs glob matching."""
    return _WILDCARDS.search(pattern) is not None


def glob_rank(pattern: str, order: int) -> tuple[int, int, int]:
    """Sort key: lower sorts first and wins (see the module docstring)."""
    first = _WILDCARDS.search(pattern)
    prefix = first.start() if first else len(pattern)
    literal = len(_WILDCARDS.sub("", pattern))
    return (-prefix, -literal, order)


def compile_glob(pattern: str) -> Callable[[str], object]:
    """A matcher for one glob: ``matcher(tool)`` is truthy when the tool name matches."""
    return re.compile(fnmatch.translate(pattern)).match

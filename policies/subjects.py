"""Subjects: what a condition looks at (``arg``, ``agent``), and how to fetch it fast.

A condition is ``{<subject>: <path>, <op>: <operand>}``. The subject key names a source of
values and its value selects one inside it: ``{arg: customer.id, ...}`` reads the call's
arguments, ``{agent: name, ...}`` reads the calling agent's name. Adding a subject later
(``session``, ``context``) means adding one entry to :data:`SUBJECTS` and one slot to the
evaluation context tuple built by ``CompiledPolicy.decide``; operators and combinators do
not change.

At decision time predicates receive ``ctx = (args, agent)``. A plain tuple (not an object)
because building it costs a few nanoseconds on the hot path.

Missing values are represented by :data:`MISSING` (never None: an argument can legitimately
be null). Operators treat MISSING as "no match", so a missing argument never silently
satisfies a comparison.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from .errors import InvalidValueError

__all__ = ["MISSING", "SUBJECTS", "Predicate", "Subject", "Test", "walk"]


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final[Any] = _Missing()

Test = Callable[[Any], bool]
"""An operator bound to its operand: value (possibly MISSING) -> matches?"""

Predicate = Callable[[tuple[Any, ...]], bool]
"""A compiled condition: evaluation context -> matches?"""

Segment = tuple[str, int | None]


def walk(root: Any, segments: tuple[Segment, ...]) -> Any:
    """Follow a dotted path through mappings and lists; MISSING as soon as a step fails.

    Numeric segments index lists (``items.0``) and are plain keys in mappings. Strings are
    never indexed, so ``name.0`` is missing rather than the first character.
    """
    current = root
    for key, index in segments:
        kind = type(current)
        if kind is dict:
            current = current.get(key, MISSING)
            if current is MISSING:
                return MISSING
        elif kind is list:
            if index is None or index >= len(current):
                return MISSING
            current = current[index]
        elif isinstance(current, Mapping):
            try:
                current = current[key]
            except Exception:  # noqa: BLE001 - a hostile Mapping must not break decide()
                return MISSING
        elif index is not None and isinstance(current, (list, tuple)):
            if index >= len(current):
                return MISSING
            current = current[index]
        else:
            return MISSING
    return current


def parse_dotted_path(raw: object) -> tuple[str, ...]:
    """Validate ``customer.id`` / ``items.0.sku``; raise InvalidValueError with a user-facing message."""
    if not isinstance(raw, str):
        raise InvalidValueError(f"path must be a string like 'customer.id', got {raw!r}")
    parts = tuple(raw.split("."))
    if not raw or any(not part for part in parts):
        raise InvalidValueError(
            f"invalid path {raw!r}: segments must be non-empty (like 'customer.id' or 'items.0')"
        )
    return parts


def _bind_arg(path: tuple[str, ...], test: Test) -> Predicate:
    """Predicate reading ``args`` at ``path``; the one-key case skips the generic walk."""
    segments = tuple((part, int(part) if part.isdigit() and part.isascii() else None) for part in path)
    missing = MISSING
    if len(segments) == 1:
        key = path[0]

        def predicate_key(ctx: tuple[Any, ...]) -> bool:
            args = ctx[0]
            return test(args.get(key, missing) if type(args) is dict else walk(args, segments))

        return predicate_key

    def predicate_path(ctx: tuple[Any, ...]) -> bool:
        return test(walk(ctx[0], segments))

    return predicate_path


def _parse_agent_path(raw: object) -> tuple[str, ...]:
    if raw != "name":
        raise InvalidValueError(f"the agent subject has one field, 'name' (write 'agent: name'), got {raw!r}")
    return ("name",)


def _bind_agent(path: tuple[str, ...], test: Test) -> Predicate:
    """Predicate on the calling agent's name (MISSING when the call names no agent)."""
    missing = MISSING

    def predicate_agent(ctx: tuple[Any, ...]) -> bool:
        agent = ctx[1]
        return test(missing if agent is None else agent)

    return predicate_agent


def _arg_expr(path: tuple[str, ...], const: Callable[[Any], str]) -> str:
    """Inline expression for policies.codegen; ``args`` is known to be a dict there.

    Nested paths take a fast lane while every step is a plain dict; as soon as one is not
    (a list, a missing key, anything else) the whole path is re-read with :func:`walk`,
    which holds the full semantics.
    """
    expr = f"args.get({const(path[0])}, M)"
    if len(path) == 1:
        return expr
    segments = tuple((part, int(part) if part.isdigit() and part.isascii() else None) for part in path)
    slow = f"walk(args, {const(segments)})"
    step = const("step")  # a unique prefix for this path's temporaries
    for level, (key, index) in enumerate(segments[1:], start=1):
        temp = f"_{step}_{level}"
        otherwise = slow if level == len(path) - 1 else "None"
        if index is not None:  # a list index, or a plain key of a mapping
            otherwise = (
                f"({temp}[{index}] if type({temp}) is list and len({temp}) > {index} else {otherwise})"
            )
        expr = f"({temp}.get({const(key)}, M) if type({temp} := {expr}) is dict else {otherwise})"
    return expr


def _agent_expr(path: tuple[str, ...], const: Callable[[Any], str]) -> str:
    return "(M if agent is None else agent)"


@dataclass(frozen=True, slots=True)
class Subject:
    """A source of values for conditions.

    ``parse_path`` validates the path at load time; ``bind`` builds the closure predicate;
    ``expr`` (optional) gives policies.codegen an inline expression for the value, reading
    the locals ``args``/``agent`` and constants named by ``const(value)``. A subject without
    ``expr`` still works everywhere: generated code then calls its bound predicate.
    """

    name: str
    parse_path: Callable[[object], tuple[str, ...]]
    bind: Callable[[tuple[str, ...], Test], Predicate]
    example: str
    expr: Callable[[tuple[str, ...], Callable[[Any], str]], str] | None = None


SUBJECTS: Final[Mapping[str, Subject]] = {
    "arg": Subject("arg", parse_dotted_path, _bind_arg, "arg: customer.id", _arg_expr),
    "agent": Subject("agent", _parse_agent_path, _bind_agent, "agent: name", _agent_expr),
}

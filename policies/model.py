"""Value types: the decision a gateway acts on, and the validated, normalized policy spec.

Everything here is immutable. The spec (``PolicySet`` and friends) is the output of
validation and the only input of compilation, so compile code never sees raw YAML and never
has to re-check it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeAlias

__all__ = [
    "DEFAULT_APPROVAL_TIMEOUT_S",
    "UNSET",
    "Action",
    "AllOf",
    "AnyOf",
    "Compare",
    "Condition",
    "Decision",
    "DefaultsSpec",
    "Location",
    "Not",
    "PolicySet",
    "PolicyTestSpec",
    "RuleSpec",
    "ToolPolicySpec",
]

DEFAULT_APPROVAL_TIMEOUT_S = 900


class Action(StrEnum):
    """What the gateway does with a call. String-valued so it serializes as itself."""

    ALLOW = "allow"
    BLOCK = "block"
    REQUIRE_APPROVAL = "require_approval"


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one ``decide`` call.

    ``rule`` is the matched rule's id, or None when a default applied. ``reason`` is always
    set because the agent (an LLM) reads it to understand a block. ``approval_timeout_s`` is
    the approval window for ``require_approval`` and 0 for other actions.
    """

    action: Action
    rule: str | None
    reason: str
    approval_timeout_s: int


@dataclass(frozen=True, slots=True)
class Location:
    """Where a spec item was written, for error messages that span several sources."""

    source: str
    path: str
    line: int | None

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        return f"{where} ({self.path})" if self.path else where


# --- conditions: a tiny AST, compiled to closures by conditions.compile_condition ----------


@dataclass(frozen=True, slots=True)
class Compare:
    """``{<subject>: <path>, <op>: <operand>}``, e.g. ``{arg: customer.id, startswith: cus_}``."""

    subject: str
    path: tuple[str, ...]
    op: str
    operand: Any


@dataclass(frozen=True, slots=True)
class AllOf:
    """``all: [...]``: every item matches."""

    items: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    """``any: [...]``: at least one item matches."""

    items: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class Not:
    """``not: {...}``: the item does not match."""

    item: Condition


Condition: TypeAlias = Compare | AllOf | AnyOf | Not


# --- the policy spec ------------------------------------------------------------------------


class _Unset:
    """Marks an optional field that was absent (distinct from an explicit null)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """One rule. ``id`` is the name, or ``<tool pattern>#<index>`` for unnamed rules."""

    id: str
    name: str | None
    when: Condition | None
    action: Action
    reason: str | None
    approval_timeout_s: int | None
    location: Location = field(compare=False)


@dataclass(frozen=True, slots=True)
class ToolPolicySpec:
    """One ``policies[]`` entry: a tool name or glob, its rules, and its optional default."""

    tool: str
    rules: tuple[RuleSpec, ...]
    default: Action | None
    approval_timeout_s: int | None
    location: Location = field(compare=False)


@dataclass(frozen=True, slots=True)
class DefaultsSpec:
    """The ``defaults`` block, filled in with the built-in defaults when absent."""

    action: Action = Action.ALLOW
    approval_timeout_s: int = DEFAULT_APPROVAL_TIMEOUT_S
    location: Location | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class PolicyTestSpec:
    """One ``tests[]`` case. ``expect_rule`` is UNSET when not asserted, None for "a default"."""

    name: str | None
    tool: str
    args: dict[str, Any]
    agent: str | None
    expect: Action
    expect_rule: Any
    location: Location = field(compare=False)
    expect_rule_location: Location | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class PolicySet:
    """A validated policy: merged from one or more sources, ready to compile.

    ``sources`` keeps the original ``(name, text)`` pairs so the gateway can store exactly
    what was applied next to the version digest.
    """

    defaults: DefaultsSpec = DefaultsSpec()
    policies: tuple[ToolPolicySpec, ...] = ()
    tests: tuple[PolicyTestSpec, ...] = ()
    sources: tuple[tuple[str, str], ...] = field(default=(), compare=False)

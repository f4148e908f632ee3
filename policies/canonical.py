"""The normalized form of a PolicySet and its digest: the identity of a policy version.

The digest is sha256 over a canonical JSON dump (sorted keys, no whitespace, UTF-8) of the
*normalized* spec: durations in seconds, defaults filled in, conditions in one shape,
domains lower-cased. So formatting, comments, key order, ``15m`` vs ``900``, or splitting a
policy over several files do not change it; a change in meaning, order of rules or entries,
or the tests does. Source names and line numbers are not part of it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .model import (
    UNSET,
    AllOf,
    AnyOf,
    Compare,
    Condition,
    Not,
    PolicySet,
    PolicyTestSpec,
    RuleSpec,
    ToolPolicySpec,
)

__all__ = ["canonical_json", "digest_of", "to_canonical"]


def _condition(condition: Condition) -> dict[str, Any]:
    if isinstance(condition, Compare):
        operand = list(condition.operand) if isinstance(condition.operand, tuple) else condition.operand
        return {condition.subject: ".".join(condition.path), condition.op: operand}
    if isinstance(condition, Not):
        return {"not": _condition(condition.item)}
    key = "all" if isinstance(condition, AllOf) else "any"
    assert isinstance(condition, (AllOf, AnyOf))
    return {key: [_condition(item) for item in condition.items]}


def _rule(rule: RuleSpec) -> dict[str, Any]:
    return {
        "id": rule.id,
        "when": None if rule.when is None else _condition(rule.when),
        "action": rule.action.value,
        "reason": rule.reason,
        "approval_timeout_s": rule.approval_timeout_s,
    }


def _entry(entry: ToolPolicySpec) -> dict[str, Any]:
    return {
        "tool": entry.tool,
        "rules": [_rule(rule) for rule in entry.rules],
        "default": None if entry.default is None else entry.default.value,
        "approval_timeout_s": entry.approval_timeout_s,
    }


def _test(test: PolicyTestSpec) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": test.name,
        "call": {"tool": test.tool, "args": test.args, "agent": test.agent},
        "expect": test.expect.value,
    }
    if test.expect_rule is not UNSET:
        out["expect_rule"] = test.expect_rule
    return out


def to_canonical(policy_set: PolicySet) -> dict[str, Any]:
    """The normalized spec as plain JSON-compatible data (what the digest covers)."""
    return {
        "format": 1,
        "defaults": {
            "action": policy_set.defaults.action.value,
            "approval_timeout_s": policy_set.defaults.approval_timeout_s,
        },
        "policies": [_entry(entry) for entry in policy_set.policies],
        "tests": [_test(test) for test in policy_set.tests],
    }


def canonical_json(policy_set: PolicySet) -> str:
    """Deterministic JSON text of :func:`to_canonical`."""
    return json.dumps(
        to_canonical(policy_set), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True
    )


def digest_of(policy_set: PolicySet) -> str:
    """sha256 hex of :func:`canonical_json`: the same policy meaning gives the same digest."""
    return hashlib.sha256(canonical_json(policy_set).encode("utf-8")).hexdigest()

"""Validate one loaded document (plain data + lines) into spec objects.

Checks shape only: keys, types, actions, durations, conditions. Checks that need every
source at once (one ``defaults`` block, unique tool patterns and rule names, test
``expect_rule`` references) live in :mod:`policies.load`.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from .conditions import parse_condition
from .durations import parse_duration
from .errors import InvalidValueError, PathKey, Reporter, format_path, suggest
from .model import (
    DEFAULT_APPROVAL_TIMEOUT_S,
    UNSET,
    Action,
    DefaultsSpec,
    Location,
    PolicyTestSpec,
    RuleSpec,
    ToolPolicySpec,
)
from .operators import describe_value

__all__ = ["DocumentSpec", "parse_document"]

_TOP_KEYS = ("defaults", "policies", "tests")
_DEFAULTS_KEYS = ("action", "approval_timeout")
_ENTRY_KEYS = ("tool", "rules", "default", "approval_timeout")
_RULE_KEYS = ("name", "when", "action", "reason", "approval_timeout")
_TEST_KEYS = ("name", "call", "expect", "expect_rule")
_CALL_KEYS = ("tool", "args", "agent")
_ACTIONS = tuple(action.value for action in Action)


@dataclass(slots=True)
class DocumentSpec:
    """What one source contributes before merging."""

    defaults: DefaultsSpec | None = None
    defaults_at: Location | None = None
    policies: list[ToolPolicySpec] = field(default_factory=list)
    tests: list[PolicyTestSpec] = field(default_factory=list)
    # Every tool pattern and rule id written, even in entries that failed validation, so
    # duplicates and test references are checked in the same run as everything else.
    tool_sites: list[tuple[str, Location]] = field(default_factory=list)
    rule_sites: list[tuple[str, Location]] = field(default_factory=list)


def parse_document(data: Any, report: Reporter) -> DocumentSpec:
    """Validate a whole document; every problem goes to ``report``, valid parts are returned."""
    return _Parser(report).document(data)


class _Parser:
    def __init__(self, report: Reporter) -> None:
        self.report = report
        self.spec = DocumentSpec()

    # --- helpers ------------------------------------------------------------------------

    def location(self, path: PathKey) -> Location:
        return Location(self.report.source, format_path(path), self.report.line_of(path))

    def mapping(self, raw: Any, path: PathKey, allowed: Collection[str], what: str) -> dict[str, Any] | None:
        """Return ``raw`` if it is a mapping, reporting unknown keys (with suggestions)."""
        if not isinstance(raw, dict):
            self.report.add(path, f"{what} must be a mapping, got {describe_value(raw)}")
            return None
        for key in raw:
            if key not in allowed:
                hint = suggest(key, allowed) or f" (allowed: {', '.join(allowed)})"
                self.report.add((*path, key), f"unknown key '{key}'{hint}")
        return raw

    def required(self, raw: dict[str, Any], key: str, path: PathKey) -> bool:
        if key not in raw:
            self.report.add(path, f"missing required key '{key}'")
            return False
        return True

    def string(self, raw: Any, path: PathKey, what: str) -> str | None:
        if not isinstance(raw, str) or not raw.strip():
            self.report.add(path, f"{what} must be a non-empty string, got {describe_value(raw)}")
            return None
        return raw

    def action(self, raw: Any, path: PathKey) -> Action | None:
        if isinstance(raw, str) and raw in _ACTIONS:
            return Action(raw)
        if isinstance(raw, str):
            hint = suggest(raw, _ACTIONS) or f" (expected one of: {', '.join(_ACTIONS)})"
            self.report.add(path, f"unknown action '{raw}'{hint}")
        else:
            self.report.add(path, f"action must be one of {', '.join(_ACTIONS)}, got {describe_value(raw)}")
        return None

    def duration(self, raw: Any, path: PathKey) -> int | None:
        try:
            return parse_duration(raw)
        except InvalidValueError as exc:
            self.report.add(path, str(exc))
            return None

    # --- sections -----------------------------------------------------------------------

    def document(self, data: Any) -> DocumentSpec:
        spec = self.spec
        if data is None:
            return spec
        top = self.mapping(data, (), _TOP_KEYS, "a policy document")
        if top is None:
            return spec
        if "defaults" in top:
            spec.defaults_at = self.location(("defaults",))
            spec.defaults = self.defaults(top["defaults"], ("defaults",))
        if "policies" in top:
            spec.policies = self.sequence(top["policies"], ("policies",), self.entry)
        if "tests" in top:
            spec.tests = self.sequence(top["tests"], ("tests",), self.test)
        return spec

    def sequence(self, raw: Any, path: PathKey, parse_item: Any) -> list[Any]:
        if raw is None:
            return []
        if not isinstance(raw, list):
            self.report.add(path, f"'{path[-1]}' must be a list, got {describe_value(raw)}")
            return []
        items = [parse_item(item, (*path, index)) for index, item in enumerate(raw)]
        return [item for item in items if item is not None]

    def defaults(self, raw: Any, path: PathKey) -> DefaultsSpec | None:
        block = self.mapping(raw, path, _DEFAULTS_KEYS, "'defaults'")
        if block is None:
            return None
        action: Action | None = Action.ALLOW
        timeout: int | None = DEFAULT_APPROVAL_TIMEOUT_S
        if "action" in block:
            action = self.action(block["action"], (*path, "action"))
        if "approval_timeout" in block:
            timeout = self.duration(block["approval_timeout"], (*path, "approval_timeout"))
        if action is None or timeout is None:
            return None
        return DefaultsSpec(action, timeout, self.location(path))

    def entry(self, raw: Any, path: PathKey) -> ToolPolicySpec | None:
        block = self.mapping(raw, path, _ENTRY_KEYS, "a policy entry")
        if block is None:
            return None
        before = len(self.report.issues)
        tool = (
            self.string(block["tool"], (*path, "tool"), "'tool'")
            if self.required(block, "tool", path)
            else None
        )
        if tool is not None:
            self.spec.tool_sites.append((tool, self.location(path)))
        default = self.action(block["default"], (*path, "default")) if "default" in block else None
        timeout = (
            self.duration(block["approval_timeout"], (*path, "approval_timeout"))
            if "approval_timeout" in block
            else None
        )
        rules: list[RuleSpec] = []
        if "rules" in block:
            owner = tool or "?"
            rules = self.sequence(
                block["rules"], (*path, "rules"), lambda item, at: self.rule(item, at, owner)
            )
        if len(self.report.issues) > before or tool is None:
            return None
        return ToolPolicySpec(tool, tuple(rules), default, timeout, self.location(path))

    def rule(self, raw: Any, path: PathKey, tool: str) -> RuleSpec | None:
        block = self.mapping(raw, path, _RULE_KEYS, "a rule")
        if block is None:
            return None
        before = len(self.report.issues)
        name = None
        if "name" in block:
            name = self.string(block["name"], (*path, "name"), "rule name")
            if name is not None and ("#" in name or name != name.strip()):
                self.report.add(
                    (*path, "name"), f"rule name {name!r} must not contain '#' or surrounding spaces"
                )
        when = parse_condition(block["when"], (*path, "when"), self.report) if "when" in block else None
        action = (
            self.action(block["action"], (*path, "action")) if self.required(block, "action", path) else None
        )
        reason = self.string(block["reason"], (*path, "reason"), "reason") if "reason" in block else None
        timeout = None
        if "approval_timeout" in block:
            timeout = self.duration(block["approval_timeout"], (*path, "approval_timeout"))
            if action is not None and action is not Action.REQUIRE_APPROVAL:
                self.report.add(
                    (*path, "approval_timeout"),
                    f"approval_timeout only applies to action require_approval (this rule's action is {action})",
                )
        rule_id = name if name is not None else f"{tool}#{path[-1]}"
        self.spec.rule_sites.append((rule_id, self.location(path)))
        if len(self.report.issues) > before or action is None:
            return None
        return RuleSpec(rule_id, name, when, action, reason, timeout, self.location(path))

    def test(self, raw: Any, path: PathKey) -> PolicyTestSpec | None:
        block = self.mapping(raw, path, _TEST_KEYS, "a test")
        if block is None:
            return None
        before = len(self.report.issues)
        name = self.string(block["name"], (*path, "name"), "test name") if "name" in block else None
        call = None
        if self.required(block, "call", path):
            call = self.mapping(block["call"], (*path, "call"), _CALL_KEYS, "'call'")
        tool, args, agent = None, {}, None
        if call is not None:
            if self.required(call, "tool", (*path, "call")):
                tool = self.string(call["tool"], (*path, "call", "tool"), "'tool'")
            if "args" in call and call["args"] is not None:
                if isinstance(call["args"], dict):
                    args = call["args"]
                else:
                    self.report.add(
                        (*path, "call", "args"),
                        f"'args' must be a mapping, got {describe_value(call['args'])}",
                    )
            if "agent" in call and call["agent"] is not None:
                agent = self.string(call["agent"], (*path, "call", "agent"), "'agent'")
        expect = (
            self.action(block["expect"], (*path, "expect")) if self.required(block, "expect", path) else None
        )
        expect_rule: Any = UNSET
        if "expect_rule" in block:
            expect_rule = block["expect_rule"]
            if expect_rule is not None and not isinstance(expect_rule, str):
                self.report.add(
                    (*path, "expect_rule"),
                    f"expect_rule must be a rule id or null (a default applied), got {describe_value(expect_rule)}",
                )
        if len(self.report.issues) > before or tool is None or expect is None:
            return None
        return PolicyTestSpec(
            name,
            tool,
            args,
            agent,
            expect,
            expect_rule,
            self.location(path),
            self.location((*path, "expect_rule")),
        )

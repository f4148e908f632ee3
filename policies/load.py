"""Policy sources (name, YAML text) -> one validated :class:`PolicySet`.

The gateway may load a folder of YAML files; each is a *source*. Sources are parsed
independently and then merged, with the cross-source rules checked here:

- ``defaults`` may appear in at most one source;
- a ``tool`` pattern may appear in only one entry (across all sources);
- a rule name may be used only once (rule ids are what decisions and the audit log record);
- a test's ``expect_rule`` must name an existing rule.

Merging keeps the order given: entries are in source order, then file order. That order
only matters as the last tie-break between equally specific globs (see
:mod:`policies.patterns`), and it is part of the digest; callers loading a folder should pass
the files sorted by name.

All problems from all sources are raised together as one :class:`PolicyValidationError`.
"""

from __future__ import annotations

from collections.abc import Sequence

from .errors import Issue, PolicyValidationError, Reporter, suggest
from .model import UNSET, DefaultsSpec, Location, PolicySet, PolicyTestSpec, ToolPolicySpec
from .parse import parse_document
from .yaml_source import load_yaml

__all__ = ["load_policy_sources", "load_policy_text"]


def load_policy_text(text: str, source: str = "<policy>") -> PolicySet:
    """Validate a single YAML source. Raises PolicyValidationError listing every problem."""
    return load_policy_sources([(source, text)])


def load_policy_sources(sources: Sequence[tuple[str, str]]) -> PolicySet:
    """Validate and merge several ``(source name, YAML text)`` pairs into one PolicySet.

    No sources, or only empty ones, give the built-in default: allow everything.
    """
    issues: list[Issue] = []
    defaults: DefaultsSpec | None = None
    defaults_at: Location | None = None
    policies: list[ToolPolicySpec] = []
    tests: list[PolicyTestSpec] = []
    tool_sites: list[tuple[str, Location]] = []
    rule_sites: list[tuple[str, Location]] = []
    for name, text in sources:
        loaded = load_yaml(text, name)
        issues.extend(loaded.issues)
        report = Reporter(name, loaded.lines)
        document = parse_document(loaded.data, report)
        issues.extend(report.issues)
        if document.defaults_at is not None:
            if defaults_at is not None:
                issues.append(_issue_at(document.defaults_at, f"'defaults' is already set in {defaults_at}"))
            else:
                defaults, defaults_at = document.defaults, document.defaults_at
        policies.extend(document.policies)
        tests.extend(document.tests)
        tool_sites.extend(document.tool_sites)
        rule_sites.extend(document.rule_sites)

    issues.extend(_check_unique(tool_sites, "tool '{}' already has a policy entry at {}"))
    named_rules = [(rule_id, location) for rule_id, location in rule_sites if "#" not in rule_id]
    issues.extend(_check_unique(named_rules, "rule name '{}' is already used at {}"))
    issues.extend(_check_tests([rule_id for rule_id, _ in rule_sites], tests))
    if issues:
        order = {name: index for index, (name, _) in enumerate(sources)}
        issues.sort(key=lambda issue: (order.get(issue.source, len(order)), issue.line or 0))
        raise PolicyValidationError(issues)
    return PolicySet(
        defaults=defaults or DefaultsSpec(),
        policies=tuple(policies),
        tests=tuple(tests),
        sources=tuple((name, text) for name, text in sources),
    )


def _issue_at(location: Location, message: str) -> Issue:
    return Issue(location.source, location.path, location.line, message)


def _check_unique(sites: list[tuple[str, Location]], message: str) -> list[Issue]:
    issues: list[Issue] = []
    first: dict[str, Location] = {}
    for key, location in sites:
        seen = first.setdefault(key, location)
        if seen is not location:
            issues.append(_issue_at(location, message.format(key, seen)))
    return issues


def _check_tests(rule_ids: list[str], tests: list[PolicyTestSpec]) -> list[Issue]:
    known = set(rule_ids)
    issues: list[Issue] = []
    for test in tests:
        expected = test.expect_rule
        if expected is not UNSET and expected is not None and expected not in known:
            issues.append(
                _issue_at(
                    test.expect_rule_location or test.location,
                    f"unknown rule '{expected}'{suggest(expected, rule_ids)}",
                )
            )
    return issues

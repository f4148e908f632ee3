"""Run a policy's own ``tests:`` section (what ``callgate policies test`` does).

Policy authors pin the decisions they care about next to the rules, so a later edit that
changes one fails before it is applied. Tests run against the compiled policy, the same
code path the gateway uses.
"""

from __future__ import annotations

from dataclasses import dataclass

from .compile import CompiledPolicy, compile_policy
from .model import UNSET, Action, Location, PolicySet

__all__ = ["TestFailure", "run_policy_tests"]


@dataclass(frozen=True, slots=True)
class TestFailure:
    """One failed policy test: where it is written, what was expected, what was decided."""

    __test__ = False  # not a pytest test class

    location: Location
    name: str | None
    tool: str
    expected_action: Action
    actual_action: Action
    expected_rule: str | None
    actual_rule: str | None
    message: str

    def __str__(self) -> str:
        label = f" '{self.name}'" if self.name else ""
        return f"{self.location}: test{label}: {self.message}"


def run_policy_tests(policy_set: PolicySet, compiled: CompiledPolicy | None = None) -> list[TestFailure]:
    """Run every test case; return the failures (an empty list means all passed)."""
    policy = compiled if compiled is not None else compile_policy(policy_set)
    failures: list[TestFailure] = []
    for test in policy_set.tests:
        decision = policy.decide(test.tool, test.args, agent=test.agent)
        problems: list[str] = []
        if decision.action is not test.expect:
            problems.append(f"expected {test.expect}, got {decision.action}")
        check_rule = test.expect_rule is not UNSET
        if check_rule and decision.rule != test.expect_rule:
            expected = "a default" if test.expect_rule is None else f"rule '{test.expect_rule}'"
            actual = "a default" if decision.rule is None else f"rule '{decision.rule}'"
            problems.append(f"expected {expected} to decide, got {actual}")
        if problems:
            failures.append(
                TestFailure(
                    location=test.location,
                    name=test.name,
                    tool=test.tool,
                    expected_action=test.expect,
                    actual_action=decision.action,
                    expected_rule=test.expect_rule if check_rule else decision.rule,
                    actual_rule=decision.rule,
                    message=f"call to '{test.tool}': " + "; ".join(problems) + f" ({decision.reason})",
                )
            )
    return failures

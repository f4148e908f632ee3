"""Merging several sources into one PolicySet, and the cross-source checks."""

from __future__ import annotations

import pytest

from policies import Action, PolicyValidationError, compile_policy, load_policy_sources, load_policy_text

STRIPE = """\
defaults: {action: require_approval, approval_timeout: 5m}
policies:
  - tool: stripe.issue_refund
    rules:
      - {name: big, when: {arg: amount, gt: 200}, action: require_approval}
    default: allow
"""

EMAIL = """\
policies:
  - tool: send_email
    rules:
      - {name: outside, when: {not: {arg: to, email_domain_in: [example.com]}}, action: block}
tests:
  - call: {tool: send_email, args: {to: a@evil.com}}
    expect: block
    expect_rule: outside
"""


def issues(sources: list[tuple[str, str]]) -> list[str]:
    with pytest.raises(PolicyValidationError) as caught:
        load_policy_sources(sources)
    return [str(issue) for issue in caught.value.issues]


class TestLoadPolicySources:
    def test_merges_entries_and_tests(self) -> None:
        """Entries and tests from all sources are combined, defaults from the one that has them."""
        policy_set = load_policy_sources([("a.yaml", STRIPE), ("b.yaml", EMAIL)])
        assert [entry.tool for entry in policy_set.policies] == ["stripe.issue_refund", "send_email"]
        assert len(policy_set.tests) == 1
        assert policy_set.defaults.action is Action.REQUIRE_APPROVAL
        assert policy_set.defaults.approval_timeout_s == 300
        assert compile_policy(policy_set).decide("unknown", {}).action is Action.REQUIRE_APPROVAL

    def test_no_sources_means_allow(self) -> None:
        """An empty folder is the built-in default: allow everything."""
        policy = compile_policy(load_policy_sources([]))
        decision = policy.decide("anything", {"x": 1})
        assert (decision.action, decision.rule) == (Action.ALLOW, None)

    def test_empty_and_comment_only_files(self) -> None:
        """Empty files and files with only comments are valid and add nothing."""
        policy_set = load_policy_sources([("a.yaml", ""), ("b.yaml", "# nothing yet\n"), ("c.yaml", "---\n")])
        assert policy_set.policies == ()
        assert policy_set.defaults.action is Action.ALLOW

    def test_defaults_in_two_sources(self) -> None:
        """A second defaults block is an error naming both places."""
        assert issues([("a.yaml", STRIPE), ("b.yaml", "\ndefaults: {action: block}\n")]) == [
            "b.yaml:2: defaults: 'defaults' is already set in a.yaml:1 (defaults)"
        ]

    def test_same_tool_in_two_sources(self) -> None:
        """The same tool pattern in two entries is an error naming both places."""
        other = "policies:\n  - tool: send_email\n    default: allow\n"
        assert issues([("b.yaml", EMAIL), ("c.yaml", other)]) == [
            "c.yaml:2: policies[0]: tool 'send_email' already has a policy entry at b.yaml:2 (policies[0])"
        ]

    def test_same_rule_name_twice(self) -> None:
        """Rule names are unique across the whole set (they identify decisions in the audit log)."""
        other = "policies:\n  - tool: other\n    rules:\n      - {name: big, action: block}\n"
        assert issues([("a.yaml", STRIPE), ("d.yaml", other)]) == [
            "d.yaml:4: policies[0].rules[0]: rule name 'big' is already used at a.yaml:5 (policies[0].rules[0])"
        ]

    def test_expect_rule_may_reference_another_source(self) -> None:
        """Tests can live in a different file from the rules they pin."""
        tests = "tests:\n  - call: {tool: stripe.issue_refund, args: {amount: 500}}\n    expect: require_approval\n    expect_rule: big\n"
        assert len(load_policy_sources([("a.yaml", STRIPE), ("t.yaml", tests)]).tests) == 1

    def test_errors_from_all_sources_are_collected(self) -> None:
        """Problems in several files are raised together, ordered by source then line."""
        found = issues([("a.yaml", "policies:\n  - tool: x\n    default: nope\n"), ("b.yaml", "tests: 1\n")])
        assert found == [
            "a.yaml:3: policies[0].default: unknown action 'nope' (expected one of: allow, block, require_approval)",
            "b.yaml:1: tests: 'tests' must be a list, got number 1",
        ]

    def test_sources_are_kept(self) -> None:
        """The original texts are kept for storing what was applied."""
        assert load_policy_sources([("a.yaml", STRIPE)]).sources == (("a.yaml", STRIPE),)


class TestLoadPolicyText:
    def test_single_source_convenience(self) -> None:
        """load_policy_text is load_policy_sources with one source."""
        assert load_policy_text(STRIPE, "x.yaml") == load_policy_sources([("x.yaml", STRIPE)])

    def test_default_source_name_in_errors(self) -> None:
        """Without a name, errors say <policy>."""
        with pytest.raises(PolicyValidationError, match=r"^<policy>:1: "):
            load_policy_text("nope: 1\n")

"""Validation of one document: every mistake names its path, line and what is wrong."""

from __future__ import annotations

import textwrap

import pytest

from policies import PolicyError, PolicyValidationError, load_policy_text


def issues_of(text: str) -> list[tuple[str, int | None, str]]:
    """(path, line, message) of every issue found in ``text``."""
    with pytest.raises(PolicyValidationError) as caught:
        load_policy_text(textwrap.dedent(text).lstrip("\n"), "p.yaml")
    assert all(issue.source == "p.yaml" for issue in caught.value.issues)
    return [(issue.path, issue.line, issue.message) for issue in caught.value.issues]


def only_issue(text: str) -> tuple[str, int | None, str]:
    found = issues_of(text)
    assert len(found) == 1, found
    return found[0]


class TestDocumentShape:
    def test_unknown_top_level_key_suggests(self) -> None:
        """A misspelled top-level key is reported with a suggestion."""
        assert only_issue("policy: []\n") == ("policy", 1, "unknown key 'policy' (did you mean 'policies'?)")

    def test_unknown_key_without_close_match_lists_allowed(self) -> None:
        """With no close match, the allowed keys are listed instead."""
        assert only_issue("zzz: 1\n") == ("zzz", 1, "unknown key 'zzz' (allowed: defaults, policies, tests)")

    def test_document_must_be_a_mapping(self) -> None:
        """A top-level list is rejected."""
        assert only_issue("- tool: x\n") == ("", 1, "a policy document must be a mapping, got a list")

    def test_policies_must_be_a_list(self) -> None:
        """`policies` given as a mapping is rejected."""
        assert only_issue("policies: {tool: x}\n") == (
            "policies",
            1,
            "'policies' must be a list, got a mapping",
        )

    def test_empty_sections_are_allowed(self) -> None:
        """`policies:` with no value means no entries."""
        assert load_policy_text("policies:\ntests:\n").policies == ()


class TestEntries:
    def test_missing_tool(self) -> None:
        """An entry without `tool` is reported at the entry."""
        text = """
        policies:
          - rules: []
        """
        assert only_issue(text) == ("policies[0]", 2, "missing required key 'tool'")

    def test_tool_must_be_a_string(self) -> None:
        """A numeric tool name is rejected."""
        assert only_issue("policies:\n  - tool: 5\n") == (
            "policies[0].tool",
            2,
            "'tool' must be a non-empty string, got number 5",
        )

    def test_unknown_entry_key(self) -> None:
        """`rule:` instead of `rules:` is caught with a suggestion."""
        text = """
        policies:
          - tool: x
            rule: []
        """
        assert only_issue(text) == ("policies[0].rule", 3, "unknown key 'rule' (did you mean 'rules'?)")

    def test_unknown_default_action(self) -> None:
        """An entry default must be an action name."""
        text = """
        policies:
          - tool: x
            default: deny
        """
        assert only_issue(text) == (
            "policies[0].default",
            3,
            "unknown action 'deny' (expected one of: allow, block, require_approval)",
        )


class TestRules:
    def test_missing_action(self) -> None:
        """A rule without an action is reported at the rule."""
        text = """
        policies:
          - tool: x
            rules:
              - name: r
                when: {arg: a, eq: 1}
        """
        assert only_issue(text) == ("policies[0].rules[0]", 4, "missing required key 'action'")

    def test_misspelled_action(self) -> None:
        """`blok` is an unknown action with a suggestion."""
        text = """
        policies:
          - tool: x
            rules:
              - action: blok
        """
        assert only_issue(text) == (
            "policies[0].rules[0].action",
            4,
            "unknown action 'blok' (did you mean 'block'?)",
        )

    def test_action_of_wrong_type(self) -> None:
        """A boolean action is rejected."""
        text = """
        policies:
          - tool: x
            rules:
              - action: true
        """
        assert only_issue(text) == (
            "policies[0].rules[0].action",
            4,
            "action must be one of allow, block, require_approval, got boolean true",
        )

    def test_unknown_rule_key(self) -> None:
        """`reasons` is caught with a suggestion."""
        text = """
        policies:
          - tool: x
            rules:
              - action: block
                reasons: nope
        """
        assert only_issue(text) == (
            "policies[0].rules[0].reasons",
            5,
            "unknown key 'reasons' (did you mean 'reason'?)",
        )

    def test_bad_duration(self) -> None:
        """An unparseable approval_timeout is reported with the accepted forms."""
        text = """
        policies:
          - tool: x
            rules:
              - action: require_approval
                approval_timeout: 2 hours
        """
        assert only_issue(text) == (
            "policies[0].rules[0].approval_timeout",
            5,
            "duration must be like 30s, 15m, 2h, 1d or integer seconds, got '2 hours'",
        )

    def test_duration_too_long(self) -> None:
        """Timeouts above 24h are rejected."""
        text = """
        policies:
          - tool: x
            rules:
              - action: require_approval
                approval_timeout: 2d
        """
        assert only_issue(text) == (
            "policies[0].rules[0].approval_timeout",
            5,
            "duration must be at most 24h, got '2d'",
        )

    def test_timeout_on_non_approval_rule(self) -> None:
        """approval_timeout on a block rule is a mistake."""
        text = """
        policies:
          - tool: x
            rules:
              - action: block
                approval_timeout: 5m
        """
        assert only_issue(text) == (
            "policies[0].rules[0].approval_timeout",
            5,
            "approval_timeout only applies to action require_approval (this rule's action is block)",
        )

    def test_rule_name_with_hash(self) -> None:
        """Names may not look like generated ids."""
        text = """
        policies:
          - tool: x
            rules:
              - {name: "x#1", action: block}
        """
        assert only_issue(text) == (
            "policies[0].rules[0].name",
            4,
            "rule name 'x#1' must not contain '#' or surrounding spaces",
        )

    def test_empty_reason(self) -> None:
        """An empty reason is rejected rather than shown to the agent."""
        text = """
        policies:
          - tool: x
            rules:
              - {action: block, reason: ""}
        """
        assert only_issue(text) == (
            "policies[0].rules[0].reason",
            4,
            "reason must be a non-empty string, got string ''",
        )


class TestConditions:
    @staticmethod
    def when(condition: str) -> tuple[str, int | None, str]:
        return only_issue(
            f"policies:\n  - tool: x\n    rules:\n      - action: block\n        when: {condition}\n"
        )

    def test_unknown_operator_suggests(self) -> None:
        """A misspelled operator gets a suggestion."""
        assert self.when("{arg: a, greater_than: 3}") == (
            "policies[0].rules[0].when.greater_than",
            5,
            "unknown operator 'greater_than' (did you mean 'gt'?)",
        )

    def test_startwith_suggests_startswith(self) -> None:
        """A common typo points to the right operator."""
        assert self.when("{arg: a, startwith: x}") == (
            "policies[0].rules[0].when.startwith",
            5,
            "unknown operator 'startwith' (did you mean 'startswith'?)",
        )

    def test_two_operators(self) -> None:
        """Two operators in one mapping must be combined with all."""
        assert self.when("{arg: a, gt: 1, lt: 5}") == (
            "policies[0].rules[0].when",
            5,
            "more than one operator in one condition ('gt', 'lt'); combine them with all: [...]",
        )

    def test_no_operator(self) -> None:
        """A subject without an operator is incomplete."""
        path, line, message = self.when("{arg: a}")
        assert (path, line) == ("policies[0].rules[0].when", 5)
        assert message.startswith("condition has no operator; use one of: eq, ne, gt,")

    def test_no_subject(self) -> None:
        """An operator without `arg` does not know what to compare."""
        assert self.when("{gt: 5}") == (
            "policies[0].rules[0].when",
            5,
            "condition has no subject: add 'arg: <path>' (or 'agent: name'), e.g. {arg: amount, gt: 100}",
        )

    def test_two_subjects(self) -> None:
        """arg and agent in one mapping are ambiguous."""
        assert self.when("{arg: a, agent: name, eq: x}") == (
            "policies[0].rules[0].when",
            5,
            "more than one subject in one condition ('arg', 'agent'); combine them with all: [...]",
        )

    def test_wrong_operand_type_for_gt(self) -> None:
        """gt needs a number."""
        assert self.when("{arg: a, gt: abc}") == (
            "policies[0].rules[0].when.gt",
            5,
            "'gt' needs a number, got string 'abc'",
        )

    def test_bool_is_not_a_number_operand(self) -> None:
        """gt: true is rejected, not treated as 1."""
        assert self.when("{arg: a, gt: true}") == (
            "policies[0].rules[0].when.gt",
            5,
            "'gt' needs a number, got boolean true",
        )

    def test_nan_operand(self) -> None:
        """NaN can never compare, so it is rejected."""
        assert self.when("{arg: a, lt: .nan}") == (
            "policies[0].rules[0].when.lt",
            5,
            "'lt' cannot compare with NaN",
        )

    def test_in_needs_a_list(self) -> None:
        """`in` with a scalar operand is rejected."""
        assert self.when("{arg: a, in: us}") == (
            "policies[0].rules[0].when.in",
            5,
            "'in' needs a non-empty list of values, got string 'us'",
        )

    def test_in_list_items_must_be_scalars(self) -> None:
        """Nested lists inside `in` are rejected."""
        assert self.when("{arg: a, in: [[1]]}") == (
            "policies[0].rules[0].when.in",
            5,
            "'in' list items must be strings, numbers, booleans or null, got a list",
        )

    def test_eq_with_mapping_operand(self) -> None:
        """eq compares scalars only."""
        assert self.when("{arg: a, eq: {b: 1}}") == (
            "policies[0].rules[0].when.eq",
            5,
            "'eq' needs a string, number, boolean or null, got a mapping",
        )

    def test_invalid_regex(self) -> None:
        """A regex that does not compile is reported at load time."""
        assert self.when("{arg: a, matches: '(unclosed'}") == (
            "policies[0].rules[0].when.matches",
            5,
            "invalid regular expression '(unclosed': missing ), unterminated subpattern at position 0",
        )

    def test_exists_needs_a_bool(self) -> None:
        """exists: yes is a string in our YAML schema, hence rejected."""
        assert self.when("{arg: a, exists: yes}") == (
            "policies[0].rules[0].when.exists",
            5,
            "'exists' needs true or false, got string 'yes'",
        )

    def test_bad_email_domain(self) -> None:
        """Domains with an at-sign or a misplaced wildcard are rejected."""
        assert self.when("{arg: a, email_domain_in: ['a@b.com']}") == (
            "policies[0].rules[0].when.email_domain_in",
            5,
            "invalid domain 'a@b.com': write 'example.com', or '*.example.com' for any subdomain",
        )
        assert self.when("{arg: a, email_domain_in: ['ex*.com']}")[2].startswith("invalid domain 'ex*.com'")

    def test_bad_path(self) -> None:
        """Empty path segments are rejected."""
        assert self.when("{arg: a..b, eq: 1}") == (
            "policies[0].rules[0].when.arg",
            5,
            "invalid path 'a..b': segments must be non-empty (like 'customer.id' or 'items.0')",
        )

    def test_numeric_path(self) -> None:
        """A path must be a string (quote numeric keys)."""
        assert self.when("{arg: 0, eq: 1}") == (
            "policies[0].rules[0].when.arg",
            5,
            "path must be a string like 'customer.id', got 0",
        )

    def test_agent_field(self) -> None:
        """The agent subject only has a name."""
        assert self.when("{agent: id, eq: x}") == (
            "policies[0].rules[0].when.agent",
            5,
            "the agent subject has one field, 'name' (write 'agent: name'), got 'id'",
        )

    def test_combinator_with_extra_key(self) -> None:
        """A combinator must be alone in its mapping."""
        assert self.when("{not: {arg: a, eq: 1}, arg: b}") == (
            "policies[0].rules[0].when",
            5,
            "'not' must be the only key of its condition (also found 'arg'); nest the other condition inside it",
        )

    def test_empty_all(self) -> None:
        """all: [] is almost certainly a mistake."""
        assert self.when("{all: []}") == (
            "policies[0].rules[0].when.all",
            5,
            "'all' needs a non-empty list of conditions, got an empty list",
        )

    def test_condition_not_a_mapping(self) -> None:
        """A string condition is rejected with an example."""
        assert self.when("amount > 5") == (
            "policies[0].rules[0].when",
            5,
            "condition must be a mapping like {arg: amount, gt: 100}, got string 'amount > 5'",
        )

    def test_nested_errors_have_nested_paths_and_lines(self) -> None:
        """Errors deep in combinators point at the exact item and its own line."""
        text = """
        policies:
          - tool: x
            rules:
              - action: block
                when:
                  any:
                    - {arg: a, eq: 1}
                    - not:
                        arg: b
                        gt: "7"
        """
        assert only_issue(text) == (
            "policies[0].rules[0].when.any[1].not.gt",
            10,
            "'gt' needs a number, got string '7'",
        )


class TestTests:
    def test_missing_expect_and_call(self) -> None:
        """A test needs a call and an expectation."""
        assert issues_of("tests:\n  - name: t\n") == [
            ("tests[0]", 2, "missing required key 'call'"),
            ("tests[0]", 2, "missing required key 'expect'"),
        ]

    def test_args_must_be_a_mapping(self) -> None:
        """Call args are a mapping."""
        assert only_issue("tests:\n  - call: {tool: x, args: [1]}\n    expect: allow\n") == (
            "tests[0].call.args",
            2,
            "'args' must be a mapping, got a list",
        )

    def test_unknown_expect_rule(self) -> None:
        """expect_rule must name an existing rule."""
        text = """
        policies:
          - tool: x
            rules: [{name: big-refund, action: block}]
        tests:
          - call: {tool: x}
            expect: block
            expect_rule: big-refunds
        """
        assert only_issue(text) == (
            "tests[0].expect_rule",
            7,
            "unknown rule 'big-refunds' (did you mean 'big-refund'?)",
        )


class TestErrorReporting:
    def test_all_errors_are_collected(self) -> None:
        """Several mistakes in one file are all reported, in line order."""
        text = """
        defaults: {action: alow}
        policies:
          - tool: a
            rules:
              - {action: block, when: {arg: x, gt: y}}
          - tool: b
            rules:
              - {action: allow, when: {arg: x, matches: "["}}
        """
        assert [(path, line) for path, line, _ in issues_of(text)] == [
            ("defaults.action", 1),
            ("policies[0].rules[0].when.gt", 5),
            ("policies[1].rules[0].when.matches", 8),
        ]

    def test_str_is_one_line_per_issue(self) -> None:
        """The exception text lists each issue as source:line: path: message."""
        with pytest.raises(PolicyValidationError) as caught:
            load_policy_text("defaults: {action: x}\npolicies: 3\n", "conf/p.yaml")
        assert str(caught.value).splitlines() == [
            "conf/p.yaml:1: defaults.action: unknown action 'x' (expected one of: allow, block, require_approval)",
            "conf/p.yaml:2: policies: 'policies' must be a list, got number 3",
        ]

    def test_validation_error_is_a_policy_error(self) -> None:
        """Callers can catch the package root."""
        assert issubclass(PolicyValidationError, PolicyError)

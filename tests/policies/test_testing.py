"""run_policy_tests: the policy's own tests section."""

from __future__ import annotations

from policies import Action, load_policy_text, run_policy_tests

POLICY = """\
policies:
  - tool: stripe.issue_refund
    rules:
      - {name: big, when: {arg: amount, gt: 200}, action: require_approval}
    default: allow
tests:
  - call: {tool: stripe.issue_refund, args: {amount: 850}}
    expect: require_approval
    expect_rule: big
  - name: small refunds pass
    call: {tool: stripe.issue_refund, args: {amount: 5}}
    expect: allow
    expect_rule: null
"""


class TestRunPolicyTests:
    def test_passing_tests(self) -> None:
        """All expectations met: no failures."""
        assert run_policy_tests(load_policy_text(POLICY)) == []

    def test_wrong_action_and_rule(self) -> None:
        """A failed expectation reports location, expected and actual."""
        text = (
            POLICY
            + "  - name: wrong\n    call: {tool: stripe.issue_refund, args: {amount: 900}}\n    expect: block\n    expect_rule: null\n"
        )
        failures = run_policy_tests(load_policy_text(text, "p.yaml"))
        assert len(failures) == 1
        failure = failures[0]
        assert (failure.expected_action, failure.actual_action) == (Action.BLOCK, Action.REQUIRE_APPROVAL)
        assert (failure.expected_rule, failure.actual_rule) == (None, "big")
        assert str(failure) == (
            "p.yaml:14 (tests[2]): test 'wrong': call to 'stripe.issue_refund': expected block, got require_approval; "
            "expected a default to decide, got rule 'big' "
            "(approval required by rule 'big' of the policy for 'stripe.issue_refund')"
        )

    def test_agent_in_call(self) -> None:
        """A test call can name the agent."""
        text = """\
policies:
  - tool: deploy
    rules: [{when: {agent: name, eq: ci}, action: allow}]
    default: block
tests:
  - call: {tool: deploy, agent: ci}
    expect: allow
  - call: {tool: deploy}
    expect: block
"""
        assert run_policy_tests(load_policy_text(text)) == []

"""CompiledPolicy.decide: decisions, reasons, timeouts, robustness, thread safety."""

from __future__ import annotations

import sys
import textwrap
import threading
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from policies import Action, CompiledPolicy, Decision, compile_policy, load_policy_text
from policies import compile as compile_module


def compile_text(text: str, *, inline: bool = True) -> CompiledPolicy:
    """Validate and compile a dedented YAML policy."""
    return compile_policy(load_policy_text(textwrap.dedent(text), "test.yaml"), inline=inline)


POLICY = """
defaults: {action: allow, approval_timeout: 15m}
policies:
  - tool: stripe.issue_refund
    rules:
      - name: test-customers-never
        when: {arg: customer_id, startswith: cus_test_}
        action: block
        reason: Test customers cannot be refunded
      - name: big-refunds-need-a-human
        when: {arg: amount, gt: 200}
        action: require_approval
        approval_timeout: 2h
      - when: {arg: amount, gt: 100}
        action: require_approval
    default: allow
  - tool: send_email
    approval_timeout: 1m
    rules:
      - when: {not: {arg: to, email_domain_in: [example.com]}}
        action: require_approval
    default: require_approval
  - tool: "shell.*"
    default: block
"""

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
json_args = st.dictionaries(
    st.sampled_from(["amount", "customer_id", "to", "x", "items", "customer"]) | st.text(max_size=8),
    json_values,
    max_size=6,
)

FUZZ_POLICY = """
policies:
  - tool: t
    rules:
""" + "".join(
    f"      - {{when: {condition}, action: {action}}}\n"
    for condition, action in [
        ("{arg: x, eq: 1}", "block"),
        ("{arg: x, ne: a}", "allow"),
        ("{arg: x.y, gt: 0}", "block"),
        ("{arg: items.0, lte: 5.5}", "require_approval"),
        ("{arg: items.1.z, in: [a, 1, true, null]}", "block"),
        ("{arg: x, not_in: [b, 2]}", "allow"),
        ("{arg: items, contains: a}", "block"),
        ("{arg: items, contains: 1}", "block"),
        ("{arg: x, startswith: [a, b]}", "allow"),
        ("{arg: x, endswith: z}", "block"),
        ("{arg: x, matches: '^[0-9]+$'}", "block"),
        ("{arg: x.y.z, exists: true}", "allow"),
        ("{arg: customer, email_domain_in: [example.com, '*.b.org']}", "block"),
        ("{not: {any: [{arg: x, eq: null}, {all: [{arg: amount, gte: 1}, {arg: amount, lt: 2}]}]}}", "block"),
        ("{agent: name, eq: bot}", "allow"),
    ]
)


class TestDecide:
    def test_first_matching_rule_wins(self) -> None:
        """Rules are tried in order; the first match decides."""
        policy = compile_text(POLICY)
        decision = policy.decide("stripe.issue_refund", {"amount": 850, "customer_id": "cus_test_1"})
        assert decision == Decision(
            Action.BLOCK, "test-customers-never", "Test customers cannot be refunded", 0
        )

    def test_rule_timeout_overrides(self) -> None:
        """A rule's own approval_timeout wins."""
        decision = compile_text(POLICY).decide("stripe.issue_refund", {"amount": 850, "customer_id": "cus_1"})
        assert (decision.action, decision.rule, decision.approval_timeout_s) == (
            Action.REQUIRE_APPROVAL,
            "big-refunds-need-a-human",
            7200,
        )

    def test_defaults_timeout_applies(self) -> None:
        """Without a rule or entry timeout, defaults.approval_timeout applies."""
        decision = compile_text(POLICY).decide("stripe.issue_refund", {"amount": 150})
        assert (decision.rule, decision.approval_timeout_s) == ("stripe.issue_refund#2", 900)

    def test_entry_timeout_applies_to_rules_and_default(self) -> None:
        """An entry's approval_timeout covers its rules and its default."""
        policy = compile_text(POLICY)
        assert policy.decide("send_email", {"to": "a@evil.com"}).approval_timeout_s == 60
        assert policy.decide("send_email", {"to": "a@example.com"}).approval_timeout_s == 60

    def test_builtin_timeout_is_900(self) -> None:
        """With no timeouts anywhere, require_approval waits 900 s."""
        policy = compile_text("defaults: {action: require_approval}\n")
        assert policy.decide("x", {}).approval_timeout_s == 900

    def test_synthesized_reasons(self) -> None:
        """Decisions without a written reason explain which rule or default applied."""
        policy = compile_text(POLICY)
        assert policy.decide("stripe.issue_refund", {"amount": 150}).reason == (
            "approval required by rule 'stripe.issue_refund#2' of the policy for 'stripe.issue_refund'"
        )
        assert policy.decide("stripe.issue_refund", {"amount": 1}).reason == (
            "allowed by the default of the policy for 'stripe.issue_refund'"
        )
        assert policy.decide("shell.exec", {}).reason == "blocked by the default of the policy for 'shell.*'"
        assert (
            policy.decide("unknown", {}).reason == "allowed by the global default (no policy for this tool)"
        )
        assert (
            compile_text("policies:\n  - tool: a\n    rules: [{when: {arg: x, eq: 1}, action: block}]\n")
            .decide("a", {})
            .reason
            == "allowed by the global default (no rule of the policy for 'a' matched)"
        )

    def test_decision_is_frozen(self) -> None:
        """Decisions are immutable and shared."""
        decision = compile_text(POLICY).decide("unknown", {})
        try:
            decision.action = Action.BLOCK  # type: ignore[misc]
        except AttributeError:
            pass
        else:  # pragma: no cover
            raise AssertionError("Decision is mutable")

    def test_action_is_a_str_enum(self) -> None:
        """Actions compare and serialize as their names."""
        assert Action.REQUIRE_APPROVAL == "require_approval"
        assert f"{Action.BLOCK}" == "block"

    def test_non_mapping_args_never_match(self) -> None:
        """Lists, strings and None as args mean every argument is missing."""
        policy = compile_text(POLICY)
        for args in ([], "amount", None, 5, [{"amount": 900}]):
            assert policy.decide("stripe.issue_refund", args).rule is None  # type: ignore[arg-type]

    def test_unhashable_tool_fails_closed(self) -> None:
        """A tool name that is not a string blocks instead of raising."""
        decision = compile_text(POLICY).decide(["x"], {})  # type: ignore[arg-type]
        assert decision.action is Action.BLOCK
        assert decision.reason == "blocked: policy evaluation failed (TypeError)"

    def test_hostile_mapping_does_not_raise(self) -> None:
        """A Mapping whose lookups explode is treated as missing arguments."""

        class Exploding(dict[str, Any]):
            def __getitem__(self, key: str) -> Any:
                raise RuntimeError("boom")

        policy = compile_text(
            "policies:\n  - tool: t\n    rules: [{when: {arg: a.b, exists: false}, action: block}]\n"
        )
        assert policy.decide("t", {"a": Exploding(b=1)}).action is Action.BLOCK

    @settings(max_examples=300, deadline=None)
    @given(args=json_args, tool=st.sampled_from(["stripe.issue_refund", "send_email", "shell.rm", "x"]))
    def test_never_raises_for_json_args(self, args: dict[str, Any], tool: str) -> None:
        """decide returns a Decision for arbitrary JSON arguments."""
        decision = _POLICY.decide(tool, args, agent="a")
        assert isinstance(decision, Decision)
        assert not decision.reason.startswith("blocked: policy evaluation failed")

    @settings(max_examples=500, deadline=None)
    @given(args=json_args, agent=st.none() | st.sampled_from(["bot", "other"]))
    def test_generated_code_agrees_with_closures(self, args: dict[str, Any], agent: str | None) -> None:
        """The inlined fast path decides exactly like the closure reference on random input."""
        assert _FUZZ_INLINE.decide("t", args, agent=agent) == _FUZZ_CLOSURES.decide("t", args, agent=agent)

    @settings(max_examples=200, deadline=None)
    @given(
        x=json_values,
        items=st.lists(json_values | st.dictionaries(st.sampled_from(["z", "y"]), json_values), max_size=3),
    )
    def test_generated_code_agrees_on_targeted_values(self, x: Any, items: list[Any]) -> None:
        """Fuzzing the exact argument names the rules read finds divergences faster."""
        for args in ({"x": x, "items": items}, {"x": {"y": x}, "items": items, "customer": x}):
            assert _FUZZ_INLINE.decide("t", args) == _FUZZ_CLOSURES.decide("t", args)


_POLICY = compile_text(POLICY)
_FUZZ_INLINE = compile_text(FUZZ_POLICY, inline=True)
_FUZZ_CLOSURES = compile_text(FUZZ_POLICY, inline=False)


class TestToolIndex:
    def test_glob_resolution_is_cached(self) -> None:
        """A glob-matched tool name is resolved once and then looked up directly."""
        policy = compile_text(POLICY)
        policy.decide("shell.ls", {})
        assert "shell.ls" in policy._lookup

    def test_cache_is_bounded(self, monkeypatch: Any) -> None:
        """Many distinct tool names cannot grow the cache without bound."""
        monkeypatch.setattr(compile_module, "MAX_CACHED_TOOLS", 10)
        policy = compile_text(POLICY)
        for index in range(100):
            assert policy.decide(f"shell.{index}", {}).action is Action.BLOCK
        assert len(policy._lookup) <= 10 + 2

    def test_tool_pattern(self) -> None:
        """tool_pattern explains which entry governs a tool."""
        policy = compile_text(POLICY)
        assert policy.tool_pattern("shell.rm") == "shell.*"
        assert policy.tool_pattern("send_email") == "send_email"
        assert policy.tool_pattern("nope") is None


class TestThreadSafety:
    def test_concurrent_decisions_are_consistent(self) -> None:
        """Many threads deciding (and filling the glob cache) get the same answers as one thread."""
        policy = compile_policy(load_policy_text(POLICY))
        calls = [
            (
                f"shell.{index % 500}" if index % 3 else "stripe.issue_refund",
                {"amount": index % 400, "customer_id": "c"},
            )
            for index in range(3000)
        ]
        reference = compile_text(POLICY, inline=False)
        expected = [reference.decide(tool, args) for tool, args in calls]
        failures: list[str] = []
        barrier = threading.Barrier(8)

        def worker() -> None:
            barrier.wait()
            for _ in range(3):
                for (tool, args), want in zip(calls, expected, strict=True):
                    got = policy.decide(tool, args)
                    if got != want:
                        failures.append(f"{tool} {args}: {got} != {want}")

        threads = [threading.Thread(target=worker) for _ in range(8)]
        interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)  # switch threads as often as possible to provoke races
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            sys.setswitchinterval(interval)
        assert failures == []


class TestCompiledPolicy:
    def test_source_text_single(self) -> None:
        """With one source, source_text is that text verbatim."""
        policy = compile_policy(load_policy_text(POLICY, "p.yaml"))
        assert policy.source_text == POLICY

    def test_repr_shows_digest(self) -> None:
        """The repr names the version."""
        policy = compile_text(POLICY)
        assert repr(policy) == f"<CompiledPolicy {policy.digest[:12]} entries=3>"

    def test_closure_mode_decides_the_same(self) -> None:
        """inline=False gives identical decisions (it is the reference implementation)."""
        fast: CompiledPolicy = compile_text(POLICY)
        slow: CompiledPolicy = compile_text(POLICY, inline=False)
        for args in ({"amount": 850}, {"amount": 150}, {"customer_id": "cus_test_x"}, {}):
            assert fast.decide("stripe.issue_refund", args) == slow.decide("stripe.issue_refund", args)

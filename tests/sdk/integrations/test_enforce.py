"""The enforcement helpers every integration (and the raw loops) share, against a real gateway.

``check_tool``/``acheck_tool`` turn the gateway's decision into a Permit or a ``Refused`` with the
sentence the model reads; ``run_permitted``/``arun_permitted`` run the tool once, hand the
re-entrancy pass to an inner ``@callgate.guard`` of the *same* tool, and report the outcome.
The gateway is a real ``callgate serve`` (``conftest.py``/``harness.py``) with the shared policy:
``delete_file`` blocked, ``send_money`` over 200 needs a human (13: the approval expires in 2 s).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import callgate
from callgate.integrations._enforce import (
    ALREADY_CHECKED,
    Refused,
    acheck_tool,
    arun_permitted,
    check_tool,
    run_permitted,
)
from callgate._guard import permitted
from tests.sdk.integrations.harness import Gateway

FRAMEWORK = "enforce-test"


def sync_check(tool: str, args: dict[str, Any], **kw: Any) -> Any:
    return check_tool(tool, args, framework=FRAMEWORK, **kw)


def async_check(tool: str, args: dict[str, Any], **kw: Any) -> Any:
    return asyncio.run(acheck_tool(tool, args, framework=FRAMEWORK, **kw))


CHECKS = pytest.mark.parametrize("check", [sync_check, async_check], ids=["check_tool", "acheck_tool"])


def _in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - inspected by the test
            box["error"] = e

    thread = threading.Thread(target=target, daemon=True)  # callgate carries the session into it
    thread.start()
    return thread, box


class TestCheck:
    @CHECKS
    def test_allowed_is_a_permit(self, check: Callable[..., Any], gateway: Gateway, session_id: str) -> None:
        permit = check("get_weather", {"city": "Oslo"})
        assert isinstance(permit, callgate.Permit)
        assert (permit.tool, permit.status, permit.decision) == ("get_weather", "allowed", "allow")
        (row,) = gateway.calls(session_id)
        assert (row["id"], row["framework"], row["args"]) == (permit.call_id, FRAMEWORK, {"city": "Oslo"})

    @CHECKS
    def test_blocked_is_refused_with_the_policy_reason(
        self, check: Callable[..., Any], gateway: Gateway, session_id: str
    ) -> None:
        refused = check("delete_file", {"path": "/etc/passwd"})
        assert isinstance(refused, Refused)
        assert refused.message == "Tool call blocked by policy: deleting files is not allowed"
        assert isinstance(refused.error, callgate.CallBlocked) and refused.error.rule == "no-deletes"
        (row,) = gateway.calls(session_id)
        assert (row["id"], row["status"]) == (refused.error.call_id, "blocked")

    @CHECKS
    def test_denied_is_refused_with_the_reviewers_comment(
        self, check: Callable[..., Any], gateway: Gateway, session_id: str
    ) -> None:
        thread, box = _in_thread(lambda: check("send_money", {"amount": 500, "to": "eve"}))
        pending = gateway.wait_for_call(status="pending", tool="send_money", session_id=session_id)
        gateway.deny(pending["id"], comment="not a customer")
        thread.join(60)
        refused = box["value"]
        assert isinstance(refused, Refused), box
        assert (
            refused.message == "Tool call denied by a human reviewer: not a customer. The tool did not run."
        )
        assert isinstance(refused.error, callgate.ApprovalDenied) and refused.error.call_id == pending["id"]

    @CHECKS
    def test_approved_is_a_claimed_permit(
        self, check: Callable[..., Any], gateway: Gateway, session_id: str
    ) -> None:
        thread, box = _in_thread(lambda: check("send_money", {"amount": 500, "to": "bob"}))
        pending = gateway.wait_for_call(status="pending", tool="send_money", session_id=session_id)
        gateway.approve(pending["id"])
        thread.join(60)
        permit = box["value"]
        assert isinstance(permit, callgate.Permit), box
        assert (permit.status, permit.call_id) == ("approved", pending["id"])
        assert gateway.calls(session_id)[0]["status"] == "running"  # claimed: it can run once, now

    @CHECKS
    def test_expired_is_refused(self, check: Callable[..., Any], gateway: Gateway, session_id: str) -> None:
        refused = check("send_money", {"amount": 13, "to": "bob"})  # the rule's approval_timeout is 2 s
        assert isinstance(refused, Refused) and isinstance(refused.error, callgate.ApprovalExpired)
        assert refused.message == (
            "Tool call not approved in time (the approval request expired). The tool did not run."
        )

    @CHECKS
    def test_gateway_down_is_refused_not_run(
        self, check: Callable[..., Any], dead_url: str, tmp_path: Path
    ) -> None:
        callgate.configure(
            dead_url, "cg_agent_k", spool_dir=tmp_path / "spool", timeout=1.0, connect_timeout=0.5
        )
        refused = check("get_weather", {"city": "Oslo"})
        assert isinstance(refused, Refused) and isinstance(refused.error, callgate.GatewayUnavailable)
        assert (
            refused.message == "Tool call not run: the policy gateway could not be reached. Try again later."
        )

    @CHECKS
    def test_a_framework_call_waits_for_the_human_whatever_the_approval_mode(
        self, check: Callable[..., Any], gateway: Gateway, session_id: str, tmp_path: Path
    ) -> None:
        """The agent loop needs the result now: even with ``approval_mode="async"`` configured (meant for
        ``@guard``/``check_call`` in user code) the check waits for the decision, never a pending handle."""
        gateway.configure(spool_dir=tmp_path / "spool2", approval_mode="async")
        thread, box = _in_thread(lambda: check("send_money", {"amount": 900, "to": "bob"}))
        pending = gateway.wait_for_call(status="pending", tool="send_money", session_id=session_id)
        assert thread.is_alive()
        gateway.approve(pending["id"])
        thread.join(60)
        permit = box.get("value")
        assert isinstance(permit, callgate.Permit), box
        assert (permit.status, permit.call_id) == ("approved", pending["id"])

    @CHECKS
    @pytest.mark.parametrize(
        ("tool", "args", "error"),
        [
            ("delete_file", {"path": "/x"}, callgate.CallBlocked),
            ("send_money", {"amount": 13, "to": "bob"}, callgate.ApprovalExpired),
        ],
    )
    def test_raise_on_block_raises(
        self,
        check: Callable[..., Any],
        tool: str,
        args: dict[str, Any],
        error: type[Exception],
        gateway: Gateway,
        session_id: str,
        tmp_path: Path,
    ) -> None:
        gateway.configure(spool_dir=tmp_path / "spool2", raise_on_block=True)
        with pytest.raises(error):
            check(tool, args)

    def test_a_pass_for_this_call_skips_the_gateway(self, gateway: Gateway, session_id: str) -> None:
        def tool_body() -> None:
            pass

        with permitted(tool_body, tool="get_weather"):
            assert sync_check("get_weather", {"city": "x"}, target=tool_body) is ALREADY_CHECKED
            # the pass is spent: the next check in the same block goes to the gateway
            assert isinstance(sync_check("get_weather", {"city": "y"}, target=tool_body), callgate.Permit)
        assert [c["args"] for c in gateway.calls(session_id)] == [{"city": "y"}]

    def test_a_pass_for_this_call_skips_the_gateway_async(self, gateway: Gateway, session_id: str) -> None:
        async def tool_body() -> None:
            pass

        async def main() -> list[Any]:
            with permitted(tool=" Get Weather "):  # matched by name, as another framework spells it
                first = await acheck_tool("get_weather", {"city": "x"}, framework=FRAMEWORK, target=tool_body)
                second = await acheck_tool(
                    "get_weather", {"city": "y"}, framework=FRAMEWORK, target=tool_body
                )
            return [first, second]

        first, second = asyncio.run(main())
        assert first is ALREADY_CHECKED and isinstance(second, callgate.Permit)
        assert [c["args"] for c in gateway.calls(session_id)] == [{"city": "y"}]


class TestRunPermitted:
    def test_hands_the_pass_to_an_inner_guard_of_the_same_tool(
        self, gateway: Gateway, session_id: str
    ) -> None:
        runs: list[str] = []

        @callgate.guard
        def archive(name: str) -> str:
            runs.append(name)
            return f"archived {name}"

        permit = sync_check("archive", {"name": "q3"}, target=archive)
        assert run_permitted(permit, "archive", archive, lambda: archive("q3")) == "archived q3"
        assert runs == ["q3"]
        callgate.flush(10)
        (row,) = gateway.calls(session_id)  # one row: the inner guard did not check again
        assert (row["tool"], row["framework"], row["outcome_status"]) == ("archive", FRAMEWORK, "succeeded")

    def test_the_pass_is_spent_by_the_first_inner_enforcer(self, gateway: Gateway, session_id: str) -> None:
        """A tool body calling the guarded function twice: the second call is checked again."""

        @callgate.guard
        def archive(name: str) -> str:
            return name

        permit = sync_check("archive", {"name": "a"}, target=archive)
        run_permitted(permit, "archive", archive, lambda: (archive("a"), archive("b")))
        assert [(c["tool"], c["args"], c["framework"]) for c in gateway.calls(session_id)] == [
            ("archive", {"name": "a"}, FRAMEWORK),
            ("archive", {"name": "b"}, "guard"),
        ]

    def test_gives_no_pass_to_a_different_tool(self, gateway: Gateway, session_id: str) -> None:
        deleted: list[str] = []

        @callgate.guard
        def delete_file(path: str) -> None:
            deleted.append(path)

        def cleanup(path: str) -> None:  # an allowed tool whose body calls a blocked one
            delete_file(path)

        permit = sync_check("cleanup", {"path": "/tmp/x"}, target=cleanup)
        with pytest.raises(callgate.CallBlocked):
            run_permitted(permit, "cleanup", cleanup, lambda: cleanup("/tmp/x"))
        assert deleted == []
        callgate.flush(10)
        rows = gateway.calls(session_id)
        assert [(r["tool"], r["status"]) for r in rows] == [("cleanup", "failed"), ("delete_file", "blocked")]
        assert "CallBlocked" in rows[0]["outcome_error"]

    def test_a_guard_under_another_name_still_consults_its_own_policy(
        self, gateway: Gateway, session_id: str
    ) -> None:
        """Same code, two names: a function guarded as ``delete_file`` but handed to a framework as
        ``tidy_up`` (allowed) must still meet ``delete_file``'s policy (blocked): the pass is for a name."""
        deleted: list[str] = []

        @callgate.guard(name="delete_file")
        def tidy_up(path: str) -> None:
            deleted.append(path)

        permit = sync_check("tidy_up", {"path": "/tmp/x"}, target=tidy_up)
        assert isinstance(permit, callgate.Permit)
        with pytest.raises(callgate.CallBlocked):
            run_permitted(permit, "tidy_up", tidy_up, lambda: tidy_up("/tmp/x"))
        assert deleted == []
        callgate.flush(10)
        assert [(r["tool"], r["status"]) for r in gateway.calls(session_id)] == [
            ("tidy_up", "failed"), ("delete_file", "blocked")]

    def test_reports_failure_by_exception_or_by_the_failed_callback(
        self, gateway: Gateway, session_id: str
    ) -> None:
        def fn() -> None:
            pass

        permit = sync_check("get_weather", {"city": "a"}, target=fn)
        with pytest.raises(ValueError):
            run_permitted(permit, "get_weather", fn, lambda: (_ for _ in ()).throw(ValueError("no city")))
        permit = sync_check("get_weather", {"city": "b"}, target=fn)
        result = run_permitted(
            permit,
            "get_weather",
            fn,
            lambda: "ERROR: upstream 503",
            failed=lambda r: r if r.startswith("ERROR") else None,
        )
        assert result == "ERROR: upstream 503"
        callgate.flush(10)
        rows = gateway.calls(session_id)
        assert [(r["outcome_status"]) for r in rows] == ["failed", "failed"]
        assert "no city" in rows[0]["outcome_error"] and "upstream 503" in rows[1]["outcome_error"]

    def test_already_checked_just_runs(self, gateway: Gateway, session_id: str) -> None:
        assert run_permitted(ALREADY_CHECKED, "t", None, lambda: 42) == 42
        assert gateway.calls(session_id) == []

    def test_async_twin(self, gateway: Gateway, session_id: str) -> None:
        @callgate.guard
        async def archive(name: str) -> str:
            await asyncio.sleep(0)
            return f"archived {name}"

        async def main() -> Any:
            permit = await acheck_tool("archive", {"name": "q4"}, framework=FRAMEWORK, target=archive)
            return await arun_permitted(permit, "archive", archive, lambda: archive("q4"))

        assert asyncio.run(main()) == "archived q4"
        callgate.flush(10)
        (row,) = gateway.calls(session_id)
        assert (row["tool"], row["outcome_status"]) == ("archive", "succeeded")

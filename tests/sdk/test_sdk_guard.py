"""Tests for callgate._guard: check_call, guard, permits, fail-open, re-entrancy."""

from __future__ import annotations

import inspect
import json
import threading
import time
from typing import Any

import pytest

import callgate
from callgate._guard import permitted

from .conftest import API_KEY, FakeGateway


class TestCheckCall:
    def test_allow_returns_permit(self, configured: FakeGateway) -> None:
        """An allowed call yields a Permit with the gateway's call id and the exact request."""
        with callgate.session("s-1"):
            permit = callgate.check_call("send_email", {"to": "a@example.com"}, framework="guard", metadata={"k": 1})
        (req,) = configured.of("POST", "/v1/calls")
        assert req.headers["authorization"] == f"Bearer {API_KEY}"
        assert req.headers["content-type"] == "application/json"
        assert req.body == {"id": permit.call_id, "tool": "send_email", "args": {"to": "a@example.com"},
                            "agent": "agent-1", "session_id": "s-1", "framework": "guard", "metadata": {"k": 1},
                            "fail_open": False}
        assert permit.status == "allowed" and permit.policy_version == 3

    def test_block_raises(self, configured: FakeGateway) -> None:
        """A block raises CallBlocked carrying reason, rule, call id and tool."""
        configured.rules["rm"] = ("block", "never", "no-rm")
        with pytest.raises(callgate.CallBlocked) as ei:
            callgate.check_call("rm", {})
        e = ei.value
        assert (e.reason, e.rule, e.tool) == ("never", "no-rm", "rm") and e.call_id
        assert "never" in str(e) and e.call_id in str(e)

    def test_unauthorized_raises_without_retry(self, gateway: FakeGateway, tmp_path: Any) -> None:
        """401 is misconfiguration: GatewayRejected at once, one request, no retry."""
        callgate.configure(gateway.url, "wrong", "agent-1", spool_dir=tmp_path)
        with pytest.raises(callgate.GatewayRejected) as ei:
            callgate.check_call("t", {})
        assert ei.value.status == 401 and ei.value.code == "unauthorized"
        assert len(gateway.of("POST", "/v1/calls")) == 1

    def test_not_configured(self) -> None:
        """Calling before configure() is a ConfigurationError (fail closed)."""
        with pytest.raises(callgate.ConfigurationError):
            callgate.check_call("t", {})

    def test_redacts_before_sending(self, configured: FakeGateway) -> None:
        """Secrets in arguments never leave the process."""
        pytest.importorskip("callgate.redaction")
        callgate.check_call("t", {"password": "hunter2", "note": "key AKIAABCDEFGHIJKLMNOP"})
        sent = json.dumps(configured.of("POST", "/v1/calls")[0].body)
        assert "hunter2" not in sent and "AKIAABCDEFGHIJKLMNOP" not in sent and "REDACTED" in sent


class TestApprovals:
    def _run_in_thread(self, fn: Any) -> tuple[threading.Thread, dict[str, Any]]:
        out: dict[str, Any] = {}

        def target() -> None:
            try:
                out["value"] = fn()
            except BaseException as e:  # noqa: BLE001
                out["error"] = e

        t = threading.Thread(target=target)
        t.start()
        return t, out

    def test_pending_then_approved_runs_once(self, configured: FakeGateway) -> None:
        """A held call waits on the long-poll and runs exactly once after approval."""
        configured.rules["refund"] = ("require_approval", "big", "r")
        runs: list[int] = []

        @callgate.guard
        def refund(amount: int) -> str:
            runs.append(amount)
            return "ok"

        t, out = self._run_in_thread(lambda: refund(900))
        (cid,) = configured.wait_for_pending()
        time.sleep(0.05)
        assert runs == []
        configured.decide(cid, "approved")
        t.join(5)
        assert out == {"value": "ok"} and runs == [900]
        assert all(f"/v1/calls/{cid}?wait=" in r.path for r in configured.of("GET", "/v1/calls/"))

    def test_denied_never_runs(self, configured: FakeGateway) -> None:
        """A denied call raises ApprovalDenied with the reviewer's comment; the tool never runs."""
        configured.rules["refund"] = ("require_approval", None, None)
        ran = []
        t, out = self._run_in_thread(lambda: callgate.guard(lambda: ran.append(1), name="refund")())
        (cid,) = configured.wait_for_pending()
        configured.decide(cid, "denied", comment="too large")
        t.join(5)
        assert isinstance(out["error"], callgate.ApprovalDenied) and out["error"].comment == "too large"
        assert ran == []

    def test_expired_never_runs(self, configured: FakeGateway) -> None:
        """An expired approval is a deny."""
        configured.rules["refund"] = ("require_approval", None, None)
        t, out = self._run_in_thread(lambda: callgate.check_call("refund", {}))
        (cid,) = configured.wait_for_pending()
        configured.decide(cid, "expired")
        t.join(5)
        assert isinstance(out["error"], callgate.ApprovalExpired)

    def test_approval_timeout_fails_closed(self, gateway: FakeGateway, tmp_path: Any) -> None:
        """Nobody decides within approval_timeout: ApprovalExpired, with re-polls in between."""
        callgate.configure(gateway.url, API_KEY, "agent-1", spool_dir=tmp_path, approval_timeout=1.5)
        gateway.rules["refund"] = ("require_approval", None, None)
        t0 = time.monotonic()
        with pytest.raises(callgate.ApprovalExpired):
            callgate.check_call("refund", {})
        assert 1.4 < time.monotonic() - t0 < 4
        assert len(gateway.of("GET", "/v1/calls/")) >= 2


class TestGuard:
    def test_signature_and_metadata_preserved(self) -> None:
        """inspect.signature, __name__, __doc__, __wrapped__ survive (frameworks introspect them)."""

        def send_email(to: str, subject: str = "hi", *, cc: list[str] | None = None) -> str:
            """Send an e-mail."""
            return to

        g = callgate.guard(send_email)
        assert inspect.signature(g) == inspect.signature(send_email)
        assert (g.__name__, g.__doc__, g.__wrapped__) == ("send_email", "Send an e-mail.", send_email)

        async def afn(x: int) -> int:
            return x

        ag = callgate.guard(name="n")(afn)
        assert inspect.iscoroutinefunction(ag) and inspect.signature(ag) == inspect.signature(afn)

    def test_allow_runs_and_reports(self, configured: FakeGateway) -> None:
        """The tool runs after allow; its outcome reaches the gateway via the background reporter."""

        @callgate.guard(name="stripe.refund")
        def refund(customer_id: str, amount: int) -> int:
            return amount

        assert refund("cus_1", amount=5) == 5
        assert callgate.flush(5)
        (req,) = configured.of("POST", "/v1/calls")
        assert req.body["tool"] == "stripe.refund" and req.body["args"] == {"customer_id": "cus_1", "amount": 5}
        out = configured.outcomes[req.body["id"]]
        assert out["status"] == "succeeded" and out["error"] is None and isinstance(out["duration_ms"], int)

    def test_tool_exception_propagates_and_is_reported(self, configured: FakeGateway) -> None:
        """The tool's own exception propagates unchanged and is reported as failed."""

        @callgate.guard
        def boom() -> None:
            raise KeyError("nope")

        with pytest.raises(KeyError):
            boom()
        callgate.flush(5)
        (out,) = configured.outcomes.values()
        assert out["status"] == "failed" and out["error"].startswith("KeyError")

    def test_block_never_runs(self, configured: FakeGateway) -> None:
        """A blocked guarded function never runs."""
        configured.rules["rm"] = ("block", "no", None)
        ran = []
        with pytest.raises(callgate.CallBlocked):
            callgate.guard(lambda: ran.append(1), name="rm")()
        assert ran == []

    def test_raise_on_block_false_returns_reason(self, configured: FakeGateway) -> None:
        """raise_on_block=False hands the reason back as the result (for LLM-facing tools)."""
        configured.rules["rm"] = ("block", "not allowed here", None)
        assert "not allowed here" in callgate.guard(lambda: 1, name="rm", raise_on_block=False)()

    def test_methods_drop_self(self, configured: FakeGateway) -> None:
        """Methods, classmethods and staticmethods send their arguments without self/cls."""

        class Svc:
            @callgate.guard
            def m(self, a: int, b: int = 0) -> int:
                return a + b

            @classmethod
            @callgate.guard
            def c(cls, a: int) -> int:
                return a

            @staticmethod
            @callgate.guard
            def s(a: int) -> int:
                return a

        svc = Svc()
        assert svc.m(1, b=2) == 3 and Svc.m(svc, 1) == 1 and Svc.c(4) == 4 and svc.s(5) == 5
        args = [r.body["args"] for r in configured.of("POST", "/v1/calls")]
        assert args == [{"a": 1, "b": 2}, {"a": 1}, {"a": 4}, {"a": 5}]

    def test_nested_guards_each_checked(self, configured: FakeGateway) -> None:
        """A guarded function calling another guarded function checks both (and recursion)."""

        @callgate.guard
        def inner(x: int) -> int:
            return x

        @callgate.guard
        def outer(n: int) -> int:
            return inner(n) if n == 0 else outer(n - 1)

        outer(1)
        assert [r.body["tool"] for r in configured.of("POST", "/v1/calls")] == ["outer", "outer", "inner"]

    def test_overlapping_enforcer_checks_once(self, configured: FakeGateway) -> None:
        """An outer enforcer that already checked the call (permitted()) is not checked again."""

        @callgate.guard
        def tool(x: int) -> int:
            return callgate.guard(lambda: x, name="nested")()

        with permitted(tool):
            tool(1)
        assert [r.body["tool"] for r in configured.of("POST", "/v1/calls")] == ["nested"]


class TestFailureModes:
    def test_gateway_down_fails_closed_fast(self, dead_url: str, tmp_path: Any) -> None:
        """Unreachable gateway: GatewayUnavailable within the deadline, tool not run."""
        callgate.configure(dead_url, API_KEY, "a", spool_dir=tmp_path, timeout=3)
        ran = []
        t0 = time.monotonic()
        with pytest.raises(callgate.GatewayUnavailable) as ei:
            callgate.guard(lambda: ran.append(1), name="t")()
        assert time.monotonic() - t0 < 3.5 and ran == [] and ei.value.attempts == 3

    def test_read_timeout(self, gateway: FakeGateway, tmp_path: Any) -> None:
        """A gateway that never answers is a timeout within the decision deadline."""
        callgate.configure(gateway.url, API_KEY, "a", spool_dir=tmp_path, read_timeout=0.2, timeout=1.0)
        gateway.inject += [("/v1/calls", ("sleep", 1.0))] * 3
        t0 = time.monotonic()
        with pytest.raises(callgate.GatewayUnavailable):
            callgate.check_call("t", {})
        assert time.monotonic() - t0 < 3.0

    def test_fail_open_runs_spools_and_uploads(self, gateway: FakeGateway, dead_url: str, tmp_path: Any) -> None:
        """fail_open tool runs while the gateway is down, is spooled, and uploaded later with the same id."""
        spool = tmp_path / "spool"
        callgate.configure(dead_url, API_KEY, "agent-1", spool_dir=spool, timeout=1)

        @callgate.guard(fail_open=True)
        def search(q: str) -> str:
            return q

        assert search("x") == "x"
        lines = [json.loads(x) for x in (spool / "agent-1.jsonl").read_text().splitlines()]
        assert [r["kind"] for r in lines] == ["fail_open", "outcome"]
        assert lines[0]["tool"] == "search" and lines[0]["args"] == {"q": "x"} and lines[0]["reason"]
        cid = lines[0]["id"]
        callgate.configure(gateway.url, API_KEY, "agent-1", spool_dir=spool)  # gateway is back
        assert callgate.flush(5)
        (up,) = gateway.of("POST", "/v1/calls")
        assert up.body["id"] == cid and up.body["fail_open"] is True and up.body["args"] == {"q": "x"}
        assert gateway.outcomes[cid]["status"] == "succeeded"
        assert (spool / "agent-1.jsonl").read_text() == ""

    def test_fail_open_never_on_block(self, configured: FakeGateway) -> None:
        """fail_open never overrides a block."""
        configured.rules["search"] = ("block", "no", None)
        with pytest.raises(callgate.CallBlocked):
            callgate.guard(lambda: 1, name="search", fail_open=True)()

    def test_fail_open_never_on_401(self, gateway: FakeGateway, tmp_path: Any) -> None:
        """fail_open never overrides a misconfiguration."""
        callgate.configure(gateway.url, "bad", "a", spool_dir=tmp_path)
        with pytest.raises(callgate.GatewayRejected):
            callgate.guard(lambda: 1, name="search", fail_open=True)()

    def test_force_fail_closed_env(self, dead_url: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        """CALLGATE_SDK_FORCE_FAIL_CLOSED=1 overrides every fail-open opt-in."""
        monkeypatch.setenv("CALLGATE_SDK_FORCE_FAIL_CLOSED", "1")
        callgate.configure(dead_url, API_KEY, "a", spool_dir=tmp_path, timeout=1)
        ran = []
        with pytest.raises(callgate.GatewayUnavailable):
            callgate.guard(lambda: ran.append(1), name="search", fail_open=True)()
        assert ran == [] and not list(tmp_path.glob("*.jsonl"))

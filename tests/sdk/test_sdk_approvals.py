"""Approved calls are claimed once before they run; resume() picks a call up again by its id."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request
import uuid
from typing import Any

import pytest

import callgate
from tests.sdk.conftest import API_KEY, FakeGateway


def _run_in_thread(fn: Any) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["result"] = fn()
        except BaseException as e:  # noqa: BLE001
            out["error"] = e

    t = threading.Thread(target=target)
    t.start()
    return t, out


class TestClaim:
    def test_approved_call_is_claimed_then_runs_once(self, configured: FakeGateway) -> None:
        """After approval the SDK claims (one POST .../claim) before the tool runs."""
        configured.rules["refund"] = ("require_approval", None, None)
        ran: list[int] = []

        @callgate.guard
        def refund(amount: int) -> str:
            ran.append(amount)
            return "ok"

        t, out = _run_in_thread(lambda: refund(900))
        (cid,) = configured.wait_for_pending()
        configured.decide(cid, "approved")
        t.join(10)
        assert out == {"result": "ok"} and ran == [900]
        assert configured.claims == {cid: 1}
        assert len(configured.of("POST", f"/v1/calls/{cid}/claim")) == 1
        assert callgate.flush(5)
        assert configured.outcomes[cid]["status"] == "succeeded"

    def test_lost_claim_never_runs(self, configured: FakeGateway) -> None:
        """Another process won the claim: AlreadyClaimed, and the tool does not run."""
        configured.rules["refund"] = ("require_approval", None, None)
        configured.claim_conflict = True
        ran: list[int] = []

        @callgate.guard(raise_on_block=False)
        def refund(amount: int) -> None:
            ran.append(amount)

        t, out = _run_in_thread(lambda: refund(900))
        (cid,) = configured.wait_for_pending()
        configured.decide(cid, "approved")
        t.join(10)
        assert isinstance(out.get("error"), callgate.AlreadyClaimed), out
        assert out["error"].call_id == cid and isinstance(out["error"], callgate.CallgateError)
        assert ran == []

    def test_allowed_call_needs_no_claim(self, configured: FakeGateway) -> None:
        """An allowed call stays one round trip: no claim request."""
        permit = callgate.check_call("read", {"q": 1})
        assert permit.status == "allowed"
        assert configured.of("POST", "/v1/calls/") == []


class TestResume:
    def test_resume_after_the_waiting_process_gave_up(self, gateway: FakeGateway, tmp_path: Any) -> None:
        """A call whose waiter went away (timeout, crash) is continued by id: approved -> Permit, claimed."""
        callgate.configure(gateway.url, API_KEY, "agent-1", spool_dir=tmp_path, approval_timeout=1)
        gateway.rules["refund"] = ("require_approval", None, None)
        call_id = str(uuid.uuid4())
        with pytest.raises(callgate.ApprovalExpired) as exc:
            callgate.check_call("refund", {"amount": 5}, call_id=call_id)
        assert exc.value.call_id == call_id
        callgate.configure(gateway.url, API_KEY, "agent-1", spool_dir=tmp_path, approval_timeout=10)
        t, out = _run_in_thread(lambda: callgate.resume(call_id))
        gateway.decide(call_id, "approved")
        t.join(10)
        permit = out["result"]
        assert (permit.call_id, permit.tool, permit.status) == (call_id, "refund", "approved")
        assert gateway.claims == {call_id: 1}
        with permit:
            pass
        assert callgate.flush(5) and gateway.outcomes[call_id]["status"] == "succeeded"
        with pytest.raises(callgate.AlreadyClaimed):  # a second resume never runs it again
            callgate.resume(call_id)

    def test_resume_denied_expired_allowed_unknown(self, configured: FakeGateway) -> None:
        """resume raises like check_call; an allowed call (claimed by its submission) is AlreadyClaimed;
        an unknown id is a GatewayRejected 404."""
        configured.rules["refund"] = ("require_approval", None, None)
        ids = []
        for _ in range(2):
            cid = str(uuid.uuid4())
            _post(configured, {"id": cid, "tool": "refund", "args": {}})
            ids.append(cid)
        configured.decide(ids[0], "denied", comment="too big")
        configured.decide(ids[1], "expired")
        with pytest.raises(callgate.ApprovalDenied) as denied:
            callgate.resume(ids[0])
        assert denied.value.comment == "too big"
        with pytest.raises(callgate.ApprovalExpired):
            callgate.resume(ids[1])
        allowed = str(uuid.uuid4())
        _post(configured, {"id": allowed, "tool": "read", "args": {}})
        with pytest.raises(callgate.AlreadyClaimed):
            callgate.resume(allowed)
        with pytest.raises(callgate.GatewayRejected) as missing:
            callgate.resume(str(uuid.uuid4()))
        assert missing.value.status == 404
        with pytest.raises(ValueError):
            callgate.resume("not-a-uuid")

    def test_aresume(self, configured: FakeGateway) -> None:
        """The async variant waits without blocking the loop and claims."""
        configured.rules["refund"] = ("require_approval", None, None)
        cid = str(uuid.uuid4())
        _post(configured, {"id": cid, "tool": "refund", "args": {}})

        async def main() -> callgate.Permit:
            task = asyncio.create_task(callgate.aresume(cid))
            await asyncio.sleep(0.2)
            assert not task.done()
            configured.decide(cid, "approved")
            return await asyncio.wait_for(task, 10)

        permit = asyncio.run(main())
        assert permit.status == "approved" and configured.claims == {cid: 1}


def _post(gw: FakeGateway, body: dict[str, Any]) -> None:
    req = urllib.request.Request(gw.url + "/v1/calls", data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5):
        pass

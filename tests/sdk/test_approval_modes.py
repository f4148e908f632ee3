"""approval_mode "async" and "webhook" against the real gateway (create_app served by uvicorn on a
thread of the test process, a private migrated SQLite database). Decisions are made the way the
console makes them: ``gateway.approvals.decide`` on the gateway's own event loop. Webhook events
are signed with the reference ``standardwebhooks`` library."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from standardwebhooks.webhooks import Webhook

import callgate
from callgate import _waiter, webhooks
from callgate.webhooks import MemoryReplayGuard
from gateway.app import create_app
from gateway.approvals import decide
from gateway.audit import SYSTEM, Actor
from gateway.config import Settings
from gateway.db import make_engine
from gateway.key_admin import create_key
from tests.e2e.processes import free_port

AGENT = "billing-bot"
SERVER_SECRET = "approval-modes-test-secret-0000000000000000"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
POLICY = """
defaults: {action: allow}
policies:
  - tool: refund
    rules:
      - name: big-refunds-need-a-human
        when: {arg: amount, gt: 200}
        action: require_approval
        reason: refunds over 200 need a human
  - tool: quick_refund
    rules:
      - name: short-fuse
        when: {arg: amount, gt: 0}
        action: require_approval
        approval_timeout: 2s
  - tool: wipe
    default: block
"""


class LiveGateway:
    """The gateway app served by uvicorn on a background thread of this process; restartable on
    the same port (the database, and so every call, survives)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = free_port()
        self.engine = make_engine(settings.resolved_database_url())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LiveGateway:
        import uvicorn

        self.app = create_app(self.settings)
        self.server = uvicorn.Server(uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", ws="none", lifespan="on",
            access_log=False, timeout_graceful_shutdown=1))  # held long-polls must not hold up a stop
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self.server.serve(),),
                                       name="live-gateway", daemon=True)
        self.thread.start()
        end = time.monotonic() + 60
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < end, "the gateway did not start"
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self.thread.is_alive():
            self.server.should_exit = True
            self.thread.join(30)
        leftovers = asyncio.all_tasks(self.loop)  # requests uvicorn cancelled at shutdown: let them end
        if leftovers:
            self.loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
        if not self.loop.is_closed():
            self.loop.close()

    def agent_key(self) -> str:
        with self.engine.begin() as conn:
            return create_key(conn, kind="agent", agent=AGENT, name="test", pepper=SERVER_SECRET.encode(),
                              actor=SYSTEM).key

    def decide(self, call_id: str, *, approve: bool, comment: str | None = None, who: str = "reviewer") -> None:
        """A reviewer decides in the console: the gateway's own decide(), on its own loop."""
        coro = decide(self.app.state.runtime, call_id=call_id, approve=approve, actor=Actor("user", who),
                      channel="console", comment=comment)
        asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def call(self, call_id: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            return dict(conn.execute(sa.text("SELECT status, claimed_at, comment FROM tool_call WHERE id = :id"),
                                     {"id": call_id}).mappings().one())

    def claims(self, call_id: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM audit_event WHERE tool_call_id = :id "
                                            "AND event_type = 'execution.claimed'"), {"id": call_id}).scalar_one())


@pytest.fixture(autouse=True)
def _short_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    """Background threads linger 0.5 s when idle (10 s in production), so each test sees its own."""
    monkeypatch.setattr(_waiter, "IDLE_SECONDS", 0.5)


@pytest.fixture(name="live")
def _live(sqlite_database_url: str, tmp_path: Path) -> Iterator[LiveGateway]:
    (tmp_path / "policy.yaml").write_text(POLICY)
    settings = Settings(database_url=sqlite_database_url, policies=tmp_path / "policy.yaml",
                        secret_key=SERVER_SECRET, env="test", data_dir=tmp_path)
    gw = LiveGateway(settings).start()
    yield gw
    callgate.reset()  # before the gateway goes: nothing left polling it
    gw.stop()
    gw.engine.dispose()


@pytest.fixture(name="connect")
def _connect(live: LiveGateway, tmp_path: Path) -> Callable[..., LiveGateway]:
    key = live.agent_key()

    def connect(**options: Any) -> LiveGateway:
        callgate.configure(live.url, key, AGENT, spool_dir=tmp_path / "spool", integrations=False, **options)
        return live

    return connect


class Tools:
    """Guarded tools that record each run (with the thread it ran on)."""

    def __init__(self, **guard_options: Any) -> None:
        self.lock = threading.Lock()
        self.runs: list[tuple[str, Any, str]] = []

        @callgate.guard(**guard_options)
        def refund(amount: int, api_token: str = "none") -> str:
            self._ran("refund", (amount, api_token))
            time.sleep(0.2)  # long enough for a concurrent result() to find the run in progress
            return f"refunded {amount}"

        @callgate.guard(**guard_options)
        def quick_refund(amount: int) -> str:
            self._ran("quick_refund", amount)
            return "quick"

        @callgate.guard(**guard_options)
        def wipe() -> None:
            self._ran("wipe", None)

        @callgate.guard(name="refund", **guard_options)
        async def arefund(amount: int) -> str:
            self._ran("refund", amount)
            await asyncio.sleep(0)
            return f"async refunded {amount}"

        self.refund, self.quick_refund, self.wipe, self.arefund = refund, quick_refund, wipe, arefund

    def _ran(self, tool: str, args: Any) -> None:
        with self.lock:
            self.runs.append((tool, args, threading.current_thread().name))


def wait_until(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.01)


def threads_named(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == name and t.is_alive()]


# -- async mode ---------------------------------------------------------------------------------
class TestAsyncMode:
    def test_returns_a_handle_at_once_and_the_callback_fires_on_approve(self, connect: Callable[..., LiveGateway]) -> None:
        live = connect(approval_mode="async")
        tools = Tools()
        started = time.monotonic()
        handle = tools.refund(500)
        assert time.monotonic() - started < 5  # no wait for a human
        assert isinstance(handle, callgate.PendingApproval)
        assert (handle.status, handle.done(), handle.tool, handle.approval_mode) == ("pending", False, "refund", "async")
        assert handle.args == {"amount": 500}  # as sent: bound arguments (defaults are not sent)
        assert handle.reason == "refunds over 200 need a human" and handle.rule == "big-refunds-need-a-human"
        assert handle.expires_at is not None and tools.runs == []
        assert live.call(handle.call_id)["status"] == "pending"
        seen: list[tuple[str, bool]] = []
        fired = threading.Event()
        handle.add_done_callback(lambda h: (seen.append((h.status, h is handle)), fired.set()))
        time.sleep(0.3)
        assert not fired.is_set() and tools.runs == []  # nothing happens before a human decides

        live.decide(handle.call_id, approve=True, comment="known customer")
        assert fired.wait(15)
        assert seen == [("approved", True)] and handle.done() and handle.status == "approved"
        assert tools.runs == []  # a decision alone runs nothing: result() runs the tool
        late: list[str] = []
        handle.add_done_callback(lambda h: late.append(h.status))  # already decided: called at once
        assert late == ["approved"]

        assert handle.result(timeout=15) == "refunded 500"
        assert [r[:2] for r in tools.runs] == [("refund", (500, "none"))]
        assert live.claims(handle.call_id) == 1
        assert callgate.flush(10)
        assert live.call(handle.call_id)["status"] == "succeeded"
        assert seen == [("approved", True)]  # once

    def test_concurrent_results_run_the_tool_exactly_once(self, connect: Callable[..., LiveGateway]) -> None:
        live = connect(approval_mode="async")
        tools = Tools()
        handle = tools.refund(700, api_token="sk_live_abcdefghijklmnop1234")
        assert handle.args["api_token"].startswith("[REDACTED")  # what left the process
        results: list[Any] = []

        def get() -> None:
            try:
                results.append(handle.result(timeout=20))
            except BaseException as e:  # noqa: BLE001
                results.append(e)

        waiters = [threading.Thread(target=get) for _ in range(4)]
        for t in waiters:
            t.start()
        time.sleep(0.3)  # all four are waiting for the decision
        live.decide(handle.call_id, approve=True)
        for t in waiters:
            t.join(30)
        assert results == ["refunded 700"] * 4
        # once, with the real (unredacted) arguments the function was called with
        assert [r[:2] for r in tools.runs] == [("refund", (700, "sk_live_abcdefghijklmnop1234"))]
        assert live.claims(handle.call_id) == 1
        assert handle.result() == "refunded 700"  # memoized; never claimed again
        with pytest.raises(callgate.AlreadyClaimed):
            callgate.resume(handle.call_id, timeout=5)  # the claim is spent at the gateway too

    def test_denied_comment_reaches_the_caller(self, connect: Callable[..., LiveGateway]) -> None:
        live = connect(approval_mode="async")
        tools = Tools()
        handle = tools.refund(900)
        statuses: list[str] = []
        handle.add_done_callback(lambda h: statuses.append(h.status))
        live.decide(handle.call_id, approve=False, comment="over the monthly limit", who="bob")
        with pytest.raises(callgate.ApprovalDenied) as exc:
            handle.result(timeout=15)
        assert (exc.value.comment, exc.value.decided_by, exc.value.call_id) == ("over the monthly limit", "bob",
                                                                                handle.call_id)
        with pytest.raises(callgate.ApprovalDenied):
            handle.result()  # always the same answer
        wait_until(lambda: statuses == ["denied"])
        assert handle.status == "denied" and tools.runs == [] and live.claims(handle.call_id) == 0

    def test_gateway_expiry(self, connect: Callable[..., LiveGateway]) -> None:
        """The policy gives this call 2 s: nobody decides, the handle expires, nothing runs."""
        live = connect(approval_mode="async")
        tools = Tools()
        handle = tools.quick_refund(5)
        fired = threading.Event()
        handle.add_done_callback(lambda h: fired.set())
        assert fired.wait(20)
        assert handle.status == "expired"
        with pytest.raises(callgate.ApprovalExpired):
            handle.result()
        assert tools.runs == [] and live.call(handle.call_id)["claimed_at"] is None

    def test_sdk_approval_timeout(self, connect: Callable[..., LiveGateway]) -> None:
        """approval_timeout bounds an async handle exactly as it bounds a waiting call."""
        connect(approval_mode="async", approval_timeout=1)
        tools = Tools()
        started = time.monotonic()
        handle = tools.refund(300)
        with pytest.raises(callgate.ApprovalExpired, match="approval_timeout"):
            handle.result(timeout=20)
        assert 0.8 < time.monotonic() - started < 15
        assert handle.status == "expired" and tools.runs == []

    def test_result_timeout_leaves_the_handle_usable(self, connect: Callable[..., LiveGateway]) -> None:
        live = connect(approval_mode="async")
        tools = Tools()
        handle = tools.refund(250)
        with pytest.raises(TimeoutError):
            handle.result(timeout=0.3)
        assert handle.status == "pending"
        live.decide(handle.call_id, approve=True)
        assert handle.result(timeout=15) == "refunded 250"

    def test_allowed_and_blocked_calls_are_unchanged(self, connect: Callable[..., LiveGateway]) -> None:
        connect(approval_mode="async")
        tools = Tools()
        assert tools.refund(10) == "refunded 10"  # allowed: runs at once, returns the value
        with pytest.raises(callgate.CallBlocked):
            tools.wipe()
        assert [r[0] for r in tools.runs] == ["refund"]

    def test_check_call_handle_returns_the_claimed_permit(self, connect: Callable[..., LiveGateway]) -> None:
        live = connect()  # "wait" by default; chosen per call here
        handle = callgate.check_call("refund", {"amount": 999}, approval_mode="async")
        assert isinstance(handle, callgate.PendingApproval)
        live.decide(handle.call_id, approve=True)
        permit = handle.result(timeout=15)
        assert isinstance(permit, callgate.Permit)
        assert (permit.call_id, permit.tool, permit.status) == (handle.call_id, "refund", "approved")
        with permit:
            pass  # the caller runs its tool here
        assert callgate.flush(10) and live.call(handle.call_id)["status"] == "succeeded"

    def test_per_guard_mode_overrides_configure(self, connect: Callable[..., LiveGateway]) -> None:
        live = connect(approval_mode="async")
        waiting = Tools(approval_mode="wait")
        out: dict[str, Any] = {}
        t = threading.Thread(target=lambda: out.setdefault("value", waiting.refund(400)))
        t.start()
        wait_until(lambda: _pending_ids(live) != [])
        (call_id,) = _pending_ids(live)
        live.decide(call_id, approve=True)
        t.join(15)
        assert out == {"value": "refunded 400"}  # blocked until decided, returned the value
        with pytest.raises(callgate.ConfigurationError):
            Tools(approval_mode="sometimes")
        with pytest.raises(callgate.ConfigurationError):
            callgate.check_call("refund", {"amount": 1}, approval_mode="never")  # type: ignore[call-overload]

    def test_await_result_never_blocks_the_event_loop(self, connect: Callable[..., LiveGateway]) -> None:
        """An async guard returns an AsyncPendingApproval; while `await handle.result()` waits for
        the human, another coroutine keeps ticking; the tool then runs once on this loop."""
        live = connect(approval_mode="async")
        tools = Tools()

        async def main() -> tuple[Any, int, int]:
            handle = await tools.arefund(650)
            assert isinstance(handle, callgate.AsyncPendingApproval) and handle.status == "pending"
            ticks = 0
            stop = asyncio.Event()

            async def heartbeat() -> None:
                nonlocal ticks
                while not stop.is_set():
                    ticks += 1
                    await asyncio.sleep(0.01)

            beat = asyncio.create_task(heartbeat())
            decided = threading.Event()
            marks: dict[str, int] = {}

            def reviewer() -> None:
                time.sleep(0.2)
                marks["before"] = ticks
                time.sleep(1.0)  # meanwhile the loop is inside `await handle.result()`
                marks["after"] = ticks
                live.decide(handle.call_id, approve=True)
                decided.set()

            threading.Thread(target=reviewer, daemon=True).start()
            callback_loop: list[bool] = []
            handle.add_done_callback(lambda h: callback_loop.append(asyncio.get_running_loop() is loop))
            loop = asyncio.get_running_loop()
            value = await handle.result(timeout=20)
            stop.set()
            await beat
            assert decided.is_set() and callback_loop == [True]  # callbacks run on the handle's loop
            return value, marks["before"], marks["after"]

        value, before, after = asyncio.run(main())
        assert value == "async refunded 650"
        assert after - before >= 20, (before, after)  # ~100 expected in 1 s; a blocked loop makes 0
        assert [(r[0], r[1]) for r in tools.runs] == [("refund", 650)]
        assert tools.runs[0][2] == "MainThread"  # ran on the loop that awaited it

    def test_two_concurrent_awaits_run_once(self, connect: Callable[..., LiveGateway]) -> None:
        live = connect(approval_mode="async")
        tools = Tools()

        async def main() -> list[Any]:
            handle = await tools.arefund(800)
            await asyncio.to_thread(live.decide, handle.call_id, approve=True)
            return list(await asyncio.gather(handle.result(15), handle.result(15), handle.result(15)))

        assert asyncio.run(main()) == ["async refunded 800"] * 3
        assert len(tools.runs) == 1

    def test_one_waiter_thread_for_many_handles_and_it_goes_away(self, connect: Callable[..., LiveGateway]) -> None:
        """Twelve pending handles share one waiter thread and one callback thread; both exit once idle."""
        wait_until(lambda: not threads_named("callgate-approvals") and not threads_named("callgate-approval-callbacks"),
                   20)  # lingering ones from earlier tests (their idle time was 10 s)
        live = connect(approval_mode="async")
        tools = Tools()
        handles = [tools.refund(1000 + i) for i in range(12)]
        decided: list[str] = []
        for h in handles:
            h.add_done_callback(lambda h: decided.append(h.status))
        time.sleep(0.5)
        assert len(threads_named("callgate-approvals")) == 1  # not one per handle
        assert len(threads_named("callgate-approval-callbacks")) == 0  # nothing decided yet
        for h in handles:
            live.decide(h.call_id, approve=False, comment="batch denial")
        wait_until(lambda: len(decided) == 12)
        assert len(threads_named("callgate-approval-callbacks")) <= 1
        wait_until(lambda: not threads_named("callgate-approvals") and not threads_named("callgate-approval-callbacks"),
                   20)
        assert tools.runs == []

    def test_claim_fails_while_the_gateway_is_down_then_runs_once(self, connect: Callable[..., LiveGateway]) -> None:
        """Approved, but the gateway is gone when result() claims: GatewayUnavailable, nothing ran,
        and the handle stays usable; with the gateway back, result() claims and runs it once."""
        live = connect(approval_mode="async", timeout=2)
        tools = Tools()
        handle = tools.refund(222)
        live.decide(handle.call_id, approve=True)
        wait_until(handle.done)
        live.stop()
        with pytest.raises(callgate.GatewayUnavailable):
            handle.result(timeout=10)
        assert tools.runs == [] and handle.status == "approved"
        live.start()
        assert handle.result(timeout=10) == "refunded 222"
        assert len(tools.runs) == 1 and live.claims(handle.call_id) == 1

    def test_a_failing_callback_does_not_stop_the_others(self, connect: Callable[..., LiveGateway]) -> None:
        live = connect(approval_mode="async")
        tools = Tools()
        handle = tools.refund(211)
        order: list[str] = []

        def bad(h: Any) -> None:
            order.append("bad")
            raise RuntimeError("callback bug")

        handle.add_done_callback(bad)
        handle.add_done_callback(lambda h: order.append("good"))
        handle.add_done_callback(lambda h: order.append(f"runs the tool: {h.result()}"))  # on the callback thread
        live.decide(handle.call_id, approve=True)
        wait_until(lambda: len(order) == 3)
        assert order == ["bad", "good", "runs the tool: refunded 211"]
        assert tools.runs[0][2] == "callgate-approval-callbacks"

    def test_reset_abandons_pending_handles(self, connect: Callable[..., LiveGateway]) -> None:
        connect(approval_mode="async")
        tools = Tools()
        handle = tools.refund(333)
        callgate.reset()
        assert handle.status == "failed" and handle.done()
        with pytest.raises(callgate.GatewayUnavailable, match="resume"):
            handle.result(timeout=5)
        assert tools.runs == []


def _pending_ids(live: LiveGateway) -> list[str]:
    with live.engine.connect() as conn:
        return [r[0] for r in conn.execute(sa.text("SELECT id FROM tool_call WHERE status = 'pending'"))]


# -- webhook mode -------------------------------------------------------------------------------
def approval_event(handle: Any, status: str, *, comment: str | None = None, decided_by: str = "reviewer") -> bytes:
    """The body the gateway's sender renders for a decision (the contract of callgate.webhooks)."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return json.dumps({"type": "approval.decided", "timestamp": now, "data": {
        "call_id": handle.call_id, "tool": handle.tool, "agent": AGENT, "session_id": None, "status": status,
        "decided_by": decided_by, "channel": "console", "comment": comment, "decided_at": now,
        "args": handle.args, "rule": handle.rule, "reason": handle.reason,
    }}, separators=(",", ":")).encode()


def sign(body: bytes, secret: str = WEBHOOK_SECRET) -> dict[str, str]:
    msg_id = f"msg_{uuid.uuid4().hex}"
    now = datetime.now(UTC)
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Webhook(secret).sign(msg_id, now, body.decode())}


class TestWebhookMode:
    def test_dispatch_runs_the_held_call(self, connect: Callable[..., LiveGateway]) -> None:
        """The handle does not poll; the signed event, verified and dispatched by the receiver,
        runs the tool once with its real arguments, in the receiver's thread, and fires callbacks."""
        live = connect(approval_mode="webhook")
        tools = Tools()
        handle = tools.refund(480, api_token="sk_live_abcdefghijklmnop1234")
        assert isinstance(handle, callgate.PendingApproval) and handle.approval_mode == "webhook"
        fired = threading.Event()
        handle.add_done_callback(lambda h: fired.set())
        live.decide(handle.call_id, approve=True)
        time.sleep(1.5)  # async mode would have seen the decision by now: webhook mode does not poll
        assert not handle.done() and tools.runs == []

        body = approval_event(handle, "approved")
        headers = sign(body)
        receiver: dict[str, Any] = {}

        def receive() -> None:  # the web app's POST handler
            event = webhooks.verify(body, headers, WEBHOOK_SECRET, replays=guard)
            receiver["event"] = event
            receiver["dispatched"] = webhooks.dispatch(event)

        guard = MemoryReplayGuard()
        t = threading.Thread(target=receive, name="webhook-receiver")
        t.start()
        t.join(30)
        assert receiver["dispatched"] is True
        assert receiver["event"].args["api_token"].startswith("[REDACTED")  # the event carries the redacted copy
        assert tools.runs == [("refund", (480, "sk_live_abcdefghijklmnop1234"), "webhook-receiver")]
        assert fired.wait(10) and handle.status == "approved"
        assert handle.result(timeout=5) == "refunded 480"
        assert live.claims(handle.call_id) == 1

        # The same delivery again is a replay; even past the replay guard nothing runs twice.
        with pytest.raises(callgate.WebhookVerificationError) as exc:
            webhooks.verify(body, headers, WEBHOOK_SECRET, replays=guard)
        assert exc.value.code == "replayed"
        again = webhooks.verify(body, headers, WEBHOOK_SECRET, replays=MemoryReplayGuard())
        assert webhooks.dispatch(again) is True
        with pytest.raises(callgate.AlreadyClaimed):
            again.run(tools.refund, **again.args)
        assert len(tools.runs) == 1 and live.claims(handle.call_id) == 1

    def test_forged_approval_for_a_denied_call_does_not_run(self, connect: Callable[..., LiveGateway]) -> None:
        """A validly signed "approved" for a call the reviewer denied: the claim refuses, the
        handle resolves as denied with the reviewer's real comment, and nothing runs."""
        live = connect(approval_mode="webhook")
        tools = Tools()
        handle = tools.refund(950)
        live.decide(handle.call_id, approve=False, comment="fraud suspected")
        body = approval_event(handle, "approved", comment="looks fine")
        event = webhooks.verify(body, sign(body), WEBHOOK_SECRET, replays=MemoryReplayGuard())
        assert webhooks.dispatch(event) is True
        assert handle.status == "denied"
        with pytest.raises(callgate.ApprovalDenied) as exc:
            handle.result(timeout=5)
        assert exc.value.comment == "fraud suspected"
        with pytest.raises(callgate.ApprovalDenied):  # and without a handle, the same
            event.run(tools.refund, **event.args)
        assert tools.runs == [] and live.call(handle.call_id)["claimed_at"] is None

    def test_forged_approval_for_a_pending_call_changes_nothing(self, connect: Callable[..., LiveGateway]) -> None:
        live = connect(approval_mode="webhook")
        tools = Tools()
        handle = tools.refund(520)
        forged = approval_event(handle, "approved")
        event = webhooks.verify(forged, sign(forged), WEBHOOK_SECRET, replays=MemoryReplayGuard())
        with pytest.raises(callgate.GatewayRejected) as exc:
            webhooks.dispatch(event)
        assert exc.value.code == "not_approved"
        assert not handle.done() and tools.runs == []
        live.decide(handle.call_id, approve=True)  # the real decision and its event still work
        genuine = approval_event(handle, "approved")
        assert webhooks.dispatch(webhooks.verify(genuine, sign(genuine), WEBHOOK_SECRET, replays=MemoryReplayGuard()))
        assert handle.result(timeout=5) == "refunded 520" and len(tools.runs) == 1

    def test_denied_event_resolves_the_handle(self, connect: Callable[..., LiveGateway]) -> None:
        live = connect(approval_mode="webhook")
        tools = Tools()
        handle = tools.refund(610)
        live.decide(handle.call_id, approve=False, comment="no", who="carol")
        body = approval_event(handle, "denied", comment="no", decided_by="carol")
        assert webhooks.dispatch(webhooks.verify(body, sign(body), WEBHOOK_SECRET, replays=MemoryReplayGuard()))
        with pytest.raises(callgate.ApprovalDenied) as exc:
            handle.result(timeout=1)
        assert (exc.value.comment, exc.value.decided_by) == ("no", "carol") and tools.runs == []

    def test_check_call_handle_is_marked_approved_and_claims_in_result(
            self, connect: Callable[..., LiveGateway]) -> None:
        """A check_call handle has no tool: dispatch records the approval without claiming, and
        result() claims and hands over the Permit (the caller runs the tool and reports)."""
        live = connect(approval_mode="webhook")
        handle = callgate.check_call("refund", {"amount": 990})
        assert isinstance(handle, callgate.PendingApproval)
        live.decide(handle.call_id, approve=True)
        body = approval_event(handle, "approved")
        assert webhooks.dispatch(webhooks.verify(body, sign(body), WEBHOOK_SECRET, replays=MemoryReplayGuard()))
        assert handle.status == "approved" and live.call(handle.call_id)["claimed_at"] is None
        permit = handle.result(timeout=10)
        assert isinstance(permit, callgate.Permit) and live.claims(handle.call_id) == 1
        permit.report("succeeded")
        assert callgate.flush(10) and live.call(handle.call_id)["status"] == "succeeded"

    def test_result_long_polls_without_a_webhook(self, connect: Callable[..., LiveGateway]) -> None:
        live = connect(approval_mode="webhook")
        tools = Tools()
        handle = tools.refund(530)
        live.decide(handle.call_id, approve=True)
        assert handle.result(timeout=20) == "refunded 530"
        assert len(tools.runs) == 1

    def test_sdk_timeout_expires_an_unanswered_handle(self, connect: Callable[..., LiveGateway]) -> None:
        connect(approval_mode="webhook", approval_timeout=1)
        tools = Tools()
        handle = tools.refund(540)
        fired = threading.Event()
        handle.add_done_callback(lambda h: fired.set())
        assert fired.wait(15) and handle.status == "expired"
        late = approval_event(handle, "approved")
        assert webhooks.dispatch(webhooks.verify(late, sign(late), WEBHOOK_SECRET, replays=MemoryReplayGuard()))
        with pytest.raises(callgate.ApprovalExpired):
            handle.result()
        assert tools.runs == []  # this process gave up on it: a late approval runs nothing

    def test_event_run_when_no_handle_is_alive(self, connect: Callable[..., LiveGateway]) -> None:
        """The agent process that made the call is gone (here: reset): dispatch finds nothing, and
        the receiver runs the call itself through the claim, once."""
        live = connect(approval_mode="webhook")
        tools = Tools()
        handle = tools.refund(560)
        callgate.reset()
        connect(approval_mode="webhook")
        live.decide(handle.call_id, approve=True)
        body = approval_event(handle, "approved")
        event = webhooks.verify(body, sign(body), WEBHOOK_SECRET, replays=MemoryReplayGuard())
        assert webhooks.dispatch(event) is False
        assert event.run(tools.refund, **event.args) == "refunded 560"  # a guarded function: not checked twice
        with pytest.raises(callgate.AlreadyClaimed):
            event.run(tools.refund, **event.args)
        assert [r[:2] for r in tools.runs] == [("refund", (560, "none"))]
        assert live.claims(handle.call_id) == 1
        assert callgate.flush(10) and live.call(handle.call_id)["status"] == "succeeded"

    def test_async_handle_dispatched_from_another_thread(self, connect: Callable[..., LiveGateway]) -> None:
        """An async handle's tool runs on its own event loop when a receiver thread dispatches it."""
        live = connect(approval_mode="webhook")
        tools = Tools()

        async def main() -> Any:
            handle = await tools.arefund(570)
            assert isinstance(handle, callgate.AsyncPendingApproval)
            await asyncio.to_thread(live.decide, handle.call_id, approve=True)
            body = approval_event(handle, "approved")

            def receive() -> bool:
                return webhooks.dispatch(webhooks.verify(body, sign(body), WEBHOOK_SECRET,
                                                         replays=MemoryReplayGuard()))

            assert await asyncio.to_thread(receive) is True
            return await handle.result(timeout=15)

        assert asyncio.run(main()) == "async refunded 570"
        assert tools.runs == [("refund", 570, "MainThread")]

    def test_unreachable_gateway_at_dispatch_runs_nothing_until_it_is_back(
            self, connect: Callable[..., LiveGateway]) -> None:
        """The claim cannot be made: nothing runs, the handle stays runnable, the delivery can be
        retried; once the gateway is back the retried delivery runs the call, once."""
        live = connect(approval_mode="webhook", timeout=2)
        tools = Tools()
        handle = tools.refund(580)
        live.decide(handle.call_id, approve=True)
        live.stop()
        body = approval_event(handle, "approved")
        headers = sign(body)
        guard = MemoryReplayGuard()
        event = webhooks.verify(body, headers, WEBHOOK_SECRET, replays=guard)
        with pytest.raises(callgate.GatewayUnavailable):
            webhooks.dispatch(event)
        assert not handle.done() and tools.runs == []
        with pytest.raises(TimeoutError):
            handle.result(timeout=1)  # the decision is unknown (the event could not be confirmed)
        event.forget()  # the receiver answers 5xx and lets the sender's retry through
        live.start()
        retried = webhooks.verify(body, headers, WEBHOOK_SECRET, replays=guard)
        assert webhooks.dispatch(retried) is True
        assert handle.result(timeout=5) == "refunded 580"
        assert len(tools.runs) == 1 and live.claims(handle.call_id) == 1


# -- the latch every handle waits on -------------------------------------------------------------
class TestLatch:
    def test_threads_and_coroutines_on_other_loops_are_woken(self) -> None:
        from callgate._latch import Latch

        latch = Latch()
        assert latch.wait(0.05) is False
        woken: list[str] = []

        def thread_waiter() -> None:
            woken.append(f"thread {latch.wait(10)}")

        async def coroutine_waiter() -> None:
            woken.append(f"loop {await latch.wait_async(10)}")

        threads = [threading.Thread(target=thread_waiter),
                   threading.Thread(target=lambda: asyncio.run(coroutine_waiter()))]
        for t in threads:
            t.start()
        time.sleep(0.2)
        latch.set()
        latch.set()  # idempotent
        for t in threads:
            t.join(10)
        assert sorted(woken) == ["loop True", "thread True"]
        assert asyncio.run(latch.wait_async(0)) is True

    def test_async_timeout(self) -> None:
        from callgate._latch import Latch

        latch = Latch()

        async def main() -> tuple[bool, float]:
            started = time.monotonic()
            return await latch.wait_async(0.1), time.monotonic() - started

        got, took = asyncio.run(main())
        assert got is False and took < 5
        assert latch._futures == []  # a timed-out waiter leaves nothing behind

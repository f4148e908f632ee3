"""Human approval end to end: real `callgate serve` processes, the real SDK waiting in threads, and
decisions made by the real `callgate calls approve|deny` CLI (its own process).

Latency is measured from the decision's commit time (``decided_at``, stamped by the deciding
process) to the moment the guarded function starts in the agent: through Redis pub/sub it is a
few milliseconds; without Redis (embedded mode) the gateway's DB re-check picks the decision up
within ``recheck_seconds`` (0.25 s by default there).
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import callgate
from gateway.models import ToolCall
from tests.e2e.processes import cli, free_port, serve

pytestmark = pytest.mark.slow

POLICY = """
defaults: {action: allow}
policies:
  - tool: refund
    rules:
      - name: big-refunds-need-a-human
        when: {arg: amount, gt: 200}
        action: require_approval
  - tool: quick_refund
    rules:
      - name: short-fuse
        when: {arg: amount, gt: 0}
        action: require_approval
        approval_timeout: 2s
"""



def make_env(database_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    (tmp_path / "policy.yaml").write_text(POLICY)
    return {
        "CALLGATE_DATABASE_URL": database_url,
        "CALLGATE_DATA_DIR": str(tmp_path / "data"),
        "CALLGATE_SECRET_KEY": "e2e-secret-" + uuid.uuid4().hex,
        "CALLGATE_POLICIES": str(tmp_path / "policy.yaml"),
        "CALLGATE_ENV": "test",
        **extra,
    }


#: The console users the suites decide as: `calls approve|deny --as NAME` needs a real reviewer.
REVIEWERS = ("alice", "bob", "carol")


def add_reviewers(env: dict[str, str], *names: str) -> None:
    for name in names:
        cli(env, "users", "create", name, "--role", "reviewer")


def agent_key(env: dict[str, str]) -> str:
    """Migrate, create the reviewer accounts of ``REVIEWERS`` and return a new agent key."""
    cli(env, "migrate")
    add_reviewers(env, *REVIEWERS)
    return cli(env, "keys", "create", "--agent", "e2e-bot").stdout.strip().splitlines()[-1]


class Agent:
    """Guarded tools that record every execution (with its start time), called from threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ran: list[tuple[str, int, float]] = []

        @callgate.guard
        def refund(amount: int) -> str:
            with self.lock:
                self.ran.append(("refund", amount, time.time()))
            return f"refunded {amount}"

        @callgate.guard
        def quick_refund(amount: int) -> str:
            with self.lock:
                self.ran.append(("quick_refund", amount, time.time()))
            return "quick"

        self.refund, self.quick_refund = refund, quick_refund

    def start(self, fn: Callable[..., Any], *args: Any) -> tuple[threading.Thread, dict[str, Any]]:
        out: dict[str, Any] = {}

        def target() -> None:
            try:
                out["result"] = fn(*args)
            except BaseException as e:  # noqa: BLE001
                out["error"] = e

        t = threading.Thread(target=target, daemon=True)
        t.start()
        return t, out

    def started_at(self, amount: int) -> float:
        (ts,) = [t for _, a, t in self.ran if a == amount]
        return ts


class Db:
    def __init__(self, url: str) -> None:
        self.engine = sa.create_engine(url)

    def pending(self, n: int, timeout: float = 20) -> list[str]:
        end = time.monotonic() + timeout
        while True:
            with self.engine.connect() as conn:
                ids = list(conn.execute(sa.select(ToolCall.id).where(ToolCall.status == "pending")
                                        .order_by(ToolCall.created_at)).scalars())
            if len(ids) >= n:
                return ids
            assert time.monotonic() < end, f"expected {n} pending calls, have {len(ids)}"
            time.sleep(0.05)

    def call(self, call_id: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            return dict(conn.execute(sa.select(ToolCall.__table__).where(ToolCall.id == call_id)).mappings().one())

    def id_of(self, amount: int) -> str:
        with self.engine.connect() as conn:
            for cid, args in conn.execute(sa.select(ToolCall.id, ToolCall.args)):
                if json.loads(args).get("amount") == amount:
                    return str(cid)
        raise AssertionError(f"no call with amount {amount}")

    def decided_at(self, call_id: str) -> float:
        value: datetime = self.call(call_id)["decided_at"]
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()

    def event_types(self) -> list[str]:
        with self.engine.connect() as conn:
            return [r[0] for r in conn.execute(sa.text("SELECT event_type FROM audit_event ORDER BY seq"))]

    def close(self) -> None:
        self.engine.dispose()


def test_cli_decisions_reach_waiting_sdk_calls(empty_database_url: str, tmp_path: Path, sdk_reset: None) -> None:
    """approve -> the function runs exactly once; deny -> it never runs and the reviewer's comment
    reaches the caller; expiry (2 s) -> it never runs. Late clicks exit 1, usage errors and a --as
    that names no reviewer exit 2; every refused click on a call id is in the audit log."""
    env = make_env(empty_database_url, tmp_path)
    key = agent_key(env)
    db = Db(empty_database_url)
    agent = Agent()
    try:
        with serve(env, tmp_path) as gw:
            callgate.configure(url=gw.url, api_key=key, agent="e2e-bot", approval_timeout=60,
                               spool_dir=tmp_path / "spool")
            t1, out1 = agent.start(agent.refund, 500)
            (approved,) = db.pending(1)
            listed = [json.loads(line) for line in cli(env, "calls", "list", "--json").stdout.splitlines()]
            assert [(r["call_id"], r["status"], r["tool"]) for r in listed] == [(approved, "pending", "refund")]
            assert approved in cli(env, "calls", "list").stdout
            done = cli(env, "calls", "approve", approved, "--as", "alice", "--comment", "known customer")
            assert "approved" in done.stdout
            t1.join(15)
            assert out1 == {"result": "refunded 500"}
            fallback_latency = agent.started_at(500) - db.decided_at(approved)

            t2, out2 = agent.start(agent.refund, 600)
            denied = db.pending(1)[0]
            cli(env, "calls", "deny", denied, "--as", "bob", "--comment", "over the monthly limit")
            t2.join(15)
            err = out2.get("error")
            assert isinstance(err, callgate.ApprovalDenied), out2
            assert err.comment == "over the monthly limit" and err.decided_by == "bob"

            started = time.monotonic()
            t3, out3 = agent.start(agent.quick_refund, 7)
            expired = db.pending(1)[0]
            t3.join(15)
            assert isinstance(out3.get("error"), callgate.ApprovalExpired), out3
            assert time.monotonic() - started < 4.5

            late = cli(env, "calls", "approve", approved, "--as", "carol", check=False)
            assert late.returncode == 1 and "already approved" in late.stderr
            late = cli(env, "calls", "deny", denied, "--as", "carol", check=False)
            assert late.returncode == 1 and "already denied" in late.stderr
            late = cli(env, "calls", "approve", expired, "--as", "carol", check=False)
            assert late.returncode == 1 and "expired" in late.stderr
            assert cli(env, "calls", "approve", str(uuid.uuid4()), "--as", "carol", check=False).returncode == 2
            assert cli(env, "calls", "approve", denied, check=False).returncode == 2  # --as is required
            impostor = cli(env, "calls", "approve", denied, "--as", "mallory", check=False)
            assert impostor.returncode == 2 and "not an active console user" in impostor.stderr
            assert cli(env, "calls", "list", "--status", "nope", check=False).returncode == 2
            by_status = {json.loads(line)["call_id"]: json.loads(line)["status"]
                         for line in cli(env, "calls", "list", "--status", "all", "--json").stdout.splitlines()}
            assert by_status.pop(approved) in ("running", "succeeded")  # the outcome is reported in the background
            assert by_status == {denied: "denied", expired: "expired"}
            assert callgate.flush(timeout=10)

        assert [a for _, a, _ in agent.ran] == [500]
        row = db.call(approved)
        assert (row["status"], row["decided_by"], row["decided_channel"], row["comment"]) == (
            "succeeded", "alice", "cli", "known customer")
        assert row["claimed_at"] is not None
        types = db.event_types()
        assert types.count("approval.decided") == 2
        # carol's three late clicks, her click on an unknown call id, and mallory's
        assert types.count("approval.decision_rejected") == 5
        assert types.count("execution.claimed") == 1
        assert types.count("tool.outcome") == 1
        assert json.loads(cli(env, "audit", "verify", "--json").stdout)["ok"] is True
        print(f"\napproval -> tool start through the DB re-check (no Redis): {fallback_latency * 1000:.0f} ms")
        assert fallback_latency < 3.0  # the 0.25 s re-check plus scheduling noise on a loaded 2-core box
    finally:
        db.close()


def test_pending_approvals_survive_kill_9(empty_database_url: str, tmp_path: Path, sdk_reset: None) -> None:
    """Calls wait; the gateway is killed with SIGKILL and restarted on the same port; every call is
    still pending; decisions then release every waiting SDK call (they retry their long-polls),
    approved ones run exactly once, denied ones never."""
    env = make_env(empty_database_url, tmp_path)
    key = agent_key(env)
    db = Db(empty_database_url)
    agent = Agent()
    port = free_port()
    amounts = [301, 302, 303, 304, 305, 306]
    try:
        with serve(env, tmp_path, port=port) as gw:
            callgate.configure(url=gw.url, api_key=key, agent="e2e-bot", approval_timeout=90,
                               spool_dir=tmp_path / "spool")
            waiting = {amount: agent.start(agent.refund, amount) for amount in amounts}
            db.pending(len(amounts))
            gw.process.kill()
            gw.process.wait(10)
        assert len(db.pending(len(amounts))) == len(amounts)  # durable: nothing lost, nothing decided
        time.sleep(1.0)  # the waiting SDK calls see the gateway gone and keep retrying
        with serve(env, tmp_path, port=port):
            approve = set(amounts[::2])
            for amount in amounts:
                verb = "approve" if amount in approve else "deny"
                cli(env, "calls", verb, db.id_of(amount), "--as", "alice", "--comment", f"{verb} {amount}")
            for amount, (t, _) in waiting.items():
                t.join(30)
                assert not t.is_alive(), f"call {amount} still waiting"
            assert callgate.flush(timeout=10)
        for amount, (_, out) in waiting.items():
            if amount in approve:
                assert out == {"result": f"refunded {amount}"}
            else:
                assert isinstance(out.get("error"), callgate.ApprovalDenied) and out["error"].comment == f"deny {amount}"
        assert sorted(a for _, a, _ in agent.ran) == sorted(approve)  # each approved call ran once
        types = db.event_types()
        assert types.count("approval.decided") == len(amounts)
        assert types.count("execution.claimed") == len(approve)
        assert json.loads(cli(env, "audit", "verify", "--json").stdout)["ok"] is True
    finally:
        db.close()


@pytest.mark.postgres
@pytest.mark.redis
def test_two_gateways_behind_redis_wake_each_other(empty_pg_url: str, tmp_path: Path, sdk_reset: None) -> None:
    """Two `callgate serve` processes share one PostgreSQL database and Redis. Agents wait on each;
    one decision is made by the CLI (publishing to Redis), the other by `approvals.decide` in a third
    process (what the console does). The DB re-check is set to 5 s, so a wake-up well under 0.5 s
    can only have come through Redis pub/sub."""
    redis_url = f"redis://127.0.0.1:6379/{random.randint(1, 15)}"
    env = make_env(empty_pg_url, tmp_path, CALLGATE_REDIS_URL=redis_url, CALLGATE_RECHECK_SECONDS="5")
    key = agent_key(env)
    db = Db(empty_pg_url)
    agent = Agent()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    latencies: list[float] = []
    try:
        with serve(env, tmp_path / "a") as gw_a, serve(env, tmp_path / "b") as gw_b:
            callgate.configure(url=gw_b.url, api_key=key, agent="e2e-bot", approval_timeout=60,
                               spool_dir=tmp_path / "spool")
            for amount in (401, 402, 403):  # waits on B, decided by the CLI process
                t, out = agent.start(agent.refund, amount)
                (cid,) = db.pending(1)
                time.sleep(0.3)  # the long-poll is parked on B
                cli(env, "calls", "approve", cid, "--as", "alice")
                t.join(10)
                assert out == {"result": f"refunded {amount}"}, out
                latencies.append(agent.started_at(amount) - db.decided_at(cid))

            # Waits on A; decided by approvals.decide() with its own Redis bridge (the console's path).
            callgate.configure(url=gw_a.url, api_key=key, agent="e2e-bot", approval_timeout=60,
                               spool_dir=tmp_path / "spool")
            t, out = agent.start(agent.refund, 404)
            (cid,) = db.pending(1)
            time.sleep(0.3)
            asyncio.run(_decide_elsewhere(env, redis_url, cid))
            t.join(10)
            assert out == {"result": "refunded 404"}, out
            latencies.append(agent.started_at(404) - db.decided_at(cid))
            assert callgate.flush(timeout=10)
        print(f"\napproval -> tool start through Redis: {', '.join(f'{x * 1000:.1f} ms' for x in latencies)}")
        # Well under the 5 s re-check: only Redis can explain it (loose bound: CI shares 2 cores with xdist).
        assert sorted(latencies)[len(latencies) // 2] < 0.5 and max(latencies) < 3.0, latencies
        assert sorted(a for _, a, _ in agent.ran) == [401, 402, 403, 404]
    finally:
        db.close()


async def _decide_elsewhere(env: dict[str, str], redis_url: str, call_id: str) -> None:
    from gateway.app import build_runtime
    from gateway.approvals import decide
    from gateway.audit import Actor
    from gateway.config import Settings
    from gateway.pubsub import RedisBridge

    settings = Settings(database_url=env["CALLGATE_DATABASE_URL"], secret_key=env["CALLGATE_SECRET_KEY"],
                        policies=Path(env["CALLGATE_POLICIES"]), redis_url=redis_url, env="test")
    runtime = build_runtime(settings)
    runtime.pubsub = RedisBridge(redis_url, runtime.notifier)
    await runtime.pubsub.start()
    try:
        view = await decide(runtime, call_id=call_id, approve=True, actor=Actor("user", "reviewer"),
                            channel="console", comment=None)
        assert view.row["status"] == "approved"
    finally:
        await runtime.pubsub.stop()
        runtime.commit_queue.stop()
        runtime.writer.dispose()
        runtime.reader.dispose()

"""Production mode, for real: `callgate serve` with Redis, a real `celery -A gateway.worker worker`
and `celery beat` on their own Redis db and queue, a throwaway PostgreSQL database, agents waiting
in the real SDK, decisions from the `callgate calls` CLI (which publishes the wake-up and kicks a
delivery task), and a local receiver that verifies every signature.

The worker is killed with SIGKILL (its whole process group) while it is in the middle of a POST
to a slow receiver, and while other webhooks are due and other calls are pending. Then:
pending calls are still pending and decisions still release waiting agents (they do not need the
worker); after a restart every event is delivered (at least once: the interrupted one again, with
the same webhook-id), each message is recorded delivered exactly once, and no approved tool ran
twice.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import callgate
from gateway.models import ToolCall, WebhookOutbox
from tests.e2e.processes import cli, serve
from tests.e2e.test_approvals_e2e import Agent, Db, agent_key, make_env
from tests.gateway.webhooks.receiver import Reply, running_receiver

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]
ROOT = Path(__file__).resolve().parents[2]
LEASE_S = 6.0


@contextmanager
def celery(kind: str, env: dict[str, str], log: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """A Celery process in its own session (so SIGKILL reaches its pool children too)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "gateway.worker", kind, "--loglevel", "INFO", *args],
        env={**os.environ, **env}, cwd=ROOT, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        yield process
    finally:
        kill_group(process, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            kill_group(process, signal.SIGKILL)
            process.wait(10)


def kill_group(process: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass


def wait_for_log(log: Path, text: str, process: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text(errors="replace"):
        assert process.poll() is None, f"celery exited {process.returncode}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {text!r} in the log after {timeout}s:\n{log.read_text()[-3000:]}"
        time.sleep(0.2)


def outbox_rows(db: Db) -> list[dict[str, Any]]:
    with db.engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(WebhookOutbox.__table__)).mappings()]


def status(db: Db, call_id: str) -> str:
    with db.engine.connect() as conn:
        return str(conn.execute(sa.select(ToolCall.status).where(ToolCall.id == call_id)).scalar_one())


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout}s"
        time.sleep(0.1)


@pytest.fixture
def redis_target() -> Iterator[tuple[str, str]]:
    import redis

    url = f"redis://127.0.0.1:6379/{random.randint(1, 15)}"
    queue = f"callgate-e2e-{uuid.uuid4().hex[:10]}"
    yield url, queue
    client = redis.Redis.from_url(url)
    client.delete(queue, f"_kombu.binding.{queue}")
    client.close()


def test_kill_9_of_the_celery_worker_loses_no_event_and_runs_nothing_twice(
    empty_pg_url: str, tmp_path: Path, redis_target: tuple[str, str], sdk_reset: None
) -> None:
    redis_url, queue = redis_target
    env = make_env(
        empty_pg_url, tmp_path, CALLGATE_REDIS_URL=redis_url, CALLGATE_CELERY_QUEUE=queue,
        CALLGATE_WEBHOOK_ALLOW_PRIVATE="true", CALLGATE_WEBHOOK_ALLOW_HTTP="true", CALLGATE_WEBHOOK_TIMEOUT_SECONDS="4",
        CALLGATE_WEBHOOK_LEASE_SECONDS=str(LEASE_S), CALLGATE_WEBHOOK_RETRY_SCHEDULE="0.5,1,1,1,1,1,1",
        CALLGATE_WEBHOOK_POLL_SECONDS="0.5", CALLGATE_SWEEP_INTERVAL_S="1",
    )
    key = agent_key(env)
    db = Db(empty_pg_url)
    agent = Agent()
    first_log, second_log, beat_log = tmp_path / "worker-1.log", tmp_path / "worker-2.log", tmp_path / "beat.log"
    worker_args = ("--concurrency", "2", "--without-gossip", "--without-mingle", "--without-heartbeat")
    with running_receiver() as receiver:
        receiver.answer_with([Reply(200, delay=3.0)])  # the first POST is held while we kill the worker
        added = cli(env, "webhooks", "add", "--agent", "e2e-bot", "--url", receiver.url)
        secret = added.stdout.strip().splitlines()[-1]
        try:
            with serve(env, tmp_path) as gw, celery("beat", env, beat_log, "--schedule", str(tmp_path / "beat-db")):
                callgate.configure(url=gw.url, api_key=key, agent="e2e-bot", approval_timeout=120,
                                   spool_dir=tmp_path / "spool")
                amounts = [801, 802, 803, 804, 805]
                waiting = {}
                for amount in amounts:
                    waiting[amount] = agent.start(agent.refund, amount)
                    db.pending(len(waiting))
                ids = {amount: db.id_of(amount) for amount in amounts}
                approve = {801, 803, 804}

                with celery("worker", env, first_log, *worker_args) as worker:
                    wait_for_log(first_log, "ready.", worker)
                    cli(env, "calls", "approve", ids[801], "--as", "alice")
                    assert receiver.arrived.wait(30), first_log.read_text()[-3000:]
                    kill_group(worker, signal.SIGKILL)  # mid-POST: the receiver is still holding it
                    worker.wait(10)
                interrupted = receiver.requests[0].webhook_id

                # The worker is gone. Decisions still release the waiting agents (Redis pub/sub to
                # the gateway), their events wait in the outbox, undecided calls stay pending.
                waiting[801][0].join(30)
                assert waiting[801][1] == {"result": "refunded 801"}
                cli(env, "calls", "deny", ids[802], "--as", "bob")
                cli(env, "calls", "approve", ids[803], "--as", "alice")
                for amount in (802, 803):
                    waiting[amount][0].join(30)
                    assert not waiting[amount][0].is_alive()
                assert isinstance(waiting[802][1].get("error"), callgate.ApprovalDenied)
                assert waiting[803][1] == {"result": "refunded 803"}
                assert (status(db, ids[804]), status(db, ids[805])) == ("pending", "pending")
                rows = {r["call_id"]: r for r in outbox_rows(db)}
                assert set(rows) == {ids[801], ids[802], ids[803]}
                assert rows[ids[801]]["status"] == "pending" and rows[ids[801]]["attempts"] == 1  # leased, lost
                assert rows[ids[801]]["id"] == interrupted

                with celery("worker", env, second_log, *worker_args) as worker:
                    wait_for_log(second_log, "ready.", worker)
                    cli(env, "calls", "approve", ids[804], "--as", "alice")
                    cli(env, "calls", "deny", ids[805], "--as", "bob")
                    wait_until(lambda: len(outbox_rows(db)) == 5
                               and all(r["status"] == "delivered" for r in outbox_rows(db)),
                               LEASE_S + 60, "delivery of all five events")
                for amount in (804, 805):
                    waiting[amount][0].join(30)
                assert waiting[804][1] == {"result": "refunded 804"}
                assert isinstance(waiting[805][1].get("error"), callgate.ApprovalDenied)
                assert callgate.flush(timeout=10)

            rows = {r["call_id"]: r for r in outbox_rows(db)}
            received: dict[str, list[dict[str, Any]]] = {}
            for request in receiver.requests:
                received.setdefault(request.webhook_id, []).append(request.verify(secret))  # every one signed
            assert set(received) == {r["id"] for r in rows.values()}  # nothing lost, nothing invented
            assert len(received[interrupted]) >= 2  # the interrupted POST was sent again, same webhook-id
            for amount, call_id in ids.items():
                payloads = received[rows[call_id]["id"]]
                assert {p["data"]["call_id"] for p in payloads} == {call_id}
                expected = "approved" if amount in approve else "denied"
                assert {p["data"]["status"] for p in payloads} == {expected}
            assert sorted(a for _, a, _ in agent.ran) == sorted(approve)  # each approved call ran exactly once
            types = db.event_types()
            assert types.count("webhook.delivered") == 5  # one per message, however many attempts
            assert types.count("execution.claimed") == len(approve)
            assert types.count("approval.decided") == 5
            assert json.loads(cli(env, "audit", "verify", "--json").stdout)["ok"] is True
            assert "callgate.deliver_webhooks" in second_log.read_text(errors="replace")
        finally:
            db.close()

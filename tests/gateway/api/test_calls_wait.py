"""``GET /v1/calls/{id}?wait=&claim=1``: the long-poll that claims an approved call in the answer
that reports the approval, and the worker-wide batching of held long-polls (reads, re-checks).
On SQLite and PostgreSQL."""

from __future__ import annotations

import functools
import json
import threading
import time
import uuid
from typing import Any

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import Engine, insert, select

from gateway.approvals import decide
from gateway.audit import Actor, stream_rows, verify_rows
from gateway.calls import settled_calls
from gateway.models import AuditEvent, ToolCall
from tests.gateway.test_approvals import decide_now, submit

BOB = Actor("user", "bob")


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def event_types(engine: Engine, call_id: str) -> list[str]:
    with engine.connect() as conn:
        rows = conn.execute(select(AuditEvent.canonical).where(AuditEvent.tool_call_id == call_id)
                            .order_by(AuditEvent.seq))
        return [json.loads(c)["event_type"] for (c,) in rows]


def status_of(engine: Engine, call_id: str) -> dict[str, Any]:
    with engine.connect() as conn:
        return dict(conn.execute(select(ToolCall.status, ToolCall.claimed_at, ToolCall.claimed_by)
                                 .where(ToolCall.id == call_id)).mappings().one())


def hold(client: TestClient, path: str, key: str) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def poll() -> None:
        r = client.get(path, headers=auth(key))
        out.update(status=r.status_code, body=r.json(), headers=r.headers, ended=time.monotonic())

    thread = threading.Thread(target=poll)
    thread.start()
    return thread, out


def wait_held(client: TestClient, n: int = 1) -> None:
    notifier = client.app.state.runtime.notifier  # type: ignore[attr-defined]
    end = time.monotonic() + 10
    while notifier.waiting < n:
        assert time.monotonic() < end, f"{notifier.waiting} of {n} long-polls parked"
        time.sleep(0.005)


def decide_in_app(client: TestClient, call_id: str, *, approve: bool = True, comment: str | None = None) -> None:
    """What the console does: approvals.decide on the app's own runtime (commit, then wake-up)."""
    rt = client.app.state.runtime  # type: ignore[attr-defined]
    client.portal.call(functools.partial(  # type: ignore[union-attr]
        decide, rt, call_id=call_id, approve=approve, actor=BOB, channel="console", comment=comment))


class TestClaimOnWake:
    def test_a_held_poll_is_answered_with_the_claim_when_the_call_is_approved(
            self, client: TestClient, agent_key: str, engine: Engine) -> None:
        """One request: held while pending, woken by the decision, answered claimed (running),
        audited exactly as the claim endpoint does; every later claim is already_claimed."""
        call_id = submit(client, agent_key)
        thread, out = hold(client, f"/v1/calls/{call_id}?wait=10&claim=1", agent_key)
        wait_held(client)
        decided = time.monotonic()
        decide_in_app(client, call_id)
        thread.join(10)
        assert out["status"] == 200, out
        assert out["body"]["claimed"] is True and out["body"]["status"] == "running", out["body"]
        assert out["body"]["decided_by"] == "bob" and out["body"]["call_id"] == call_id
        assert out["headers"]["cache-control"] == "no-store"
        assert out["ended"] - decided < 5  # the push, not the end of the 10 s wait
        row = status_of(engine, call_id)
        assert row["status"] == "running" and row["claimed_at"] is not None and row["claimed_by"]
        assert event_types(engine, call_id).count("execution.claimed") == 1

        again = client.get(f"/v1/calls/{call_id}?wait=1&claim=1", headers=auth(agent_key))
        assert (again.status_code, again.json()["code"]) == (409, "already_claimed")
        explicit = client.post(f"/v1/calls/{call_id}/claim", headers=auth(agent_key))
        assert (explicit.status_code, explicit.json()["code"]) == (409, "already_claimed")
        assert event_types(engine, call_id).count("execution.claimed") == 1

    def test_an_already_approved_call_is_claimed_without_waiting(
            self, client: TestClient, agent_key: str, engine: Engine) -> None:
        call_id = submit(client, agent_key)
        decide_now(engine, call_id)
        r = client.get(f"/v1/calls/{call_id}?wait=10&claim=1", headers=auth(agent_key))
        assert r.status_code == 200 and r.json()["claimed"] is True and r.json()["status"] == "running"
        assert event_types(engine, call_id).count("execution.claimed") == 1

    def test_of_two_polls_waiting_with_claim_exactly_one_wins(
            self, client: TestClient, agent_key: str, engine: Engine) -> None:
        """Two processes resumed the same call and both wait with claim=1: one runs it, the
        other is told already_claimed: still at most one run."""
        call_id = submit(client, agent_key)
        polls = [hold(client, f"/v1/calls/{call_id}?wait=10&claim=1", agent_key) for _ in range(2)]
        wait_held(client, 2)
        decide_in_app(client, call_id)
        for thread, _ in polls:
            thread.join(10)
        answers = sorted((out["status"], out["body"].get("claimed"), out["body"].get("code")) for _, out in polls)
        assert answers == [(200, True, None), (409, None, "already_claimed")]
        assert event_types(engine, call_id).count("execution.claimed") == 1

    def test_denied_expired_and_pending_calls_are_answered_as_without_claim(
            self, client: TestClient, agent_key: str, engine: Engine) -> None:
        denied = submit(client, agent_key)
        thread, out = hold(client, f"/v1/calls/{denied}?wait=10&claim=1", agent_key)
        wait_held(client)
        decide_in_app(client, denied, approve=False, comment="not this one")
        thread.join(10)
        assert out["status"] == 200 and out["body"]["status"] == "denied", out
        assert out["body"]["comment"] == "not this one" and "claimed" not in out["body"]

        pending = submit(client, agent_key)
        r = client.get(f"/v1/calls/{pending}?wait=0&claim=1", headers=auth(agent_key))
        assert r.status_code == 200 and r.json()["status"] == "pending" and "claimed" not in r.json()
        assert status_of(engine, denied)["claimed_at"] is None
        assert status_of(engine, pending)["claimed_at"] is None
        assert "execution.claimed" not in event_types(engine, denied) + event_types(engine, pending)

    def test_what_claim_refuses(self, client: TestClient, agent_key: str, other_agent_key: str, admin_key: str,
                                engine: Engine) -> None:
        """An allowed call was claimed by its own submission: already_claimed. Another agent's
        call is 404 and an admin key may read but never claim (403); nothing is written."""
        allowed = submit(client, agent_key, "send_email", {"to": "a@example.com"})
        r = client.get(f"/v1/calls/{allowed}?claim=1", headers=auth(agent_key))
        assert (r.status_code, r.json()["code"]) == (409, "already_claimed")
        approved = submit(client, agent_key)
        decide_now(engine, approved)
        assert client.get(f"/v1/calls/{approved}?claim=1", headers=auth(other_agent_key)).status_code == 404
        assert client.get(f"/v1/calls/{approved}?claim=1", headers=auth(admin_key)).status_code == 403
        assert client.get(f"/v1/calls/{approved}", headers=auth(admin_key)).json()["status"] == "approved"
        assert status_of(engine, approved)["claimed_at"] is None

    def test_the_chain_stays_intact(self, client: TestClient, agent_key: str, engine: Engine) -> None:
        for _ in range(3):
            call_id = submit(client, agent_key)
            thread, _ = hold(client, f"/v1/calls/{call_id}?wait=10&claim=1", agent_key)
            wait_held(client)
            decide_in_app(client, call_id)
            thread.join(10)
        with engine.connect() as conn:
            assert verify_rows(stream_rows(conn)).ok


class TestHeldPollsShareTheirWork:
    def test_held_polls_do_not_each_poll_the_database(self, client: TestClient, agent_key: str) -> None:
        """20 long-polls held ~1 s with the re-check every 0.25 s: the worker re-checks them with a
        handful of queries for all 20, and reads each once at the start; a per-poll re-read would
        have made ~80 reads."""
        rt = client.app.state.runtime  # type: ignore[attr-defined]
        assert rt.recheck_seconds == 0.25
        ids = [submit(client, agent_key) for _ in range(20)]
        polls = [hold(client, f"/v1/calls/{i}?wait=1", agent_key) for i in ids]
        wait_held(client, 20)
        for thread, out in polls:
            thread.join(10)
            assert out["status"] == 200 and out["body"]["status"] == "pending"
        reads = client.app.state.runtime.long_polls.reads  # type: ignore[attr-defined]
        assert reads.batches <= 40  # one read at the start and one at the end, per poll at most
        assert 1 <= rt.notifier.rechecks <= 10  # ~4 intervals, one query each, for all 20 polls

    def test_many_polls_woken_together_are_read_together(self, client: TestClient, agent_key: str,
                                                          engine: Engine) -> None:
        """A decision by another process (no push) is seen by the worker's one re-check, and the
        40 woken polls are read back in a few batches, not 40 reads."""
        ids = [submit(client, agent_key) for _ in range(40)]
        polls = [hold(client, f"/v1/calls/{i}?wait=10", agent_key) for i in ids]
        wait_held(client, 40)
        reads = client.app.state.runtime.long_polls.reads  # type: ignore[attr-defined]
        before = reads.batches
        for call_id in ids:
            decide_now(engine, call_id, channel="cli")  # committed elsewhere: nobody publishes
        for thread, out in polls:
            thread.join(10)
            assert out["status"] == 200 and out["body"]["status"] == "approved", out
        assert reads.batches - before < 20

    def test_a_new_lifespan_gets_new_long_poll_machinery(self, settings: Any, agent_key: str) -> None:
        """The batched reader belongs to the runtime the lifespan built: a restarted app (same app
        object, new runtime) must not read through the old, disposed engine."""
        from gateway.app import create_app

        app = create_app(settings)
        for _ in range(2):
            with TestClient(app, base_url="https://testserver") as c:
                call_id = submit(c, agent_key)
                r = c.get(f"/v1/calls/{call_id}", headers=auth(agent_key))
                assert r.status_code == 200 and r.json()["status"] == "pending"
                assert app.state.runtime.long_polls.reader is app.state.runtime.reader
        assert uuid.UUID(call_id)


def test_the_recheck_query_returns_exactly_the_calls_that_stopped_waiting(engine: Engine) -> None:
    """1,203 watched ids (more than one chunk on either engine's path): the approved, the denied
    and the one pending past its expiry (not yet swept) are settled; the 1,200 still pending and
    an id with no row are not."""
    now = datetime.now(UTC)

    def row(status: str, expires_in: float) -> dict[str, Any]:
        return dict(id=str(uuid.uuid4()), agent="a", tool="t", args="{}", args_fp="0" * 64, redactions="[]",
                    metadata="{}", fingerprint="0" * 64, fail_open=False, decision="require_approval",
                    status=status, policy_version=1, created_at=now - timedelta(minutes=1),
                    expires_at=now + timedelta(seconds=expires_in))

    pending = [row("pending", 600) for _ in range(1200)]
    changed = [row("approved", 600), row("denied", 600), row("pending", -1)]
    with engine.begin() as conn:
        conn.execute(insert(ToolCall.__table__), pending + changed)
    with engine.connect() as conn:
        settled = settled_calls(conn, [r["id"] for r in pending + changed] + [str(uuid.uuid4())])
    assert settled == sorted(r["id"] for r in changed)

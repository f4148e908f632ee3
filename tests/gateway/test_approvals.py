"""Human decisions, the one-shot execution claim and waking long-polls, on SQLite and PostgreSQL.

Decisions go through ``gateway.approvals`` (the console, Slack and the CLI call it); there is no
API-key route that decides, and a test below tries every route to prove it.
"""

from __future__ import annotations

import functools
import json
import re
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, func, select, update

import gateway.expiry
from gateway.approvals import decide, decide_call, get_call, list_calls
from gateway.audit import SYSTEM, Actor, AuditBatch, stream_rows, verify_rows
from gateway.calls import prepare_call, submit_call
from gateway.cli import _operator as cli_operator
from gateway.cli import main as cli_main
from gateway.commit_queue import CommitQueue
from gateway.db import make_engine
from gateway.errors import Conflict, Forbidden, NotFound, Unprocessable
from gateway.expiry import db_now, sweep_expired
from gateway.keys import parse_bearer
from gateway.models import AuditEvent, ToolCall, User
from gateway.policy_store import load_active
from gateway.users import create_user

ALICE = Actor("operator", "alice")
BOB = Actor("user", "bob")
BIG_REFUND = {"amount": 850, "customer_id": "cus_1"}


def submit(client: TestClient, key: str, tool: str = "stripe.refund", args: dict[str, Any] | None = None) -> str:
    body = {"id": str(uuid.uuid4()), "tool": tool, "args": BIG_REFUND if args is None else args}
    r = client.post("/v1/calls", json=body, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 201, r.text
    return body["id"]


def decide_now(engine: Engine, call_id: str, *, approve: bool = True, actor: Actor = ALICE, channel: str = "console",
               comment: str | None = None) -> Any:
    """What every caller does: decide (or record the refusal) in one transaction, then, once it
    committed, answer the decided call or raise the refusal."""
    with engine.connect() as conn, conn.begin():
        audit = AuditBatch()
        decision = decide_call(conn, audit, call_id=call_id, approve=approve, actor=actor, channel=channel,
                               comment=comment)
        audit.flush(conn)
    return decision.result()


def rejections(engine: Engine, call_id: str) -> list[dict[str, Any]]:
    return [e for e in events(engine, call_id) if e["event_type"] == "approval.decision_rejected"]


def events(engine: Engine, call_id: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(select(AuditEvent.canonical).where(AuditEvent.tool_call_id == call_id)
                            .order_by(AuditEvent.seq))
        return [json.loads(c) for (c,) in rows]


def row(engine: Engine, call_id: str) -> dict[str, Any]:
    with engine.connect() as conn:
        return dict(conn.execute(select(ToolCall.__table__).where(ToolCall.id == call_id)).mappings().one())


def expire(engine: Engine, call_id: str) -> None:
    with engine.begin() as conn:
        conn.execute(update(ToolCall).where(ToolCall.id == call_id)
                     .values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def chain_ok(engine: Engine) -> None:
    with engine.connect() as conn:
        result = verify_rows(stream_rows(conn))
    assert result.ok, result


class TestDecide:
    def test_approve_records_who_where_when_and_one_event(self, client: TestClient, agent_key: str,
                                                          engine: Engine) -> None:
        """Approve: status approved, decider, channel, time and comment on the row, and one
        approval.decided event whose actor is the human."""
        call_id = submit(client, agent_key)
        view = decide_now(engine, call_id, comment="ok, known customer")
        assert view.row["status"] == "approved"
        stored = row(engine, call_id)
        assert (stored["status"], stored["decided_by"], stored["decided_channel"], stored["comment"]) == (
            "approved", "alice", "console", "ok, known customer")
        assert stored["decided_at"] is not None
        decided = [e for e in events(engine, call_id) if e["event_type"] == "approval.decided"]
        assert len(decided) == 1
        assert decided[0]["actor"] == {"type": "operator", "id": "alice"}
        assert decided[0]["data"] == {"decision": "approve", "channel": "console", "comment": "ok, known customer"}
        chain_ok(engine)

    def test_deny_reaches_the_agent_with_the_comment(self, client: TestClient, agent_key: str,
                                                     engine: Engine) -> None:
        """Deny: the agent reading its call sees denied, the reviewer, the channel and the comment."""
        call_id = submit(client, agent_key)
        decide_now(engine, call_id, approve=False, actor=BOB, channel="slack", comment="not this month")
        body = client.get(f"/v1/calls/{call_id}", headers=auth(agent_key)).json()
        assert (body["status"], body["decided_by"], body["decided_channel"], body["comment"]) == (
            "denied", "bob", "slack", "not this month")
        assert [e["data"]["decision"] for e in events(engine, call_id) if e["event_type"] == "approval.decided"] == [
            "deny"]

    def test_late_click_is_already_decided_changes_nothing_and_is_recorded(
            self, client: TestClient, agent_key: str, engine: Engine) -> None:
        """A second decision (same or opposite) is Conflict already_decided; the first stands, and
        each refused click is one approval.decision_rejected event naming the clicker (actor), what
        they attempted, through which channel and who made the standing decision."""
        call_id = submit(client, agent_key)
        decide_now(engine, call_id, approve=False, comment="no")
        before = row(engine, call_id)
        for approve in (True, False):
            with pytest.raises(Conflict) as exc:
                decide_now(engine, call_id, approve=approve, actor=BOB, channel="slack", comment="late")
            assert exc.value.code == "already_decided"
            assert "denied" in exc.value.detail and "alice" in exc.value.detail
        assert row(engine, call_id) == before
        rejected = rejections(engine, call_id)
        assert [(e["actor"], e["data"]) for e in rejected] == [
            ({"type": "user", "id": "bob"}, {"reason": "already_decided", "channel": "slack", "attempted": attempted,
                                             "by": "alice", "status": "denied", "repeat": False})
            for attempted in ("approve", "deny")]
        assert [e["event_type"] for e in events(engine, call_id)].count("approval.decided") == 1
        chain_ok(engine)

    def test_a_double_click_is_told_apart(self, client: TestClient, agent_key: str, engine: Engine) -> None:
        """The same person making the same decision again hears "you already approved this", not
        "already approved by alice"; the opposite decision by the same person is a plain conflict."""
        call_id = submit(client, agent_key)
        decide_now(engine, call_id)
        with pytest.raises(Conflict) as exc:
            decide_now(engine, call_id)
        assert exc.value.code == "already_decided" and exc.value.extra["repeat"] is True
        assert exc.value.detail.startswith(f"you already approved call {call_id} at ")
        with pytest.raises(Conflict) as exc:
            decide_now(engine, call_id, approve=False)
        assert "repeat" not in exc.value.extra and "was already approved by alice" in exc.value.detail
        assert [e["data"]["repeat"] for e in rejections(engine, call_id)] == [True, False]

    def test_expired_call_cannot_be_decided_before_or_after_the_sweep(self, client: TestClient, agent_key: str,
                                                                      engine: Engine) -> None:
        """Past expires_at a click is Conflict expired — whether or not the sweeper ran (read-time
        check) — and each late click is recorded as rejected with reason expired."""
        call_id = submit(client, agent_key)
        expire(engine, call_id)
        with pytest.raises(Conflict) as exc:
            decide_now(engine, call_id)
        assert exc.value.code == "expired"
        assert row(engine, call_id)["status"] == "pending"  # not swept yet: still expired on read
        with engine.connect() as conn, conn.begin():
            audit = AuditBatch()
            assert sweep_expired(conn, audit) == [call_id]
            audit.flush(conn)
        with pytest.raises(Conflict) as exc:
            decide_now(engine, call_id, approve=False)
        assert exc.value.code == "expired"
        kinds = [e["event_type"] for e in events(engine, call_id)]
        assert kinds.count("approval.expired") == 1 and "approval.decided" not in kinds
        assert [(e["data"]["reason"], e["data"]["attempted"], e["data"]["status"], e["data"]["by"])
                for e in rejections(engine, call_id)] == [("expired", "approve", "expired", None),
                                                          ("expired", "deny", "expired", "system:expiry")]
        assert row(engine, call_id)["status"] == "expired"

    def test_bad_requests_are_refused_before_writing(self, client: TestClient, agent_key: str,
                                                     engine: Engine) -> None:
        """Unknown call 404 (the click is recorded: reason not_found); something that is not a call
        id 404 with nothing written; a 2001-character comment 422 (2000 is fine); an unknown channel
        422; an API key or the system as the actor 403 (these refuse before writing anything); a
        call that never needed approval 409."""
        unknown = str(uuid.uuid4())
        with pytest.raises(NotFound):
            decide_now(engine, unknown)
        assert [(e["actor"]["id"], e["data"]["reason"], e["data"]["status"]) for e in rejections(engine, unknown)] == [
            ("alice", "not_found", None)]
        with engine.connect() as conn:
            written = conn.execute(select(func.count()).select_from(AuditEvent)).scalar_one()
        for garbage in ("nope", "' OR 1=1 --", unknown + "0"):
            with pytest.raises(NotFound):
                decide_now(engine, garbage)
        call_id = submit(client, agent_key)
        with pytest.raises(Unprocessable) as exc:
            decide_now(engine, call_id, comment="x" * 2001)
        assert exc.value.code == "comment_too_long"
        with pytest.raises(Unprocessable):
            decide_now(engine, call_id, channel="api")
        for robot in (Actor("agent_key", "abc"), Actor("system", "callgate"), Actor("admin_key", "k")):
            with pytest.raises(Forbidden):
                decide_now(engine, call_id, actor=robot)
        assert row(engine, call_id)["status"] == "pending"
        assert rejections(engine, call_id) == []
        with engine.connect() as conn:  # only the submission's own events since the garbage ids
            assert conn.execute(select(func.count()).select_from(AuditEvent)).scalar_one() == written + 3
        assert decide_now(engine, call_id, comment="y" * 2000).row["comment"] == "y" * 2000
        allowed = submit(client, agent_key, "send_email", {"to": "a@example.com"})
        with pytest.raises(Conflict) as exc:
            decide_now(engine, allowed)
        assert exc.value.code == "already_decided"

    @pytest.mark.parametrize("n", [50])
    def test_concurrent_decisions_have_exactly_one_winner(self, client: TestClient, agent_key: str,
                                                          settings: Any, n: int) -> None:
        """50 simultaneous clicks (25 approve by alice, 25 deny by bob), each in its own transaction
        on its own connection: one wins, 49 get already_decided, exactly one approval.decided and 49
        approval.decision_rejected events, and the final status is the winner's."""
        call_id = submit(client, agent_key)
        url = settings.resolved_database_url()
        engine = make_engine(url, writer=True) if url.startswith("sqlite") else make_engine(url, pool_size=10)
        barrier = threading.Barrier(n)

        def click(i: int) -> tuple[str, str]:
            approve = i % 2 == 0
            barrier.wait()
            try:
                decide_now(engine, call_id, approve=approve, actor=ALICE if approve else BOB)
                return ("won", "approved" if approve else "denied")
            except Conflict as exc:
                return ("lost", exc.code)

        try:
            with ThreadPoolExecutor(n) as pool:
                results = list(pool.map(click, range(n)))
            winners = [r[1] for r in results if r[0] == "won"]
            assert len(winners) == 1, results
            assert sorted(r[1] for r in results if r[0] == "lost") == ["already_decided"] * (n - 1)
            assert row(engine, call_id)["status"] == winners[0]
            kinds = [e["event_type"] for e in events(engine, call_id)]
            assert kinds.count("approval.decided") == 1
            assert kinds.count("approval.decision_rejected") == n - 1
            assert {e["data"]["reason"] for e in rejections(engine, call_id)} == {"already_decided"}
            chain_ok(engine)
        finally:
            engine.dispose()

    def test_concurrent_decisions_through_the_group_commit(self, client: TestClient, agent_key: str,
                                                           engine: Engine) -> None:
        """The same race inside one worker's commit queue (decisions batched into one transaction):
        the 49 refusals are results, so their events commit with the winner's."""
        call_id = submit(client, agent_key)
        queue = CommitQueue(engine)
        queue.start()
        try:
            futures = [queue.submit(functools.partial(decide_call, call_id=call_id, approve=i % 2 == 0,
                                                      actor=ALICE, channel="console", comment=str(i)))
                       for i in range(50)]
            outcomes = [f.result(30) for f in futures]
        finally:
            queue.stop()
        assert sum(d.won for d in outcomes) == 1
        assert [d.refusal.code for d in outcomes if not d.won] == ["already_decided"] * 49
        kinds = [e["event_type"] for e in events(engine, call_id)]
        assert (kinds.count("approval.decided"), kinds.count("approval.decision_rejected")) == (1, 49)
        chain_ok(engine)


SKEW = timedelta(hours=1)


def skew_app_clock(monkeypatch: pytest.MonkeyPatch, by: timedelta) -> None:
    """Make this process's clock (``gateway.expiry.utcnow``) run ``by`` ahead: a replica, CLI or
    Celery host whose clock is off."""
    monkeypatch.setattr(gateway.expiry, "utcnow", lambda: datetime.now(UTC) + by)


def is_pg(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


class TestOneClock:
    """Deadlines follow the database's clock on PostgreSQL, whatever the app host's clock says;
    SQLite (one host) follows the process clock — shown side by side, which also proves the skew
    really reaches the code (so the PostgreSQL assertions can fail)."""

    def test_submission_sets_the_deadline_by_the_database_clock(self, client: TestClient, agent_key: str,
                                                                engine: Engine,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
        for skew in (SKEW, -SKEW):
            skew_app_clock(monkeypatch, skew)
            stored = row(engine, submit(client, agent_key))
            expires, created = (v if v.tzinfo else v.replace(tzinfo=UTC) for v in (stored["expires_at"],
                                                                                  stored["created_at"]))
            assert expires - created == timedelta(minutes=15)
            expected = datetime.now(UTC) + timedelta(minutes=15) + (timedelta(0) if is_pg(engine) else skew)
            assert abs(expires - expected) < timedelta(seconds=30), (skew, expires)

    def test_a_click_is_on_time_by_the_database_clock(self, client: TestClient, agent_key: str, engine: Engine,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
        """An hour-fast host can still approve a call the database says is live; an hour-slow host
        cannot approve a call the database says has expired."""
        live, overdue = submit(client, agent_key), submit(client, agent_key)
        expire(engine, overdue)
        skew_app_clock(monkeypatch, SKEW)
        if is_pg(engine):
            assert decide_now(engine, live).row["status"] == "approved"
        else:
            with pytest.raises(Conflict) as exc:
                decide_now(engine, live)
            assert exc.value.code == "expired"
        skew_app_clock(monkeypatch, -SKEW)
        if is_pg(engine):
            with pytest.raises(Conflict) as exc:
                decide_now(engine, overdue)
            assert exc.value.code == "expired"
            assert rejections(engine, overdue)[0]["data"]["reason"] == "expired"
        else:
            assert decide_now(engine, overdue).row["status"] == "approved"

    def test_the_sweep_expires_by_the_database_clock(self, client: TestClient, agent_key: str, engine: Engine,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
        live, overdue = submit(client, agent_key), submit(client, agent_key)
        expire(engine, overdue)

        def sweep() -> list[str]:
            with engine.connect() as conn, conn.begin():
                audit = AuditBatch()
                swept = sweep_expired(conn, audit)
                audit.flush(conn)
            return swept

        skew_app_clock(monkeypatch, -SKEW)
        assert sweep() == ([overdue] if is_pg(engine) else [])
        skew_app_clock(monkeypatch, SKEW)
        assert sorted(sweep()) == ([] if is_pg(engine) else sorted([live, overdue]))
        assert row(engine, live)["status"] == ("pending" if is_pg(engine) else "expired")

    @pytest.mark.postgres
    def test_the_database_clock_is_read_once_per_transaction(self, pg_database_url: str) -> None:
        """``now()`` is the transaction's start, so one read serves a whole group-commit batch."""
        engine = make_engine(pg_database_url, writer=True)
        statements: list[str] = []
        event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
        try:
            with engine.connect() as conn:
                with conn.begin():
                    first = [db_now(conn) for _ in range(3)]
                time.sleep(0.01)
                with conn.begin():
                    second = db_now(conn)
        finally:
            engine.dispose()
        assert first == [first[0]] * 3 and second > first[0]
        assert sum("now()" in s for s in statements) == 2

    def test_a_submission_batch_reads_the_clock_with_its_lookup(self, client: TestClient, agent_key: str,
                                                                engine: Engine, settings: Any) -> None:
        """The hot path pays no round trip for the clock: on PostgreSQL ``now()`` rides along with
        the batch's lookup of existing ids, and is then this transaction's clock for every unit."""
        submit(client, agent_key)  # the policy is stored
        incoming = prepare_call({"id": str(uuid.uuid4()), "tool": "stripe.refund", "args": BIG_REFUND},
                                secret=settings.resolved_secret_key(), max_args_bytes=settings.max_args_bytes)
        statements: list[str] = []
        listener = lambda *args: statements.append(args[2])  # noqa: E731
        event.listen(engine, "before_cursor_execute", listener)
        try:
            with engine.connect() as conn, conn.begin():
                policy = load_active(conn, settings.policies)
                statements.clear()
                audit = AuditBatch()
                view = submit_call(conn, audit, incoming=incoming, key=parse_bearer(f"Bearer {agent_key}"),
                                   pepper=settings.resolved_secret_key(), policy=policy)
                audit.flush(conn)
                if is_pg(engine):  # the transaction's clock, without another read
                    assert db_now(conn) == view.row["created_at"]
        finally:
            event.remove(engine, "before_cursor_execute", listener)
        clock_reads = [s for s in statements if "now()" in s]
        if is_pg(engine):
            assert len(clock_reads) == 1 and "tool_call" in clock_reads[0], statements
        else:
            assert clock_reads == []
        assert view.row["expires_at"] - view.row["created_at"] == timedelta(minutes=15)


def cli_decide(settings: Any, *args: str) -> Any:
    """``callgate calls ...`` in-process (a separate process in production: it only shares the DB)."""
    env = {"CALLGATE_DATABASE_URL": settings.resolved_database_url(), "CALLGATE_SECRET_KEY": settings.secret_key,
           "CALLGATE_ENV": "test", "CALLGATE_REDIS_URL": ""}
    return CliRunner().invoke(cli_main, ["calls", *args], env=env)


def add_user(engine: Engine, username: str, role: str, *, active: bool = True) -> None:
    with engine.begin() as conn:
        create_user(conn, username=username, password=f"{username}-long-password", role=role, env="test",
                    actor=SYSTEM)
        if not active:
            conn.execute(update(User).where(User.username == username).values(active=False))


class TestCliDecider:
    """``callgate calls approve|deny --as NAME``: NAME must be an active reviewer or admin, the OS
    account is always recorded, and a self-declared name is possible only as a break-glass."""

    def test_as_must_name_an_active_reviewer_or_admin(self, client: TestClient, agent_key: str, engine: Engine,
                                                      settings: Any) -> None:
        os_user = cli_operator().id
        add_user(engine, "rita", "reviewer")
        add_user(engine, "adam", "admin")
        add_user(engine, "vic", "viewer")
        add_user(engine, "dora", "reviewer", active=False)
        call_id, other = submit(client, agent_key), submit(client, agent_key)
        for name in ("vic", "dora", "nobody", "RITA"):
            result = cli_decide(settings, "approve", call_id, "--as", name)
            assert result.exit_code == 2, result.output
            assert "not an active console user with the reviewer or admin role" in result.output
        assert row(engine, call_id)["status"] == "pending"
        assert [(e["actor"], e["data"]) for e in rejections(engine, call_id)] == [
            ({"type": "operator", "id": os_user},
             {"reason": "not_authorized", "channel": "cli", "attempted": "approve", "by": None, "status": None,
              "repeat": False, "as": name, "os_user": os_user, "break_glass": False})
            for name in ("vic", "dora", "nobody", "RITA")]

        result = cli_decide(settings, "approve", call_id, "--as", "rita", "--comment", "known customer")
        assert result.exit_code == 0, result.output
        assert cli_decide(settings, "deny", other, "--as", "adam").exit_code == 0
        stored = row(engine, call_id)
        assert (stored["status"], stored["decided_by"], stored["decided_channel"]) == ("approved", "rita", "cli")
        (decided,) = [e for e in events(engine, call_id) if e["event_type"] == "approval.decided"]
        assert decided["actor"] == {"type": "user", "id": "rita"}  # the same principal as her console clicks
        assert decided["data"] == {"decision": "approve", "channel": "cli", "comment": "known customer",
                                   "os_user": os_user, "break_glass": False}
        assert row(engine, other)["decided_by"] == "adam"

        late = cli_decide(settings, "deny", call_id, "--as", "adam")
        assert late.exit_code == 1 and "already approved by rita" in late.output
        assert rejections(engine, call_id)[-1]["data"] == {
            "reason": "already_decided", "channel": "cli", "attempted": "deny", "by": "rita", "status": "approved",
            "repeat": False, "os_user": os_user, "break_glass": False}
        chain_ok(engine)

    def test_break_glass_is_recorded_as_such(self, client: TestClient, agent_key: str, engine: Engine,
                                             settings: Any) -> None:
        """Without a reviewer account the operator must say --break-glass and why (--comment); the
        decision is attributed to the self-declared operator and flagged, with the OS account."""
        call_id = submit(client, agent_key)
        refused = cli_decide(settings, "deny", call_id, "--as", "oncall", "--break-glass")
        assert refused.exit_code == 2 and "--break-glass needs --comment" in refused.output
        assert events(engine, call_id)[-1]["event_type"] == "approval.requested"  # nothing written
        result = cli_decide(settings, "deny", call_id, "--as", "oncall", "--break-glass", "--comment", "incident 42")
        assert result.exit_code == 0, result.output
        assert "BREAK-GLASS" in result.output
        stored = row(engine, call_id)
        assert (stored["status"], stored["decided_by"], stored["comment"]) == ("denied", "oncall", "incident 42")
        (decided,) = [e for e in events(engine, call_id) if e["event_type"] == "approval.decided"]
        assert decided["actor"] == {"type": "operator", "id": "oncall"}
        assert decided["data"]["break_glass"] is True and decided["data"]["os_user"] == cli_operator().id


class TestReads:
    def test_list_and_get_use_the_effective_status(self, client: TestClient, agent_key: str,
                                                   engine: Engine) -> None:
        """A pending call past its expiry lists as expired, not pending; filters and get_call work."""
        waiting, overdue, approved = (submit(client, agent_key) for _ in range(3))
        allowed = submit(client, agent_key, "send_email", {"to": "a@example.com"})
        expire(engine, overdue)
        decide_now(engine, approved, channel="cli")
        with engine.connect() as conn:
            pending = list_calls(conn)
            expired = list_calls(conn, status="expired")
            approved_rows = list_calls(conn, status="approved")
            everything = list_calls(conn, status=None)
            other_agent = list_calls(conn, status=None, agent="other-bot")
            one = get_call(conn, overdue)
            missing = get_call(conn, str(uuid.uuid4()))
        assert [r["call_id"] for r in pending] == [waiting]
        assert [(r["call_id"], r["status"]) for r in expired] == [(overdue, "expired")]
        assert [(r["call_id"], r["decided_channel"], r["decided_by"]) for r in approved_rows] == [
            (approved, "cli", "alice")]
        assert {r["call_id"] for r in everything} == {waiting, overdue, approved, allowed}
        assert other_agent == []
        assert one is not None and one["status"] == "expired" and one["args"] == BIG_REFUND
        assert missing is None
        with engine.connect() as conn, pytest.raises(Unprocessable):
            list_calls(conn, status="bogus")


class TestClaim:
    def test_approved_call_is_claimed_once(self, client: TestClient, agent_key: str, engine: Engine) -> None:
        """First claim 200 {claimed: true}, status running; the second 409 already_claimed; one
        execution.claimed event; then the outcome is accepted."""
        call_id = submit(client, agent_key)
        decide_now(engine, call_id)
        first = client.post(f"/v1/calls/{call_id}/claim", headers=auth(agent_key))
        assert first.status_code == 200, first.text
        assert first.json()["claimed"] is True and first.json()["status"] == "running"
        second = client.post(f"/v1/calls/{call_id}/claim", headers=auth(agent_key))
        assert (second.status_code, second.json()["code"]) == (409, "already_claimed")
        assert [e["event_type"] for e in events(engine, call_id)].count("execution.claimed") == 1
        stored = row(engine, call_id)
        assert stored["claimed_at"] is not None and stored["claimed_by"] == agent_key.split("_")[2]
        r = client.post(f"/v1/calls/{call_id}/outcome", json={"status": "succeeded", "duration_ms": 3},
                        headers=auth(agent_key))
        assert r.status_code == 200 and r.json()["status"] == "succeeded"
        assert client.post(f"/v1/calls/{call_id}/claim", headers=auth(agent_key)).status_code == 409

    def test_concurrent_claims_one_winner(self, client: TestClient, agent_key: str, engine: Engine) -> None:
        """30 simultaneous claims of one approved call: exactly one 200."""
        call_id = submit(client, agent_key)
        decide_now(engine, call_id)
        with ThreadPoolExecutor(15) as pool:
            codes = list(pool.map(lambda _: client.post(f"/v1/calls/{call_id}/claim",
                                                        headers=auth(agent_key)).status_code, range(30)))
        assert sorted(codes) == [200] + [409] * 29

    def test_outcome_of_an_approved_call_needs_the_claim(self, client: TestClient, agent_key: str,
                                                         engine: Engine) -> None:
        """Reporting an outcome for an approved but unclaimed call is 409 not_claimed."""
        call_id = submit(client, agent_key)
        decide_now(engine, call_id)
        r = client.post(f"/v1/calls/{call_id}/outcome", json={"status": "succeeded"}, headers=auth(agent_key))
        assert (r.status_code, r.json()["code"]) == (409, "not_claimed")

    def test_what_cannot_be_claimed(self, client: TestClient, agent_key: str, other_agent_key: str,
                                    admin_key: str, engine: Engine) -> None:
        """Pending 409 not_approved; denied 409 not_runnable; allowed 409 already_claimed (its POST
        answer was its claim) yet its outcome is accepted; another agent 404; an admin key 403."""
        pending = submit(client, agent_key)
        r = client.post(f"/v1/calls/{pending}/claim", headers=auth(agent_key))
        assert (r.status_code, r.json()["code"]) == (409, "not_approved")
        assert client.post(f"/v1/calls/{pending}/claim", headers=auth(other_agent_key)).status_code == 404
        assert client.post(f"/v1/calls/{pending}/claim", headers=auth(admin_key)).status_code == 403
        assert client.post(f"/v1/calls/{uuid.uuid4()}/claim", headers=auth(agent_key)).status_code == 404
        decide_now(engine, pending, approve=False)
        r = client.post(f"/v1/calls/{pending}/claim", headers=auth(agent_key))
        assert (r.status_code, r.json()["code"]) == (409, "not_runnable")
        allowed = submit(client, agent_key, "send_email", {"to": "a@example.com"})
        assert row(engine, allowed)["claimed_at"] is not None
        r = client.post(f"/v1/calls/{allowed}/claim", headers=auth(agent_key))
        assert (r.status_code, r.json()["code"]) == (409, "already_claimed")
        assert client.post(f"/v1/calls/{allowed}/outcome", json={"status": "succeeded"},
                           headers=auth(agent_key)).status_code == 200
        assert row(engine, pending)["status"] == "denied"


class TestWaking:
    def _hold(self, client: TestClient, key: str, call_id: str, wait: float = 10) -> tuple[threading.Thread, dict]:
        out: dict[str, Any] = {}

        def poll() -> None:
            started = time.monotonic()
            r = client.get(f"/v1/calls/{call_id}?wait={wait}", headers=auth(key))
            out.update(body=r.json(), ended=time.monotonic(), took=time.monotonic() - started)

        t = threading.Thread(target=poll)
        t.start()
        return t, out

    def _wait_held(self, client: TestClient) -> None:
        notifier = client.app.state.runtime.notifier  # type: ignore[attr-defined]
        end = time.monotonic() + 5
        while notifier.waiting == 0:
            assert time.monotonic() < end, "long-poll never parked"
            time.sleep(0.005)

    def test_decide_wakes_the_long_poll_at_once(self, client: TestClient, agent_key: str) -> None:
        """decide() (what the console calls) releases a held long-poll through the in-process notifier,
        long before the DB re-check would (set to 5 s here)."""
        rt = client.app.state.runtime  # type: ignore[attr-defined]
        rt.recheck_seconds = 5.0
        call_id = submit(client, agent_key)
        t, out = self._hold(client, agent_key, call_id)
        self._wait_held(client)
        decided = time.monotonic()
        view = client.portal.call(functools.partial(  # type: ignore[union-attr]
            decide, rt, call_id=call_id, approve=False, actor=BOB, channel="console", comment="nope"))
        t.join(10)
        assert view.row["status"] == "denied"
        assert out["body"]["status"] == "denied" and out["body"]["comment"] == "nope"
        assert out["ended"] - decided < 0.5, out

    def test_decision_by_another_process_is_seen_at_the_db_recheck(self, client: TestClient, agent_key: str,
                                                                   engine: Engine) -> None:
        """A decision committed elsewhere (CLI, another worker without Redis) sends no local push: the
        held long-poll sees it at its next DB re-check (0.25 s in embedded mode)."""
        rt = client.app.state.runtime  # type: ignore[attr-defined]
        assert rt.recheck_seconds == 0.25
        call_id = submit(client, agent_key)
        t, out = self._hold(client, agent_key, call_id)
        self._wait_held(client)
        decided = time.monotonic()
        decide_now(engine, call_id, channel="cli")
        t.join(10)
        assert out["body"]["status"] == "approved"
        assert out["ended"] - decided < 1.0, out

    def test_long_poll_ends_at_the_expiry(self, client: TestClient, agent_key: str, engine: Engine) -> None:
        """A held call answers expired right when its expiry passes, without waiting for a sweep."""
        rt = client.app.state.runtime  # type: ignore[attr-defined]
        rt.recheck_seconds = 5.0
        call_id = submit(client, agent_key)
        with engine.begin() as conn:
            conn.execute(update(ToolCall).where(ToolCall.id == call_id)
                         .values(expires_at=datetime.now(UTC) + timedelta(seconds=1)))
        started = time.monotonic()
        r = client.get(f"/v1/calls/{call_id}?wait=10", headers=auth(agent_key))
        assert r.json()["status"] == "expired"
        assert 0.5 < time.monotonic() - started < 2.5


class TestOnlyHumansDecide:
    def test_no_api_route_can_approve_or_deny(self, client: TestClient, agent_key: str, admin_key: str,
                                              engine: Engine) -> None:
        """Every route of the app, every method, with an admin key and with the owning agent's key,
        with decision-shaped bodies: the pending call stays pending and no approval.decided exists."""
        call_id = submit(client, agent_key)
        bodies = [None, {"approve": True}, {"decision": "approve"}, {"status": "approved"},
                  {"action": "approve", "comment": "x"}, {"approved": True, "decided_by": "me"}]
        tried = 0
        routes = list(_walk(client.app.routes))  # type: ignore[attr-defined]
        assert ("/v1/calls/{call_id}/claim", "POST") in routes
        for path, method in routes:
            url = re.sub(r"\{[^}]+\}", call_id, path)
            if True:
                for key in (admin_key, agent_key):
                    for body in bodies if method != "GET" else [None]:
                        for suffix in ("", "/approve", "/deny", "/decision", "/decide") if "{" in path else ("",):
                            r = client.request(method, url + suffix, headers=auth(key),
                                               json=body if body is not None else None)
                            assert r.status_code < 500, (method, url + suffix, r.text)
                            tried += 1
        assert tried >= 100
        stored = row(engine, call_id)
        assert (stored["status"], stored["decided_by"]) == ("pending", None)
        assert "approval.decided" not in [e["event_type"] for e in events(engine, call_id)]


def _walk(routes: Any, prefix: str = "") -> Any:
    """(path, method) of every route, through included routers (FastAPI >= 0.163 nests them)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _walk(inner.routes, prefix + route.include_context.prefix)
            continue
        path, methods = getattr(route, "path", None), getattr(route, "methods", None)
        if path and methods:
            for method in sorted(set(methods) - {"HEAD", "OPTIONS"}):
                yield prefix + path, method

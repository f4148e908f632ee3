"""A tool call's history is fixed at the database level (migration 0006), on both engines.

Mirrors test_audit.py's append-only tests: calls are brought into every lifecycle state through
the gateway's own domain functions, then the table owner (a plain connection: on SQLite without
our pragmas, on PostgreSQL the superuser, also under ``session_replication_role = replica``)
tries to rewrite them. Every forbidden statement raises, and the table is byte-identical after;
the lifecycle's own transitions still pass as raw SQL, so the guards are not simply "no UPDATE".
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Connection, Engine, text

from gateway.approvals import decide_call
from gateway.audit import SYSTEM, Actor, AuditBatch
from gateway.calls import claim_call, prepare_call, record_outcome, submit_call
from gateway.config import Settings
from gateway.db import make_engine
from gateway.expiry import sweep_expired
from gateway.key_admin import create_key
from gateway.keys import parse_bearer
from gateway.policy_store import load_active
from tests.gateway.conftest import POLICY, TEST_SECRET

REVIEWER = Actor("user", "alice")


@dataclass
class Calls:
    """One call in each lifecycle state, made the way the gateway makes them."""

    engine: Engine
    ids: dict[str, str]

    def snapshot(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(text("SELECT * FROM tool_call ORDER BY id")).mappings()]

    def status(self, call_id: str) -> str:
        with self.engine.connect() as conn:
            return str(conn.execute(text("SELECT status FROM tool_call WHERE id = :id"), {"id": call_id}).scalar_one())


def _run(engine: Engine, work: Any) -> Any:
    with engine.connect() as conn, conn.begin():
        audit = AuditBatch()
        result = work(conn, audit)
        audit.flush(conn)
    return result


@pytest.fixture
def make_calls(tmp_path: Path) -> Iterator[Any]:
    engines: list[Engine] = []

    def make(url: str) -> Calls:
        (tmp_path / "policy.yaml").write_text(POLICY)
        settings = Settings(database_url=url, policies=tmp_path / "policy.yaml", secret_key=TEST_SECRET, env="test",
                            data_dir=tmp_path)
        engine = make_engine(url, writer=True)
        engines.append(engine)
        pepper = settings.resolved_secret_key()
        with engine.begin() as conn:
            key = parse_bearer("Bearer " + create_key(conn, kind="agent", agent="billing-bot", name="t", pepper=pepper,
                                                      actor=SYSTEM).key)
            policy = load_active(conn, settings.policies)

        def submit(tool: str, args: dict[str, Any], **extra: Any) -> str:
            incoming = prepare_call({"id": str(uuid.uuid4()), "tool": tool, "args": args, **extra}, secret=pepper,
                                    max_args_bytes=settings.max_args_bytes)
            return str(_run(engine, lambda c, a: submit_call(c, a, incoming=incoming, key=key, pepper=pepper,
                                                             policy=policy)).row["id"])

        def approval() -> str:
            return submit("stripe.refund", {"amount": 850, "customer_id": "cus_1"})

        def decide(call_id: str, approve: bool) -> None:
            _run(engine, lambda c, a: decide_call(c, a, call_id=call_id, approve=approve, actor=REVIEWER,
                                                  channel="console", comment="why").result())

        def finish(call_id: str) -> None:
            _run(engine, lambda c, a: record_outcome(c, a, call_id=call_id, key=key, pepper=pepper,
                                                     body={"status": "succeeded", "duration_ms": 3}))

        ids = {"pending": approval(), "approved": approval(), "denied": approval(), "expired": approval(),
               "running": approval(), "succeeded": approval(),
               "allowed": submit("send_email", {"to": "a@example.com"}),
               "blocked": submit("delete_database", {}),
               "fail_open": submit("send_email", {"to": "b@example.com"}, fail_open=True)}
        decide(ids["approved"], True)
        decide(ids["denied"], False)
        for name in ("running", "succeeded"):
            decide(ids[name], True)
            _run(engine, lambda c, a, i=ids[name]: claim_call(c, a, call_id=i, key=key, pepper=pepper))
        finish(ids["succeeded"])
        finish(ids["fail_open"])
        with engine.begin() as conn:  # moving a pending call's deadline is allowed
            conn.execute(text("UPDATE tool_call SET expires_at = :t WHERE id = :id"),
                         {"t": "2000-01-01 00:00:00", "id": ids["expired"]})
        assert _run(engine, sweep_expired) == [ids["expired"]]
        calls = Calls(engine, ids)
        assert {name: calls.status(i) for name, i in ids.items()} == {name: name for name in ids}
        return calls

    yield make
    for engine in engines:
        engine.dispose()


FUTURE = "2999-01-01 00:00:00"

#: A statement that breaks two rules is refused by whichever trigger fires first (SQLite does not
#: promise an order), so it names either.
BROKE_TWO_RULES = "not a lifecycle transition|is written once"

#: (statement, fragment of the refusal). ``:name`` is the id of the call in state ``name``.
FORBIDDEN = [
    pytest.param("UPDATE tool_call SET status = 'approved' WHERE id = :denied", "not a lifecycle transition",
                 id="denied->approved"),
    pytest.param("UPDATE tool_call SET status = 'pending' WHERE id = :approved", "not a lifecycle transition",
                 id="reopen-approved"),
    pytest.param("UPDATE tool_call SET status = 'pending', decided_at = NULL, decided_by = NULL, "
                 "decided_channel = NULL, comment = NULL WHERE id = :approved", BROKE_TWO_RULES,
                 id="reopen-approved-and-erase-the-decision"),
    pytest.param("UPDATE tool_call SET status = 'pending' WHERE id = :expired", "not a lifecycle transition",
                 id="revive-expired"),
    pytest.param("UPDATE tool_call SET status = 'allowed' WHERE id = :blocked", "not a lifecycle transition",
                 id="blocked->allowed"),
    pytest.param("UPDATE tool_call SET status = 'running' WHERE id = :pending", "not a lifecycle transition",
                 id="skip-the-approval"),
    pytest.param("UPDATE tool_call SET status = 'approved' WHERE id = :running", "not a lifecycle transition",
                 id="un-claim"),
    pytest.param("UPDATE tool_call SET decided_by = 'mallory' WHERE id = :approved", "written once",
                 id="change-the-approver"),
    pytest.param("UPDATE tool_call SET comment = 'edited' WHERE id = :denied", "written once", id="edit-the-comment"),
    pytest.param("UPDATE tool_call SET decided_at = CURRENT_TIMESTAMP WHERE id = :allowed", "written once",
                 id="restamp-an-allowed-call"),
    pytest.param("UPDATE tool_call SET status = 'approved' WHERE id = :pending", "when and by whom",
                 id="anonymous-approval"),
    pytest.param(f"UPDATE tool_call SET expires_at = '{FUTURE}' WHERE id = :expired", "only move while",
                 id="extend-an-expired-deadline"),
    pytest.param("UPDATE tool_call SET args = '{}' WHERE id = :pending", "immutable", id="rewrite-args"),
    pytest.param("UPDATE tool_call SET tool = 'send_email' WHERE id = :approved", "immutable", id="swap-the-tool"),
    pytest.param("UPDATE tool_call SET agent = 'other-bot' WHERE id = :denied", "immutable", id="move-to-agent"),
    pytest.param("UPDATE tool_call SET decision = 'allow' WHERE id = :pending", "immutable",
                 id="rewrite-the-policy-decision"),
    pytest.param("UPDATE tool_call SET claimed_by = 'someone' WHERE id = :running", "claim is written once",
                 id="change-the-claimant"),
    pytest.param("UPDATE tool_call SET status = 'succeeded', outcome_status = 'succeeded', outcome_fingerprint = 'f', "
                 "outcome_at = CURRENT_TIMESTAMP WHERE id = :approved", BROKE_TWO_RULES,
                 id="outcome-without-claim"),
    pytest.param("UPDATE tool_call SET status = 'failed', outcome_status = 'failed' WHERE id = :succeeded",
                 BROKE_TWO_RULES, id="rewrite-the-outcome-status"),
    pytest.param("UPDATE tool_call SET outcome_error = 'hidden' WHERE id = :fail_open", "outcome is written once",
                 id="edit-a-fail-open-outcome"),
    pytest.param("UPDATE tool_call SET status = 'succeeded' WHERE id = :running", "must record its outcome",
                 id="finish-without-outcome"),
    pytest.param("DELETE FROM tool_call WHERE id = :denied", "permanent", id="delete-one"),
    pytest.param("DELETE FROM tool_call", "permanent", id="delete-all"),
]

SQLITE_ONLY = [
    pytest.param("INSERT OR REPLACE INTO tool_call SELECT * FROM tool_call WHERE id = :denied", "permanent",
                 id="insert-or-replace"),
    pytest.param("REPLACE INTO tool_call SELECT * FROM tool_call WHERE id = :approved", "permanent", id="replace"),
    pytest.param("INSERT INTO tool_call SELECT * FROM tool_call WHERE id = :denied "
                 "ON CONFLICT(id) DO UPDATE SET status = 'approved'", "permanent", id="upsert"),
]

POSTGRES_ONLY = [
    pytest.param("TRUNCATE tool_call CASCADE", "permanent", id="truncate"),
    pytest.param("INSERT INTO tool_call SELECT * FROM tool_call WHERE id = :denied "
                 "ON CONFLICT (id) DO UPDATE SET status = 'approved'", "not a lifecycle transition", id="upsert"),
]

#: The lifecycle's own moves, as raw SQL: the guards let exactly these through.
ALLOWED = [
    ("UPDATE tool_call SET expires_at = :future WHERE id = :pending", "pending"),
    ("UPDATE tool_call SET status = 'denied', decided_at = CURRENT_TIMESTAMP, decided_by = 'bob', "
     "decided_channel = 'cli' WHERE id = :pending", "denied"),
    ("UPDATE tool_call SET status = 'running', claimed_at = CURRENT_TIMESTAMP, claimed_by = 'k' WHERE id = :approved",
     "running"),
    ("UPDATE tool_call SET status = 'failed', outcome_status = 'failed', outcome_fingerprint = 'f', "
     "outcome_at = CURRENT_TIMESTAMP WHERE id = :running", "failed"),
    ("UPDATE tool_call SET status = 'succeeded', outcome_status = 'succeeded', outcome_fingerprint = 'f', "
     "outcome_at = CURRENT_TIMESTAMP, duration_ms = 1 WHERE id = :allowed", "succeeded"),
]


def _params(calls: Calls, statement: str) -> dict[str, str]:
    params = {name: call_id for name, call_id in calls.ids.items() if f":{name}" in statement}
    if ":future" in statement:
        params["future"] = FUTURE
    return params


def _attempt(conn: Connection, calls: Calls, statement: str) -> None:
    conn.execute(text(statement), _params(calls, statement))


class TestSqlite:
    @pytest.mark.parametrize("statement, refusal", FORBIDDEN + SQLITE_ONLY)
    def test_history_cannot_be_rewritten(self, sqlite_database_url: str, make_calls: Any, statement: str,
                                         refusal: str) -> None:
        """Every forbidden UPDATE, DELETE and overwriting INSERT raises IntegrityError naming the
        rule, through a plain connection without our pragmas; the table is unchanged."""
        calls = make_calls(sqlite_database_url)
        before = calls.snapshot()
        raw = sa.create_engine(sqlite_database_url)
        try:
            with pytest.raises(sa.exc.IntegrityError, match=refusal):
                with raw.begin() as conn:
                    _attempt(conn, calls, statement)
        finally:
            raw.dispose()
        assert calls.snapshot() == before

    def test_the_lifecycle_transitions_still_pass(self, sqlite_database_url: str, make_calls: Any) -> None:
        calls = make_calls(sqlite_database_url)
        raw = sa.create_engine(sqlite_database_url)
        try:
            for statement, expected in ALLOWED:
                with raw.begin() as conn:
                    _attempt(conn, calls, statement)
                (name,) = [n for n in calls.ids if f":{n}" in statement]
                assert calls.status(calls.ids[name]) == expected, statement
        finally:
            raw.dispose()


@pytest.mark.postgres
class TestPostgres:
    @pytest.mark.parametrize("statement, refusal", FORBIDDEN + POSTGRES_ONLY)
    @pytest.mark.parametrize("replica", [False, True])
    def test_even_a_superuser_cannot_rewrite_history(self, pg_database_url: str, make_calls: Any, statement: str,
                                                     refusal: str, replica: bool) -> None:
        """The ENABLE ALWAYS triggers stop the owner, also under session_replication_role=replica."""
        calls = make_calls(pg_database_url)
        before = calls.snapshot()
        with pytest.raises(sa.exc.DBAPIError, match=refusal):
            with calls.engine.begin() as conn:
                if replica:
                    conn.execute(text("SET LOCAL session_replication_role = replica"))
                _attempt(conn, calls, statement)
        assert calls.snapshot() == before

    def test_a_refused_transition_is_an_integrity_error(self, pg_database_url: str, make_calls: Any) -> None:
        """SQLSTATE 23514 (check_violation): the same exception class as SQLite's RAISE(ABORT)."""
        calls = make_calls(pg_database_url)
        with pytest.raises(sa.exc.IntegrityError) as exc, calls.engine.begin() as conn:
            _attempt(conn, calls, "UPDATE tool_call SET status = 'approved' WHERE id = :denied")
        assert getattr(exc.value.orig, "sqlstate", None) == "23514"
        assert f"call {calls.ids['denied']}, denied -> approved" in str(exc.value)

    def test_the_lifecycle_transitions_still_pass(self, pg_database_url: str, make_calls: Any) -> None:
        calls = make_calls(pg_database_url)
        for statement, expected in ALLOWED:
            with calls.engine.begin() as conn:
                _attempt(conn, calls, statement)
            (name,) = [n for n in calls.ids if f":{n}" in statement]
            assert calls.status(calls.ids[name]) == expected, statement

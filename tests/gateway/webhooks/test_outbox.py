"""Outbox rows live and die with the decision's transaction: one row per enabled endpoint for the
winner, none for a loser, none when the unit fails, exactly one per call for concurrent sweeps."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Connection, Engine, select, update

from gateway.approvals import decide_call
from gateway.audit import Actor, AuditBatch
from gateway.commit_queue import CommitQueue
from gateway.errors import Conflict, DomainError
from gateway.expiry import sweep_expired
from gateway.models import ToolCall, WebhookOutbox
from gateway.webhooks.delivery import RunUnit
from gateway.webhooks.endpoints import disable_endpoint
from gateway.webhooks.outbox import decision_payload, enqueue_decisions, render
from tests.gateway.webhooks.helpers import ALICE, Calls, outbox, register


@pytest.fixture
def queue(engine: Engine) -> Iterator[CommitQueue]:
    q = CommitQueue(engine, batch_max=64)
    q.start()
    yield q
    q.stop()


def outbox_in(conn: Connection) -> list[object]:
    return list(conn.execute(select(WebhookOutbox.id)).scalars())


def status_of(engine: Engine, call_id: str) -> str:
    with engine.connect() as conn:
        return str(conn.execute(select(ToolCall.status).where(ToolCall.id == call_id)).scalar_one())


def test_a_decision_writes_one_row_per_enabled_endpoint_of_its_agent(calls: Calls, run: RunUnit,
                                                                     engine: Engine) -> None:
    first = register(run, "http://127.0.0.1:9/a")
    second = register(run, "http://127.0.0.1:9/b")
    gone = register(run, "http://127.0.0.1:9/c")
    run(lambda conn, audit: disable_endpoint(conn, audit, endpoint_id=gone.endpoint["id"], actor=ALICE))
    call_id = calls.pending()
    calls.decide(call_id)
    rows = outbox(engine)
    assert sorted(r["endpoint_id"] for r in rows) == sorted([first.endpoint["id"], second.endpoint["id"]])
    assert len({r["id"] for r in rows}) == 2 and all(r["id"].startswith("msg_") for r in rows)
    assert {r["payload"] for r in rows} == {rows[0]["payload"]}  # rendered once: the same (thin) event
    assert all((r["status"], r["attempts"], r["call_id"], r["event_type"]) == ("pending", 0, call_id,
                                                                               "approval.decided") for r in rows)
    payload = json.loads(rows[0]["payload"])
    assert payload["data"]["status"] == "approved" and rows[0]["payload"].isascii()


def test_a_decision_that_loses_the_race_writes_no_row(calls: Calls, run: RunUnit, engine: Engine) -> None:
    register(run, "http://127.0.0.1:9/a")
    call_id = calls.pending()

    def click(approve: bool) -> str:
        try:
            calls.decide(call_id, approve=approve, actor=Actor("user", f"u{approve}"))
            return "won"
        except Conflict:
            return "lost"

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(click, [True, False] * 6))
    assert results.count("won") == 1
    (row,) = outbox(engine)
    assert json.loads(row["payload"])["data"]["status"] == status_of(engine, call_id)
    with pytest.raises(Conflict):
        calls.decide(call_id)
    assert len(outbox(engine)) == 1


@pytest.mark.parametrize("problem", ["expired", "not_a_human", "comment_too_long", "unknown_call"])
def test_a_refused_decision_writes_no_row(problem: str, calls: Calls, run: RunUnit, engine: Engine,
                                          queue: CommitQueue) -> None:
    """A refused decision writes no outbox row: a bad request raises before writing anything; a
    click on an expired or unknown call is a recorded refusal (its answer raised after the commit)."""
    register(run, "http://127.0.0.1:9/a")
    call_id = calls.pending()
    actor, comment = ALICE, None
    if problem == "expired":
        with engine.begin() as conn:
            conn.execute(update(ToolCall).where(ToolCall.id == call_id)
                         .values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    elif problem == "not_a_human":
        actor = Actor("agent_key", "k1")
    elif problem == "comment_too_long":
        comment = "x" * 2001
    else:
        call_id = "00000000-0000-0000-0000-000000000000"
    with pytest.raises(DomainError):
        queue.run_sync(lambda conn, audit: decide_call(conn, audit, call_id=call_id, approve=True, actor=actor,
                                                       channel="console", comment=comment)).result()
    assert outbox(engine) == []


def test_a_failing_unit_rolls_back_its_outbox_row_and_spares_its_neighbours(
    calls: Calls, run: RunUnit, engine: Engine, queue: CommitQueue
) -> None:
    """A unit that fails after deciding (the decision's UPDATE and its outbox row already written
    in the shared batch transaction) is rolled back whole; the neighbour in the same batch is
    retried alone and commits with its row."""
    register(run, "http://127.0.0.1:9/a")
    doomed, fine = calls.pending(), calls.pending()
    gate = threading.Event()

    def hold(conn: Connection, audit: AuditBatch) -> None:
        gate.wait(10)  # keeps the writer busy so the next two units land in one batch

    def decide_then_crash(conn: Connection, audit: AuditBatch) -> None:
        decide_call(conn, audit, call_id=doomed, approve=True, actor=ALICE, channel="console", comment=None)
        assert len(outbox_in(conn)) >= 1  # the row is really written inside the transaction...
        raise RuntimeError("the disk is full")  # ...and then the unit fails

    def decide_fine(conn: Connection, audit: AuditBatch) -> object:
        return decide_call(conn, audit, call_id=fine, approve=False, actor=ALICE, channel="console", comment=None)

    held = queue.submit(hold)
    crashing = queue.submit(decide_then_crash)
    neighbour = queue.submit(decide_fine)
    gate.set()
    held.result(10)
    with pytest.raises(RuntimeError):
        crashing.result(10)
    neighbour.result(10)
    assert status_of(engine, doomed) == "pending"
    assert status_of(engine, fine) == "denied"
    assert [r["call_id"] for r in outbox(engine)] == [fine]


def test_an_expiry_sweep_writes_one_row_per_call_even_with_concurrent_sweepers(
    calls: Calls, run: RunUnit, engine: Engine
) -> None:
    register(run, "http://127.0.0.1:9/a")
    ids = [calls.pending() for _ in range(4)]
    with engine.begin() as conn:
        conn.execute(update(ToolCall).where(ToolCall.id.in_(ids))
                     .values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    with ThreadPoolExecutor(4) as pool:
        swept = list(pool.map(lambda _: run(sweep_expired), range(4)))
    assert sorted(i for batch in swept for i in batch) == sorted(ids)  # each call expired by exactly one sweeper
    rows = outbox(engine)
    assert sorted(r["call_id"] for r in rows) == sorted(ids)
    assert {json.loads(r["payload"])["data"]["status"] for r in rows} == {"expired"}


def test_the_payload_refuses_an_undecided_call_and_renders_ascii(calls: Calls, engine: Engine) -> None:
    call_id = calls.pending(args={"amount": 900, "note": "café ☕"})
    with engine.connect() as conn:
        row = dict(conn.execute(select(ToolCall.__table__).where(ToolCall.id == call_id)).mappings().one())
    with pytest.raises(ValueError, match="not decided"):
        decision_payload(row, at=datetime.now(UTC), include_args=True)
    row.update(status="denied", decided_by="bob", decided_channel="slack", decided_at=datetime.now(UTC))
    body = render(decision_payload(row, at=datetime.now(UTC), include_args=True))
    assert body.isascii() and json.loads(body)["data"]["args"]["note"] == "café ☕"
    thin = json.loads(render(decision_payload(row, at=datetime.now(UTC), include_args=False)))
    assert "args" not in thin["data"] and thin["data"]["call_id"] == call_id
    with engine.connect() as conn:
        assert enqueue_decisions(conn, []) == []


def test_thin_and_full_endpoints_of_one_agent_get_their_own_bodies(calls: Calls, run: RunUnit,
                                                                  engine: Engine) -> None:
    """One decision, two endpoints: the one registered with include_args gets the redacted
    arguments, the other the thin event; everything else is the same event."""
    thin = register(run, "http://127.0.0.1:9/thin").endpoint["id"]
    full = register(run, "http://127.0.0.1:9/full", include_args=True).endpoint["id"]
    call_id = calls.pending(args={"amount": 900, "customer_id": "cus_9", "password": "hunter2"})
    calls.decide(call_id)
    bodies = {r["endpoint_id"]: json.loads(r["payload"]) for r in outbox(engine)}
    assert "args" not in bodies[thin]["data"]
    args = bodies[full]["data"].pop("args")
    assert args["amount"] == 900 and args["customer_id"] == "cus_9" and args["password"] != "hunter2"  # redacted
    assert bodies[thin] == bodies[full]  # the same event otherwise (same timestamp, same fields)
    assert all("hunter2" not in r["payload"] for r in outbox(engine))

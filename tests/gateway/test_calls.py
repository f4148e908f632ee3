"""Set-based submission: every request in one group commit is answered on its own."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

import policies
from gateway.audit import stream_rows, verify_rows
from gateway.calls import Submission, prepare_call, submit_calls
from gateway.commit_queue import CommitQueue
from gateway.errors import DomainError
from gateway.keys import parse_key
from gateway.models import AuditEvent, ToolCall
from gateway.policy_store import ActivePolicy

from tests.gateway.conftest import TEST_SECRET

POLICY = ActivePolicy(1, policies.compile_policy(policies.load_policy_text(
    "policies:\n  - tool: rm\n    default: block\n")))


def submission(key: str | None, tool: str = "send", args: dict[str, Any] | None = None, call_id: str | None = None) -> Submission:
    body = {"id": call_id or str(uuid.uuid4()), "tool": tool, "args": args if args is not None else {"n": 1}}
    incoming = prepare_call(body, secret=TEST_SECRET.encode(), max_args_bytes=65536)
    return Submission(incoming, parse_key(key) if key else None, TEST_SECRET.encode(), POLICY)


@pytest.fixture
def one_batch(engine: Engine) -> Iterator[CommitQueue]:
    """A commit queue the test starts after queueing everything, so all of it lands in one batch."""
    queue = CommitQueue(engine, batch_max=1000)
    yield queue
    queue.stop()


def test_a_mixed_batch_answers_each_request_on_its_own(one_batch: CommitQueue, engine: Engine, agent_key: str,
                                                      other_agent_key: str) -> None:
    """Good calls, a bad key, an in-batch duplicate, an id reused with another body and another
    agent's call all share one group commit; each gets its own answer and only good ones are written."""
    shared_id = str(uuid.uuid4())
    subs = [
        submission(agent_key, call_id=shared_id),
        submission(None),
        submission(agent_key, call_id=shared_id),  # same body: a replay of the first
        submission(agent_key, args={"n": 2}, call_id=shared_id),  # same id, other body
        submission(other_agent_key, tool="rm"),
        submission(agent_key[:-1] + ("A" if agent_key[-1] != "A" else "B")),
    ]
    futures = [one_batch.submit_batched(submit_calls, s) for s in subs]  # queued before start: one batch
    one_batch.start()
    results: list[Any] = []
    for f in futures:
        try:
            results.append(f.result(10))
        except DomainError as exc:
            results.append(exc.code)
    assert results[0].created and results[0].row["decision"] == "allow"
    assert results[1] == "invalid_api_key"
    assert not results[2].created and results[2].row["id"] == shared_id
    assert results[3] == "idempotency_key_reused"
    assert results[4].created and results[4].row["decision"] == "block" and results[4].row["agent"] == "other-bot"
    assert results[5] == "invalid_api_key"
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(ToolCall)).scalar_one() == 2
        types = [t for (t,) in conn.execute(select(AuditEvent.event_type).where(AuditEvent.tool_call_id.is_not(None)))]
        assert types.count("tool_call.received") == 2
        assert verify_rows(stream_rows(conn)).ok


def test_submit_calls_is_the_single_call_path_too(engine: Engine, agent_key: str) -> None:
    """One submission through the same function behaves like the batch (one row, two events)."""
    with engine.begin() as conn:
        from gateway.audit import AuditBatch

        audit = AuditBatch()
        (view,) = submit_calls(conn, audit, [submission(agent_key)])
        assert not isinstance(view, DomainError)
        assert [e.event_type for e in audit.events] == ["tool_call.received", "policy.evaluated"]
        audit.flush(conn)

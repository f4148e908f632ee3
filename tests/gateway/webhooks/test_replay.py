"""Admin replay (security.md §2.4): a new attempt with the same webhook-id and body and a fresh
attempt budget; refused while the message is still pending or its endpoint is disabled; an
attempt from before the replay can no longer move the message."""

from __future__ import annotations

import random
from typing import Any

import pytest
from sqlalchemy import Engine

from gateway.audit import Actor
from gateway.errors import Conflict, NotFound
from gateway.webhooks.delivery import Claimed, RunUnit, claim_due, deliver_due, record_attempts, send
from gateway.webhooks.endpoints import disable_endpoint
from gateway.webhooks.history import get_message
from gateway.webhooks.replay import replay_message
from tests.gateway.webhooks.helpers import (
    Calls,
    Clock,
    audit_events,
    delivery_config,
    delivery_log,
    outbox,
    register,
)
from tests.gateway.webhooks.receiver import Receiver, Reply

OPS = Actor("operator", "ops")


def replay(run: RunUnit, message_id: str) -> dict[str, Any]:
    message: dict[str, Any] = run(lambda conn, audit: replay_message(conn, audit, message_id=message_id, actor=OPS))
    return message


def test_a_delivered_message_is_sent_again_with_the_same_webhook_id(
    calls: Calls, run: RunUnit, engine: Engine, receiver: Receiver
) -> None:
    config = delivery_config(schedule=(0.0,))
    endpoint = register(run, receiver.url)
    call_id = calls.pending()
    calls.decide(call_id)
    assert [a.result for a in deliver_due(run, config)] == ["delivered"]
    (message_id,) = [r["id"] for r in outbox(engine)]

    replayed = replay(run, message_id)
    assert (replayed["message_id"], replayed["status"], replayed["attempts"], replayed["delivered_at"]) == (
        message_id, "pending", 1, None)
    assert replayed["replayed_at"] is not None and replayed["next_attempt_at"] is not None
    (again,) = deliver_due(run, config)
    assert again.result == "delivered" and again.message.attempt == 2 and again.message.budget_attempt == 1

    first, second = receiver.wait_for(2)
    assert first.webhook_id == second.webhook_id == message_id  # the same webhook-id: receivers dedupe on it
    assert first.body == second.body
    assert second.verify(endpoint.secret)["data"]["call_id"] == call_id
    assert [(x["attempt"], x["result"]) for x in delivery_log(engine)] == [(1, "delivered"), (2, "delivered")]
    (row,) = outbox(engine)
    assert (row["status"], row["attempts"], row["replay_base"]) == ("delivered", 2, 1)
    events = [e for e in audit_events(engine) if e["event_type"] == "webhook.replayed"]
    assert len(events) == 1 and events[0]["tool_call_id"] == call_id
    assert events[0]["actor"] == {"type": "operator", "id": "ops"}
    assert events[0]["data"] == {"message_id": message_id, "endpoint_id": endpoint.endpoint["id"],
                                 "previous_status": "delivered", "attempts": 1}


def test_a_failed_message_gets_a_fresh_attempt_budget(calls: Calls, run: RunUnit, engine: Engine,
                                                      receiver: Receiver) -> None:
    config = delivery_config(schedule=(0.0, 0.0))  # three attempts per budget
    register(run, receiver.url)
    receiver.default = Reply(500)
    calls.decide(calls.pending())
    assert [a.result for _ in range(4) for a in deliver_due(run, config)] == ["retry", "retry", "failed"]
    (message_id,) = [r["id"] for r in outbox(engine)]

    replay(run, message_id)
    results = [a.result for _ in range(4) for a in deliver_due(run, config)]
    assert results == ["retry", "retry", "failed"]  # three more: the budget starts over
    (row,) = outbox(engine)
    assert (row["status"], row["attempts"], row["replay_base"]) == ("failed", 6, 3)
    assert row["last_error"].startswith("gave up after 3 attempts")
    assert [x["attempt"] for x in delivery_log(engine)] == [1, 2, 3, 4, 5, 6]  # one list, counting up
    assert len({r.webhook_id for r in receiver.requests}) == 1 and len(receiver.requests) == 6

    receiver.default = Reply(200)
    replay(run, message_id)
    assert [a.result for a in deliver_due(run, config)] == ["delivered"]
    types = [e["event_type"] for e in audit_events(engine)]
    assert (types.count("webhook.failed"), types.count("webhook.replayed"), types.count("webhook.delivered")) == (
        2, 2, 1)


def test_refusals(calls: Calls, run: RunUnit, engine: Engine, receiver: Receiver) -> None:
    endpoint = register(run, receiver.url)
    calls.decide(calls.pending())
    (message_id,) = [r["id"] for r in outbox(engine)]
    with pytest.raises(Conflict) as exc:
        replay(run, message_id)  # still pending: it is being delivered
    assert exc.value.code == "still_pending"
    with pytest.raises(NotFound):
        replay(run, "msg_00000000-0000-7000-8000-000000000000")
    deliver_due(run, delivery_config())
    run(lambda conn, audit: disable_endpoint(conn, audit, endpoint_id=endpoint.endpoint["id"], actor=OPS))
    with pytest.raises(Conflict) as exc:
        replay(run, message_id)
    assert exc.value.code == "endpoint_disabled" and exc.value.extra["endpoint_id"] == endpoint.endpoint["id"]
    assert outbox(engine)[0]["status"] == "delivered"  # refusals change nothing
    assert "webhook.replayed" not in [e["event_type"] for e in audit_events(engine)]


def test_a_replay_twice_in_a_row_is_one_replay(calls: Calls, run: RunUnit, engine: Engine,
                                               receiver: Receiver) -> None:
    register(run, receiver.url)
    calls.decide(calls.pending())
    deliver_due(run, delivery_config())
    (message_id,) = [r["id"] for r in outbox(engine)]
    replay(run, message_id)
    with pytest.raises(Conflict) as exc:
        replay(run, message_id)  # the first one is still on its way
    assert exc.value.code == "still_pending"


def test_an_attempt_from_before_the_replay_cannot_move_the_replayed_message(
    calls: Calls, run: RunUnit, engine: Engine, receiver: Receiver
) -> None:
    """A worker claimed the last attempt of the budget and stalled; the message was given up
    (no result recorded) and an admin replayed it. The stalled worker's late results, failure or
    success, belong to the finished budget: the replayed message stays due, and is then sent."""
    config = delivery_config(schedule=(0.0,))  # two attempts per budget
    register(run, receiver.url)
    calls.decide(calls.pending())
    clock = Clock()

    def claim() -> list[Claimed]:
        claimed: list[Claimed] = run(lambda conn, audit: claim_due(conn, audit, now=clock(), lease=config.lease,
                                                                   limit=10, max_attempts=config.max_attempts))
        return claimed

    claim()
    clock.advance(config.lease + 1)
    (stalled,) = claim()
    clock.advance(config.lease + 1)
    assert claim() == []  # the budget is used up with no result: given up
    (message_id,) = [r["id"] for r in outbox(engine)]
    assert outbox(engine)[0]["status"] == "failed"
    replay(run, message_id)

    receiver.default = Reply(500)
    late_failure = send(stalled, config)
    run(lambda conn, audit: record_attempts(conn, audit, [late_failure], now=clock(), schedule=(3600.0,),
                                            rng=random.Random(1)))
    receiver.default = Reply(200)
    late_success = send(stalled, config)
    run(lambda conn, audit: record_attempts(conn, audit, [late_success], now=clock(), schedule=(3600.0,),
                                            rng=random.Random(1)))
    with engine.connect() as conn:
        message = get_message(conn, message_id)
    assert message is not None
    assert (message["status"], message["attempts"], message["last_error"]) == ("pending", 2, None)  # untouched
    (fresh,) = deliver_due(run, config, clock=clock)  # still due now, as the replay asked
    assert fresh.result == "delivered" and fresh.message.attempt == 3
    assert outbox(engine)[0]["status"] == "delivered"
    assert [x["attempt"] for x in delivery_log(engine)] == [2, 2, 3]  # the late ones are logged, nothing more

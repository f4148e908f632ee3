"""Endpoint health (security.md §2.4): every attempt updates ``last_success_at`` /
``first_failure_at``; an endpoint that has failed for more than 5 days (configurable) with no
success is disabled by the gateway, audited with the reason and counted in a metric. Days pass
on an injected clock."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine

from gateway.metrics import Metrics
from gateway.webhooks.delivery import DISABLE_AFTER_S, RunUnit, deliver_due
from tests.gateway.webhooks.helpers import (
    Calls,
    Clock,
    audit_events,
    aware,
    delivery_config,
    endpoint_row,
    outbox,
    register,
)
from tests.gateway.webhooks.receiver import Receiver, Reply

DAY = 86400.0
FAST = delivery_config(schedule=(0.0,) * 29)  # every failure is due again at once: one attempt per round


def disabled_count(metrics: Metrics, cause: str) -> float:
    return metrics.registry.get_sample_value("callgate_webhook_endpoints_disabled_total", {"cause": cause}) or 0.0


def test_an_endpoint_failing_for_more_than_five_days_is_disabled(
    calls: Calls, run: RunUnit, engine: Engine, receiver: Receiver
) -> None:
    assert DISABLE_AFTER_S == 5 * DAY == FAST.disable_after
    endpoint_id = register(run, receiver.url).endpoint["id"]
    receiver.default = Reply(503)
    calls.decide(calls.pending())
    clock, metrics = Clock(), Metrics()  # after the decision: its message is due on this clock
    started = clock.now
    assert [a.result for a in deliver_due(run, FAST, clock=clock, metrics=metrics)] == ["retry"]
    row = endpoint_row(engine, endpoint_id)
    assert aware(row["first_failure_at"]) == started and row["last_success_at"] is None

    for _ in range(5):  # a failure a day: still within the five days
        clock.advance(DAY)
        (attempt,) = deliver_due(run, FAST, clock=clock, metrics=metrics)
        assert attempt.disabled is None
    row = endpoint_row(engine, endpoint_id)
    assert row["enabled"] is True and aware(row["first_failure_at"]) == started  # the run began at the first one

    calls.decide(calls.pending())  # another message waits behind the failing one
    clock.advance(1)
    attempts = deliver_due(run, FAST, clock=clock, metrics=metrics)  # both messages are tried
    assert [a.disabled for a in attempts] == ["dead", None]  # the first failure past five days disables it...
    row = endpoint_row(engine, endpoint_id)
    assert row["enabled"] is False and row["disabled_at"] is not None
    assert row["disabled_reason"].startswith("no successful delivery since the failures began at ")
    assert "more than 5 days" in row["disabled_reason"] and "HTTP 503" in row["disabled_reason"]
    assert {r["status"] for r in outbox(engine)} == {"failed"}  # ...and ends what was still waiting
    assert deliver_due(run, FAST, clock=clock) == []
    (disabled,) = [e for e in audit_events(engine) if e["event_type"] == "webhook.disabled"]
    assert disabled["actor"] == {"type": "system", "id": "callgate"}
    assert disabled["data"] == {"endpoint_id": endpoint_id, "reason": row["disabled_reason"]}
    assert disabled_count(metrics, "dead") == 1.0 and disabled_count(metrics, "gone") == 0.0


def test_a_success_ends_the_failing_run(calls: Calls, run: RunUnit, engine: Engine, receiver: Receiver) -> None:
    """Failures on and off for weeks, but never five days without a success: it stays enabled."""
    endpoint_id = register(run, receiver.url).endpoint["id"]
    clock = Clock()
    for day in range(12):
        receiver.default = Reply(200 if day % 4 == 3 else 500)
        calls.decide(calls.pending())
        clock.now = max(clock.now, datetime.now(UTC))  # the new message is due on the clock
        for attempt in deliver_due(run, FAST, clock=clock):
            assert attempt.disabled is None
        row = endpoint_row(engine, endpoint_id)
        if day % 4 == 3:
            assert aware(row["last_success_at"]) == clock.now and row["first_failure_at"] is None
        else:
            assert row["first_failure_at"] is not None
        clock.advance(DAY)
    assert endpoint_row(engine, endpoint_id)["enabled"] is True


def test_the_horizon_is_configurable(calls: Calls, run: RunUnit, engine: Engine, receiver: Receiver) -> None:
    config = delivery_config(schedule=(0.0,) * 5, disable_after=60.0)
    endpoint_id = register(run, receiver.url).endpoint["id"]
    receiver.default = Reply(500)
    calls.decide(calls.pending())
    clock = Clock()
    deliver_due(run, config, clock=clock)
    clock.advance(59)
    assert [a.disabled for a in deliver_due(run, config, clock=clock)] == [None]
    clock.advance(2)
    assert [a.disabled for a in deliver_due(run, config, clock=clock)] == ["dead"]
    assert endpoint_row(engine, endpoint_id)["enabled"] is False
    with pytest.raises(ValueError):
        delivery_config(disable_after=0)


def test_410_is_counted_as_gone(calls: Calls, run: RunUnit, engine: Engine, receiver: Receiver) -> None:
    endpoint_id = register(run, receiver.url).endpoint["id"]
    receiver.answer_with([410])
    metrics = Metrics()
    calls.decide(calls.pending())
    assert [a.disabled for a in deliver_due(run, FAST, metrics=metrics)] == ["gone"]
    row = endpoint_row(engine, endpoint_id)
    assert row["enabled"] is False and row["disabled_reason"].startswith("410 Gone")
    assert disabled_count(metrics, "gone") == 1.0 and disabled_count(metrics, "dead") == 0.0

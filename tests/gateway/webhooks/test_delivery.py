"""Delivery against a real receiver on 127.0.0.1, on SQLite and PostgreSQL: signatures verify,
the payload has the contracted shape, retries keep the webhook-id, failures end cleanly, a lost
worker's message comes back after its lease. Time moves through an injected clock: nothing here
sleeps for a backoff."""

from __future__ import annotations

import random
import re
import socket
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select, update

from gateway.expiry import sweep_expired
from gateway.models import ToolCall, WebhookEndpoint, WebhookOutbox
from gateway.webhooks.delivery import DeliveryConfig, RunUnit, claim_due, deliver_due, record_attempts, send
from tests.gateway.webhooks.helpers import (
    Calls,
    Clock,
    audit_events,
    aware,
    delivery_config,
    delivery_log,
    endpoint_row,
    outbox,
    register,
)
from tests.gateway.webhooks.receiver import Receiver, Reply

RFC3339 = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$"


def test_an_approval_is_delivered_once_signed_with_the_contracted_thin_payload(
    calls: Calls, run: RunUnit, engine: Engine, receiver: Receiver, config: DeliveryConfig
) -> None:
    endpoint = register(run, receiver.url)
    call_id = calls.pending(session_id="sess-1")
    calls.decide(call_id, approve=True, comment="known customer")

    done = deliver_due(run, config)
    assert [a.result for a in done] == ["delivered"]
    (request,) = receiver.wait_for(1)
    payload = request.verify(endpoint.secret)  # standardwebhooks' own verify
    assert request.path == "/hook"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("callgate/")
    assert request.headers["webhook-id"].startswith("msg_")
    assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 30
    assert request.headers["webhook-signature"].startswith("v1,")

    assert set(payload) == {"type", "timestamp", "data"}
    assert payload["type"] == "approval.decided"
    data = payload["data"]
    assert set(data) == {"call_id", "tool", "agent", "session_id", "status", "decided_by", "channel", "comment",
                         "decided_at", "rule", "reason"}  # thin by default: no args at all
    assert (data["call_id"], data["tool"], data["agent"], data["session_id"]) == (
        call_id, "stripe.refund", "billing-bot", "sess-1")
    assert (data["status"], data["decided_by"], data["channel"], data["comment"]) == (
        "approved", "alice", "console", "known customer")
    assert data["rule"] == "big-refunds-need-a-human"
    assert b"hunter2" not in request.body and b"cus_1" not in request.body and b"850" not in request.body
    assert re.match(RFC3339, payload["timestamp"]) and re.match(RFC3339, data["decided_at"])

    (row,) = outbox(engine)
    assert (row["id"], row["status"], row["attempts"], row["call_id"]) == (request.webhook_id, "delivered", 1, call_id)
    assert row["delivered_at"] is not None and row["last_error"] is None
    (log,) = delivery_log(engine)
    assert (log["attempt"], log["status_code"], log["result"], log["resolved_ip"]) == (1, 200, "delivered", "127.0.0.1")
    assert [e["event_type"] for e in audit_events(engine)] == ["webhook.registered", "webhook.delivered"]
    assert audit_events(engine)[-1]["tool_call_id"] == call_id
    assert deliver_due(run, config) == []  # nothing due any more: exactly one delivery
    assert len(receiver.requests) == 1


def test_a_denial_and_an_expiry_are_delivered_too(
    calls: Calls, run: RunUnit, engine: Engine, receiver: Receiver, config: DeliveryConfig
) -> None:
    endpoint = register(run, receiver.url)
    denied = calls.pending()
    calls.decide(denied, approve=False, comment="over the limit", channel="cli")
    expiring = calls.pending()
    with engine.begin() as conn:
        conn.execute(update(ToolCall).where(ToolCall.id == expiring)
                     .values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    assert run(sweep_expired) == [expiring]

    done = deliver_due(run, config)
    assert sorted(a.result for a in done) == ["delivered", "delivered"]
    by_call = {p["data"]["call_id"]: p for p in (r.verify(endpoint.secret) for r in receiver.wait_for(2))}
    assert by_call[denied]["data"]["status"] == "denied"
    assert (by_call[denied]["data"]["channel"], by_call[denied]["data"]["comment"]) == ("cli", "over the limit")
    expired = by_call[expiring]["data"]
    assert (expired["status"], expired["decided_by"], expired["channel"]) == ("expired", "system:expiry", None)
    assert by_call[expiring]["type"] == "approval.decided"


def test_500_twice_then_200_is_three_attempts_with_one_webhook_id(
    calls: Calls, run: RunUnit, engine: Engine, receiver: Receiver, config: DeliveryConfig
) -> None:
    endpoint = register(run, receiver.url)
    receiver.answer_with([500, 503, 200])
    calls.decide(calls.pending())
    clock = Clock()
    rng = random.Random(7)

    first = deliver_due(run, config, clock=clock, rng=rng)
    assert [a.result for a in first] == ["retry"]
    (row,) = outbox(engine)
    delay = (aware(row["next_attempt_at"]) - clock.now).total_seconds()
    assert 0.8 * config.schedule[0] - 1e-3 <= delay <= 1.2 * config.schedule[0] + 1e-3  # 5 s, +-20 %
    assert (row["status"], row["attempts"], row["last_error"]) == ("pending", 1, "HTTP 500")
    clock.advance(delay - 0.01)
    assert deliver_due(run, config, clock=clock) == []  # not due before its time

    clock.advance(0.01)
    assert [a.result for a in deliver_due(run, config, clock=clock, rng=rng)] == ["retry"]
    (row,) = outbox(engine)
    delay = (aware(row["next_attempt_at"]) - clock.now).total_seconds()
    assert 0.8 * config.schedule[1] - 1e-3 <= delay <= 1.2 * config.schedule[1] + 1e-3  # 30 s, +-20 %

    clock.advance(delay)
    assert [a.result for a in deliver_due(run, config, clock=clock, rng=rng)] == ["delivered"]

    requests = receiver.wait_for(3)
    assert len(requests) == 3
    assert len({r.webhook_id for r in requests}) == 1  # the same webhook-id on every attempt
    assert len({r.body for r in requests}) == 1  # byte-identical bodies
    for r in requests:
        r.verify(endpoint.secret)  # a fresh, valid signature each time
    log = delivery_log(engine)
    assert [(x["attempt"], x["status_code"], x["result"]) for x in log] == [
        (1, 500, "retry"), (2, 503, "retry"), (3, 200, "delivered")]
    (row,) = outbox(engine)
    assert (row["status"], row["attempts"], row["last_error"]) == ("delivered", 3, None)
    delivered = [e for e in audit_events(engine) if e["event_type"] == "webhook.delivered"]
    assert len(delivered) == 1 and delivered[0]["data"]["attempts"] == 3
    assert not [e for e in audit_events(engine) if e["event_type"] == "webhook.failed"]


def test_a_4xx_fails_at_once_and_says_why(
    calls: Calls, run: RunUnit, engine: Engine, receiver: Receiver, config: DeliveryConfig
) -> None:
    register(run, receiver.url)
    receiver.answer_with([Reply(400, body=b'{"error": "unknown event"}')])
    calls.decide(calls.pending())
    assert [a.result for a in deliver_due(run, config)] == ["failed"]
    (row,) = outbox(engine)
    assert row["status"] == "failed" and "HTTP 400" in row["last_error"] and row["attempts"] == 1
    (log,) = delivery_log(engine)
    assert (log["status_code"], log["result"], log["response_excerpt"]) == (400, "failed", '{"error": "unknown event"}')
    failed = [e for e in audit_events(engine) if e["event_type"] == "webhook.failed"]
    assert len(failed) == 1 and "HTTP 400" in failed[0]["data"]["reason"]
    assert deliver_due(run, config, clock=lambda: datetime.now(UTC) + timedelta(days=1)) == []  # never retried


@pytest.mark.parametrize("status", [408, 409, 425, 429, 502])
def test_retryable_statuses_are_retried(
    status: int, calls: Calls, run: RunUnit, engine: Engine, receiver: Receiver, config: DeliveryConfig
) -> None:
    register(run, receiver.url)
    receiver.answer_with([status])
    calls.decide(calls.pending())
    assert [a.result for a in deliver_due(run, config)] == ["retry"]
    assert outbox(engine)[0]["status"] == "pending"


def test_retry_after_is_honoured(calls: Calls, run: RunUnit, engine: Engine, receiver: Receiver,
                                 config: DeliveryConfig) -> None:
    register(run, receiver.url)
    receiver.answer_with([Reply(429, headers=(("Retry-After", "120"),))])
    calls.decide(calls.pending())
    clock = Clock()
    deliver_due(run, config, clock=clock)
    delay = (aware(outbox(engine)[0]["next_attempt_at"]) - clock.now).total_seconds()
    assert 120 - 1e-3 <= delay <= 121  # more than the 5 s jitter cap: the receiver asked for 2 minutes


def test_a_timeout_is_retried_within_the_attempt_budget(
    calls: Calls, run: RunUnit, engine: Engine, receiver: Receiver
) -> None:
    config = delivery_config(timeout=0.5, schedule=(0.0,))
    register(run, receiver.url)
    receiver.answer_with([Reply(200, delay=3.0), Reply(200)])
    calls.decide(calls.pending())
    started = time.monotonic()
    (attempt,) = deliver_due(run, config)
    assert time.monotonic() - started < 2.5  # the 0.5 s timeout, not the receiver's 3 s
    assert attempt.result == "retry" and attempt.verdict.reason.startswith("timeout")
    (second,) = deliver_due(run, config)  # schedule (0,): due again at once
    assert second.result == "delivered"
    assert [x["result"] for x in delivery_log(engine)] == ["retry", "delivered"]
    assert delivery_log(engine)[0]["error"].startswith("timeout")


def test_the_last_attempt_failing_ends_the_message(
    calls: Calls, run: RunUnit, engine: Engine, receiver: Receiver
) -> None:
    config = delivery_config(schedule=(0.0, 0.0))
    register(run, receiver.url)
    receiver.default = Reply(500)
    calls.decide(calls.pending())
    results = [a.result for _ in range(4) for a in deliver_due(run, config)]
    assert results == ["retry", "retry", "failed"]  # 3 attempts = 2 retries + 1
    (row,) = outbox(engine)
    assert row["status"] == "failed" and row["last_error"].startswith("gave up after 3 attempts")
    assert len(receiver.requests) == 3
    assert [e["event_type"] for e in audit_events(engine)].count("webhook.failed") == 1


def test_410_gone_fails_and_disables_the_endpoint(
    calls: Calls, run: RunUnit, engine: Engine, receiver: Receiver
) -> None:
    config = delivery_config(schedule=(5.0,), batch=1)
    endpoint = register(run, receiver.url)
    receiver.answer_with([410])
    first, second = calls.pending(), calls.pending()
    calls.decide(first)
    calls.decide(second)
    assert [a.result for a in deliver_due(run, config)] == ["failed"]  # batch=1: only the oldest was sent
    with engine.connect() as conn:
        enabled, disabled_at = conn.execute(select(WebhookEndpoint.enabled, WebhookEndpoint.disabled_at)
                                            .where(WebhookEndpoint.id == endpoint.endpoint["id"])).one()
    assert enabled is False and disabled_at is not None
    rows = {r["call_id"]: r for r in outbox(engine)}
    assert rows[first]["status"] == "failed" and "410" in rows[first]["last_error"]
    assert rows[second]["status"] == "failed" and rows[second]["last_error"].startswith("endpoint disabled")
    assert rows[second]["attempts"] == 0
    assert len(receiver.requests) == 1  # the second message was never sent
    calls.decide(calls.pending())
    assert len(outbox(engine)) == 2  # a disabled endpoint gets no new messages
    types = [e["event_type"] for e in audit_events(engine)]
    assert types.count("webhook.disabled") == 1 and types.count("webhook.failed") == 2


def test_redirects_are_not_followed(calls: Calls, run: RunUnit, engine: Engine, receiver: Receiver,
                                    config: DeliveryConfig) -> None:
    register(run, receiver.url)
    receiver.answer_with([Reply(302, headers=(("Location", f"http://127.0.0.1:{receiver.port}/elsewhere"),))])
    calls.decide(calls.pending())
    (attempt,) = deliver_due(run, config)
    assert attempt.result == "retry" and "redirect" in attempt.verdict.reason
    time.sleep(0.3)
    assert [r.path for r in receiver.requests] == ["/hook"]  # /elsewhere was never requested


def test_a_lost_worker_leaves_the_message_due_again_after_its_lease(
    calls: Calls, run: RunUnit, engine: Engine, receiver: Receiver, config: DeliveryConfig
) -> None:
    """A worker claims a message and dies mid-POST (nothing recorded). Nobody else takes it
    while the lease lasts; after the lease it is sent again with the same webhook-id."""
    endpoint = register(run, receiver.url)
    calls.decide(calls.pending())
    clock = Clock()
    (lost,) = run(lambda conn, audit: claim_due(conn, audit, now=clock(), lease=config.lease, limit=10,
                                                max_attempts=config.max_attempts))
    send(lost, config)  # the POST happened; the worker died before recording it
    assert deliver_due(run, config, clock=clock) == []  # leased: not due for anyone
    clock.advance(config.lease - 0.5)
    assert deliver_due(run, config, clock=clock) == []
    clock.advance(1.0)
    (again,) = deliver_due(run, config, clock=clock)
    assert again.result == "delivered" and again.message.attempt == 2
    requests = receiver.wait_for(2)
    assert [r.webhook_id for r in requests] == [lost.id, lost.id]  # at least once, same id
    for r in requests:
        r.verify(endpoint.secret)
    (row,) = outbox(engine)
    assert (row["status"], row["attempts"]) == ("delivered", 2)
    assert [x["attempt"] for x in delivery_log(engine)] == [2]  # the lost attempt left no log row


def test_a_worker_that_lost_its_lease_cannot_overwrite_a_newer_attempt(
    calls: Calls, run: RunUnit, engine: Engine, config: DeliveryConfig, receiver: Receiver
) -> None:
    register(run, receiver.url)
    calls.decide(calls.pending())
    clock = Clock()

    def claim() -> Any:
        (claimed,) = run(lambda conn, audit: claim_due(conn, audit, now=clock(), lease=config.lease, limit=10,
                                                       max_attempts=config.max_attempts))
        return claimed

    stale = claim()
    clock.advance(config.lease + 1)
    fresh = claim()
    assert (stale.id, stale.attempt, fresh.attempt) == (fresh.id, 1, 2)
    receiver.default = Reply(500)
    fresh_attempt = send(fresh, config)
    run(lambda conn, audit: record_attempts(conn, audit, [fresh_attempt], now=clock(), schedule=(600.0, 600.0),
                                            rng=random.Random(1)))
    due_after_fresh = outbox(engine)[0]["next_attempt_at"]
    stale_attempt = send(stale, config)  # the stale worker's 500 arrives late
    run(lambda conn, audit: record_attempts(conn, audit, [stale_attempt], now=clock(), schedule=(0.0,),
                                            rng=random.Random(1)))
    (row,) = outbox(engine)
    assert (row["attempts"], row["next_attempt_at"]) == (2, due_after_fresh)  # the newer attempt's schedule stands
    assert sorted(x["attempt"] for x in delivery_log(engine)) == [1, 2]  # both attempts are in the log
    receiver.default = Reply(200)
    late_success = send(stale, config)
    run(lambda conn, audit: record_attempts(conn, audit, [late_success], now=clock(), schedule=(0.0,),
                                            rng=random.Random(1)))
    assert outbox(engine)[0]["status"] == "delivered"  # a success always counts, once
    assert [e["event_type"] for e in audit_events(engine)].count("webhook.delivered") == 1


def test_a_message_whose_last_attempt_was_lost_ends_failed(
    calls: Calls, run: RunUnit, engine: Engine, receiver: Receiver
) -> None:
    config = delivery_config(schedule=(0.0,))
    register(run, receiver.url)
    calls.decide(calls.pending())
    clock = Clock()
    for _ in range(config.max_attempts):  # every attempt claimed, none recorded (the worker keeps dying)
        run(lambda conn, audit: claim_due(conn, audit, now=clock(), lease=config.lease, limit=10,
                                          max_attempts=config.max_attempts))
        clock.advance(config.lease + 1)
    assert deliver_due(run, config, clock=clock) == []
    (row,) = outbox(engine)
    assert row["status"] == "failed" and "no result was recorded" in row["last_error"]
    assert receiver.requests == []
    assert [e["event_type"] for e in audit_events(engine)].count("webhook.failed") == 1


def test_dns_rebinding_at_send_time_is_refused_without_connecting(
    calls: Calls, run: RunUnit, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Registered while the name resolved to a public address; at send time it resolves to
    loopback. The guard re-checks before the attempt: ssrf_blocked, and no connection at all."""
    answers = {"hooks.example.test": "93.184.216.34"}
    real_getaddrinfo = socket.getaddrinfo

    def fake_getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in answers:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[host], port))]
        return real_getaddrinfo(host, port, *args, **kwargs)

    connections: list[Any] = []
    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: connections.append(a) or pytest.fail("connected"))
    register(run, "https://hooks.example.test/callgate", allow_private=False)
    calls.decide(calls.pending())
    answers["hooks.example.test"] = "127.0.0.1"
    strict = delivery_config(schedule=(5.0,), allow_private=False, allow_http=False)
    (attempt,) = deliver_due(run, strict)
    assert attempt.result == "retry" and attempt.verdict.reason.startswith("ssrf_blocked")
    assert "127.0.0.1 is loopback" in attempt.verdict.reason
    assert connections == []
    (log,) = delivery_log(engine)
    assert log["status_code"] is None and log["error"].startswith("ssrf_blocked")


def test_a_disabled_endpoint_is_never_sent_to(calls: Calls, run: RunUnit, engine: Engine, receiver: Receiver,
                                              config: DeliveryConfig) -> None:
    endpoint = register(run, receiver.url)
    calls.decide(calls.pending())
    with engine.begin() as conn:  # disabled behind the outbox's back (e.g. by another process, racing)
        conn.execute(update(WebhookEndpoint).where(WebhookEndpoint.id == endpoint.endpoint["id"])
                     .values(enabled=False, disabled_at=datetime.now(UTC)))
    assert deliver_due(run, config) == []
    (row,) = outbox(engine)
    assert row["status"] == "failed" and row["last_error"] == "endpoint disabled"
    assert receiver.requests == []


def test_concurrent_claims_never_share_a_message(calls: Calls, run: RunUnit, engine: Engine, receiver: Receiver,
                                                 config: DeliveryConfig) -> None:
    """Two workers claim at the same moment: SKIP LOCKED on PostgreSQL, the write lock on SQLite."""
    register(run, receiver.url)
    for _ in range(8):
        calls.decide(calls.pending())
    barrier = threading.Barrier(2)
    claimed: list[list[str]] = [[], []]

    def worker(index: int) -> None:
        barrier.wait()
        got = run(lambda conn, audit: claim_due(conn, audit, now=datetime.now(UTC), lease=config.lease, limit=5,
                                                max_attempts=config.max_attempts))
        claimed[index] = [c.id for c in got]

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not set(claimed[0]) & set(claimed[1])
    assert len(claimed[0]) + len(claimed[1]) == 8
    with engine.connect() as conn:
        assert set(conn.execute(select(WebhookOutbox.attempts)).scalars()) == {1}


def test_no_endpoint_no_rows_and_other_agents_endpoints_get_nothing(
    calls: Calls, run: RunUnit, engine: Engine, receiver: Receiver, other_agent_key: str, config: DeliveryConfig
) -> None:
    calls.decide(calls.pending())
    assert outbox(engine) == []
    register(run, receiver.url, agent="other-bot")
    calls.decide(calls.pending())
    assert outbox(engine) == []
    assert deliver_due(run, config) == []


def test_a_broken_message_is_recorded_and_does_not_sink_its_batch(
    calls: Calls, run: RunUnit, engine: Engine, receiver: Receiver, config: DeliveryConfig
) -> None:
    broken = register(run, receiver.url)
    fine = register(run, receiver.url + "-2")
    calls.decide(calls.pending())
    sealed = endpoint_row(engine, broken.endpoint["id"])["secret"]
    damaged = sealed[:-6] + ("AAAA" if sealed[-6:-2] != "AAAA" else "BBBB") + sealed[-2:]
    with engine.begin() as conn:  # a sealed secret damaged in the database: it no longer opens
        conn.execute(update(WebhookEndpoint).where(WebhookEndpoint.id == broken.endpoint["id"])
                     .values(secret=damaged))
    results = {a.message.endpoint_id: a for a in deliver_due(run, config)}
    assert results[fine.endpoint["id"]].result == "delivered"
    assert results[broken.endpoint["id"]].result == "retry"
    reason = results[broken.endpoint["id"]].verdict.reason
    assert reason.startswith("secret: ") and "does not open" in reason and broken.secret not in reason
    assert [r.path for r in receiver.requests] == ["/hook-2"]  # nothing unsigned (or mis-signed) was sent
    (log,) = delivery_log(engine, next(r["id"] for r in outbox(engine) if r["endpoint_id"] == broken.endpoint["id"]))
    assert log["result"] == "retry" and log["error"].startswith("secret: ")


def test_include_args_delivers_the_redacted_arguments_and_the_sdk_reads_both_shapes(
    calls: Calls, run: RunUnit, receiver: Receiver, config: DeliveryConfig
) -> None:
    """An endpoint registered with include_args gets data.args (the redacted copy); a thin one
    gets none, and the SDK's receiver helper parses it (args empty: dispatch has its own)."""
    from callgate import webhooks
    from callgate.webhooks import MemoryReplayGuard

    full = register(run, receiver.url, include_args=True)
    thin = register(run, receiver.url + "-thin")
    call_id = calls.pending()
    calls.decide(call_id)
    assert sorted(a.result for a in deliver_due(run, config)) == ["delivered", "delivered"]
    by_path = {r.path: r for r in receiver.wait_for(2)}
    args = by_path["/hook"].verify(full.secret)["data"]["args"]
    assert args["amount"] == 850 and args["customer_id"] == "cus_1" and args["password"] != "hunter2"
    assert b"hunter2" not in by_path["/hook"].body
    assert "args" not in by_path["/hook-thin"].verify(thin.secret)["data"]
    full_event = webhooks.verify(by_path["/hook"].body, by_path["/hook"].headers, full.secret,
                                 replays=MemoryReplayGuard())
    thin_event = webhooks.verify(by_path["/hook-thin"].body, by_path["/hook-thin"].headers, thin.secret,
                                 replays=MemoryReplayGuard())
    assert full_event.args["amount"] == 850 and thin_event.args == {}
    assert (thin_event.call_id, thin_event.status) == (full_event.call_id, full_event.status) == (call_id, "approved")


def test_http_is_refused_at_send_time_once_no_longer_allowed(
    calls: Calls, run: RunUnit, engine: Engine, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Registered while http was allowed; the gateway now runs https-only: the attempt is refused
    before any connection (and retried: the setting may be turned back on)."""
    register(run, receiver.url)
    calls.decide(calls.pending())
    connections: list[Any] = []
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: connections.append(a) or pytest.fail("connected"))
    (attempt,) = deliver_due(run, delivery_config(allow_http=False))
    assert attempt.result == "retry" and attempt.verdict.reason.startswith("ssrf_blocked: http is not allowed")
    assert connections == [] and receiver.requests == []
    (log,) = delivery_log(engine)
    assert log["status_code"] is None and "use https" in log["error"]

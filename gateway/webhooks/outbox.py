"""The webhook outbox: event rows written inside the decision's own unit of work.

A decision (``approvals.decide_call``) or an expiry (``expiry.sweep_expired``) calls
``enqueue_decisions`` in the same transaction that changes the call's status, so the event and
the state change commit or roll back together: a crash can neither lose an event (committed
decision, no row) nor invent one (row for a decision that rolled back), and a decision that
loses the race writes nothing at all. Sending happens later, from the committed rows
(``delivery``), never from inside the transaction.

One row per event per enabled endpoint of the call's agent. The body is rendered once, here, and
stored: every retry sends the same bytes; only ``webhook-timestamp`` and the signature change.
The row id (``msg_<uuid7>``) is the ``webhook-id`` receivers deduplicate on.

Payloads are *thin* by default (security.md §2.2): no ``data.args``. The arguments, even
redacted, are the most sensitive part of a call, and a receiver does not need them: the SDK's
``dispatch`` runs the held call with the arguments its handle kept, and anything else can read
the call from the gateway. An endpoint registered with ``include_args`` gets them (the SDK's
``event.run(fn, **event.args)`` pattern needs that).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select

from callgate.ids import uuid7
from gateway.models import WebhookEndpoint, WebhookOutbox

__all__ = [
    "DECIDED",
    "EVENT_TYPES",
    "Backlog",
    "backlog",
    "decision_payload",
    "enqueue_decisions",
    "new_message_id",
    "render",
    "rfc3339",
]

DECIDED = "approval.decided"
EVENT_TYPES = frozenset({DECIDED})
DECIDED_STATUSES = frozenset({"approved", "denied", "expired"})


def new_message_id() -> str:
    return "msg_" + uuid7()


def rfc3339(value: datetime | None) -> str | None:
    """RFC 3339 UTC with microseconds (naive values, as SQLite returns them, are UTC)."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def decision_payload(row: Mapping[str, Any], *, at: datetime, include_args: bool) -> dict[str, Any]:
    """The ``approval.decided`` event for a decided (or expired) call row. This exact shape is
    the contract the SDK's receiver helper is written against; ``data.args`` (the redacted copy,
    as stored) is there only with ``include_args``, otherwise the key is absent."""
    if row["status"] not in DECIDED_STATUSES:
        raise ValueError(f"call {row['id']} is {row['status']}, not decided")
    payload: dict[str, Any] = {
        "type": DECIDED,
        "timestamp": rfc3339(at),
        "data": {
            "call_id": row["id"],
            "tool": row["tool"],
            "agent": row["agent"],
            "session_id": row["session_id"],
            "status": row["status"],
            "decided_by": row["decided_by"],
            "channel": row.get("decided_channel"),
            "comment": row["comment"],
            "decided_at": rfc3339(row["decided_at"]),
            "rule": row["rule"],
            "reason": row["reason"],
        },
    }
    if include_args:
        payload["data"]["args"] = json.loads(row["args"])  # the redacted copy, as stored
    return payload


def render(payload: Mapping[str, Any]) -> str:
    """Compact ASCII JSON: the body bytes equal the signed text under any receiver's decoding."""
    return json.dumps(payload, ensure_ascii=True, separators=(",", ":"), allow_nan=False)


def enqueue_decisions(conn: Connection, rows: Iterable[Mapping[str, Any]], *,
                      now: datetime | None = None) -> list[str]:
    """Write an ``approval.decided`` row for every enabled endpoint of each call's agent, in the
    caller's transaction; returns the new message ids. One SELECT and at most one INSERT for any
    number of calls (an expiry sweep decides many at once). Each call's body is rendered at most
    twice (thin, and with arguments), whatever the number of endpoints."""
    calls = list(rows)
    if not calls:
        return []
    now = now or datetime.now(UTC)
    agents = sorted({str(c["agent"]) for c in calls})
    subscribed: dict[str, list[tuple[str, bool]]] = {}
    for endpoint_id, agent, event_types, include_args in conn.execute(
        select(WebhookEndpoint.id, WebhookEndpoint.agent, WebhookEndpoint.event_types, WebhookEndpoint.include_args)
        .where(WebhookEndpoint.agent.in_(agents), WebhookEndpoint.enabled.is_(True))
        .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
    ):
        if DECIDED in json.loads(event_types):
            subscribed.setdefault(agent, []).append((endpoint_id, bool(include_args)))
    values = []
    for call in calls:
        endpoints = subscribed.get(call["agent"])
        if not endpoints:
            continue
        bodies: dict[bool, str] = {}
        for endpoint_id, include_args in endpoints:
            if include_args not in bodies:
                bodies[include_args] = render(decision_payload(call, at=now, include_args=include_args))
            body = bodies[include_args]
            values.append({
                "id": new_message_id(), "endpoint_id": endpoint_id, "event_type": DECIDED, "call_id": call["id"],
                "payload": body, "status": "pending", "attempts": 0, "next_attempt_at": now, "created_at": now,
            })
    if values:
        conn.execute(insert(WebhookOutbox), values)
    return [v["id"] for v in values]


@dataclass(frozen=True, slots=True)
class Backlog:
    pending: int  # not yet delivered nor given up (includes messages waiting for a retry)
    due: int  # pending and due now
    oldest_due_seconds: float  # how long the oldest due message has waited (0 when none)


def backlog(conn: Connection, *, now: datetime | None = None) -> Backlog:
    """The outbox's backlog (for the metrics gauge): two indexed aggregate queries."""
    now = now or datetime.now(UTC)
    t = WebhookOutbox
    pending = conn.execute(select(func.count()).select_from(t).where(t.status == "pending")).scalar_one()
    due, oldest = conn.execute(
        select(func.count(), func.min(t.next_attempt_at)).where(t.status == "pending", t.next_attempt_at <= now)
    ).one()
    age = 0.0
    if oldest is not None:
        oldest = oldest if oldest.tzinfo else oldest.replace(tzinfo=UTC)
        age = max(0.0, (now - oldest).total_seconds())
    return Backlog(int(pending), int(due), age)

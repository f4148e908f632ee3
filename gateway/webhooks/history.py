"""Reading the delivery history: messages with their attempts (admin API and ``callgate webhooks
deliveries``). Newest messages first; each message lists its attempts in order."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select

from gateway.errors import Unprocessable
from gateway.models import WebhookDelivery, WebhookOutbox
from gateway.webhooks.outbox import rfc3339

__all__ = ["MESSAGE_STATUSES", "get_message", "list_messages"]

MESSAGE_STATUSES = frozenset({"pending", "delivered", "failed"})


def get_message(conn: Connection, message_id: str) -> dict[str, Any] | None:
    """One message with its delivery log, or ``None``."""
    found = list_messages(conn, message_id=message_id, limit=1)
    return found[0] if found else None


def list_messages(conn: Connection, *, endpoint_id: str | None = None, status: str | None = None,
                  message_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Messages (optionally of one endpoint / in one status / one message) with their delivery
    log. Attempt numbers count up for the life of a message; ``replayed_at`` says when an admin
    last replayed it (attempts after it started a fresh budget)."""
    if status is not None and status not in MESSAGE_STATUSES:
        raise Unprocessable(f"unknown status {status!r}; one of {', '.join(sorted(MESSAGE_STATUSES))}",
                            code="invalid_status")
    limit = max(1, min(int(limit), 1000))
    t = WebhookOutbox
    query = select(t.id, t.endpoint_id, t.event_type, t.call_id, t.status, t.attempts, t.next_attempt_at,
                   t.created_at, t.delivered_at, t.last_error, t.replayed_at)
    if message_id is not None:
        query = query.where(t.id == message_id)
    if endpoint_id is not None:
        query = query.where(t.endpoint_id == endpoint_id)
    if status is not None:
        query = query.where(t.status == status)
    rows = conn.execute(query.order_by(t.created_at.desc(), t.id.desc()).limit(limit)).all()
    log: dict[str, list[dict[str, Any]]] = {r.id: [] for r in rows}
    if rows:
        d = WebhookDelivery
        for a in conn.execute(
            select(d.message_id, d.attempt, d.started_at, d.duration_ms, d.status_code, d.result, d.error,
                   d.response_excerpt, d.resolved_ip)
            .where(d.message_id.in_(list(log))).order_by(d.message_id, d.attempt, d.id)
        ):
            log[a.message_id].append({
                "attempt": a.attempt, "started_at": rfc3339(a.started_at), "duration_ms": a.duration_ms,
                "status_code": a.status_code, "result": a.result, "error": a.error,
                "response_excerpt": a.response_excerpt, "resolved_ip": a.resolved_ip,
            })
    return [
        {
            "message_id": r.id, "endpoint_id": r.endpoint_id, "event_type": r.event_type, "call_id": r.call_id,
            "status": r.status, "attempts": r.attempts,
            "next_attempt_at": rfc3339(r.next_attempt_at) if r.status == "pending" else None,
            "created_at": rfc3339(r.created_at), "delivered_at": rfc3339(r.delivered_at), "last_error": r.last_error,
            "replayed_at": rfc3339(r.replayed_at), "log": log[r.id],
        }
        for r in rows
    ]

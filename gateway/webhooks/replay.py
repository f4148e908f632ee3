"""Replaying a message (admins: ``POST /v1/webhooks/messages/{id}/replay``, ``callgate webhooks
replay``): send it again, with the **same** ``webhook-id`` and byte-identical body, and a fresh
attempt budget (security.md §2.4).

What it is for: a receiver that lost events (a bad deploy acknowledged them and dropped them,
its queue was purged) or was down past the retry horizon. The same ``webhook-id`` matters:
receivers deduplicate on it, so a replay of an event they *did* process is recognised as the
duplicate it is (within their dedupe window), never acted on twice; and a decision event is
terminal, so even outside that window it is harmless.

The message goes back to ``pending``, due now. Attempt numbers keep counting up (the delivery
log stays one unambiguous list), and ``replay_base`` is raised to the attempts made so far: the
schedule and the give-up point count only attempts above it, and an attempt started before the
replay (a worker that lost its lease) can no longer move the message (``delivery`` fences on
it). Only finished messages (``delivered`` or ``failed``) of an enabled endpoint are replayed:
a pending one is still being delivered, and a disabled endpoint is sent nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select, update

from gateway.audit import Actor, AuditBatch
from gateway.errors import Conflict, NotFound
from gateway.models import WebhookEndpoint, WebhookOutbox
from gateway.webhooks.history import get_message

__all__ = ["replay_message"]


def replay_message(conn: Connection, audit: AuditBatch, *, message_id: str, actor: Actor,
                   now: datetime | None = None) -> dict[str, Any]:
    """Queue ``message_id`` for a new attempt now; the message as ``history`` shows it. Raises
    ``NotFound``, or ``Conflict`` (``still_pending``, ``endpoint_disabled``, or
    ``replay_conflict`` when the message changed meanwhile, e.g. a concurrent replay)."""
    t, e = WebhookOutbox, WebhookEndpoint
    row = conn.execute(
        select(t.id, t.endpoint_id, t.call_id, t.status, t.attempts, e.enabled)
        .join(e, e.id == t.endpoint_id).where(t.id == message_id)
    ).first()
    if row is None:
        raise NotFound(f"no webhook message {message_id}")
    if row.status == "pending":
        raise Conflict(f"webhook message {message_id} is still being delivered (attempt {row.attempts} so far); "
                       "replay it once it is delivered or has failed", code="still_pending")
    if not row.enabled:
        raise Conflict(f"the endpoint of webhook message {message_id} ({row.endpoint_id}) is disabled",
                       code="endpoint_disabled", endpoint_id=row.endpoint_id)
    now = now or datetime.now(UTC)
    changed = conn.execute(
        update(t).where(t.id == message_id, t.status == row.status, t.attempts == row.attempts)
        .values(status="pending", replay_base=t.attempts, next_attempt_at=now, delivered_at=None, last_error=None,
                replayed_at=now)
    ).rowcount == 1
    if not changed:
        raise Conflict(f"webhook message {message_id} changed while it was being replayed; look again",
                       code="replay_conflict")
    audit.add("webhook.replayed", actor,
              {"message_id": message_id, "endpoint_id": row.endpoint_id, "previous_status": row.status,
               "attempts": row.attempts}, row.call_id)
    message = get_message(conn, message_id)
    assert message is not None
    return message

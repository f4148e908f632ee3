"""Expiry of pending approvals: an unanswered approval becomes ``expired``, which is a deny.

Correctness never depends on the sweeper: readers treat a pending call past its ``expires_at``
as expired (``effective_status``). The sweep makes it durable and audited, with one conditional
UPDATE so concurrent sweepers produce exactly one ``approval.expired`` event per call.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Connection, select, update

from gateway.audit import SYSTEM, AuditBatch
from gateway.models import ToolCall
from gateway.webhooks.outbox import enqueue_decisions


def sweep_expired(conn: Connection, audit: AuditBatch, *, now: datetime | None = None) -> list[str]:
    """Expire every pending call whose time is up; returns their ids."""
    now = now or datetime.now(UTC)
    expired = list(
        conn.execute(
            update(ToolCall)
            .where(ToolCall.status == "pending", ToolCall.expires_at <= now)
            .values(status="expired", decided_at=now, decided_by="system:expiry")
            .returning(ToolCall.id)
        ).scalars()
    )
    for call_id in expired:
        audit.add("approval.expired", SYSTEM, {}, call_id)
    if expired:  # the webhook events, in the same transaction as the expiry
        rows = conn.execute(select(ToolCall.__table__).where(ToolCall.id.in_(expired))).mappings()
        enqueue_decisions(conn, rows, now=now)
    return expired


def effective_status(status: str, expires_at: datetime | None, now: datetime | None = None) -> str:
    """The status a reader must act on: pending past its expiry is already expired."""
    if status == "pending" and expires_at is not None:
        now = now or datetime.now(UTC)
        if expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=UTC)
        if now >= expires_at:
            return "expired"
    return status

"""Expiry of pending approvals: an unanswered approval becomes ``expired``, which is a deny.

Correctness never depends on the sweeper: readers treat a pending call past its ``expires_at``
as expired (``effective_status``). The sweep makes it durable and audited, with one conditional
UPDATE so concurrent sweepers produce exactly one ``approval.expired`` event per call.

One clock (security.md §5.6): whether a call has expired is decided by the *database's* clock
(``db_now``) wherever a deadline is set or enforced — the ``expires_at`` written at submission,
the ``expires_at > now`` of a decision, the sweep. Gateway replicas, the CLI and Celery workers
run on hosts whose clocks may disagree by minutes; with each using its own clock, one would
accept a click that another considers expired, or sweep a call a reviewer can still approve.
PostgreSQL's ``now()`` is the same for all of them. SQLite is one file on one host, so there the
process clock (``utcnow``) already is the one clock.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Connection, func, select, update

from gateway.audit import SYSTEM, AuditBatch
from gateway.models import ToolCall
from gateway.webhooks.outbox import enqueue_decisions


_DB_NOW = select(func.now())
_DB_NOW_KEY = "callgate.db_now"


def utcnow() -> datetime:
    """The process clock: only for engines where it is the one clock (SQLite), and for display."""
    return datetime.now(UTC)


def db_now(conn: Connection) -> datetime:
    """The one clock for deadlines: PostgreSQL's ``now()``, or the process clock on SQLite.

    ``now()`` is the start of the current transaction, the same for every statement in it, so it
    is read once per transaction and remembered: a group-commit batch (one transaction) costs one
    ``SELECT now()`` however many units in it ask, and each unit sees the time its SQL sees."""
    if conn.dialect.name != "postgresql":
        return utcnow()
    cached = conn.info.get(_DB_NOW_KEY)
    transaction = conn.get_transaction()
    if cached is not None and transaction is not None and cached[0] is transaction:
        return cached[1]  # type: ignore[no-any-return]
    return remember_db_now(conn, conn.execute(_DB_NOW).scalar_one())


def remember_db_now(conn: Connection, now: datetime) -> datetime:
    """Record ``now``, read from PostgreSQL's ``now()`` by a query of the current transaction, as
    this transaction's clock: for a hot path that folds the read into a statement it makes anyway
    (the submission batch's lookup), so :func:`db_now` costs no round trip of its own there."""
    conn.info[_DB_NOW_KEY] = (conn.get_transaction(), now)
    return now


def sweep_expired(conn: Connection, audit: AuditBatch, *, now: datetime | None = None) -> list[str]:
    """Expire every pending call whose time is up (by the database's clock); returns their ids."""
    now = now or db_now(conn)
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

"""Human decisions on pending calls: approve or deny, exactly once.

The decision is ONE conditional UPDATE (``WHERE id = :id AND status = 'pending' AND
expires_at > :now``): of any number of concurrent clicks (console, Slack, CLI, several
reviewers) exactly one changes the row; every other click matches zero rows and is told why
(``already_decided`` or ``expired``), with nothing written. The winner's ``approval.decided``
audit event and the call's webhook outbox rows go into the same transaction as the status change.

Only humans decide (architecture.md, "Approval lifecycle"): there is no API-key route that calls
this module. The callers are the console (a reviewer's session), Slack (a linked user) and the
``callgate calls approve|deny`` CLI on the server host (an operator).

``decide_call`` is a unit of work for the group commit (``work(conn, audit)``); ``decide`` runs it
through a gateway worker's commit queue and, once committed, wakes the agents waiting on the call:
in this worker directly, in every other worker through Redis when it is configured.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, and_, or_, select, update

from gateway.audit import Actor, AuditBatch
from gateway.calls import CallView, _iso, _load
from gateway.errors import Conflict, Forbidden, NotFound, Unprocessable
from gateway.expiry import effective_status
from gateway.models import ToolCall
from gateway.webhooks.outbox import enqueue_decisions

if TYPE_CHECKING:
    from gateway.runtime import Runtime

__all__ = ["CHANNELS", "MAX_COMMENT", "admin_body", "decide", "decide_call", "get_call", "list_calls"]

CHANNELS = frozenset({"console", "cli", "slack"})
HUMAN_ACTOR_TYPES = frozenset({"user", "operator", "slack_user"})
MAX_COMMENT = 2000
LIST_STATUSES = frozenset(
    {"pending", "approved", "denied", "expired", "allowed", "blocked", "running", "succeeded", "failed", "fail_open"}
)


def decide_call(
    conn: Connection, audit: AuditBatch, *, call_id: str, approve: bool, actor: Actor, channel: str,
    comment: str | None,
) -> CallView:
    """Approve or deny a pending call. Raises ``NotFound``, ``Conflict(code="already_decided"|"expired")``,
    ``Unprocessable`` (comment over 2000 characters, unknown channel) or ``Forbidden`` (a non-human actor)."""
    if channel not in CHANNELS:
        raise Unprocessable(f"unknown decision channel {channel!r}", code="invalid_channel")
    if actor.type not in HUMAN_ACTOR_TYPES or not actor.id:
        raise Forbidden("only a human (console user, Slack user or operator) can decide", code="not_a_human")
    if comment is not None:
        comment = comment.strip() or None
    if comment is not None and len(comment) > MAX_COMMENT:
        raise Unprocessable(f"comment is {len(comment)} characters; the limit is {MAX_COMMENT}",
                            code="comment_too_long", limit=MAX_COMMENT)
    call_id = call_id.lower()
    now = datetime.now(UTC)
    changes = {
        "status": "approved" if approve else "denied",
        "decided_at": now,
        "decided_by": actor.id,
        "decided_channel": channel,
        "comment": comment,
    }
    won = conn.execute(
        update(ToolCall.__table__)
        .where(ToolCall.id == call_id, ToolCall.status == "pending", ToolCall.expires_at > now)
        .values(changes)
    ).rowcount == 1
    row = _load(conn, call_id)
    if not won:
        # Zero rows changed: nothing was written, so raising here is safe for the group commit.
        if row is None:
            raise NotFound(f"no call {call_id}")
        status = effective_status(row["status"], row["expires_at"], now)
        if status == "expired":
            raise Conflict(f"call {call_id} expired at {_iso(row['expires_at'])}; it can no longer be decided",
                           code="expired", call_status=status)
        if row["decision"] != "require_approval":
            raise Conflict(f"call {call_id} never needed an approval (it was {row['status']})",
                           code="already_decided", call_status=status)
        decided = "approved" if status in ("approved", "running", "succeeded", "failed") else status
        raise Conflict(
            f"call {call_id} was already {decided}" + (f" by {row['decided_by']}" if row["decided_by"] else "")
            + (f" (now {status})" if status != decided else ""),
            code="already_decided", call_status=status, decided_by=row["decided_by"],
        )
    assert row is not None
    # The webhook events, in this same transaction: they commit (or roll back) with the decision.
    enqueue_decisions(conn, [row], now=now)
    audit.add(
        "approval.decided",
        actor,
        {"decision": "approve" if approve else "deny", "channel": channel, "comment": comment},
        call_id,
    )
    return CallView(row)


async def decide(
    runtime: Runtime, *, call_id: str, approve: bool, actor: Actor, channel: str, comment: str | None
) -> CallView:
    """Decide through this worker's group commit, then wake every agent waiting on the call."""
    view = await runtime.commit_queue.run(
        lambda conn, audit: decide_call(
            conn, audit, call_id=call_id, approve=approve, actor=actor, channel=channel, comment=comment
        )
    )
    await announce(runtime, [view.row["id"]])
    return view


async def announce(runtime: Runtime, call_ids: list[str]) -> None:
    """After a commit: wake local waiters at once, and other workers' through Redis if configured;
    and get the calls' webhook events (already in the outbox) delivered now."""
    for call_id in call_ids:
        runtime.notifier.publish(call_id)
    if runtime.webhooks is not None and call_ids:
        runtime.webhooks.kick()
    if runtime.pubsub is not None and call_ids:
        await runtime.pubsub.publish(call_ids)


def admin_body(row: dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
    """Everything an operator or reviewer may see about a call (arguments are the redacted copy)."""
    body = CallView(row).detail_body()
    if now is not None:
        body["status"] = effective_status(row["status"], row["expires_at"], now)
    body["metadata"] = json.loads(row.get("metadata") or "{}")
    body["decided_channel"] = row["decided_channel"]
    body["claimed_at"] = _iso(row["claimed_at"])
    body["claimed_by"] = row["claimed_by"]
    return body


def list_calls(
    conn: Connection, *, status: str | None = "pending", limit: int = 100, agent: str | None = None
) -> list[dict[str, Any]]:
    """Calls by *effective* status (a pending call past its expiry is listed as expired).

    ``status=None`` or ``"all"`` lists every call. Pending calls come oldest first (the review
    queue); every other listing newest first.
    """
    if status is not None and status != "all" and status not in LIST_STATUSES:
        raise Unprocessable(f"unknown status {status!r}", code="invalid_status")
    limit = max(1, min(int(limit), 1000))
    now = datetime.now(UTC)
    t = ToolCall.__table__
    query = select(t)
    if status == "pending":
        query = query.where(t.c.status == "pending", t.c.expires_at > now).order_by(t.c.created_at, t.c.id)
    else:
        if status == "expired":
            query = query.where(or_(t.c.status == "expired", and_(t.c.status == "pending", t.c.expires_at <= now)))
        elif status is not None and status != "all":
            query = query.where(t.c.status == status)
        query = query.order_by(t.c.created_at.desc(), t.c.id.desc())
    if agent is not None:
        query = query.where(t.c.agent == agent)
    rows = conn.execute(query.limit(limit)).mappings().all()
    return [admin_body(dict(r), now) for r in rows]


def get_call(conn: Connection, call_id: str) -> dict[str, Any] | None:
    """One call for the console or an operator (any agent's), or None."""
    row = _load(conn, call_id.lower())
    return None if row is None else admin_body(row, datetime.now(UTC))

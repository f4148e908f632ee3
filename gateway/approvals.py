"""Human decisions on pending calls: approve or deny, exactly once — and every refused click on record.

The decision is ONE conditional UPDATE (``WHERE id = :id AND status = 'pending' AND
expires_at > :now``, ``now`` being the database's clock: ``expiry.db_now``): of any number of
concurrent clicks (console, Slack, CLI, several reviewers) exactly one changes the row. The
winner's ``approval.decided`` audit event and the call's webhook outbox rows go into the same
transaction as the status change.

Every other click matches zero rows and changes nothing, but it is not silent: a refused click
is a security-relevant event (a reviewer overruled by a colleague, a click after the deadline, a
probe for call ids, a CLI operator claiming to be someone they are not), so it writes
``approval.decision_rejected {reason, channel, attempted, by, status, repeat}`` (security.md §1.7,
§1.8). Because the group commit discards a failing unit's audit events, a refusal is a *result*
(:class:`Decision` with a ``refusal``), not an exception: the event commits, and only then do the
callers (:func:`decide` for the console and Slack, ``callgate calls approve|deny``) turn it into
their 409 / 404 / exit status.

Only humans decide (architecture.md, "Approval lifecycle"): there is no API-key route that calls
this module. The callers are the console (a reviewer's session), Slack (a linked user) and the
CLI on the server host, whose ``--as`` must name an active reviewer or admin (:func:`decider`)
unless the operator declares a break-glass decision.

``decide_call`` is a unit of work for the group commit (``work(conn, audit)``); ``decide`` runs it
through a gateway worker's commit queue and, once committed, wakes the agents waiting on the call:
in this worker directly, in every other worker through Redis when it is configured.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, and_, or_, select, update

from gateway.audit import Actor, AuditBatch
from gateway.calls import CallView, _iso, _load
from gateway.errors import Conflict, DomainError, Forbidden, NotFound, Unprocessable
from gateway.expiry import db_now, effective_status
from gateway.models import ToolCall, User
from gateway.schemas import UUID_PATTERN
from gateway.webhooks.outbox import enqueue_decisions

if TYPE_CHECKING:
    from gateway.runtime import Runtime

__all__ = [
    "CHANNELS", "DECIDER_ROLES", "MAX_COMMENT", "Decision", "admin_body", "attempt_decision", "decide",
    "decide_call", "decider", "get_call", "list_calls", "refuse_unauthorized",
]

CHANNELS = frozenset({"console", "cli", "slack"})
HUMAN_ACTOR_TYPES = frozenset({"user", "operator", "slack_user"})
DECIDER_ROLES = frozenset({"admin", "reviewer"})  # security.md §3.9: who may approve or deny
MAX_COMMENT = 2000
LIST_STATUSES = frozenset(
    {"pending", "approved", "denied", "expired", "allowed", "blocked", "running", "succeeded", "failed", "fail_open"}
)
#: Statuses that mean "a human approved this call" (it may have run since).
APPROVED_STATUSES = frozenset({"approved", "running", "succeeded", "failed"})


@dataclass(frozen=True, slots=True)
class Decision:
    """What one click did.

    ``refusal`` is None when this click decided the call. Otherwise nothing changed, the click's
    ``approval.decision_rejected`` event is in the same transaction, and ``refusal`` is the error
    the caller answers *after* the commit: ``Conflict`` (``already_decided`` or ``expired``),
    ``NotFound`` or ``Forbidden`` (``not_authorized``). ``view`` is the call as it now stands
    (None when there is no such call)."""

    view: CallView | None
    refusal: DomainError | None = None

    @property
    def won(self) -> bool:
        return self.refusal is None

    def result(self) -> CallView:
        """The decided call, or raise the refusal."""
        if self.refusal is not None:
            raise self.refusal
        assert self.view is not None
        return self.view


def check_call_id(call_id: str) -> str:
    """The canonical (lower-case) id, or ``NotFound``: a string that is not a call id names no
    call and is refused before anything is written (it is not a click on a call)."""
    call_id = call_id.strip()
    if not re.fullmatch(UUID_PATTERN, call_id):
        raise NotFound(f"no call {call_id[:64]}")
    return call_id.lower()


def decider(conn: Connection, username: str) -> Actor | None:
    """The console user ``username`` as a decider: an active user with the reviewer or admin
    role, the same people the console lets decide; None for anyone else.

    The CLI's ``--as`` goes through this, so a decision made on the server host is attributed to
    a real reviewer account (the same ``Actor`` as their console clicks), not a free-text name."""
    row = conn.execute(select(User.username, User.role, User.active).where(User.username == username)).first()
    if row is None or not row.active or row.role not in DECIDER_ROLES:
        return None
    return Actor("user", row.username)


def refuse_unauthorized(
    audit: AuditBatch, *, call_id: str, approve: bool, actor: Actor, claimed: str, channel: str,
    context: Mapping[str, Any] | None = None,
) -> Decision:
    """Record a click by someone who may not decide (``actor`` claimed to be ``claimed``, who is
    not an active reviewer or admin) as ``approval.decision_rejected {reason: not_authorized}``,
    and return the refusal (403 / exit 2) for the caller to answer after the commit."""
    call_id = check_call_id(call_id)
    _reject(audit, call_id, actor, reason="not_authorized", channel=channel, approve=approve, row=None,
            now=None, repeat=False, context={"as": claimed, **(context or {})})
    return Decision(None, Forbidden(f"{claimed!r} is not an active console user with the reviewer or admin role; "
                                    "create one with `callgate users create NAME --role reviewer`",
                                    code="not_authorized"))


def decide_call(
    conn: Connection, audit: AuditBatch, *, call_id: str, approve: bool, actor: Actor, channel: str,
    comment: str | None, context: Mapping[str, Any] | None = None,
) -> Decision:
    """Approve or deny a pending call; a refused click is recorded and returned, not raised.

    Raises (before writing anything) ``Unprocessable`` (comment over 2000 characters, unknown
    channel), ``Forbidden`` (a non-human actor) or ``NotFound`` (not a call id at all). Every
    other outcome is a :class:`Decision`. ``context`` is merged into the audit event's data (the
    CLI records the OS account and whether it was a break-glass decision)."""
    if channel not in CHANNELS:
        raise Unprocessable(f"unknown decision channel {channel!r}", code="invalid_channel")
    if actor.type not in HUMAN_ACTOR_TYPES or not actor.id:
        raise Forbidden("only a human (console user, Slack user or operator) can decide", code="not_a_human")
    if comment is not None:
        comment = comment.strip() or None
    if comment is not None and len(comment) > MAX_COMMENT:
        raise Unprocessable(f"comment is {len(comment)} characters; the limit is {MAX_COMMENT}",
                            code="comment_too_long", limit=MAX_COMMENT)
    call_id = check_call_id(call_id)
    now = db_now(conn)
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
        refusal, repeat = _refusal(call_id, row, approve, actor, now)
        _reject(audit, call_id, actor, reason=refusal.code, channel=channel, approve=approve, row=row, now=now,
                repeat=repeat, context=context)
        return Decision(None if row is None else CallView(row), refusal)
    assert row is not None
    # The webhook events, in this same transaction: they commit (or roll back) with the decision.
    enqueue_decisions(conn, [row], now=now)
    audit.add(
        "approval.decided",
        actor,
        {"decision": "approve" if approve else "deny", "channel": channel, "comment": comment, **(context or {})},
        call_id,
    )
    return Decision(CallView(row))


def _refusal(
    call_id: str, row: dict[str, Any] | None, approve: bool, actor: Actor, now: datetime
) -> tuple[DomainError, bool]:
    """Why a click that changed nothing was refused, told the way a reviewer needs it (§1.8):
    "expired at …", "already approved by jane", or "you already approved this" (a double click:
    the same person making the same decision, ``repeat``)."""
    if row is None:
        return NotFound(f"no call {call_id}"), False
    status = effective_status(row["status"], row["expires_at"], now)
    if status == "expired":
        return Conflict(f"call {call_id} expired at {_iso(row['expires_at'])}; it can no longer be decided",
                        code="expired", call_status=status), False
    if row["decision"] != "require_approval":
        return Conflict(f"call {call_id} never needed an approval (it was {row['status']})",
                        code="already_decided", call_status=status), False
    decided = "approved" if status in APPROVED_STATUSES else status
    when = f" at {_iso(row['decided_at'])}" if row["decided_at"] is not None else ""
    now_status = f" (now {status})" if status != decided else ""
    if row["decided_by"] == actor.id and decided == ("approved" if approve else "denied"):
        return Conflict(f"you already {decided} call {call_id}{when}{now_status}", code="already_decided",
                        call_status=status, decided_by=row["decided_by"], repeat=True), True
    by = f" by {row['decided_by']}" if row["decided_by"] else ""
    return Conflict(f"call {call_id} was already {decided}{by}{when}{now_status}", code="already_decided",
                    call_status=status, decided_by=row["decided_by"]), False


def _reject(
    audit: AuditBatch, call_id: str, actor: Actor, *, reason: str, channel: str, approve: bool,
    row: dict[str, Any] | None, now: datetime | None, repeat: bool, context: Mapping[str, Any] | None,
) -> None:
    """Queue ``approval.decision_rejected``: who clicked (the actor), what they attempted, through
    which channel, why it was refused, and who made the decision that stands (``by``)."""
    status = None if row is None else effective_status(row["status"], row["expires_at"], now)
    audit.add(
        "approval.decision_rejected",
        actor,
        {"reason": reason, "channel": channel, "attempted": "approve" if approve else "deny",
         "by": None if row is None else row["decided_by"], "status": status, "repeat": repeat,
         **(context or {})},
        call_id,
    )


async def attempt_decision(
    runtime: Runtime, *, call_id: str, approve: bool, actor: Actor, channel: str, comment: str | None
) -> Decision:
    """Decide through this worker's group commit; once committed, wake every agent waiting on the
    call if this click won. A refused click comes back as a committed :class:`Decision`."""
    decision: Decision = await runtime.commit_queue.run(
        lambda conn, audit: decide_call(
            conn, audit, call_id=call_id, approve=approve, actor=actor, channel=channel, comment=comment
        )
    )
    if decision.won:
        assert decision.view is not None
        await announce(runtime, [decision.view.row["id"]])
    return decision


async def decide(
    runtime: Runtime, *, call_id: str, approve: bool, actor: Actor, channel: str, comment: str | None
) -> CallView:
    """:func:`attempt_decision`, raising the refusal (after its event committed) for a lost click."""
    decision = await attempt_decision(runtime, call_id=call_id, approve=approve, actor=actor, channel=channel,
                                      comment=comment)
    return decision.result()


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

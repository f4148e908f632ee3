"""Tool calls: receive, decide, record — and read back, and record outcomes.

These are the units of work the group commit runs (``work(conn, audit)``). Each validates and
raises its ``DomainError`` before writing, then writes the state change and its audit events in
the same transaction (security.md §4.1). The policy sees the raw arguments; only the redacted
copy and an HMAC fingerprint of the raw ones are ever stored.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import rfc8785
from sqlalchemy import Connection, and_, any_, bindparam, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import ARRAY

from callgate.redaction import redact
from gateway.audit import Actor, AuditBatch
from gateway.auth import authenticate, authenticate_many, require_agent
from gateway.expiry import db_now, effective_status, remember_db_now
from gateway.errors import Conflict, DomainError, Forbidden, NotFound, PayloadTooLarge, Unprocessable
from gateway.keys import ParsedKey, Principal
from gateway.models import ToolCall
from gateway.policy_store import ActivePolicy

STATUS_BY_ACTION = {"allow": "allowed", "block": "blocked", "require_approval": "pending"}
RUNNABLE_STATUSES = frozenset({"allowed", "approved", "running"})
OUTCOME_STATUSES = frozenset({"succeeded", "failed"})


def _dumps(value: Any) -> str:
    return rfc8785.dumps(value).decode()


@dataclass(frozen=True, slots=True)
class IncomingCall:
    """A validated ``POST /v1/calls`` body, prepared outside the writer thread."""

    id: str
    tool: str
    raw_args: dict[str, Any]
    args_json: str  # redacted, canonical
    args_redacted: Any  # the same, as an object (what the audit record embeds)
    args_fp: str
    redactions: list[list[str]]
    declared_agent: str | None
    session_id: str | None
    framework: str | None
    metadata_json: str  # redacted, canonical
    metadata_redacted: Any
    fail_open: bool
    fingerprint: str


def prepare_call(body: dict[str, Any], *, secret: bytes, max_args_bytes: int) -> IncomingCall:
    """Redact, canonicalize, size-check and fingerprint a validated request body."""
    raw_args = body["args"]
    redacted = redact(raw_args)
    args_json = _dumps(redacted.value)
    if len(args_json.encode()) > max_args_bytes:
        raise PayloadTooLarge(
            f"tool arguments are {len(args_json.encode())} bytes after redaction; the limit is {max_args_bytes} "
            "(pass a reference, not a blob)",
            code="arguments_too_large",
            limit_bytes=max_args_bytes,
        )
    args_fp = hmac.new(secret, rfc8785.dumps(raw_args), hashlib.sha256).hexdigest()
    metadata_redacted = redact(body.get("metadata") or {}).value
    metadata_json = _dumps(metadata_redacted)
    identity = {
        "tool": body["tool"],
        "args_fp": args_fp,
        "session_id": body.get("session_id"),
        "framework": body.get("framework"),
        "metadata": metadata_json,
        "fail_open": bool(body.get("fail_open", False)),
    }
    return IncomingCall(
        id=body["id"].lower(),
        tool=body["tool"],
        raw_args=raw_args,
        args_json=args_json,
        args_redacted=redacted.value,
        args_fp=args_fp,
        redactions=[[pointer, rule] for pointer, rule in redacted.report],
        declared_agent=body.get("agent"),
        session_id=body.get("session_id"),
        framework=body.get("framework"),
        metadata_json=metadata_json,
        metadata_redacted=metadata_redacted,
        fail_open=identity["fail_open"],
        fingerprint=hashlib.sha256(rfc8785.dumps(identity)).hexdigest(),
    )


@dataclass(frozen=True, slots=True)
class CallView:
    """What the API answers about a call."""

    row: dict[str, Any]
    created: bool = False

    @property
    def status(self) -> str:
        """The status to act on now (a pending call past its expiry is expired)."""
        return effective_status(self.row["status"], self.row["expires_at"])

    def decision_body(self) -> dict[str, Any]:
        r = self.row
        return {
            "call_id": r["id"],
            "decision": r["decision"],
            "status": effective_status(r["status"], r["expires_at"]),
            "reason": r["reason"],
            "rule": r["rule"],
            "policy_version": r["policy_version"],
            "expires_at": _iso(r["expires_at"]),
        }

    def detail_body(self) -> dict[str, Any]:
        r = self.row
        body = self.decision_body()
        body.update(
            tool=r["tool"],
            agent=r["agent"],
            session_id=r["session_id"],
            framework=r["framework"],
            args=json.loads(r["args"]),
            redactions=json.loads(r["redactions"]),
            fail_open=bool(r["fail_open"]),
            created_at=_iso(r["created_at"]),
            decided_at=_iso(r["decided_at"]),
            decided_by=r["decided_by"],
            decided_channel=r.get("decided_channel"),
            comment=r["comment"],
            outcome=None
            if r["outcome_status"] is None
            else {"status": r["outcome_status"], "error": r["outcome_error"], "duration_ms": r["duration_ms"],
                  "recorded_at": _iso(r["outcome_at"])},
        )
        return body


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _load_many(conn: Connection, call_ids: set[str]) -> dict[str, dict[str, Any]]:
    rows = conn.execute(select(ToolCall.__table__).where(ToolCall.id.in_(sorted(call_ids)))).mappings()
    return {row["id"]: dict(row) for row in rows}


def _load(conn: Connection, call_id: str) -> dict[str, Any] | None:
    return _load_many(conn, {call_id}).get(call_id)


@dataclass(frozen=True, slots=True)
class Submission:
    """One ``POST /v1/calls`` waiting for the group commit."""

    incoming: IncomingCall
    key: ParsedKey | None
    pepper: bytes
    policy: ActivePolicy


def submit_calls(conn: Connection, audit: AuditBatch, submissions: list[Submission]) -> list[CallView | DomainError]:
    """Decide and record every queued submission with set-based statements: one key SELECT, one
    call SELECT and one multi-row INSERT per group commit, however many requests it holds (P3).

    Each submission is answered on its own: a bad key or a reused id fails only that one. A
    repeated id within the batch is a replay of the first, exactly as if it came a moment later."""
    principals = authenticate_many(conn, [s.key for s in submissions], pepper=submissions[0].pepper)
    known, now = _known_and_now(conn, {s.incoming.id for s in submissions})
    results: list[CallView | DomainError] = []
    new_rows: list[dict[str, Any]] = []
    for submission, principal in zip(submissions, principals, strict=True):
        try:
            if isinstance(principal, DomainError):
                raise principal
            view = _decide_submission(audit, submission, principal, known.get(submission.incoming.id), now)
        except DomainError as exc:
            results.append(exc)
            continue
        if view.created:
            new_rows.append(view.row)
            known[view.row["id"]] = view.row
        results.append(view)
    if new_rows:
        conn.execute(insert(ToolCall.__table__), new_rows)
    return results


def _known_and_now(conn: Connection, call_ids: set[str]) -> tuple[dict[str, dict[str, Any]], datetime]:
    """The batch's calls that already exist, and the one clock for deadlines (``expiry.db_now``).

    On PostgreSQL both come from ONE statement: the lookup the batch makes anyway, outer-joined to
    a one-row ``now()``, so the database's clock costs no extra round trip on this hot path (P1,
    P3); the value is remembered as the transaction's clock for every other unit in the batch.
    SQLite keeps the process clock (one host)."""
    if conn.dialect.name != "postgresql":
        return _load_many(conn, call_ids), db_now(conn)
    t = ToolCall.__table__
    clock = select(func.now().label("_db_now")).subquery("clock")
    rows = conn.execute(select(clock.c._db_now, t).select_from(clock.outerjoin(t, t.c.id.in_(sorted(call_ids)))))
    known: dict[str, dict[str, Any]] = {}
    now: datetime | None = None
    for row in rows.mappings():
        now = row["_db_now"]
        if row["id"] is not None:
            known[row["id"]] = {column.name: row[column.name] for column in t.c}
    assert now is not None  # the outer join always yields the clock's row
    return known, remember_db_now(conn, now)


def submit_call(
    conn: Connection, audit: AuditBatch, *, incoming: IncomingCall, key: ParsedKey | None, pepper: bytes,
    policy: ActivePolicy,
) -> CallView:
    """``submit_calls`` for a single call; raises its ``DomainError``."""
    result = submit_calls(conn, audit, [Submission(incoming, key, pepper, policy)])[0]
    if isinstance(result, DomainError):
        raise result
    return result


def _decide_submission(
    audit: AuditBatch, submission: Submission, principal: Principal, existing: dict[str, Any] | None,
    now: datetime,
) -> CallView:
    """Replay the existing call with this id, or decide a new one and queue its audit events.
    Raises its ``DomainError`` before queueing anything. ``now`` is the database's clock
    (``expiry.db_now``), so ``expires_at`` means the same to every replica, the CLI and Celery."""
    incoming, policy = submission.incoming, submission.policy
    agent = require_agent(principal)
    if incoming.declared_agent is not None and incoming.declared_agent != agent:
        raise Forbidden(
            f"body says agent {incoming.declared_agent!r} but the API key belongs to agent {agent!r}",
            code="agent_mismatch",
        )
    if existing is not None:
        if existing["agent"] != agent or existing["fingerprint"] != incoming.fingerprint:
            raise Unprocessable(
                f"call id {incoming.id} was already used with a different request; make a new id per logical call",
                code="idempotency_key_reused",
            )
        return CallView(existing)

    decision = policy.compiled.decide(incoming.tool, incoming.raw_args, agent=agent)
    action = str(decision.action.value if hasattr(decision.action, "value") else decision.action)
    status = STATUS_BY_ACTION[action]
    expires_at = now + timedelta(seconds=decision.approval_timeout_s) if action == "require_approval" else None
    if incoming.fail_open:
        # The tool already ran while the gateway was unreachable: record what happened and what the
        # policy would have said, so operators can alert on violations.
        status = "fail_open"
        expires_at = None
    row = {
        "id": incoming.id,
        "agent": agent,
        "tool": incoming.tool,
        "args": incoming.args_json,
        "args_fp": incoming.args_fp,
        "redactions": json.dumps(incoming.redactions),
        "session_id": incoming.session_id,
        "framework": incoming.framework,
        "metadata": incoming.metadata_json,
        "fingerprint": incoming.fingerprint,
        "fail_open": incoming.fail_open,
        "decision": action,
        "status": status,
        "reason": decision.reason,
        "rule": decision.rule,
        "policy_version": policy.version,
        "created_at": now,
        "expires_at": expires_at,
        "decided_at": None if action == "require_approval" else now,
        "decided_by": None,
        "decided_channel": None,
        # An allowed call's answer IS its execution claim (one round trip): it is claimed now,
        # so a later explicit claim of the same call is refused. Approved calls claim separately.
        "claimed_at": now if status == "allowed" else None,
        "claimed_by": principal.key_id if status == "allowed" else None,
        "comment": None,
        "outcome_status": None,
        "outcome_error": None,
        "duration_ms": None,
        "outcome_at": None,
        "outcome_fingerprint": None,
    }
    actor = Actor("agent_key", principal.key_id)
    audit.add(
        "tool_call.received",
        actor,
        {
            "tool": incoming.tool,
            "args": incoming.args_redacted,
            "args_hmac": incoming.args_fp,
            "redactions": incoming.redactions,
            "agent": agent,
            "session_id": incoming.session_id,
            "framework": incoming.framework,
            "metadata": incoming.metadata_redacted,
        },
        incoming.id,
    )
    audit.add(
        "policy.evaluated",
        actor,
        {"decision": action, "rule": decision.rule, "reason": decision.reason, "policy_version": policy.version},
        incoming.id,
    )
    if incoming.fail_open:
        audit.add("sdk.fail_open_execution", actor, {"policy_violation": action != "allow"}, incoming.id)
    elif action == "require_approval":
        audit.add("approval.requested", actor, {"expires_at": _iso(expires_at)}, incoming.id)
    return CallView(row, created=True)


def read_call(conn: Connection, *, call_id: str, key: ParsedKey | None, pepper: bytes) -> CallView:
    """A call as its agent (or an admin key) may see it; other agents' calls are 404, not 403."""
    result = read_calls(conn, [(call_id, key)], pepper=pepper)[0]
    if isinstance(result, DomainError):
        raise result
    return result


def read_calls(
    conn: Connection, requests: Sequence[tuple[str, ParsedKey | None]], *, pepper: bytes
) -> list[CallView | DomainError]:
    """``read_call`` for many (call id, key) pairs with one key SELECT and one call SELECT.

    Thousands of held long-polls wake at once when many calls are decided together (P5); reading
    them one by one costs a thread hop and two round trips each, reading them together costs two
    round trips in all. Each pair is answered on its own: its view, or the error to raise."""
    principals = authenticate_many(conn, [key for _, key in requests], pepper=pepper, touch=False)
    rows = _load_many(conn, {call_id for call_id, _ in requests})
    results: list[CallView | DomainError] = []
    answered: set[str] = set()
    for (call_id, _), principal in zip(requests, principals, strict=True):
        if isinstance(principal, DomainError):
            results.append(principal)
            continue
        row = rows.get(call_id)
        if row is None or not _may_read(principal, row):
            results.append(NotFound(f"no call {call_id}"))
            continue
        # Two polls of one call never share a row dict (a view's row may be updated in place).
        results.append(CallView(dict(row) if call_id in answered else row))
        answered.add(call_id)
    return results


def settled_calls(conn: Connection, call_ids: Sequence[str], *, now: datetime | None = None) -> list[str]:
    """Which of ``call_ids`` no longer wait for a human: decided, or expired (even if not yet swept).

    A worker's periodic re-check of every long-poll it holds, so it must stay cheap at 20,000 ids:
    it fetches only the calls that changed (not the many still waiting), and on PostgreSQL sends
    the ids as one array parameter per 10,000 instead of one bind per id. (Tool calls are never
    deleted; a poll whose row vanished by hand learns it at its next read.)"""
    now = now or datetime.now(UTC)
    t = ToolCall.__table__
    unique = sorted(set(call_ids))
    not_waiting = or_(t.c.status != "pending", and_(t.c.expires_at.is_not(None), t.c.expires_at <= now))
    postgres = conn.dialect.name == "postgresql"
    chunk_size = 10_000 if postgres else 500
    settled: list[str] = []
    for i in range(0, len(unique), chunk_size):
        chunk = unique[i:i + chunk_size]
        known = t.c.id == any_(bindparam("ids", chunk, type_=ARRAY(t.c.id.type))) if postgres else t.c.id.in_(chunk)
        settled.extend(conn.execute(select(t.c.id).where(known, not_waiting)).scalars())
    return sorted(settled)


@dataclass(frozen=True, slots=True)
class ClaimAttempt:
    """What :func:`attempt_claim` found: the call (after the claim, if it was made) and whether
    this attempt claimed it."""

    view: CallView
    claimed: bool


ALREADY_CLAIMED_STATUSES = frozenset({"running", "succeeded", "failed", "fail_open"})
_T = ToolCall.__table__
#: The claim, built once: constructing an UPDATE ... RETURNING costs ~0.2 ms of Python per call,
#: on the path from an approval to the agent's tool start (P2).
_CLAIM = (
    update(_T)
    .where(_T.c.id == bindparam("p_call_id"), _T.c.agent == bindparam("p_agent"), _T.c.status == "approved",
           _T.c.claimed_at.is_(None))
    .values(status="running", claimed_at=bindparam("p_now"), claimed_by=bindparam("p_key_id"))
    .returning(*_T.c)
)


def attempt_claim(
    conn: Connection, audit: AuditBatch, *, call_id: str, key: ParsedKey | None, pepper: bytes
) -> ClaimAttempt:
    """Claim the call if it is approved and unclaimed; otherwise change nothing and say why.

    The claim is one conditional ``UPDATE ... RETURNING`` (``approved -> running``, unclaimed,
    this agent's): of any number of concurrent claimants exactly one gets the row back, and only
    the winner's ``execution.claimed`` event is queued. A call that was already claimed (or was
    allowed: its submission was its claim) raises ``Conflict(already_claimed)``; a call that is
    pending, denied, expired or blocked comes back unclaimed, with nothing written.

    Used by ``POST /v1/calls/{id}/claim`` (through :func:`claim_call`) and by a long-poll with
    ``claim=1``, which claims in the same request that learns of the approval."""
    principal = authenticate(conn, key, pepper=pepper)
    agent = require_agent(principal)
    now = datetime.now(UTC)
    claimed = conn.execute(
        _CLAIM, {"p_call_id": call_id, "p_agent": agent, "p_now": now, "p_key_id": principal.key_id}
    ).mappings().first()
    if claimed is not None:
        audit.add("execution.claimed", Actor("agent_key", principal.key_id), {}, call_id)
        return ClaimAttempt(CallView(dict(claimed)), True)
    row = _load(conn, call_id)
    if row is None or row["agent"] != agent:
        raise NotFound(f"no call {call_id}")
    status_now = effective_status(row["status"], row["expires_at"], now)
    if row["claimed_at"] is not None or status_now in ALREADY_CLAIMED_STATUSES:
        raise Conflict(f"call {call_id} was already claimed for execution at {_iso(row['claimed_at'])}; "
                       "it must not run again", code="already_claimed", call_status=status_now)
    return ClaimAttempt(CallView(row), False)


def claim_call(conn: Connection, audit: AuditBatch, *, call_id: str, key: ParsedKey | None, pepper: bytes) -> CallView:
    """The one-shot execution claim of an approved call (security.md §5.3): exactly one claimant
    ever wins (see :func:`attempt_claim`), every other gets 409 ``already_claimed``.

    Allowed calls need no separate claim: the ``POST /v1/calls`` answer is their claim (they are
    stamped claimed at insert), so claiming one explicitly is ``already_claimed`` too."""
    attempt = attempt_claim(conn, audit, call_id=call_id, key=key, pepper=pepper)
    if attempt.claimed:
        return attempt.view
    status_now = attempt.view.status
    if status_now == "pending":
        raise Conflict(f"call {call_id} is still waiting for a human decision", code="not_approved",
                       call_status=status_now)
    raise Conflict(f"call {call_id} is {status_now}; it must not run", code="not_runnable", call_status=status_now)


def _may_read(principal: Principal, row: dict[str, Any]) -> bool:
    return principal.kind == "admin" or row["agent"] == principal.agent


def record_outcome(
    conn: Connection, audit: AuditBatch, *, call_id: str, body: dict[str, Any], key: ParsedKey | None, pepper: bytes
) -> CallView:
    """Record how the tool run ended; idempotent per call (same payload → same answer)."""
    principal = authenticate(conn, key, pepper=pepper)
    agent = require_agent(principal)
    row = _load(conn, call_id)
    if row is None or row["agent"] != agent:
        raise NotFound(f"no call {call_id}")
    fingerprint = hashlib.sha256(rfc8785.dumps(body)).hexdigest()
    if row["outcome_fingerprint"] is not None:
        if row["outcome_fingerprint"] == fingerprint:
            return CallView(row)
        raise Conflict(f"call {call_id} already has a different outcome", code="outcome_already_recorded")
    status_now = effective_status(row["status"], row["expires_at"])
    if status_now not in RUNNABLE_STATUSES and status_now != "fail_open":
        raise Conflict(
            f"call {call_id} is {status_now}; only an allowed or approved call can have an outcome",
            code="not_runnable",
        )
    if status_now == "approved":  # approved calls run only after their one-shot claim (-> running)
        raise Conflict(f"call {call_id} was approved but never claimed; claim it before running it",
                       code="not_claimed")
    now = datetime.now(UTC)
    status = body["status"]
    changes = {
        "status": status if row["status"] != "fail_open" else "fail_open",
        "outcome_status": status,
        "outcome_error": body.get("error"),
        "duration_ms": body.get("duration_ms"),
        "outcome_at": now,
        "outcome_fingerprint": fingerprint,
    }
    result = conn.execute(
        update(ToolCall.__table__)
        .where(ToolCall.id == call_id, ToolCall.outcome_fingerprint.is_(None))
        .values(changes)
    )
    if result.rowcount != 1:  # another process recorded an outcome between our read and update
        raise Conflict(f"call {call_id} already has an outcome", code="outcome_already_recorded")
    audit.add(
        "tool.outcome",
        Actor("agent_key", principal.key_id),
        {"status": status, "error": body.get("error"), "duration_ms": body.get("duration_ms")},
        call_id,
    )
    row.update(changes)
    return CallView(row)

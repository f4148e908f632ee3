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
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import rfc8785
from sqlalchemy import Connection, insert, select, update

from callgate.redaction import redact
from gateway.audit import Actor, AuditBatch
from gateway.auth import authenticate, authenticate_many, require_agent
from gateway.expiry import effective_status
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
    known = _load_many(conn, {s.incoming.id for s in submissions})
    results: list[CallView | DomainError] = []
    new_rows: list[dict[str, Any]] = []
    for submission, principal in zip(submissions, principals, strict=True):
        try:
            if isinstance(principal, DomainError):
                raise principal
            view = _decide_submission(audit, submission, principal, known.get(submission.incoming.id))
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
    audit: AuditBatch, submission: Submission, principal: Principal, existing: dict[str, Any] | None
) -> CallView:
    """Replay the existing call with this id, or decide a new one and queue its audit events.
    Raises its ``DomainError`` before queueing anything."""
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
    now = datetime.now(UTC)
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
    principal = authenticate(conn, key, pepper=pepper, touch=False)
    row = _load(conn, call_id)
    if row is None or not _may_read(principal, row):
        raise NotFound(f"no call {call_id}")
    return CallView(row)


def claim_call(conn: Connection, audit: AuditBatch, *, call_id: str, key: ParsedKey | None, pepper: bytes) -> CallView:
    """The one-shot execution claim of an approved call (security.md §5.3): one conditional UPDATE
    ``approved -> running``; exactly one claimant ever wins, every other gets 409 ``already_claimed``.

    Allowed calls need no separate claim: the ``POST /v1/calls`` answer is their claim (they are
    stamped claimed at insert), so claiming one explicitly is ``already_claimed`` too."""
    principal = authenticate(conn, key, pepper=pepper)
    agent = require_agent(principal)
    row = _load(conn, call_id)
    if row is None or row["agent"] != agent:
        raise NotFound(f"no call {call_id}")
    now = datetime.now(UTC)
    changes = {"status": "running", "claimed_at": now, "claimed_by": principal.key_id}
    won = conn.execute(
        update(ToolCall.__table__)
        .where(ToolCall.id == call_id, ToolCall.status == "approved", ToolCall.claimed_at.is_(None))
        .values(changes)
    ).rowcount == 1
    if not won:
        row = _load(conn, call_id) or row
        status_now = effective_status(row["status"], row["expires_at"], now)
        if row["claimed_at"] is not None or status_now in ("running", "succeeded", "failed", "fail_open"):
            raise Conflict(f"call {call_id} was already claimed for execution at {_iso(row['claimed_at'])}; "
                           "it must not run again", code="already_claimed", call_status=status_now)
        if status_now == "pending":
            raise Conflict(f"call {call_id} is still waiting for a human decision", code="not_approved",
                           call_status=status_now)
        raise Conflict(f"call {call_id} is {status_now}; it must not run", code="not_runnable", call_status=status_now)
    audit.add("execution.claimed", Actor("agent_key", principal.key_id), {}, call_id)
    row.update(changes)
    return CallView(row)


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

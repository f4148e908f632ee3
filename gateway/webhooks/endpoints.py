"""Registering, listing, rotating and disabling webhook endpoints (admins only: the admin API and
the CLI).

Every change is an audit event in the same transaction (``webhook.registered``,
``webhook.rotated``, ``webhook.disabled``), naming the endpoint, agent and URL but never a
secret. A secret is returned once in plain text, by ``register_endpoint`` or ``rotate_secret``,
and stored only sealed (``secrets``); listings never include it, sealed or not.

Rotation makes a new secret active at once and keeps the previous one signing next to it for an
overlap (24 h by default): every delivery carries both signatures, so the receiver can move to
the new secret whenever it likes within that window without rejecting a single delivery.

The URL passes the SSRF guard here (a clear 422 naming the field) and again before every
attempt, because DNS can change after registration. Disabling an endpoint also ends its
undelivered messages (``failed``, each with its ``webhook.failed`` event): nothing is sent to an
endpoint after it was disabled, and nothing stays pending forever.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.sql.elements import ColumnElement

from gateway.audit import SYSTEM, Actor, AuditBatch
from gateway.errors import Conflict, NotFound, Unprocessable
from gateway.models import ApiKey, WebhookEndpoint, WebhookOutbox
from gateway.webhooks.outbox import DECIDED, EVENT_TYPES, rfc3339
from gateway.webhooks.secrets import SecretBox
from gateway.webhooks.signing import new_secret
from gateway.webhooks.ssrf import BlockedDestination, Destination, Resolver, UnresolvableHost, check_destination

__all__ = [
    "MAX_ENDPOINTS_PER_AGENT",
    "Registered",
    "cancel_pending",
    "check_url",
    "disable_endpoint",
    "get_endpoint",
    "list_endpoints",
    "register_endpoint",
    "rotate_secret",
]

MAX_ENDPOINTS_PER_AGENT = 10
_E = WebhookEndpoint
_COLUMNS: tuple[ColumnElement[Any], ...] = (
    _E.id, _E.agent, _E.url, _E.event_types, _E.include_args, _E.enabled, _E.created_at, _E.disabled_at,
    _E.disabled_reason, _E.rotated_at, _E.previous_secret_expires_at, _E.last_success_at, _E.first_failure_at,
)


@dataclass(frozen=True, slots=True)
class Registered:
    """An endpoint and its new plain secret (after registration or rotation), shown once."""

    endpoint: dict[str, Any]
    secret: str


def _field_error(field: str, code: str, message: str) -> Unprocessable:
    return Unprocessable(message, code=code, errors=[{"pointer": f"/{field}", "code": code, "message": message}])


def _public(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "agent": row.agent,
        "url": row.url,
        "event_types": json.loads(row.event_types),
        "include_args": bool(row.include_args),
        "enabled": bool(row.enabled),
        "created_at": rfc3339(row.created_at),
        "disabled_at": rfc3339(row.disabled_at),
        "disabled_reason": row.disabled_reason,
        "rotated_at": rfc3339(row.rotated_at),
        # the previous secret signs too until then (it may lie in the past: then it no longer does)
        "previous_secret_expires_at": rfc3339(row.previous_secret_expires_at),
        "last_success_at": rfc3339(row.last_success_at),
        "first_failure_at": rfc3339(row.first_failure_at),  # failing since (no success after it)
    }


def _url_for_audit(dest: Destination) -> str:
    """The URL without its query: the append-only log must not keep a token someone put there."""
    path, query = dest.target.split("?", 1) if "?" in dest.target else (dest.target, "")
    return f"{dest.scheme}://{dest.host_header}{path}" + ("?[query redacted]" if query else "")


def validate_agent(agent: object) -> str:
    if not isinstance(agent, str) or not (1 <= len(agent) <= 128 and all(0x21 <= ord(c) <= 0x7E for c in agent)):
        raise _field_error("agent", "invalid_agent", "agent names are 1-128 printable ASCII characters without spaces")
    return agent


def validate_event_types(event_types: Sequence[str] | None) -> list[str]:
    if event_types is None:
        return [DECIDED]
    if not event_types:
        raise _field_error("event_types", "invalid_event_types", "list at least one event type")
    unknown = sorted(set(event_types) - EVENT_TYPES)
    if unknown:
        raise _field_error("event_types", "unknown_event_type",
                           f"unknown event type {unknown[0]!r}; known: {', '.join(sorted(EVENT_TYPES))}")
    return sorted(set(event_types))


def check_url(url: object, *, allow_private: bool, allow_http: bool, resolver: Resolver | None = None) -> Destination:
    """The SSRF guard (and the https-only rule) at registration, as a 422 naming the ``url``
    field. Resolves DNS, so call it before the unit of work (never inside the writer's
    transaction)."""
    if not isinstance(url, str):
        raise _field_error("url", "invalid_url", "the URL must be a string")
    try:
        dest, _ = check_destination(url, allow_private=allow_private, allow_http=allow_http, resolver=resolver)
    except BlockedDestination as exc:
        raise _field_error("url", "webhook_url_forbidden", f"webhook URL refused: {exc.reason}") from None
    except UnresolvableHost as exc:
        raise _field_error("url", "webhook_url_unresolvable", f"webhook URL refused: {exc}") from None
    return dest


def register_endpoint(
    conn: Connection, audit: AuditBatch, *, agent: str, destination: Destination, actor: Actor, box: SecretBox,
    event_types: Sequence[str] | None = None, include_args: bool = False, now: datetime | None = None,
) -> Registered:
    """Store an endpoint for ``agent`` (its URL already passed ``check_url``); the result carries
    the secret, shown once (the row holds it sealed by ``box``). ``include_args``: payloads carry
    the call's (redacted) arguments; off by default, as security.md §2.2 wants thin payloads.

    Raises ``Unprocessable`` (bad agent, an agent no API key was ever made for: almost certainly
    a typo, unknown event type) or ``Conflict`` (the URL is already registered
    for the agent, or the agent has too many endpoints)."""
    agent = validate_agent(agent)
    types = validate_event_types(event_types)
    url = destination.url
    if conn.execute(select(ApiKey.id).where(ApiKey.agent == agent).limit(1)).first() is None:
        raise _field_error("agent", "unknown_agent", f"no API key was ever created for agent {agent!r}; create one "
                           f"first (callgate keys create --agent {agent})")
    enabled = conn.execute(
        select(WebhookEndpoint.id, WebhookEndpoint.url)
        .where(WebhookEndpoint.agent == agent, WebhookEndpoint.enabled.is_(True))
    ).all()
    for existing_id, existing_url in enabled:
        if existing_url == url:
            raise Conflict(f"{url} is already registered for agent {agent} as {existing_id}",
                           code="already_registered", endpoint_id=existing_id)
    if len(enabled) >= MAX_ENDPOINTS_PER_AGENT:
        raise Conflict(f"agent {agent} already has {len(enabled)} enabled endpoints (the limit); disable one first",
                       code="too_many_endpoints", limit=MAX_ENDPOINTS_PER_AGENT)
    now = now or datetime.now(UTC)
    endpoint_id = "ep_" + secrets.token_hex(8)
    secret = new_secret()
    conn.execute(insert(WebhookEndpoint).values(
        id=endpoint_id, agent=agent, url=url, secret=box.seal(endpoint_id, secret), event_types=json.dumps(types),
        include_args=bool(include_args), enabled=True, created_at=now,
    ))
    audit.add("webhook.registered", actor,
              {"endpoint_id": endpoint_id, "agent": agent, "url": _url_for_audit(destination), "event_types": types,
               "include_args": bool(include_args)})
    row = conn.execute(select(*_COLUMNS).where(WebhookEndpoint.id == endpoint_id)).one()
    return Registered(_public(row), secret)


def list_endpoints(conn: Connection, *, agent: str | None = None,
                   include_disabled: bool = True) -> list[dict[str, Any]]:
    """Endpoints (never their secrets), oldest first."""
    query = select(*_COLUMNS).order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
    if agent is not None:
        query = query.where(WebhookEndpoint.agent == agent)
    if not include_disabled:
        query = query.where(WebhookEndpoint.enabled.is_(True))
    return [_public(r) for r in conn.execute(query)]


def get_endpoint(conn: Connection, endpoint_id: str) -> dict[str, Any] | None:
    row = conn.execute(select(*_COLUMNS).where(WebhookEndpoint.id == endpoint_id)).first()
    return None if row is None else _public(row)


def rotate_secret(
    conn: Connection, audit: AuditBatch, *, endpoint_id: str, actor: Actor, box: SecretBox, overlap_seconds: float,
    now: datetime | None = None,
) -> Registered:
    """Give an enabled endpoint a new secret, active at once; the current one keeps signing next
    to it for ``overlap_seconds`` (0: it stops at once). The result carries the new secret,
    shown once. Raises ``NotFound`` or ``Conflict(code="endpoint_disabled")``.

    One UPDATE moves the current (sealed) secret into ``previous_secret`` (``SET`` reads the
    row's old values), so two concurrent rotations serialize on the row and the last one's
    previous secret is the first one's new secret, never a lost update. A secret that was still
    in its overlap from an earlier rotation stops signing: two signatures at most."""
    if overlap_seconds < 0:
        raise ValueError("the rotation overlap cannot be negative")
    now = now or datetime.now(UTC)
    secret = new_secret()
    until = now + timedelta(seconds=overlap_seconds) if overlap_seconds > 0 else None
    changed = conn.execute(
        update(WebhookEndpoint)
        .where(WebhookEndpoint.id == endpoint_id, WebhookEndpoint.enabled.is_(True))
        .values(secret=box.seal(endpoint_id, secret),
                previous_secret=WebhookEndpoint.secret if until is not None else None,
                previous_secret_expires_at=until, rotated_at=now)
    ).rowcount == 1
    if not changed:
        if get_endpoint(conn, endpoint_id) is None:
            raise NotFound(f"no webhook endpoint {endpoint_id}")
        raise Conflict(f"webhook endpoint {endpoint_id} is disabled; register a new one instead",
                       code="endpoint_disabled")
    audit.add("webhook.rotated", actor,
              {"endpoint_id": endpoint_id, "previous_secret_expires_at": rfc3339(until)})
    endpoint = get_endpoint(conn, endpoint_id)
    assert endpoint is not None
    return Registered(endpoint, secret)


def disable_endpoint(
    conn: Connection, audit: AuditBatch, *, endpoint_id: str, actor: Actor, reason: str = "disabled by an admin",
    now: datetime | None = None,
) -> dict[str, Any]:
    """Disable an endpoint and end its undelivered messages. Raises ``NotFound`` or
    ``Conflict(code="already_disabled")``; writes only when it changes something. The reason
    is kept on the endpoint (listings show why it stopped) and in the audit event."""
    now = now or datetime.now(UTC)
    changed = conn.execute(
        update(WebhookEndpoint)
        .where(WebhookEndpoint.id == endpoint_id, WebhookEndpoint.enabled.is_(True))
        .values(enabled=False, disabled_at=now, disabled_reason=reason)
    ).rowcount == 1
    if not changed:
        if get_endpoint(conn, endpoint_id) is None:
            raise NotFound(f"no webhook endpoint {endpoint_id}")
        raise Conflict(f"webhook endpoint {endpoint_id} is already disabled", code="already_disabled")
    audit.add("webhook.disabled", actor, {"endpoint_id": endpoint_id, "reason": reason})
    cancel_pending(conn, audit, endpoint_id=endpoint_id, reason=f"endpoint disabled: {reason}")
    endpoint = get_endpoint(conn, endpoint_id)
    assert endpoint is not None
    return endpoint


def cancel_pending(conn: Connection, audit: AuditBatch, *, endpoint_id: str, reason: str) -> list[str]:
    """End every undelivered message of an endpoint as ``failed`` (one ``webhook.failed`` each)."""
    t = WebhookOutbox
    rows = conn.execute(
        update(t).where(t.endpoint_id == endpoint_id, t.status == "pending")
        .values(status="failed", last_error=reason)
        .returning(t.id, t.call_id, t.attempts)
    ).all()
    for row in rows:
        audit.add("webhook.failed", SYSTEM,
                  {"message_id": row.id, "endpoint_id": endpoint_id, "attempts": row.attempts, "reason": reason},
                  row.call_id)
    return [r.id for r in rows]

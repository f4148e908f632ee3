"""Authenticate API keys against the database (no positive cache: revocation is immediate)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, select, update

from gateway.errors import Forbidden, Unauthorized
from gateway.keys import ParsedKey, Principal, check_stored_key
from gateway.models import ApiKey

LAST_USED_GRANULARITY = timedelta(minutes=1)


def authenticate(conn: Connection, parsed: ParsedKey | None, *, pepper: bytes, touch: bool = True) -> Principal:
    """The key's principal, or ``Unauthorized``. ``touch`` records use at most once a minute."""
    if parsed is None:
        raise Unauthorized("missing or malformed API key", code="invalid_api_key")
    row = conn.execute(
        select(
            ApiKey.kind, ApiKey.agent, ApiKey.secret_sha256, ApiKey.expires_at, ApiKey.revoked_at, ApiKey.last_used_at
        ).where(ApiKey.key_id == parsed.key_id)
    ).first()
    now = datetime.now(UTC)
    principal = check_stored_key(parsed, tuple(row[:5]) if row else None, pepper=pepper, now=now)  # type: ignore[arg-type]
    if principal is None:
        raise Unauthorized("unknown, revoked or expired API key", code="invalid_api_key")
    last_used = row[5] if row else None
    if touch and (last_used is None or _aware(last_used) < now - LAST_USED_GRANULARITY):
        conn.execute(update(ApiKey).where(ApiKey.key_id == parsed.key_id).values(last_used_at=now))
    return principal


def authenticate_many(
    conn: Connection, keys: Sequence[ParsedKey | None], *, pepper: bytes
) -> list[Principal | Unauthorized]:
    """``authenticate`` for a whole group commit: one SELECT and at most one UPDATE for all keys.

    Each entry is the key's principal or the ``Unauthorized`` to answer; the checks per key are
    exactly those of ``authenticate`` (same constant-time comparison, same expiry and revocation).
    """
    key_ids = sorted({k.key_id for k in keys if k is not None})
    rows = {}
    if key_ids:
        rows = {
            r[0]: r[1:]
            for r in conn.execute(
                select(ApiKey.key_id, ApiKey.kind, ApiKey.agent, ApiKey.secret_sha256, ApiKey.expires_at,
                       ApiKey.revoked_at, ApiKey.last_used_at).where(ApiKey.key_id.in_(key_ids))
            )
        }
    now = datetime.now(UTC)
    results: list[Principal | Unauthorized] = []
    stale: set[str] = set()
    for parsed in keys:
        if parsed is None:
            results.append(Unauthorized("missing or malformed API key", code="invalid_api_key"))
            continue
        row = rows.get(parsed.key_id)
        principal = check_stored_key(parsed, tuple(row[:5]) if row else None, pepper=pepper, now=now)  # type: ignore[arg-type]
        if principal is None:
            results.append(Unauthorized("unknown, revoked or expired API key", code="invalid_api_key"))
            continue
        if row is not None and (row[5] is None or _aware(row[5]) < now - LAST_USED_GRANULARITY):
            stale.add(parsed.key_id)
        results.append(principal)
    if stale:
        conn.execute(update(ApiKey).where(ApiKey.key_id.in_(sorted(stale))).values(last_used_at=now))
    return results


def require_agent(principal: Principal) -> str:
    """Only agent keys submit and read tool calls; admin keys manage, they never act as agents."""
    if principal.kind != "agent" or principal.agent is None:
        raise Forbidden("this operation needs an agent API key", code="agent_key_required")
    return principal.agent


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)

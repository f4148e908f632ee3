"""Authenticate API keys against the database (no positive cache: revocation is immediate)."""

from __future__ import annotations

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


def require_agent(principal: Principal) -> str:
    """Only agent keys submit and read tool calls; admin keys manage, they never act as agents."""
    if principal.kind != "agent" or principal.agent is None:
        raise Forbidden("this operation needs an agent API key", code="agent_key_required")
    return principal.agent


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)

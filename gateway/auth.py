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
    result = authenticate_many(conn, [parsed], pepper=pepper, touch=touch)[0]
    if isinstance(result, Unauthorized):
        raise result
    return result


def authenticate_many(
    conn: Connection, keys: Sequence[ParsedKey | None], *, pepper: bytes, touch: bool = True
) -> list[Principal | Unauthorized]:
    """Authenticate every key of a group commit with one SELECT and at most one UPDATE.

    Each entry is the key's principal or the ``Unauthorized`` to answer. No positive cache:
    revocation is effective on the next request. ``touch`` records use at most once a minute.
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
        if touch and row is not None and (row[5] is None or _aware(row[5]) < now - LAST_USED_GRANULARITY):
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

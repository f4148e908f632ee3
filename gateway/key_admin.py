"""Creating, listing and revoking API keys (the CLI's ``callgate keys``). Every change is audited
with the key id only; the key itself is returned once and never stored."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, insert, select, update

from gateway.audit import Actor, append_events
from gateway.errors import NotFound, Unprocessable
from gateway.keys import KeyKind, key_digest, new_key
from gateway.models import ApiKey


@dataclass(frozen=True, slots=True)
class CreatedKey:
    key: str
    key_id: str
    kind: KeyKind
    agent: str | None


def create_key(conn: Connection, *, kind: KeyKind, agent: str | None, name: str, pepper: bytes, actor: Actor) -> CreatedKey:
    if kind == "agent" and not agent:
        raise Unprocessable("an agent key needs --agent NAME", code="agent_required")
    if agent is not None and not (1 <= len(agent) <= 128 and all(0x21 <= ord(c) <= 0x7E for c in agent)):
        raise Unprocessable("agent names are 1–128 printable ASCII characters without spaces", code="invalid_agent")
    key, key_id = new_key(kind)
    conn.execute(
        insert(ApiKey).values(
            key_id=key_id, kind=kind, agent=agent if kind == "agent" else None, name=name or key_id,
            secret_sha256=key_digest(key, pepper), created_at=datetime.now(UTC),
        )
    )
    append_events(conn, [("api_key.created", actor, {"key_id": key_id, "kind": kind, "agent": agent, "name": name}, None)])
    return CreatedKey(key, key_id, kind, agent if kind == "agent" else None)


def list_keys(conn: Connection) -> list[dict[str, object]]:
    rows = conn.execute(
        select(ApiKey.key_id, ApiKey.kind, ApiKey.agent, ApiKey.name, ApiKey.created_at, ApiKey.last_used_at,
               ApiKey.revoked_at).order_by(ApiKey.id)
    ).mappings()
    return [dict(r) for r in rows]


def revoke_key(conn: Connection, *, key_id: str, actor: Actor) -> None:
    result = conn.execute(
        update(ApiKey).where(ApiKey.key_id == key_id, ApiKey.revoked_at.is_(None)).values(revoked_at=datetime.now(UTC))
    )
    if result.rowcount != 1:
        raise NotFound(f"no active key {key_id}")
    append_events(conn, [("api_key.revoked", actor, {"key_id": key_id}, None)])

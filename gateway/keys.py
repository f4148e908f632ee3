"""API keys: format, generation and verification (security.md §3.1–§3.4).

``cg_agent_<key_id:12 hex>_<secret:43 base62><crc32:6 base62>``. The checksum lets a malformed
or mistyped key be refused without touching the database, and lets secret scanners recognise
our keys offline. Only a peppered SHA-256 of the whole key is stored; comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import zlib
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
KEY_RE = re.compile(r"cg_(agent|admin)_([0-9a-f]{12})_([0-9A-Za-z]{43})([0-9A-Za-z]{6})")
MAX_KEY_LENGTH = 128
KeyKind = Literal["agent", "admin"]
_DUMMY_DIGEST = b"\x00" * 32


def _b62(n: int, width: int) -> str:
    out = []
    for _ in range(width):
        n, r = divmod(n, 62)
        out.append(ALPHABET[r])
    return "".join(reversed(out))


def new_key(kind: KeyKind) -> tuple[str, str]:
    """Return ``(key, key_id)``; the key is shown once and never stored."""
    key_id = secrets.token_hex(6)
    secret = "".join(secrets.choice(ALPHABET) for _ in range(43))  # ≈ 256 bits
    body = f"cg_{kind}_{key_id}_{secret}"
    return body + _b62(zlib.crc32(body.encode()), 6), key_id


@dataclass(frozen=True, slots=True)
class ParsedKey:
    kind: KeyKind
    key_id: str
    key: str


def parse_key(presented: str) -> ParsedKey | None:
    """Shape and checksum check, no database access; ``None`` for anything malformed."""
    if len(presented) > MAX_KEY_LENGTH:
        return None
    m = KEY_RE.fullmatch(presented)
    if m is None or _b62(zlib.crc32(presented[:-6].encode()), 6) != m.group(4):
        return None
    return ParsedKey(m.group(1), m.group(2), presented)  # type: ignore[arg-type]


def key_digest(key: str, pepper: bytes) -> bytes:
    """HMAC-SHA256 with the server secret: a database-only leak cannot even confirm a guess."""
    return hmac.new(pepper, key.encode(), hashlib.sha256).digest()


def parse_bearer(header: str | None) -> ParsedKey | None:
    if not header or len(header) > MAX_KEY_LENGTH + 16:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return parse_key(token.strip())


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated API caller. ``agent`` is set for agent keys and stamps every call."""

    key_id: str
    kind: KeyKind
    agent: str | None


def check_stored_key(
    parsed: ParsedKey | None,
    row: tuple[str, str | None, bytes, datetime | None, datetime | None] | None,
    *,
    pepper: bytes,
    now: datetime,
) -> Principal | None:
    """Verify a presented key against its row ``(kind, agent, digest, expires_at, revoked_at)``.

    Always computes and compares a digest, even for an unknown key, so timing does not tell
    a wrong secret from an unknown key id.
    """
    presented = key_digest(parsed.key, pepper) if parsed else _DUMMY_DIGEST
    stored = bytes(row[2]) if row else _DUMMY_DIGEST
    matches = hmac.compare_digest(presented, stored)
    if parsed is None or row is None or not matches:
        return None
    kind, agent, _digest, expires_at, revoked_at = row
    if revoked_at is not None:
        return None
    if expires_at is not None and _aware(expires_at) <= now:
        return None
    if kind != parsed.kind:
        return None
    return Principal(parsed.key_id, parsed.kind, agent)


def _aware(value: datetime) -> datetime:
    from datetime import UTC

    return value if value.tzinfo else value.replace(tzinfo=UTC)

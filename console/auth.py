"""Console login, passwords and server-side sessions (security.md §3.5, §3.6, §3.8).

* Passwords are argon2id (``gateway.users.password_hasher``). A verify costs ~260 ms and 64 MiB,
  so it runs in a worker thread behind a semaphore of ``max(1, cpus // 2)``. An unknown or
  deactivated user is verified against a fixed dummy hash: same work, same answer.
* A session is a random 256-bit token in the ``__Host-callgate_session`` cookie
  (``Path=/; Secure; HttpOnly; SameSite=Lax``); the database keeps only its SHA-256, with the
  user, the CSRF token, and the idle (30 min) and absolute (12 h) deadlines. Login always mints
  a new token (and deletes the one the browser came with), logout deletes the row.
* Chromium and Firefox treat ``http://127.0.0.1`` and ``http://localhost`` as secure contexts and
  accept ``Secure``/``__Host-`` cookies there (verified with Debian's Chromium 156 in
  ``tests/console/test_console_browser.py``), so the same cookie works for a local plain-HTTP
  gateway; any other plain-HTTP origin must sit behind TLS.
* Every write (session rows, rehashed passwords, ``auth.*`` audit events) goes through the group
  commit, like every other state change of the gateway.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection, delete, insert, or_, select, update

from gateway.audit import Actor, AuditBatch
from gateway.approvals import DECIDER_ROLES
from gateway.errors import Unprocessable
from gateway.models import ConsoleSession, User
from gateway.users import password_hasher, normalize_password

from console.ratelimit import normalize_username

SESSION_COOKIE = "__Host-callgate_session"
PRELOGIN_COOKIE = "__Host-callgate_prelogin"
IDLE_TIMEOUT = timedelta(minutes=30)
ABSOLUTE_LIFETIME = timedelta(hours=12)
TOUCH_GRANULARITY = timedelta(seconds=60)  # idle deadline is pushed at most once a minute
MAX_FIELD = 1024  # longest username/password we even look at (passwords are 12-256 chars)
ANONYMOUS = Actor("anonymous", "console")


@dataclass(frozen=True, slots=True)
class ConsoleUser:
    id: int
    username: str
    role: str

    @property
    def can_decide(self) -> bool:
        return self.role in DECIDER_ROLES

    @property
    def actor(self) -> Actor:
        return Actor("user", self.username)


@dataclass(frozen=True, slots=True)
class Session:
    token_sha256: bytes
    user: ConsoleUser
    csrf_token: str
    last_seen_at: datetime
    idle_expires_at: datetime
    absolute_expires_at: datetime


def token_sha256(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def new_token() -> str:
    """256 random bits, 43 URL-safe characters (cookie-safe without quoting)."""
    return secrets.token_urlsafe(32)


def aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# -- cookies ---------------------------------------------------------------------------------

COOKIE_ATTRIBUTES = "Path=/; Secure; HttpOnly; SameSite=Lax"


def session_cookie(token: str) -> str:
    """The ``Set-Cookie`` value: a browser-session cookie; the server enforces the lifetimes."""
    return f"{SESSION_COOKIE}={token}; {COOKIE_ATTRIBUTES}"


def cleared_session_cookie() -> str:
    return f"{SESSION_COOKIE}=; Max-Age=0; {COOKIE_ATTRIBUTES}"


def prelogin_cookie(nonce: str) -> str:
    # Strict: only our own login page ever posts it back.
    return f"{PRELOGIN_COOKIE}={nonce}; Max-Age=7200; Path=/; Secure; HttpOnly; SameSite=Strict"


def cleared_prelogin_cookie() -> str:
    return f"{PRELOGIN_COOKIE}=; Max-Age=0; Path=/; Secure; HttpOnly; SameSite=Strict"


def prelogin_token(secret: bytes, nonce: str) -> str:
    """The login form's CSRF token: a signed double submit of the pre-login cookie's nonce."""
    return hmac.new(secret, b"callgate-prelogin:" + nonce.encode(), hashlib.sha256).hexdigest()


NONCE_RE = re.compile(r"[A-Za-z0-9_-]{43}")


def valid_nonce(nonce: str | None) -> bool:
    return nonce is not None and NONCE_RE.fullmatch(nonce) is not None


# -- passwords -------------------------------------------------------------------------------


@lru_cache(maxsize=2)
def dummy_hash(env: str) -> str:
    """A hash nobody knows the password of; unknown users are verified against it."""
    return password_hasher(env).hash(secrets.token_urlsafe(24))


@dataclass(frozen=True, slots=True)
class Verified:
    user: ConsoleUser
    rehash: str | None  # a new hash to store when the parameters changed


def find_user(conn: Connection, username: str) -> dict[str, Any] | None:
    if not username or len(username) > 128:
        return None
    row = conn.execute(
        select(User.id, User.username, User.role, User.active, User.password_hash).where(User.username == username)
    ).mappings().first()
    return dict(row) if row else None


def verify_password(env: str, row: dict[str, Any] | None, password: str) -> Verified | None:
    """Blocking argon2 work: call it in a thread. Same cost whether or not the user exists."""
    hasher = password_hasher(env)
    try:
        candidate = normalize_password(password)
    except Unprocessable:
        candidate = None  # outside the password policy: cannot match, but do the same work
    usable = row is not None and bool(row["active"]) and candidate is not None
    stored = row["password_hash"] if usable else dummy_hash(env)  # type: ignore[index]
    try:
        ok = hasher.verify(stored, candidate or password)
    except (VerificationError, InvalidHashError):
        ok = False
    if not (ok and usable):
        return None
    assert row is not None
    rehash = hasher.hash(candidate) if hasher.check_needs_rehash(stored) else None  # type: ignore[arg-type]
    return Verified(ConsoleUser(int(row["id"]), str(row["username"]), str(row["role"])), rehash)


def username_digest(secret: bytes, username: str) -> str:
    """What the audit log records about a failed username: keyed, so it cannot be brute-forced offline."""
    return hmac.new(secret, normalize_username(username).encode(), hashlib.sha256).hexdigest()


# -- sessions (units of work for the group commit, and reads) -------------------------------


def start_session(
    *, verified: Verified, token: str, csrf_token: str, now: datetime, ip: str | None, user_agent: str | None,
    replaces: bytes | None,
) -> Callable[[Connection, AuditBatch], None]:
    def work(conn: Connection, audit: AuditBatch) -> None:
        # Housekeeping: drop every session that can no longer be used (cheap; the table is small).
        conn.execute(delete(ConsoleSession).where(
            or_(ConsoleSession.idle_expires_at <= now, ConsoleSession.absolute_expires_at <= now)))
        if replaces is not None:  # rotate: the token the browser arrived with dies here
            conn.execute(delete(ConsoleSession).where(ConsoleSession.token_sha256 == replaces))
        if verified.rehash is not None:
            conn.execute(update(User).where(User.id == verified.user.id).values(password_hash=verified.rehash))
        conn.execute(insert(ConsoleSession).values(
            token_sha256=token_sha256(token), user_id=verified.user.id, csrf_token=csrf_token, created_at=now,
            last_seen_at=now, idle_expires_at=now + IDLE_TIMEOUT, absolute_expires_at=now + ABSOLUTE_LIFETIME,
            ip=(ip or "")[:64] or None, user_agent=(user_agent or "")[:256] or None,
        ))
        audit.add("auth.login_succeeded", verified.user.actor, {"user_id": verified.user.id, "ip": ip})

    return work


def record_failed_login(*, digest: str, ip: str | None) -> Callable[[Connection, AuditBatch], None]:
    def work(conn: Connection, audit: AuditBatch) -> None:
        audit.add("auth.login_failed", ANONYMOUS, {"username_hmac": digest, "ip": ip})

    return work


def end_session(session: Session) -> Callable[[Connection, AuditBatch], None]:
    def work(conn: Connection, audit: AuditBatch) -> None:
        deleted = conn.execute(delete(ConsoleSession).where(ConsoleSession.token_sha256 == session.token_sha256))
        if deleted.rowcount:
            audit.add("auth.logout", session.user.actor, {"user_id": session.user.id})

    return work


def touch_session(session: Session, now: datetime) -> Callable[[Connection, AuditBatch], None]:
    idle = min(now + IDLE_TIMEOUT, session.absolute_expires_at)

    def work(conn: Connection, audit: AuditBatch) -> None:
        conn.execute(update(ConsoleSession).where(ConsoleSession.token_sha256 == session.token_sha256)
                     .values(last_seen_at=now, idle_expires_at=idle))

    return work


def needs_touch(session: Session, now: datetime) -> bool:
    return now - session.last_seen_at >= TOUCH_GRANULARITY


def load_session(conn: Connection, token: str | None, now: datetime) -> Session | None:
    """The live session for a cookie value, or None (unknown, expired, or its user deactivated)."""
    if not token or len(token) > 128:
        return None
    digest = token_sha256(token)
    row = conn.execute(
        select(ConsoleSession.csrf_token, ConsoleSession.last_seen_at, ConsoleSession.idle_expires_at,
               ConsoleSession.absolute_expires_at, User.id, User.username, User.role, User.active)
        .join(User, User.id == ConsoleSession.user_id)
        .where(ConsoleSession.token_sha256 == digest)
    ).first()
    if row is None or not row.active:
        return None
    idle, absolute = aware(row.idle_expires_at), aware(row.absolute_expires_at)
    if now >= idle or now >= absolute:
        return None
    return Session(digest, ConsoleUser(int(row.id), row.username, row.role), row.csrf_token,
                   aware(row.last_seen_at), idle, absolute)

"""Console users and their passwords (argon2id; security.md §3.5)."""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime
from functools import lru_cache

from argon2 import PasswordHasher, profiles
from sqlalchemy import Connection, insert, select

from gateway.audit import Actor, append_events
from gateway.errors import Conflict, Unprocessable
from gateway.models import User

ROLES = ("admin", "reviewer", "viewer")
MIN_PASSWORD, MAX_PASSWORD = 12, 256


@lru_cache(maxsize=2)
def password_hasher(env: str) -> PasswordHasher:
    """RFC 9106 low-memory defaults; the cheapest profile only for the test suite."""
    if env == "test":
        return PasswordHasher.from_parameters(profiles.CHEAPEST)
    return PasswordHasher()


def normalize_password(password: str) -> str:
    password = unicodedata.normalize("NFKC", password)
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise Unprocessable(f"password must be {MIN_PASSWORD}–{MAX_PASSWORD} characters", code="weak_password")
    return password


def create_user(conn: Connection, *, username: str, password: str, role: str, env: str, actor: Actor) -> int:
    if role not in ROLES:
        raise Unprocessable(f"role must be one of {', '.join(ROLES)}", code="invalid_role")
    if not username or len(username) > 128 or not username.isprintable():
        raise Unprocessable("username must be 1–128 printable characters", code="invalid_username")
    if conn.execute(select(User.id).where(User.username == username)).first():
        raise Conflict(f"user {username!r} already exists", code="user_exists")
    digest = password_hasher(env).hash(normalize_password(password))
    user_id = conn.execute(
        insert(User).values(username=username, password_hash=digest, role=role, active=True,
                            created_at=datetime.now(UTC)).returning(User.id)
    ).scalar_one()
    append_events(conn, [("user.created", actor, {"user_id": int(user_id), "username": username, "role": role}, None)])
    return int(user_id)

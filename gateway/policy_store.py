"""Load policy files, compile them once, and register each distinct policy as a numbered version.

Every decision records the version it used. A version row is created the first time a digest
is seen (by whichever gateway worker gets there first) together with a ``policy.changed`` audit
event, so the audit log shows exactly which rules were in force for every call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Connection, insert, select
from sqlalchemy.exc import IntegrityError

import policies
from gateway.audit import SYSTEM, Actor, append_events
from gateway.models import PolicyVersion

POLICY_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True, slots=True)
class ActivePolicy:
    version: int
    compiled: policies.CompiledPolicy


def read_sources(path: Path | None) -> list[tuple[str, str]]:
    """``(name, text)`` for a YAML file, or every YAML file of a folder in name order."""
    if path is None:
        return []
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in POLICY_SUFFIXES and p.is_file())
        return [(str(p), p.read_text(encoding="utf-8")) for p in files]
    if not path.exists():
        raise FileNotFoundError(f"policy path does not exist: {path}")
    return [(str(path), path.read_text(encoding="utf-8"))]


def compile_sources(sources: list[tuple[str, str]]) -> policies.CompiledPolicy:
    """Parse, validate and compile; raises ``policies.PolicyValidationError`` naming file/path/line."""
    return policies.compile_policy(policies.load_policy_sources(sources))


def register(conn: Connection, compiled: policies.CompiledPolicy, sources: list[tuple[str, str]],
             *, actor: Actor = SYSTEM) -> int:
    """The version number for this policy's digest, creating it (and its audit event) if new."""
    existing = conn.execute(select(PolicyVersion.version).where(PolicyVersion.digest == compiled.digest)).scalar()
    if existing is not None:
        return int(existing)
    payload = json.dumps([{"source": name, "text": text} for name, text in sources], ensure_ascii=False)
    try:
        with conn.begin_nested():
            version = conn.execute(
                insert(PolicyVersion)
                .values(digest=compiled.digest, sources=payload, created_at=datetime.now(UTC))
                .returning(PolicyVersion.version)
            ).scalar_one()
    except IntegrityError:  # another worker registered the same digest concurrently
        return int(conn.execute(select(PolicyVersion.version).where(PolicyVersion.digest == compiled.digest)).scalar_one())
    append_events(
        conn,
        [("policy.changed", actor, {"version": int(version), "digest": compiled.digest,
                                   "sources": [name for name, _ in sources]}, None)],
    )
    return int(version)


def load_active(conn: Connection, path: Path | None) -> ActivePolicy:
    sources = read_sources(path)
    compiled = compile_sources(sources)
    return ActivePolicy(register(conn, compiled, sources), compiled)

"""The append-only, hash-chained audit log (security.md §4).

Every event is an RFC 8785 canonical JSON record whose hash covers the previous row's hash:
``row_hash = sha256(prev_hash || canonical)``. Events are buffered by a transaction's work and
chained in one go just before commit (``AuditBatch.flush``), under the chain lock
(``pg_advisory_xact_lock`` on PostgreSQL, the ``BEGIN IMMEDIATE`` write lock on SQLite), so the
lock is held for one head read and one multi-row insert, not for the whole request.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import rfc8785
from sqlalchemy import Connection, insert, select, text

from callgate.ids import uuid7
from gateway.models import AuditEvent

GENESIS_HASH = b"\x00" * 32
RECORD_VERSION = 1
AUDIT_LOCK_KEY = 0x7463_675F_6175_6469  # any constant bigint; "tcg_audi"
_PG_LOCKED_HEAD = text("SELECT head_seq, head_hash FROM audit_chain_head(:k)")


def utc_now_rfc3339() -> str:
    """RFC 3339 UTC with microseconds, the only timestamp format inside audit records."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class Actor:
    """Who caused an event: an agent key, a console user, a CLI operator or the system."""

    type: str
    id: str

    def as_dict(self) -> dict[str, str]:
        return {"type": self.type, "id": self.id}


SYSTEM = Actor("system", "callgate")


@dataclass(slots=True)
class PendingEvent:
    event_type: str
    actor: Actor
    data: dict[str, Any]
    tool_call_id: str | None


@dataclass(slots=True)
class AuditBatch:
    """Events gathered during one transaction, chained and inserted by ``flush``."""

    events: list[PendingEvent] = field(default_factory=list)

    def add(self, event_type: str, actor: Actor, data: dict[str, Any], tool_call_id: str | None = None) -> None:
        self.events.append(PendingEvent(event_type, actor, data, tool_call_id))

    def mark(self) -> int:
        return len(self.events)

    def rollback_to(self, mark: int) -> None:
        del self.events[mark:]

    def flush(self, conn: Connection) -> int:
        """Chain and insert every buffered event inside ``conn``'s transaction; returns the count."""
        if not self.events:
            return 0
        if conn.dialect.name == "postgresql":
            # Lock, then read the head with a fresh READ COMMITTED snapshot, in one round trip
            # (migration 0003): the head includes every append committed before the lock.
            head = conn.execute(_PG_LOCKED_HEAD, {"k": AUDIT_LOCK_KEY}).first()
        else:  # SQLite: BEGIN IMMEDIATE already holds the database's write lock
            head = conn.execute(
                select(AuditEvent.seq, AuditEvent.row_hash).order_by(AuditEvent.seq.desc()).limit(1)
            ).first()
        seq, prev = (head[0], bytes(head[1])) if head else (0, GENESIS_HASH)
        rows = []
        recorded_at = utc_now_rfc3339()
        for event in self.events:
            seq += 1
            event_id = uuid7()
            record = {
                "v": RECORD_VERSION,
                "seq": seq,
                "event_id": event_id,
                "recorded_at": recorded_at,
                "event_type": event.event_type,
                "actor": event.actor.as_dict(),
                "tool_call_id": event.tool_call_id,
                "data": event.data,
            }
            canonical = rfc8785.dumps(record)
            row_hash = hashlib.sha256(prev + canonical).digest()
            rows.append(
                {
                    "seq": seq,
                    "event_id": event_id,
                    "recorded_at": recorded_at,
                    "event_type": event.event_type,
                    "tool_call_id": event.tool_call_id,
                    "canonical": canonical.decode(),
                    "prev_hash": prev,
                    "row_hash": row_hash,
                }
            )
            prev = row_hash
        conn.execute(insert(AuditEvent), rows)
        count = len(rows)
        self.events.clear()
        return count


def append_events(conn: Connection, events: Iterable[tuple[str, Actor, dict[str, Any], str | None]]) -> int:
    """Append events in the caller's transaction (administrative paths: CLI, bootstrap)."""
    batch = AuditBatch()
    for event_type, actor, data, tool_call_id in events:
        batch.add(event_type, actor, data, tool_call_id)
    return batch.flush(conn)


# ---------------------------------------------------------------------------------------------
# Verification


@dataclass(frozen=True, slots=True)
class ChainRow:
    seq: int
    event_id: str
    event_type: str
    tool_call_id: str | None
    canonical: str
    prev_hash: bytes
    row_hash: bytes


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    events: int
    head_seq: int
    head_hash: str
    first_bad_seq: int | None = None
    reason: str | None = None
    detail: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


_I_JSON_MAX = 2**53 - 1


class _CanonicalCheck:
    """Is a stored text exactly RFC 8785 canonical? Fast path first, exact check as fallback.

    For ASCII text with no floats, no NaN/Infinity and no integers beyond I-JSON, RFC 8785 output
    is byte-identical to the C encoder's ``json.dumps(sort_keys=True, separators=(",", ":"))``
    (same escapes; code-point key order equals UTF-16 order for ASCII). Only such texts take the
    fast path, and it can only answer "canonical" when ``rfc8785`` would; anything else is decided
    by ``rfc8785`` itself. This is what makes ``audit verify`` ~3x faster (P7).
    """

    def __init__(self) -> None:
        self._unusual = False
        self._decode = json.JSONDecoder(
            parse_float=self._flag_float, parse_int=self._check_int, parse_constant=self._flag_float
        ).decode
        self._encode = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode

    def _flag_float(self, text: str) -> float:
        self._unusual = True
        return float(text)

    def _check_int(self, text: str) -> int:
        value = int(text)
        if not -_I_JSON_MAX <= value <= _I_JSON_MAX:
            self._unusual = True
        return value

    def record(self, text: str) -> dict[str, Any]:
        """The parsed record; raises ``ValueError`` when the text is not canonical."""
        self._unusual = False
        record = self._decode(text)
        if not self._unusual and text.isascii() and self._encode(record) == text:
            return record  # type: ignore[no-any-return]
        return exact_canonical_record(text)


def exact_canonical_record(text: str) -> dict[str, Any]:
    """The parsed record if ``text`` is exactly what rfc8785 makes of it, else ``ValueError``.
    The reference the fast path must agree with (bench/p7_verify.py measures both)."""
    try:
        record = json.loads(text)
        exact = rfc8785.dumps(record).decode()
    except rfc8785.CanonicalizationError as exc:
        raise ValueError(str(exc)) from exc
    if exact != text:
        raise ValueError("stored text is not in RFC 8785 canonical form")
    if not isinstance(record, dict):
        raise ValueError("stored record is not a JSON object")
    return record


def verify_rows(
    rows: Iterable[ChainRow], *, start_seq: int = 1, trusted_hash: bytes = GENESIS_HASH,
    canonical_record: Callable[[str], dict[str, Any]] | None = None,
) -> VerifyResult:
    """Check contiguity, linkage, hashes and canonical form of a chain in seq order (§4.7).

    ``canonical_record`` parses a stored text, raising ``ValueError`` unless it is canonical;
    the default is the fast check, ``exact_canonical_record`` the all-rfc8785 reference."""
    expected_seq = start_seq
    prev = trusted_hash
    count = 0
    sha256 = hashlib.sha256
    canonical_record = canonical_record or _CanonicalCheck().record

    def bad(seq: int, reason: str, detail: str) -> VerifyResult:
        return VerifyResult(False, count, expected_seq - 1, prev.hex(), seq, reason, detail)

    for row in rows:
        if row.seq != expected_seq:
            return bad(expected_seq, "gap", f"expected seq {expected_seq}, found {row.seq}")
        if row.prev_hash != prev:
            return bad(row.seq, "prev_hash_mismatch", f"expected {prev.hex()}, stored {row.prev_hash.hex()}")
        actual = sha256(prev + row.canonical.encode()).digest()
        if actual != row.row_hash:
            return bad(row.seq, "row_hash_mismatch", f"computed {actual.hex()}, stored {row.row_hash.hex()}")
        try:
            record = canonical_record(row.canonical)
        except ValueError as exc:
            return bad(row.seq, "not_canonical", f"stored record is not canonical JSON: {exc}")
        if (
            record.get("seq") != row.seq
            or record.get("event_id") != row.event_id
            or record.get("event_type") != row.event_type
            or record.get("tool_call_id") != row.tool_call_id
        ):
            return bad(row.seq, "column_mismatch", "seq/event_id/event_type/tool_call_id differ from the record")
        prev = row.row_hash
        expected_seq += 1
        count += 1
    return VerifyResult(True, count, expected_seq - 1, prev.hex())


def stream_rows(conn: Connection, *, from_seq: int = 1, to_seq: int | None = None, batch: int = 5000) -> Iterator[ChainRow]:
    """Rows in seq order with a server-side cursor, so memory stays flat on any chain length."""
    query = select(
        AuditEvent.seq,
        AuditEvent.event_id,
        AuditEvent.event_type,
        AuditEvent.tool_call_id,
        AuditEvent.canonical,
        AuditEvent.prev_hash,
        AuditEvent.row_hash,
    ).where(AuditEvent.seq >= from_seq)
    if to_seq is not None:
        query = query.where(AuditEvent.seq <= to_seq)
    result = conn.execution_options(stream_results=True, yield_per=batch).execute(query.order_by(AuditEvent.seq))
    for r in result:
        yield ChainRow(r[0], r[1], r[2], r[3], r[4], bytes(r[5]), bytes(r[6]))


def export_line(row: ChainRow) -> str:
    """One JSONL line of ``callgate audit export``; ``rows_from_export`` reads it back."""
    return json.dumps(
        {"seq": row.seq, "prev_hash": row.prev_hash.hex(), "row_hash": row.row_hash.hex(), "canonical": row.canonical},
        ensure_ascii=False,
        separators=(",", ":"),
    )


def rows_from_export(lines: Iterable[str]) -> Iterator[ChainRow]:
    for line in lines:
        if not line.strip():
            continue
        item = json.loads(line)
        record = json.loads(item["canonical"])
        yield ChainRow(
            int(item["seq"]),
            str(record.get("event_id")),
            str(record.get("event_type")),
            record.get("tool_call_id"),
            item["canonical"],
            bytes.fromhex(item["prev_hash"]),
            bytes.fromhex(item["row_hash"]),
        )

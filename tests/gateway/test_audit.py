"""The audit log: append-only at the database level on both engines, and tamper-evident."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
from collections.abc import Iterator

import psycopg
import pytest
import rfc8785
import sqlalchemy as sa
from hypothesis import given, settings as hsettings, strategies as st
from sqlalchemy import Engine, select, text

from gateway.audit import GENESIS_HASH, SYSTEM, Actor, ChainRow, append_events, export_line, rows_from_export, stream_rows, verify_rows
from gateway.db import make_engine
from gateway.migrate import upgrade
from gateway.models import AuditEvent

from tests.pg import PG_ADMIN_DSN, PG_URL_PREFIX, throwaway_database


def seed(engine: Engine, n: int = 5) -> None:
    with engine.begin() as conn:
        append_events(conn, [("test.event", SYSTEM, {"i": i, "text": "héllo ✓"}, None) for i in range(n)])


def canonical_of(engine: Engine, seq: int) -> str:
    with engine.connect() as conn:
        return str(conn.execute(select(AuditEvent.canonical).where(AuditEvent.seq == seq)).scalar_one())


@pytest.fixture
def db(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url, writer=True)
    seed(engine)
    yield engine
    engine.dispose()


class TestChain:
    def test_appends_form_a_verifiable_chain(self, db: Engine) -> None:
        """Rows are contiguous from 1, link to their predecessor and hash their canonical text."""
        seed(db, 3)
        with db.connect() as conn:
            rows = list(stream_rows(conn))
        assert [r.seq for r in rows] == list(range(1, 9))
        assert rows[0].prev_hash == GENESIS_HASH
        assert all(b.prev_hash == a.row_hash for a, b in zip(rows, rows[1:]))
        assert rows[2].row_hash == hashlib.sha256(rows[2].prev_hash + rows[2].canonical.encode()).digest()
        assert rfc8785.dumps(json.loads(rows[0].canonical)).decode() == rows[0].canonical
        assert verify_rows(rows).ok

    def test_record_covers_seq_time_type_and_actor(self, db: Engine) -> None:
        """The hashed record includes seq, recorded_at, event type and actor, not just the data."""
        record = json.loads(canonical_of(db, 1))
        assert set(record) == {"v", "seq", "event_id", "recorded_at", "event_type", "actor", "tool_call_id", "data"}
        assert record["actor"] == {"type": "system", "id": "callgate"}

    def test_export_round_trips_through_verification(self, db: Engine) -> None:
        """An export file verifies offline exactly like the database."""
        with db.connect() as conn:
            lines = [export_line(r) for r in stream_rows(conn)]
        assert verify_rows(rows_from_export(lines)).ok
        tampered = lines[:]
        item = json.loads(tampered[2])
        item["canonical"] = item["canonical"].replace('"i":2', '"i":3')
        tampered[2] = json.dumps(item)
        result = verify_rows(rows_from_export(tampered))
        assert (result.ok, result.first_bad_seq, result.reason) == (False, 3, "row_hash_mismatch")


def _sqlite_raw(url: str) -> sa.Engine:
    return sa.create_engine(url)


class TestSqliteAppendOnly:
    @pytest.mark.parametrize(
        "statement",
        [
            "UPDATE audit_event SET event_type = 'x' WHERE seq = 1",
            "DELETE FROM audit_event WHERE seq = 1",
            "DELETE FROM audit_event",
            "INSERT OR REPLACE INTO audit_event SELECT * FROM audit_event WHERE seq = 1",
            "REPLACE INTO audit_event SELECT * FROM audit_event WHERE seq = 1",
            "INSERT INTO audit_event SELECT * FROM audit_event WHERE seq = 1 "
            "ON CONFLICT(seq) DO UPDATE SET canonical = 'x'",
        ],
    )
    def test_mutations_are_rejected(self, sqlite_database_url: str, statement: str) -> None:
        """UPDATE, DELETE, INSERT OR REPLACE, REPLACE and upserts all raise; seq 1 is byte-identical."""
        engine = make_engine(sqlite_database_url, writer=True)
        seed(engine)
        before = canonical_of(engine, 1)
        raw = _sqlite_raw(sqlite_database_url)  # a plain connection, without our pragmas
        with pytest.raises(sa.exc.IntegrityError, match="append-only"):
            with raw.begin() as conn:
                conn.execute(text(statement))
        assert canonical_of(engine, 1) == before
        raw.dispose()
        engine.dispose()


@pytest.mark.postgres
class TestPostgresAppendOnly:
    @pytest.mark.parametrize(
        "statement",
        [
            "UPDATE audit_event SET event_type = 'x' WHERE seq = 1",
            "DELETE FROM audit_event WHERE seq = 1",
            "TRUNCATE audit_event",
            "INSERT INTO audit_event SELECT * FROM audit_event WHERE seq = 1 ON CONFLICT (seq) DO UPDATE SET canonical = 'x'",
        ],
    )
    @pytest.mark.parametrize("replica", [False, True])
    def test_even_a_superuser_is_stopped_by_the_triggers(self, pg_database_url: str, statement: str, replica: bool) -> None:
        """The ENABLE ALWAYS triggers fire for the owner, also under session_replication_role=replica."""
        engine = make_engine(pg_database_url, writer=True)
        seed(engine)
        before = canonical_of(engine, 1)
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            with engine.begin() as conn:
                if replica:
                    conn.execute(text("SET LOCAL session_replication_role = replica"))
                conn.execute(text(statement))
        assert canonical_of(engine, 1) == before
        engine.dispose()

    def test_the_app_role_lacks_the_privileges(self) -> None:
        """Migrated with CALLGATE_DB_APP_ROLE, the runtime role may only SELECT and INSERT the log."""
        role = f"cg_app_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'CREATE ROLE "{role}" LOGIN')
        try:
            with throwaway_database("cg_role") as db_name:
                upgrade(PG_URL_PREFIX + db_name, app_role=role)
                owner = make_engine(PG_URL_PREFIX + db_name, writer=True)
                seed(owner)
                owner.dispose()
                app_dsn = PG_ADMIN_DSN.replace("user=postgres", f"user={role}").replace("dbname=postgres", f"dbname={db_name}")
                with psycopg.connect(app_dsn, autocommit=True) as conn:
                    assert conn.execute("SELECT count(*) FROM audit_event").fetchone() == (5,)
                    for statement in (
                        "UPDATE audit_event SET event_type = 'x'",
                        "DELETE FROM audit_event",
                        "TRUNCATE audit_event",
                        "INSERT INTO audit_event SELECT * FROM audit_event WHERE seq = 1 "
                        "ON CONFLICT (seq) DO UPDATE SET canonical = 'x'",
                    ):
                        with pytest.raises(psycopg.errors.InsufficientPrivilege):
                            conn.execute(statement)
                    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="must be owner"):
                        conn.execute("ALTER TABLE audit_event DISABLE TRIGGER ALL")
        finally:  # the database (and with it every grant to the role) is gone by now
            with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
                admin.execute(f'DROP ROLE IF EXISTS "{role}"')


class TestTamperDetection:
    def _drop_guards(self, engine: Engine) -> None:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("ALTER TABLE audit_event DISABLE TRIGGER ALL"))
            else:
                for name in ("audit_event_no_update", "audit_event_no_delete", "audit_event_no_overwrite"):
                    conn.execute(text(f"DROP TRIGGER {name}"))

    def test_a_changed_row_is_named(self, db: Engine) -> None:
        """Rewriting one event's data behind the gateway's back is caught at that seq."""
        self._drop_guards(db)
        with db.begin() as conn:
            conn.execute(
                text("UPDATE audit_event SET canonical = replace(canonical, :old, :new) WHERE seq = 3"),
                {"old": '"i":2', "new": '"i":7'},
            )
        with db.connect() as conn:
            result = verify_rows(stream_rows(conn))
        assert (result.ok, result.first_bad_seq, result.reason) == (False, 3, "row_hash_mismatch")

    def test_a_deleted_row_is_a_gap(self, db: Engine) -> None:
        """Deleting an event leaves a gap that verification reports."""
        self._drop_guards(db)
        with db.begin() as conn:
            conn.execute(text("DELETE FROM audit_event WHERE seq = 2"))
        with db.connect() as conn:
            result = verify_rows(stream_rows(conn))
        assert (result.ok, result.first_bad_seq, result.reason) == (False, 2, "gap")


def _chain(n: int) -> list[ChainRow]:
    prev, rows = GENESIS_HASH, []
    for seq in range(1, n + 1):
        record = {"v": 1, "seq": seq, "event_id": str(uuid.UUID(int=seq)), "recorded_at": "2026-01-01T00:00:00.000000Z",
                  "event_type": "t", "actor": Actor("system", "x").as_dict(), "tool_call_id": None, "data": {"n": seq}}
        canonical = rfc8785.dumps(record).decode()
        row_hash = hashlib.sha256(prev + canonical.encode()).digest()
        rows.append(ChainRow(seq, record["event_id"], "t", None, canonical, prev, row_hash))
        prev = row_hash
    return rows


class TestVerifyProperties:
    @hsettings(max_examples=200, deadline=None)
    @given(st.data())
    def test_any_single_byte_change_is_detected(self, data: st.DataObject) -> None:
        """Flipping any byte of any row's canonical text, or of a stored hash, fails verification."""
        rows = _chain(6)
        index = data.draw(st.integers(0, len(rows) - 1))
        field = data.draw(st.sampled_from(["canonical", "prev_hash", "row_hash"]))
        row = rows[index]
        value = getattr(row, field)
        raw = value.encode() if isinstance(value, str) else value
        pos = data.draw(st.integers(0, len(raw) - 1))
        flip = data.draw(st.integers(1, 255))
        mutated = raw[:pos] + bytes([raw[pos] ^ flip]) + raw[pos + 1 :]
        if isinstance(value, str):
            try:
                new_value: str | bytes = mutated.decode()
            except UnicodeDecodeError:
                return
        else:
            new_value = mutated
        rows[index] = dataclasses.replace(row, **{field: new_value})
        assert not verify_rows(rows).ok

    @hsettings(max_examples=50, deadline=None)
    @given(st.integers(0, 5), st.integers(0, 5))
    def test_deletions_and_swaps_are_detected(self, i: int, j: int) -> None:
        """Removing a row or swapping two rows breaks the chain."""
        rows = _chain(6)
        assert not verify_rows(rows[:i] + rows[i + 1 :]).ok or i == 5  # dropping the tail needs a checkpoint
        if i != j:
            swapped = rows[:]
            swapped[i], swapped[j] = swapped[j], swapped[i]
            assert not verify_rows(swapped).ok


class TestCanonicalCheck:
    @hsettings(max_examples=300, deadline=None)
    @given(st.recursive(
        st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=8)
        | st.floats(allow_nan=False, allow_infinity=False, width=64),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
        max_leaves=12,
    ))
    def test_fast_path_agrees_with_rfc8785(self, value: object) -> None:
        """The fast canonical check accepts exactly what rfc8785 produces and rejects any re-serialization."""
        from gateway.audit import _CanonicalCheck

        check = _CanonicalCheck()
        try:
            canonical = rfc8785.dumps({"v": value}).decode()
            rfc8785.dumps(json.loads(canonical))  # floats ≥ 2**53 print as integers rfc8785 refuses; ingress rejects them
        except rfc8785.CanonicalizationError:
            return
        assert check.record(canonical) == json.loads(canonical)
        for other in (json.dumps({"v": value}), json.dumps({"v": value}, indent=1), json.dumps({"v": value}, sort_keys=True)):
            if other != canonical:
                with pytest.raises(ValueError):
                    check.record(other)


class TestConcurrentWriters:
    def test_independent_writers_keep_one_contiguous_chain(self, database_url: str) -> None:
        """Writers on separate connections (as separate gateway processes are) never fork the chain."""
        import threading

        engines = [make_engine(database_url, writer=True) for _ in range(4)]
        errors: list[BaseException] = []

        def write(engine: Engine, worker: int) -> None:
            try:
                for i in range(40):
                    with engine.begin() as conn:
                        append_events(conn, [("test.concurrent", SYSTEM, {"w": worker, "i": i}, None)] * 2)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(e, n)) for n, e in enumerate(engines)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        with engines[0].connect() as conn:
            result = verify_rows(stream_rows(conn))
        for e in engines:
            e.dispose()
        assert result.ok and result.events == 4 * 40 * 2

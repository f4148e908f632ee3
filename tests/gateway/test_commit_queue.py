"""The group commit: batching, isolation of failing units, durability of answers."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import Connection, Engine, func, select, text

from gateway.audit import SYSTEM, AuditBatch, stream_rows, verify_rows
from gateway.commit_queue import CommitQueue
from gateway.db import make_engine
from gateway.errors import Conflict
from gateway.models import AuditEvent, PolicyVersion


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url, writer=True)
    yield eng
    eng.dispose()


@pytest.fixture
def queue(engine: Engine) -> Iterator[CommitQueue]:
    q = CommitQueue(engine, batch_max=64)
    q.start()
    yield q
    q.stop()


def insert_version(n: int):  # type: ignore[no-untyped-def]
    def work(conn: Connection, audit: AuditBatch) -> int:
        conn.execute(
            text("INSERT INTO policy_version (digest, sources, created_at) VALUES (:d, '[]', CURRENT_TIMESTAMP)"),
            {"d": f"d{n}"},
        )
        audit.add("test.unit", SYSTEM, {"n": n})
        return n

    return work


def count(engine: Engine, model: type) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


class TestCommitQueue:
    def test_concurrent_units_are_all_committed_and_chained(self, queue: CommitQueue, engine: Engine) -> None:
        """Units submitted from many threads all commit, with one audit event each, in one valid chain."""
        results: list[int] = []
        lock = threading.Lock()

        def submit(start: int) -> None:
            for i in range(start, start + 50):
                value = queue.run_sync(insert_version(i))
                with lock:
                    results.append(value)

        threads = [threading.Thread(target=submit, args=(k * 50,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == list(range(400))
        assert count(engine, PolicyVersion) == 400
        with engine.connect() as conn:
            result = verify_rows(stream_rows(conn))
        assert result.ok and result.events == 400

    def test_domain_error_discards_only_that_units_events(self, queue: CommitQueue, engine: Engine) -> None:
        """A unit that refuses (4xx) leaves no audit event; its batch neighbours commit."""

        def refuse(conn: Connection, audit: AuditBatch) -> None:
            audit.add("test.refused", SYSTEM, {})
            raise Conflict("no")

        futures = [queue.submit(insert_version(1)), queue.submit(refuse), queue.submit(insert_version(2))]
        assert futures[0].result(10) == 1
        with pytest.raises(Conflict):
            futures[1].result(10)
        assert futures[2].result(10) == 2
        with engine.connect() as conn:
            types = [t for (t,) in conn.execute(select(AuditEvent.event_type))]
        assert types == ["test.unit", "test.unit"]

    def test_a_unit_that_writes_then_refuses_is_rolled_back_whole_in_its_savepoint(self, engine: Engine) -> None:
        """``savepoint=True``: a unit that inserts a row and queues an event, then raises a
        DomainError, leaves neither behind; the units before and after it in the same batch (one
        transaction) commit theirs, with and without savepoints of their own."""
        sizes: list[int] = []
        q = CommitQueue(engine, on_batch=lambda size, _s: sizes.append(size))
        q.start()
        gate = threading.Event()

        def hold(conn: Connection, audit: AuditBatch) -> None:
            gate.wait(10)  # keeps the writer busy so the next three units land in one batch

        def write_then_refuse(conn: Connection, audit: AuditBatch) -> None:
            insert_version(99)(conn, audit)
            raise Conflict("validated too late")

        try:
            held = q.submit(hold)
            futures = [q.submit(insert_version(1)), q.submit(write_then_refuse, savepoint=True),
                       q.submit(insert_version(2), savepoint=True)]
            gate.set()
            held.result(10)
            assert futures[0].result(10) == 1
            with pytest.raises(Conflict):
                futures[1].result(10)
            assert futures[2].result(10) == 2
        finally:
            q.stop()
        assert sizes in ([1, 3], [4])  # the three really shared one transaction (with the holder, or after it)
        with engine.connect() as conn:
            assert sorted(conn.execute(select(PolicyVersion.digest)).scalars()) == ["d1", "d2"]
            assert [t for (t,) in conn.execute(select(AuditEvent.event_type))] == ["test.unit", "test.unit"]
            assert verify_rows(stream_rows(conn)).ok

    def test_a_unit_that_writes_then_refuses_without_a_savepoint_is_caught(self, engine: Engine,
                                                                           caplog: pytest.LogCaptureFixture) -> None:
        """The same unit submitted without ``savepoint=True``: the writer sees that it changed rows
        before refusing, rolls the batch back and retries each unit alone, so the outcome is the
        same (its row and event gone, the neighbours committed) and a warning names the unit."""
        sizes: list[int] = []
        q = CommitQueue(engine, on_batch=lambda size, _s: sizes.append(size))

        def write_then_refuse(conn: Connection, audit: AuditBatch) -> None:
            insert_version(99)(conn, audit)
            raise Conflict("validated too late")

        futures = [q.submit(insert_version(1)), q.submit(write_then_refuse), q.submit(insert_version(2))]
        with caplog.at_level("WARNING", logger="callgate.commit_queue"):
            q.start()
            try:
                assert futures[0].result(10) == 1
                with pytest.raises(Conflict, match="validated too late"):
                    futures[1].result(10)
                assert futures[2].result(10) == 2
            finally:
                q.stop()
        assert sizes == [1, 1]  # the shared batch was abandoned; the two good units committed alone
        assert "write_then_refuse" in caplog.text and "savepoint=True" in caplog.text
        with engine.connect() as conn:
            assert sorted(conn.execute(select(PolicyVersion.digest)).scalars()) == ["d1", "d2"]
            assert [t for (t,) in conn.execute(select(AuditEvent.event_type))] == ["test.unit", "test.unit"]

    def test_a_refusal_that_changed_no_rows_keeps_its_batch(self, engine: Engine) -> None:
        """A conditional UPDATE that matched nothing, then a refusal (the claim's and the outcome's
        pattern) is not a write: the batch commits in one transaction, no retry."""
        sizes: list[int] = []
        q = CommitQueue(engine, on_batch=lambda size, _s: sizes.append(size))

        def refuse_after_a_miss(conn: Connection, audit: AuditBatch) -> None:
            conn.execute(text("UPDATE policy_version SET sources = 'x' WHERE digest = 'no-such-digest'"))
            raise Conflict("nothing to do")

        futures = [q.submit(insert_version(1)), q.submit(refuse_after_a_miss), q.submit(insert_version(2))]
        q.start()
        try:
            assert [futures[0].result(10), futures[2].result(10)] == [1, 2]
            with pytest.raises(Conflict):
                futures[1].result(10)
        finally:
            q.stop()
        assert sizes == [3]

    def test_a_savepoint_unit_that_crashes_fails_alone(self, queue: CommitQueue, engine: Engine) -> None:
        """A non-domain failure inside a savepoint still rolls the batch back and retries each unit
        alone: only the crashing unit fails."""

        def write_then_crash(conn: Connection, audit: AuditBatch) -> None:
            insert_version(99)(conn, audit)
            raise RuntimeError("disk full")

        futures = [queue.submit(insert_version(1)), queue.submit(write_then_crash, savepoint=True),
                   queue.submit(insert_version(2))]
        assert futures[0].result(10) == 1
        with pytest.raises(RuntimeError):
            futures[1].result(10)
        assert futures[2].result(10) == 2
        with engine.connect() as conn:
            assert sorted(conn.execute(select(PolicyVersion.digest)).scalars()) == ["d1", "d2"]

    def test_database_error_fails_only_the_bad_unit(self, queue: CommitQueue, engine: Engine) -> None:
        """A unit whose SQL fails is retried alone; the others in its batch still commit."""
        futures = [queue.submit(insert_version(i)) for i in (1, 2, 1, 3)]  # the second d1 violates UNIQUE
        outcomes = []
        for f in futures:
            try:
                outcomes.append(f.result(10))
            except Exception as exc:  # noqa: BLE001
                outcomes.append(type(exc).__name__)
        assert outcomes[0] == 1 and outcomes[1] == 2 and outcomes[3] == 3
        assert outcomes[2] == "IntegrityError"
        assert count(engine, PolicyVersion) == 3
        with engine.connect() as conn:
            assert verify_rows(stream_rows(conn)).events == 3

    def test_work_queued_before_start_runs_in_one_batch(self, engine: Engine) -> None:
        """Units queued before the thread starts are committed together once it does."""
        sizes: list[int] = []
        q = CommitQueue(engine, on_batch=lambda size, _s: sizes.append(size))
        futures = [q.submit(insert_version(i)) for i in range(5)]
        q.start()
        assert [f.result(10) for f in futures] == list(range(5))
        q.stop()
        assert sizes == [5]

    def test_stopped_queue_refuses_work(self, engine: Engine) -> None:
        """Work submitted to a stopped queue fails at once instead of hanging."""
        q = CommitQueue(engine)
        q.start()
        q.stop()
        with pytest.raises(RuntimeError):
            q.run_sync(insert_version(1), timeout=1)

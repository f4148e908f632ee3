"""Group commit: one writer thread per gateway process commits every queued unit of work in one
transaction and only then answers each request — exactly as durable as a commit per request, at
a fraction of the fsyncs (performance.md: a durable per-request INSERT caps FastAPI near 1.5k/s;
group commit doubles it). The audit chain is extended once per batch under one lock.

A unit of work is a plain function ``work(conn, audit) -> result``. When it raises a
``DomainError`` (a 4xx answer) exactly its own effects are undone, and its neighbours' stay:

* its queued audit events are discarded, always;
* its SQL writes: a unit submitted with ``savepoint=True`` runs inside a SAVEPOINT
  (``conn.begin_nested()``) that is rolled back with the error. Every other unit is expected to
  refuse *before* it writes, which every unit in the gateway does (its state changes are
  conditional UPDATEs that write nothing when they refuse, and a refusal worth recording, such as
  a rejected decision, is a result, not an exception). That expectation is checked, not trusted:
  the writer counts the rows each unit's statements changed, and a unit that raises after
  changing any is treated like a crash: the batch is rolled back and every unit retried alone, so
  the offender's writes vanish with it (and a warning names it, to be given ``savepoint=True``).

Savepoints are opt-in because they are not free on the hot path: SAVEPOINT and RELEASE are two
more round trips per unit, inside the batch every other unit waits behind (PostgreSQL, decision
units: 0.83x the units/s and 1.2x the writer's time per unit, medians of 10 interleaved rounds of
bench/commit_queue_savepoints.py). The check costs a Python callback per statement and nothing on
the database; its retry path is taken only by a unit that wrote and then refused (today: a claim
or outcome that refuses right after its API key's once-a-minute ``last_used_at`` touch, which is
then rolled back with the refusal). Any other failure rolls the batch back and every unit is
retried alone, so one bad request can never fail its neighbours.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, Engine, event
from sqlalchemy.exc import DBAPIError

from gateway.audit import AuditBatch
from gateway.errors import DomainError

log = logging.getLogger("callgate.commit_queue")
T = TypeVar("T")
Work = Callable[[Connection, AuditBatch], T]


#: A set-based unit: handles every queued payload of its kind in one go (e.g. one SELECT for all
#: keys, one multi-row INSERT) and answers each with a result or the ``DomainError`` to raise.
#: It must write and queue audit events only for the payloads it answers with a result.
BatchWork = Callable[[Connection, AuditBatch, list[Any]], list[Any]]


@dataclass(slots=True)
class _Item(Generic[T]):
    work: Work[T] | None
    future: Future[T]
    batch: BatchWork | None = None
    payload: Any = None
    savepoint: bool = False


_STOP = object()


class _RefusedAfterWriting(Exception):
    """A unit without a savepoint raised ``error`` after it changed rows: only rolling the whole
    batch back removes them (the batch is then retried unit by unit)."""

    def __init__(self, error: DomainError) -> None:
        super().__init__(str(error))
        self.error = error


class CommitQueue:
    """Serializes writes of one process through a single connection, batching commits."""

    def __init__(self, engine: Engine, *, batch_max: int = 256, on_batch: Callable[[int, float], None] | None = None):
        self._engine = engine
        self._batch_max = batch_max
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopped = False  # work may be queued before start(); after stop() it is refused
        self._conn: Connection | None = None
        self._on_batch = on_batch
        self._rows_changed = 0  # by the writer connection's DML so far (see _count_changes)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="callgate-commit", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopped = True
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout)
            self._thread = None

    def submit(self, work: Work[T], *, savepoint: bool = False) -> Future[T]:
        """Queue ``work``. ``savepoint=True`` for a unit that may raise a ``DomainError`` after it
        wrote: its writes are then rolled back with its events (see the module docstring)."""
        future: Future[T] = Future()
        if self._stopped:
            future.set_exception(RuntimeError("commit queue is stopped"))
        else:
            self._queue.put(_Item(work, future, savepoint=savepoint))
        return future

    def submit_batched(self, batch: BatchWork, payload: Any) -> Future[Any]:
        """Queue ``payload`` for ``batch``, which runs once per group commit for all its payloads."""
        future: Future[Any] = Future()
        if self._stopped:
            future.set_exception(RuntimeError("commit queue is stopped"))
        else:
            self._queue.put(_Item(None, future, batch, payload))
        return future

    async def run_batched(self, batch: BatchWork, payload: Any) -> Any:
        """Queue a payload for a set-based unit and wait for its commit without blocking the loop."""
        return await asyncio.wrap_future(self.submit_batched(batch, payload))

    async def run(self, work: Work[T], *, savepoint: bool = False) -> T:
        """Queue ``work`` and wait for its commit without blocking the event loop."""
        return await asyncio.wrap_future(self.submit(work, savepoint=savepoint))

    def run_sync(self, work: Work[T], timeout: float | None = 30.0, *, savepoint: bool = False) -> T:
        return self.submit(work, savepoint=savepoint).result(timeout)

    # -- writer thread ---------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                break
            items = [first]
            stop = False
            while len(items) < self._batch_max:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                items.append(nxt)
            self._commit_batch(items)
            if stop:
                break
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> Connection:
        if self._conn is None or self._conn.closed or self._conn.invalidated:
            if self._conn is not None:
                self._conn.close()
            self._conn = self._engine.connect()
            event.listen(self._conn, "after_cursor_execute", self._count_changes)
        return self._conn

    def _count_changes(self, _conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
        """Count rows changed by INSERT/UPDATE/DELETE (any statement but a plain SELECT, whose
        rowcount is rows *read*): how the writer knows whether a refusing unit wrote."""
        if cursor.rowcount > 0 and not statement.lstrip()[:6].upper() == "SELECT":
            self._rows_changed += cursor.rowcount

    def _commit_batch(self, items: list[_Item[Any]]) -> None:
        started = time.perf_counter()
        try:
            outcomes = self._execute(items)
        except Exception as exc:  # noqa: BLE001 - isolate the failing unit, never its neighbours
            if isinstance(exc, _RefusedAfterWriting):  # rolled back; the connection is fine
                if len(items) == 1:
                    if not items[0].future.done():
                        items[0].future.set_exception(exc.error)
                    return
            else:
                self._reset_connection(exc)
            if len(items) == 1:
                if not items[0].future.done():
                    items[0].future.set_exception(exc)
                return
            for item in items:
                self._commit_batch([item])
            return
        for item, (ok, value) in zip(items, outcomes, strict=True):
            if ok:
                item.future.set_result(value)
            else:
                item.future.set_exception(value)
        if self._on_batch is not None:
            self._on_batch(len(items), time.perf_counter() - started)

    def _execute(self, items: list[_Item[Any]]) -> list[tuple[bool, Any]]:
        conn = self._connection()
        audit = AuditBatch()
        outcomes: list[tuple[bool, Any] | None] = [None] * len(items)
        groups: dict[BatchWork, list[int]] = {}
        for index, item in enumerate(items):
            if item.batch is not None:
                groups.setdefault(item.batch, []).append(index)
        with conn.begin():
            for index, item in enumerate(items):
                if item.batch is not None:
                    members = groups.get(item.batch)
                    if members is None or members[0] != index:
                        continue  # handled with the first payload of its kind
                    results = item.batch(conn, audit, [items[i].payload for i in members])
                    for i, result in zip(members, results, strict=True):
                        outcomes[i] = (not isinstance(result, DomainError), result)
                    del groups[item.batch]
                    continue
                assert item.work is not None
                mark = audit.mark()
                changed = self._rows_changed
                # Any other exception leaves the savepoint open: the whole batch is rolled back.
                nested = conn.begin_nested() if item.savepoint else None
                try:
                    value = item.work(conn, audit)
                except DomainError as exc:
                    audit.rollback_to(mark)
                    if nested is not None:
                        nested.rollback()
                    elif self._rows_changed != changed:
                        log.warning("unit %s raised %s after changing rows; submit it with savepoint=True",
                                    getattr(item.work, "__qualname__", item.work), type(exc).__name__)
                        raise _RefusedAfterWriting(exc) from exc
                    outcomes[index] = (False, exc)
                    continue
                if nested is not None:
                    nested.commit()  # RELEASE SAVEPOINT: the unit's writes join the batch
                outcomes[index] = (True, value)
            audit.flush(conn)
        return [o for o in outcomes if o is not None]

    def _reset_connection(self, exc: BaseException) -> None:
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            log.warning("database connection lost; reconnecting")
        if self._conn is not None:
            try:
                self._conn.invalidate()
                self._conn.close()
            except Exception:  # noqa: BLE001
                pass
            self._conn = None

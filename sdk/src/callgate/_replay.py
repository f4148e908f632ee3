"""Replay protection for webhook receivers: each accepted ``webhook-id`` is remembered until a
delivery carrying it could no longer pass the timestamp check.

Why both checks: a captured delivery still verifies when sent again byte for byte (the
signature covers it, not its freshness). The timestamp tolerance bounds how long it stays
usable; within that window its id must be accepted once only. Standard Webhooks also makes
the id the idempotency key of at-least-once delivery, so a genuine duplicate (the sender
retrying after a lost answer) is refused the same way -- answer it with a 2xx.

Two implementations of :class:`ReplayGuard`:

* :class:`MemoryReplayGuard` -- the default: one per process, in memory. Enough for a single
  receiver process;
* :class:`SqliteReplayGuard` -- a file (stdlib ``sqlite3``, WAL) shared by every process that
  opens it: use it when several processes (gunicorn/uvicorn workers) receive the same endpoint,
  or when a restart must not forget what it accepted.
"""

from __future__ import annotations

import abc
import logging
import os
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlite3

__all__ = ["MemoryReplayGuard", "ReplayGuard", "SqliteReplayGuard"]

log = logging.getLogger("callgate")


class ReplayGuard(abc.ABC):
    """Remembers accepted webhook ids. Implementations must make :meth:`remember` atomic: of two
    concurrent deliveries with one id, exactly one is told it is new."""

    @abc.abstractmethod
    def remember(self, webhook_id: str, until: float) -> bool:
        """Record ``webhook_id`` as seen until the Unix time ``until``. True if it was not seen
        (the delivery may proceed), False if it is a replay."""

    @abc.abstractmethod
    def forget(self, webhook_id: str) -> None:
        """Un-see ``webhook_id``: processing failed before anything ran, so the sender's retry
        of the same delivery must be accepted."""


class MemoryReplayGuard(ReplayGuard):
    """In-process set of ids with an expiry each; bounded to ``max_entries`` (the oldest are
    evicted first, with a warning: an evicted id could be replayed within its window)."""

    def __init__(self, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._seen: OrderedDict[str, float] = OrderedDict()

    def remember(self, webhook_id: str, until: float) -> bool:
        now = time.time()
        with self._lock:
            expiry = self._seen.get(webhook_id)
            if expiry is not None and expiry > now:
                return False
            self._seen[webhook_id] = until
            self._seen.move_to_end(webhook_id)
            while len(self._seen) > 1:  # oldest first (expiries arrive nearly in order); never this one
                first_id, first_until = next(iter(self._seen.items()))
                if first_until > now and len(self._seen) <= self.max_entries:
                    break
                if first_until > now:
                    log.warning("callgate: webhook replay guard full (%d ids); evicting unexpired id %s",
                                self.max_entries, first_id)
                self._seen.popitem(last=False)
            return True

    def forget(self, webhook_id: str) -> None:
        with self._lock:
            self._seen.pop(webhook_id, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._seen)


class SqliteReplayGuard(ReplayGuard):
    """Ids in a SQLite file, shared by every process (and thread) that opens the same ``path``.

    Each check is one ``BEGIN IMMEDIATE`` transaction (an insert that either lands or finds the
    id), so two processes racing on one id cannot both accept it. Expired ids are deleted as
    they are met and in a periodic sweep."""

    _SWEEP_EVERY = 256

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 10.0) -> None:
        self.path = os.fspath(path)
        self.timeout = timeout
        self._lock = threading.Lock()
        self._con: sqlite3.Connection | None = None
        self._pid = 0
        self._writes = 0
        with self._lock:
            self._connection()  # fail at construction (bad path, not a database), not on the first delivery

    def _connection(self) -> sqlite3.Connection:
        if self._con is None or self._pid != os.getpid():  # never share a connection across fork
            import sqlite3

            con = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None,
                                  check_same_thread=False)
            try:
                con.execute("PRAGMA journal_mode=WAL")
                con.execute("CREATE TABLE IF NOT EXISTS callgate_webhook_ids "
                            "(webhook_id TEXT PRIMARY KEY, until REAL NOT NULL) WITHOUT ROWID")
                con.execute("CREATE INDEX IF NOT EXISTS callgate_webhook_ids_until "
                            "ON callgate_webhook_ids (until)")
            except BaseException:
                con.close()
                raise
            self._con, self._pid = con, os.getpid()
        return self._con

    def remember(self, webhook_id: str, until: float) -> bool:
        now = time.time()
        with self._lock:
            con = self._connection()
            con.execute("BEGIN IMMEDIATE")
            try:
                con.execute("DELETE FROM callgate_webhook_ids WHERE webhook_id = ? AND until <= ?",
                            (webhook_id, now))
                fresh = con.execute("INSERT OR IGNORE INTO callgate_webhook_ids (webhook_id, until) "
                                    "VALUES (?, ?)", (webhook_id, until)).rowcount == 1
                self._writes += 1
                if self._writes % self._SWEEP_EVERY == 0:
                    con.execute("DELETE FROM callgate_webhook_ids WHERE until <= ?", (now,))
                con.execute("COMMIT")
            except BaseException:
                _rollback(con)
                raise
            return fresh

    def forget(self, webhook_id: str) -> None:
        with self._lock:
            self._connection().execute("DELETE FROM callgate_webhook_ids WHERE webhook_id = ?", (webhook_id,))

    def close(self) -> None:
        with self._lock:
            if self._con is not None and self._pid == os.getpid():
                self._con.close()
            self._con = None

    def __enter__(self) -> SqliteReplayGuard:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _rollback(con: sqlite3.Connection) -> None:
    try:
        con.execute("ROLLBACK")
    except Exception:  # noqa: BLE001 - no transaction left to roll back (it failed to begin)
        pass

"""Engines for the two supported databases, configured the way the audit chain needs them.

Two engines per process: the *writer* (used only by the group-commit thread, which holds the
audit chain) and the *reader* (request handlers' queries). On SQLite the writer starts every
transaction with ``BEGIN IMMEDIATE`` so chained appends serialize on the file lock instead of
failing late; readers use plain deferred transactions and run concurrently under WAL.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy import MetaData

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",  # durable across power loss, not only process crashes
    "PRAGMA busy_timeout=30000",
    "PRAGMA foreign_keys=ON",
    "PRAGMA recursive_triggers=ON",  # belt and braces against INSERT OR REPLACE on the audit log
)


def is_sqlite_url(url: str) -> bool:
    return url.startswith("sqlite")


def make_engine(url: str, *, writer: bool = False, pool_size: int = 8) -> Engine:
    """Create an engine; ``writer=True`` makes SQLite transactions take the write lock up front."""
    if is_sqlite_url(url):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        _configure_sqlite(engine, immediate=writer)
        return engine
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if writer:
        kwargs.update(pool_size=1, max_overflow=1)
    else:
        kwargs.update(pool_size=pool_size, max_overflow=pool_size)
    # READ COMMITTED is required: under REPEATABLE READ the chain head read after the
    # advisory lock would come from a stale snapshot (security.md §4.4).
    return create_engine(url, isolation_level="READ COMMITTED", **kwargs)


def _configure_sqlite(engine: Engine, *, immediate: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        for pragma in SQLITE_PRAGMAS:
            cur.execute(pragma)
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

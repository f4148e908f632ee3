"""Alembic environment: one transaction per migration, batch mode on SQLite.

The URL comes from the Config attribute set by ``gateway.migrate`` or, when run as plain
``alembic upgrade head``, from ``CALLGATE_DATABASE_URL`` / the embedded default.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from gateway.db import Base

config = context.config


def _url() -> str:
    url = config.attributes.get("database_url")
    if url:
        return str(url)
    from gateway.config import Settings

    return Settings().resolved_database_url()


def run_migrations_online() -> None:
    url = _url()
    connectable = config.attributes.get("connection")
    if connectable is None:
        engine = create_engine(url, poolclass=pool.NullPool)
        with engine.connect() as connection:
            _run(connection)
        engine.dispose()
    else:
        _run(connectable)


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported; run against a database")
run_migrations_online()

"""Shared fixtures: every test gets its own freshly migrated database, on SQLite and PostgreSQL.

Migrations run once per test session into a template (a SQLite file / a PostgreSQL template
database); each test then gets a private copy, so no state is shared between tests and the
schema is always the one Alembic makes (never ``create_all``).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from gateway.migrate import upgrade

PG_ADMIN_DSN = os.environ.get("CALLGATE_TEST_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
PG_URL_PREFIX = os.environ.get("CALLGATE_TEST_PG_URL_PREFIX", "postgresql+psycopg://postgres@127.0.0.1:5432/")


def _pg_admin() -> psycopg.Connection:
    return psycopg.connect(PG_ADMIN_DSN, autocommit=True)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    name = f"cg_tpl_{uuid.uuid4().hex[:12]}"
    with _pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        upgrade(PG_URL_PREFIX + name)
        yield name
    finally:
        with _pg_admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _sqlite_copy(template: Path, target_dir: Path) -> str:
    target = target_dir / "callgate.db"
    shutil.copyfile(template, target)
    return f"sqlite:///{target}"


@pytest.fixture
def pg_database_url(pg_template: str) -> Iterator[str]:
    name = f"cg_t_{uuid.uuid4().hex[:16]}"
    with _pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    try:
        yield PG_URL_PREFIX + name
    finally:
        with _pg_admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_database_url(sqlite_template: Path, tmp_path: Path) -> str:
    return _sqlite_copy(sqlite_template, tmp_path)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """A private, migrated database; every test using it runs on both engines."""
    fixture = "sqlite_database_url" if request.param == "sqlite" else "pg_database_url"
    return str(request.getfixturevalue(fixture))

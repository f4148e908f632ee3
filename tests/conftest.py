"""Shared fixtures: every test gets its own freshly migrated database, on SQLite and PostgreSQL.

Migrations run once per test session into a template (a SQLite file / a PostgreSQL template
database); each test then gets a private copy, so no state is shared between tests and the
schema is always the one Alembic makes (never ``create_all``).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

import callgate
from gateway.migrate import upgrade
from tests.pg import PG_URL_PREFIX, throwaway_database


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    with throwaway_database("cg_tpl") as name:
        upgrade(PG_URL_PREFIX + name)
        yield name


def _sqlite_copy(template: Path, target_dir: Path) -> str:
    target = target_dir / "callgate.db"
    shutil.copyfile(template, target)
    return f"sqlite:///{target}"


@pytest.fixture
def pg_database_url(pg_template: str) -> Iterator[str]:
    with throwaway_database("cg_t", template=pg_template) as name:
        yield PG_URL_PREFIX + name


@pytest.fixture
def empty_pg_url() -> Iterator[str]:
    """An empty PostgreSQL database (no migrations), for processes that migrate it themselves."""
    with throwaway_database("cg_e2e") as name:
        yield PG_URL_PREFIX + name


@pytest.fixture
def sdk_reset() -> Iterator[None]:
    """A clean SDK configuration before and after the test (configure() is process-wide)."""
    callgate.reset()
    yield
    callgate.reset()


@pytest.fixture
def sqlite_database_url(sqlite_template: Path, tmp_path: Path) -> str:
    return _sqlite_copy(sqlite_template, tmp_path)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """A private, migrated database; every test using it runs on both engines."""
    fixture = "sqlite_database_url" if request.param == "sqlite" else "pg_database_url"
    return str(request.getfixturevalue(fixture))

"""End-to-end fixtures: an empty database on each engine, for `callgate serve` to migrate itself."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'callgate.db'}"
    return str(request.getfixturevalue("empty_pg_url"))

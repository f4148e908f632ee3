"""The Alembic migrations are the schema; the ORM models must describe exactly what they make."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from gateway.db import Base


def test_models_match_the_migrated_schema(database_url: str) -> None:
    """Autogenerate finds no difference between the migrated database and the models."""
    engine = create_engine(database_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": False}), Base.metadata)
    engine.dispose()
    assert diff == []

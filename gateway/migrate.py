"""Apply the Alembic migrations programmatically (`callgate migrate`, and `serve` on start)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(database_url: str, *, app_role: str = "") -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["database_url"] = database_url
    cfg.attributes["app_role"] = app_role
    return cfg


def upgrade(database_url: str, *, app_role: str = "") -> None:
    """Bring the database to the newest schema; safe to run on every start."""
    if database_url.startswith("sqlite:///"):
        Path(database_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(database_url, app_role=app_role), "head")

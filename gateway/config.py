"""Gateway settings, read once from ``CALLGATE_*`` environment variables.

Nothing here is built at import time: ``Settings()`` is constructed by the CLI or by
``create_app(settings)``, so tests can hand the app a fresh configuration each time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATA_DIR = Path("callgate-data")


class Settings(BaseSettings):
    """Every knob of the gateway. The field descriptions double as the CLI's ``--help`` text."""

    model_config = SettingsConfigDict(env_prefix="CALLGATE_", extra="ignore", frozen=True)

    database_url: str = Field(
        default="",
        description="SQLAlchemy URL of the database: sqlite:///path.db (embedded default: "
        "callgate-data/callgate.db) or postgresql+psycopg://user@host/db for production.",
    )
    data_dir: Path = Field(
        default=DEFAULT_DATA_DIR,
        description="Folder for the embedded SQLite database and the generated secret key.",
    )
    policies: Path | None = Field(
        default=None,
        description="A policy YAML file or a folder of them. Unset: every call is allowed and audited.",
    )
    secret_key: str = Field(
        default="",
        description="Server secret for argument fingerprints (HMAC) and key peppering. Embedded mode "
        "generates one into DATA_DIR/secret_key on first run; production must set it.",
    )
    env: Literal["production", "development", "test"] = Field(
        default="production", description="'test' enables cheap password hashing; never use it in production."
    )
    host: str = Field(default="127.0.0.1", description="Address `callgate serve` binds to.")
    port: int = Field(default=8080, description="Port `callgate serve` listens on.")
    workers: int = Field(default=1, ge=1, le=64, description="Gateway worker processes for `callgate serve`.")
    redis_url: str = Field(
        default="", description="redis://host:6379/0 in production (wake-ups, Celery). Empty: in-process."
    )
    recheck_seconds: float | None = Field(
        default=None, gt=0, le=30,
        description="How often a held long-poll re-reads the database when no push arrives (the fallback "
        "path). Empty: 0.25 s in embedded mode (no Redis: CLI decisions arrive this way), 1 s with Redis.",
    )
    max_body_bytes: int = Field(default=256 * 1024, ge=1024, description="Largest accepted /v1 request body.")
    max_args_bytes: int = Field(
        default=64 * 1024, ge=256, description="Largest tool-argument object, measured after redaction."
    )
    approval_timeout_s: int = Field(
        default=900, ge=1, le=86400, description="Default time a pending approval waits before it expires."
    )
    commit_batch_max: int = Field(
        default=256, ge=1, le=10000, description="Most calls written together in one group commit."
    )
    db_app_role: str = Field(
        default="",
        description="PostgreSQL role the gateway runs as; migrations grant it INSERT/SELECT only on the "
        "audit log. Empty: the connecting role (triggers still reject UPDATE/DELETE/TRUNCATE).",
    )
    log_level: str = Field(default="info", description="Log level of the gateway process.")

    @field_validator("database_url")
    @classmethod
    def _known_driver(cls, value: str) -> str:
        if value and not value.startswith(("sqlite:", "sqlite+pysqlite:", "postgresql+psycopg:", "postgresql:")):
            raise ValueError("must start with sqlite:/// or postgresql+psycopg://")
        if value.startswith("postgresql://"):
            return "postgresql+psycopg://" + value.removeprefix("postgresql://")
        return value

    def resolved_database_url(self) -> str:
        """The configured URL, or the embedded SQLite file inside ``data_dir``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'callgate.db').resolve()}"

    def resolved_recheck_seconds(self) -> float:
        if self.recheck_seconds is not None:
            return self.recheck_seconds
        return 1.0 if self.redis_url else 0.25

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url().startswith("sqlite")

    def resolved_secret_key(self) -> bytes:
        """The HMAC secret; embedded mode keeps a generated one next to the database."""
        if self.secret_key:
            return self.secret_key.encode()
        if not self.is_sqlite and self.env == "production":
            raise RuntimeError("CALLGATE_SECRET_KEY must be set when running on PostgreSQL in production")
        import secrets

        path = self.data_dir / "secret_key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(secrets.token_urlsafe(48))
            tmp.chmod(0o600)
            tmp.replace(path)
        return path.read_text().strip().encode()


def settings_help() -> str:
    """One line per environment variable, for ``callgate --help``."""
    lines = []
    for name, field in Settings.model_fields.items():
        lines.append(f"CALLGATE_{name.upper()}: {field.description}")
    return "\n".join(lines)

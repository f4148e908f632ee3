"""Gateway settings, read once from ``CALLGATE_*`` environment variables.

Nothing here is built at import time: ``Settings()`` is constructed by the CLI or by
``create_app(settings)``, so tests can hand the app a fresh configuration each time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
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
    public_url: str = Field(
        default="",
        description="The console's address as browsers see it, e.g. https://callgate.example.com (scheme, host, "
        "optional port; no path). Set it behind a TLS-terminating proxy: console POSTs are then accepted only "
        "from this origin. Empty: the origin each request was addressed to.",
    )

    @field_validator("public_url")
    @classmethod
    def _origin_only(cls, value: str) -> str:
        """Normalized to ``scheme://host[:port]`` (lower case, default port dropped): the exact form
        browsers send in ``Origin``, so the console can compare strings."""
        import ipaddress
        import re
        from urllib.parse import urlsplit

        if not value:
            return ""
        parts = urlsplit(value)
        try:
            port = parts.port
        except ValueError:
            raise ValueError("has an invalid port") from None
        host = parts.hostname or ""
        if parts.scheme not in ("http", "https") or not host:
            raise ValueError("must be http(s)://host[:port], e.g. https://callgate.example.com")
        if parts.username is not None or parts.path not in ("", "/") or "?" in value or "#" in value:
            raise ValueError("must be only scheme://host[:port]: no path, query, fragment or credentials")
        if ":" in host:
            ipaddress.IPv6Address(host)  # raises ValueError on anything else
            host = f"[{host}]"
        elif not re.fullmatch(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?", host):
            raise ValueError(f"host {host!r} is not a DNS name or IPv4 address (write IDNs as punycode)")
        default_port = {"http": 80, "https": 443}[parts.scheme]
        return f"{parts.scheme}://{host}" + ("" if port in (None, default_port) else f":{port}")

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
    commit_batch_max: int = Field(
        default=256, ge=1, le=10000, description="Most calls written together in one group commit."
    )
    db_app_role: str = Field(
        default="",
        description="PostgreSQL role the gateway runs as; migrations grant it INSERT/SELECT only on the "
        "audit log. Empty: the connecting role (triggers still reject UPDATE/DELETE/TRUNCATE).",
    )
    log_level: str = Field(default="info", description="Log level of the gateway process.")
    celery_queue: str = Field(
        default="celery", pattern=r"^[A-Za-z0-9_.:-]{1,100}$",
        description="Celery queue the gateway sends its tasks to and `celery -A gateway.worker worker` consumes.",
    )
    webhook_allow_private: bool = Field(
        default=False,
        description="TESTS ONLY: let webhook URLs point at loopback and private (RFC 1918, ULA) addresses. "
        "Link-local (cloud metadata), multicast and unspecified addresses stay refused.",
    )
    webhook_allow_http: bool = Field(
        default=False,
        description="TESTS / LOCAL DEVELOPMENT ONLY: let webhook URLs use plain http (checked at registration and "
        "before every attempt). Off, only https is accepted: the payload and its signature cross the network.",
    )
    webhook_timeout_seconds: float = Field(
        default=10.0, gt=0, le=60, description="Longest one webhook POST may take, from connect to the last byte "
        "read (connecting gets at most 5 s of it).",
    )
    webhook_lease_seconds: float = Field(
        default=60.0, gt=0, le=3600,
        description="How long a claimed webhook message is reserved for the worker sending it. A worker that dies "
        "mid-POST leaves the message due again after this (at-least-once). At least the timeout + 1 s.",
    )
    webhook_retry_schedule: str = Field(
        default="5,300,1800,7200,18000,36000,50400,72000,86400",
        description="Seconds before each webhook retry, comma-separated; each delay is multiplied by a random factor "
        "in [0.8, 1.2] (jitter). Attempts = entries + 1; after the last the message is failed for good. The default "
        "(5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h) is 10 attempts over about 75 h.",
    )
    webhook_rotation_overlap_seconds: float = Field(
        default=86400.0, ge=0, le=30 * 86400,
        description="After `callgate webhooks rotate`, how long the previous secret keeps signing next to the new "
        "one (two signatures per delivery), so receivers can switch without dropping deliveries. 0: at once.",
    )
    webhook_disable_after_seconds: float = Field(
        default=5 * 86400.0, ge=60, le=365 * 86400,
        description="An endpoint whose attempts have failed for longer than this with no success in between is "
        "disabled automatically (audited as webhook.disabled with the reason).",
    )
    webhook_poll_seconds: float = Field(
        default=1.0, gt=0, le=60,
        description="How often the delivery worker looks for due webhooks when nothing wakes it (the embedded "
        "worker's tick, and the Celery beat interval).",
    )

    @field_validator("database_url")
    @classmethod
    def _known_driver(cls, value: str) -> str:
        if value and not value.startswith(("sqlite:", "sqlite+pysqlite:", "postgresql+psycopg:", "postgresql:")):
            raise ValueError("must start with sqlite:/// or postgresql+psycopg://")
        if value.startswith("postgresql://"):
            return "postgresql+psycopg://" + value.removeprefix("postgresql://")
        return value

    @field_validator("webhook_retry_schedule")
    @classmethod
    def _retry_schedule(cls, value: str) -> str:
        parse_retry_schedule(value)  # raises ValueError with the reason
        return value

    @model_validator(mode="after")
    def _lease_outlasts_attempt(self) -> Settings:
        if self.webhook_lease_seconds < self.webhook_timeout_seconds + 1:
            raise ValueError("CALLGATE_WEBHOOK_LEASE_SECONDS must be at least CALLGATE_WEBHOOK_TIMEOUT_SECONDS + 1, "
                             "or a slow attempt could be sent twice at once")
        return self

    def retry_schedule(self) -> tuple[float, ...]:
        """The webhook retry schedule as numbers (validated at construction)."""
        return parse_retry_schedule(self.webhook_retry_schedule)

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


MAX_RETRY_DELAY_S = 7 * 86400
MAX_RETRIES = 30


def parse_retry_schedule(text: str) -> tuple[float, ...]:
    """``"5,30,120"`` -> ``(5.0, 30.0, 120.0)``; ``ValueError`` naming the bad entry otherwise."""
    entries = [part.strip() for part in text.split(",")]
    if not text.strip() or not entries:
        raise ValueError("needs at least one delay, e.g. 5,30,120")
    if len(entries) > MAX_RETRIES:
        raise ValueError(f"at most {MAX_RETRIES} retries")
    delays = []
    for entry in entries:
        try:
            delay = float(entry)
        except ValueError:
            raise ValueError(f"{entry!r} is not a number of seconds") from None
        if not 0 <= delay <= MAX_RETRY_DELAY_S:  # also refuses nan and inf
            raise ValueError(f"{entry!r} is outside 0..{MAX_RETRY_DELAY_S} seconds")
        delays.append(delay)
    return tuple(delays)


def settings_help() -> str:
    """One line per environment variable, for ``callgate --help``."""
    lines = []
    for name, field in Settings.model_fields.items():
        lines.append(f"CALLGATE_{name.upper()}: {field.description}")
    return "\n".join(lines)

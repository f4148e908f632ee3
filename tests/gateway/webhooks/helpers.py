"""Helpers for webhook tests: pending calls decided through the real domain functions, endpoint
registration and delivery settings as the tests' loopback receivers need them, and readers for
the outbox, the delivery log, the endpoints and the audit events."""

from __future__ import annotations

import json
import sqlite3
import uuid
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, inspect, select, table, text

from gateway.approvals import decide_call
from gateway.audit import Actor
from gateway.calls import prepare_call, submit_call
from gateway.config import Settings
from gateway.keys import parse_bearer
from gateway.models import AuditEvent, WebhookDelivery, WebhookEndpoint, WebhookOutbox
from gateway.policy_store import load_active
from gateway.webhooks.delivery import DeliveryConfig, RunUnit
from gateway.webhooks.endpoints import Registered, check_url, register_endpoint
from gateway.webhooks.secrets import SecretBox
from tests.gateway.conftest import TEST_SECRET

ALICE = Actor("user", "alice")
BIG_REFUND = {"amount": 850, "customer_id": "cus_1", "password": "hunter2"}
#: The box of the test settings' CALLGATE_SECRET_KEY: what the gateway under test seals with.
BOX = SecretBox(TEST_SECRET.encode())


class Calls:
    """Pending calls made and decided the way the gateway does it."""

    def __init__(self, engine: Engine, settings: Settings, run: RunUnit, agent_key: str) -> None:
        self.engine, self.settings, self.run, self.key = engine, settings, run, agent_key
        with engine.begin() as conn:
            self.policy = load_active(conn, settings.policies)

    def pending(self, args: dict[str, Any] | None = None, *, session_id: str | None = None) -> str:
        body: dict[str, Any] = {"id": str(uuid.uuid4()), "tool": "stripe.refund", "args": args or BIG_REFUND}
        if session_id is not None:
            body["session_id"] = session_id
        incoming = prepare_call(body, secret=self.settings.resolved_secret_key(),
                                max_args_bytes=self.settings.max_args_bytes)
        view = self.run(lambda conn, audit: submit_call(
            conn, audit, incoming=incoming, key=parse_bearer(f"Bearer {self.key}"),
            pepper=self.settings.resolved_secret_key(), policy=self.policy))
        assert view.row["status"] == "pending"
        return str(view.row["id"])

    def decide(self, call_id: str, *, approve: bool = True, comment: str | None = None,
               actor: Actor = ALICE, channel: str = "console") -> Any:
        # As the gateway's callers do: commit (a refused click's event too), then raise the refusal.
        return self.run(lambda conn, audit: decide_call(conn, audit, call_id=call_id, approve=approve, actor=actor,
                                                        channel=channel, comment=comment)).result()


def register(run: RunUnit, url: str, *, agent: str = "billing-bot", allow_private: bool = True,
             allow_http: bool = True, include_args: bool = False) -> Registered:
    """Register as an admin would; the loopback test receivers need http and private addresses."""
    destination = check_url(url, allow_private=allow_private, allow_http=allow_http)
    return run(lambda conn, audit: register_endpoint(conn, audit, agent=agent, destination=destination,
                                                     actor=Actor("operator", "ops"), box=BOX,
                                                     include_args=include_args))


def delivery_config(**overrides: Any) -> DeliveryConfig:
    """Delivery settings for the loopback http receivers, sealed under the test secret key."""
    values: dict[str, Any] = {"timeout": 2.0, "lease": 5.0, "allow_private": True, "allow_http": True}
    values.update(overrides)
    return DeliveryConfig(BOX, **values)


def endpoint_row(engine: Engine, endpoint_id: str) -> dict[str, Any]:
    with engine.connect() as conn:
        return dict(conn.execute(select(WebhookEndpoint.__table__).where(WebhookEndpoint.id == endpoint_id))
                    .mappings().one())


def outbox(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(WebhookOutbox.__table__).order_by(WebhookOutbox.created_at))
                .mappings()]


def delivery_log(engine: Engine, message_id: str | None = None) -> list[dict[str, Any]]:
    query = select(WebhookDelivery.__table__).order_by(WebhookDelivery.id)
    if message_id is not None:
        query = query.where(WebhookDelivery.message_id == message_id)
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def audit_events(engine: Engine, prefix: str = "webhook.") -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(select(AuditEvent.canonical).where(AuditEvent.event_type.startswith(prefix))
                            .order_by(AuditEvent.seq))
        return [json.loads(c) for (c,) in rows]


def aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class Clock:
    """A settable clock starting at the real time (the DB rows are stamped with real times)."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def dump(engine: Engine) -> str:
    """Every value of every table (found by reflection, not by our models), as text."""
    parts: list[str] = []
    with engine.connect() as conn:
        for name in inspect(conn).get_table_names():
            columns = [c["name"] for c in inspect(conn).get_columns(name)]
            for row in conn.execute(select(*(text(f'"{c}"') for c in columns)).select_from(table(name))):
                parts.extend(_text(value) for value in row)
    return "\n".join(parts)


def _text(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("latin-1")  # every byte stays visible to the search
    return str(value)


def sqlite_files(engine: Engine) -> bytes:
    """The SQLite database file and its WAL, after a checkpoint (what a copied file would hold).
    Checkpointed outside SQLAlchemy: the writer engine wraps every connection in BEGIN IMMEDIATE."""
    engine.dispose()
    path = Path(str(engine.url.database))
    with closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    wal = path.with_name(path.name + "-wal")
    return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")

"""Helpers for webhook tests: pending calls decided through the real domain functions, and
readers for the outbox, the delivery log and the audit events."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select

from gateway.approvals import decide_call
from gateway.audit import Actor
from gateway.calls import prepare_call, submit_call
from gateway.config import Settings
from gateway.keys import parse_bearer
from gateway.models import AuditEvent, WebhookDelivery, WebhookOutbox
from gateway.policy_store import load_active
from gateway.webhooks.delivery import RunUnit
from gateway.webhooks.endpoints import Registered, check_url, register_endpoint

ALICE = Actor("user", "alice")
BIG_REFUND = {"amount": 850, "customer_id": "cus_1", "password": "hunter2"}


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
        return self.run(lambda conn, audit: decide_call(conn, audit, call_id=call_id, approve=approve, actor=actor,
                                                        channel=channel, comment=comment))


def register(run: RunUnit, url: str, *, agent: str = "billing-bot", allow_private: bool = True) -> Registered:
    destination = check_url(url, allow_private=allow_private)
    return run(lambda conn, audit: register_endpoint(conn, audit, agent=agent, destination=destination,
                                                     actor=Actor("operator", "ops")))


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

"""Webhook endpoints, the decision outbox and the delivery log.

``webhook_outbox`` rows are written in the same transaction as the decision they announce, so a
crash can neither lose an event nor invent one; a worker claims due rows, POSTs them and records
every attempt in ``webhook_delivery``. The secret is kept (not hashed): the gateway must sign
with it on every attempt.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import context, op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
TABLES = ("webhook_endpoint", "webhook_outbox", "webhook_delivery")


def upgrade() -> None:
    op.create_table(
        "webhook_endpoint",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("agent", sa.String(128), nullable=False, index=True),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("secret", sa.String(128), nullable=False),
        sa.Column("event_types", sa.Text, nullable=False),  # JSON list
        sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("disabled_at", TS),
        sa.CheckConstraint("enabled = (disabled_at IS NULL)", name="enabled_until_disabled"),
    )
    op.create_table(
        "webhook_outbox",
        sa.Column("id", sa.String(40), primary_key=True),  # msg_<uuid7>: the webhook-id header
        sa.Column("endpoint_id", sa.String(32), sa.ForeignKey("webhook_endpoint.id"), nullable=False, index=True),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("call_id", sa.String(36), index=True),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", TS, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("delivered_at", TS),
        sa.Column("last_error", sa.Text),
        sa.CheckConstraint("status IN ('pending', 'delivered', 'failed')", name="status"),
        sa.CheckConstraint("attempts >= 0", name="attempts"),
    )
    # The claim query: due pending rows in next_attempt_at order.
    op.create_index("ix_webhook_outbox_due", "webhook_outbox", ["status", "next_attempt_at"])
    op.create_table(
        "webhook_delivery",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("message_id", sa.String(40), sa.ForeignKey("webhook_outbox.id"), nullable=False, index=True),
        sa.Column("endpoint_id", sa.String(32), sa.ForeignKey("webhook_endpoint.id"), nullable=False, index=True),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("duration_ms", sa.Integer, nullable=False),
        sa.Column("status_code", sa.Integer),
        sa.Column("result", sa.String(16), nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("response_excerpt", sa.Text),
        sa.Column("resolved_ip", sa.String(64)),
        sa.CheckConstraint("result IN ('delivered', 'retry', 'failed')", name="result"),
    )
    app_role = str(context.config.attributes.get("app_role") or "")
    if op.get_bind().dialect.name == "postgresql" and app_role:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", app_role):
            raise ValueError(f"invalid PostgreSQL role name for CALLGATE_DB_APP_ROLE: {app_role!r}")
        for table in TABLES:
            op.execute(f'GRANT SELECT, INSERT, UPDATE ON {table} TO "{app_role}"')
        op.execute(f'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO "{app_role}"')


def downgrade() -> None:
    for table in reversed(TABLES):
        op.drop_table(table)

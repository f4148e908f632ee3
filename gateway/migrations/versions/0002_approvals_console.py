"""Approvals and the console: who decided through which channel, the one-shot execution claim,
and server-side console sessions.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("tool_call") as batch:
        batch.add_column(sa.Column("decided_channel", sa.String(16)))  # console | cli | slack | system
        batch.add_column(sa.Column("claimed_at", TS))  # set once by the execution claim
        batch.add_column(sa.Column("claimed_by", sa.String(12)))  # key id that claimed it
    op.create_table(
        "console_session",
        sa.Column("token_sha256", sa.LargeBinary(32), primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("console_user.id"), nullable=False, index=True),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("last_seen_at", TS, nullable=False),
        sa.Column("idle_expires_at", TS, nullable=False),
        sa.Column("absolute_expires_at", TS, nullable=False),
        sa.Column("ip", sa.String(64)),
        sa.Column("user_agent", sa.String(256)),
    )


def downgrade() -> None:
    op.drop_table("console_session")
    with op.batch_alter_table("tool_call") as batch:
        batch.drop_column("claimed_by")
        batch.drop_column("claimed_at")
        batch.drop_column("decided_channel")

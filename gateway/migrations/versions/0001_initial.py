"""Initial schema: API keys, console users, policy versions, tool calls and the append-only,
hash-chained audit log (with the database-level guards of security.md §4.2 / §4.5).

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import context, op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)

PG_AUDIT_GUARDS = [
    """
    CREATE FUNCTION audit_event_reject_mutation() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      RAISE EXCEPTION 'audit_event is append-only: % rejected', TG_OP
        USING ERRCODE = 'insufficient_privilege';
    END; $$
    """,
    """CREATE TRIGGER audit_event_no_update_delete BEFORE UPDATE OR DELETE ON audit_event
       FOR EACH ROW EXECUTE FUNCTION audit_event_reject_mutation()""",
    """CREATE TRIGGER audit_event_no_truncate BEFORE TRUNCATE ON audit_event
       FOR EACH STATEMENT EXECUTE FUNCTION audit_event_reject_mutation()""",
    # Fire even under session_replication_role = replica, or a superuser could bypass silently.
    "ALTER TABLE audit_event ENABLE ALWAYS TRIGGER audit_event_no_update_delete",
    "ALTER TABLE audit_event ENABLE ALWAYS TRIGGER audit_event_no_truncate",
    "REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON audit_event FROM PUBLIC",
]

SQLITE_AUDIT_GUARDS = [
    """CREATE TRIGGER audit_event_no_update BEFORE UPDATE ON audit_event
       BEGIN SELECT RAISE(ABORT, 'audit_event is append-only: UPDATE rejected'); END""",
    """CREATE TRIGGER audit_event_no_delete BEFORE DELETE ON audit_event
       BEGIN SELECT RAISE(ABORT, 'audit_event is append-only: DELETE rejected'); END""",
    # INSERT OR REPLACE deletes the conflicting row without firing DELETE triggers unless
    # recursive_triggers is on, so the overwrite itself is refused here.
    """CREATE TRIGGER audit_event_no_overwrite BEFORE INSERT ON audit_event
       WHEN EXISTS (SELECT 1 FROM audit_event WHERE seq = NEW.seq OR event_id = NEW.event_id
                    OR prev_hash = NEW.prev_hash OR row_hash = NEW.row_hash)
       BEGIN SELECT RAISE(ABORT, 'audit_event is append-only: overwrite rejected'); END""",
]


def upgrade() -> None:
    op.create_table(
        "api_key",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("key_id", sa.String(12), nullable=False, unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("agent", sa.String(128)),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("secret_sha256", sa.LargeBinary(32), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("last_used_at", TS),
        sa.Column("expires_at", TS),
        sa.Column("revoked_at", TS),
        sa.CheckConstraint("kind IN ('agent', 'admin')", name="kind"),
        sa.CheckConstraint("(kind = 'agent') = (agent IS NOT NULL)", name="agent_keys_have_agent"),
    )
    op.create_table(
        "console_user",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("username", sa.String(128), nullable=False, unique=True),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("created_at", TS, nullable=False),
        sa.CheckConstraint("role IN ('admin', 'reviewer', 'viewer')", name="role"),
    )
    op.create_table(
        "policy_version",
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("digest", sa.String(64), nullable=False, unique=True),
        sa.Column("sources", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "tool_call",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("agent", sa.String(128), nullable=False, index=True),
        sa.Column("tool", sa.String(200), nullable=False, index=True),
        sa.Column("args", sa.Text, nullable=False),
        sa.Column("args_fp", sa.String(64), nullable=False),
        sa.Column("redactions", sa.Text, nullable=False),
        sa.Column("session_id", sa.String(128), index=True),
        sa.Column("framework", sa.String(64)),
        sa.Column("metadata", sa.Text, nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("fail_open", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("decision", sa.String(32), nullable=False),
        sa.Column("status", sa.String(32), nullable=False, index=True),
        sa.Column("reason", sa.Text),
        sa.Column("rule", sa.String(200)),
        sa.Column("policy_version", sa.Integer, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS),
        sa.Column("decided_at", TS),
        sa.Column("decided_by", sa.String(200)),
        sa.Column("comment", sa.Text),
        sa.Column("outcome_status", sa.String(16)),
        sa.Column("outcome_error", sa.Text),
        sa.Column("duration_ms", sa.BigInteger),
        sa.Column("outcome_at", TS),
        sa.Column("outcome_fingerprint", sa.String(64)),
        sa.CheckConstraint("decision IN ('allow', 'block', 'require_approval')", name="decision"),
    )
    op.create_table(
        "audit_event",
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("event_id", sa.String(36), nullable=False, unique=True),
        sa.Column("recorded_at", sa.String(32), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("tool_call_id", sa.String(36), index=True),
        sa.Column("canonical", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.LargeBinary(32), nullable=False, unique=True),
        sa.Column("row_hash", sa.LargeBinary(32), nullable=False, unique=True),
        sa.CheckConstraint("length(prev_hash) = 32", name="prev_hash_len"),
        sa.CheckConstraint("length(row_hash) = 32", name="row_hash_len"),
    )
    dialect = op.get_bind().dialect.name
    for statement in PG_AUDIT_GUARDS if dialect == "postgresql" else SQLITE_AUDIT_GUARDS:
        op.execute(statement)
    app_role = str(context.config.attributes.get("app_role") or "")
    if dialect == "postgresql" and app_role:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", app_role):
            raise ValueError(f"invalid PostgreSQL role name for CALLGATE_DB_APP_ROLE: {app_role!r}")
        op.execute(f'REVOKE ALL ON audit_event FROM "{app_role}"')
        op.execute(f'GRANT SELECT, INSERT ON audit_event TO "{app_role}"')
        for table in ("api_key", "console_user", "policy_version", "tool_call"):
            op.execute(f'GRANT SELECT, INSERT, UPDATE ON {table} TO "{app_role}"')
        op.execute(f'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO "{app_role}"')


def downgrade() -> None:
    raise RuntimeError("the audit log cannot be dropped by a migration")

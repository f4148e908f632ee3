"""Append-only LLM usage records, priced at ingest.

One row per LLM call an agent reported (``POST /v1/usage``): the SDK's event id (ingest is
idempotent on it), the key's agent, the session, the model and provider as reported, the five
token counts, the exact cost (a decimal *string*: never a float, and SQLite has no exact
numeric type) with the genai-prices model/provider it was priced as, and both clocks.

The table is append-only at the database level with the approach of migration 0001
(security.md §4.2 / §4.5): usage is money, and every row is also in the audit chain.

* PostgreSQL: BEFORE UPDATE/DELETE row triggers and a BEFORE TRUNCATE statement trigger,
  ``ENABLE ALWAYS`` (they fire under ``session_replication_role = replica`` too), and the
  privileges revoked from PUBLIC; the app role may only SELECT and INSERT.
* SQLite: RAISE(ABORT) triggers on UPDATE and DELETE, plus the INSERT guard, because
  ``INSERT OR REPLACE`` deletes a conflicting row without firing DELETE triggers. Unlike the
  audit log's guard this one is ``RAISE(IGNORE)``: an insert of an id that exists is skipped,
  never applied, so the stored row still cannot be overwritten, *and* the idempotent ingest
  (``INSERT ... ON CONFLICT DO NOTHING RETURNING id``) keeps working: a retried batch's rows
  are skipped and simply not returned. (RAISE(ABORT) would turn every retry into an error.)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import context, op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
TOKEN_COLUMNS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens")

PG_GUARDS = [
    """
    CREATE FUNCTION llm_usage_reject_mutation() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      RAISE EXCEPTION 'llm_usage is append-only: % rejected', TG_OP
        USING ERRCODE = 'insufficient_privilege';
    END; $$
    """,
    """CREATE TRIGGER llm_usage_no_update_delete BEFORE UPDATE OR DELETE ON llm_usage
       FOR EACH ROW EXECUTE FUNCTION llm_usage_reject_mutation()""",
    """CREATE TRIGGER llm_usage_no_truncate BEFORE TRUNCATE ON llm_usage
       FOR EACH STATEMENT EXECUTE FUNCTION llm_usage_reject_mutation()""",
    "ALTER TABLE llm_usage ENABLE ALWAYS TRIGGER llm_usage_no_update_delete",
    "ALTER TABLE llm_usage ENABLE ALWAYS TRIGGER llm_usage_no_truncate",
    "REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON llm_usage FROM PUBLIC",
]

SQLITE_GUARDS = [
    """CREATE TRIGGER llm_usage_no_update BEFORE UPDATE ON llm_usage
       BEGIN SELECT RAISE(ABORT, 'llm_usage is append-only: UPDATE rejected'); END""",
    """CREATE TRIGGER llm_usage_no_delete BEFORE DELETE ON llm_usage
       BEGIN SELECT RAISE(ABORT, 'llm_usage is append-only: DELETE rejected'); END""",
    """CREATE TRIGGER llm_usage_no_overwrite BEFORE INSERT ON llm_usage
       WHEN EXISTS (SELECT 1 FROM llm_usage WHERE id = NEW.id)
       BEGIN SELECT RAISE(IGNORE); END""",
]


def upgrade() -> None:
    op.create_table(
        "llm_usage",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("agent", sa.String(128), nullable=False, index=True),
        sa.Column("session_id", sa.String(128), index=True),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("provider", sa.String(64)),
        sa.Column("framework", sa.String(64)),
        *(sa.Column(name, sa.BigInteger, nullable=False) for name in TOKEN_COLUMNS),
        sa.Column("cost_usd", sa.Text),
        sa.Column("price_status", sa.String(16), nullable=False),
        sa.Column("priced_model", sa.String(200)),
        sa.Column("priced_provider", sa.String(64)),
        sa.Column("pricing_version", sa.String(64), nullable=False),
        sa.Column("ts", TS, nullable=False),
        sa.Column("recorded_at", TS, nullable=False),
        *(sa.CheckConstraint(f"{name} >= 0", name=f"{name}_non_negative") for name in TOKEN_COLUMNS),
        sa.CheckConstraint("cache_read_tokens + cache_write_tokens <= input_tokens", name="cache_within_input"),
        sa.CheckConstraint("reasoning_tokens <= output_tokens", name="reasoning_within_output"),
        sa.CheckConstraint("price_status IN ('priced', 'unpriced')", name="price_status"),
        sa.CheckConstraint("(price_status = 'priced') = (cost_usd IS NOT NULL)", name="cost_iff_priced"),
    )
    dialect = op.get_bind().dialect.name
    for statement in PG_GUARDS if dialect == "postgresql" else SQLITE_GUARDS:
        op.execute(statement)
    app_role = str(context.config.attributes.get("app_role") or "")
    if dialect == "postgresql" and app_role:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", app_role):
            raise ValueError(f"invalid PostgreSQL role name for CALLGATE_DB_APP_ROLE: {app_role!r}")
        op.execute(f'REVOKE ALL ON llm_usage FROM "{app_role}"')
        op.execute(f'GRANT SELECT, INSERT ON llm_usage TO "{app_role}"')


def downgrade() -> None:
    raise RuntimeError("llm_usage is append-only (and referenced by the audit chain); it cannot be dropped")

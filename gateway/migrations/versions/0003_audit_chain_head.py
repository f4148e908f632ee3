"""PostgreSQL: take the chain lock and read the chain head in one round trip.

A VOLATILE plpgsql function runs each statement with a fresh snapshot under READ COMMITTED, so
the head it reads *after* ``pg_advisory_xact_lock`` returns includes every append committed
before the lock was granted — the same guarantee as two separate statements (security.md §4.4),
one network round trip fewer on every group commit. SQLite needs nothing: ``BEGIN IMMEDIATE``
already holds the write lock.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        """
        CREATE FUNCTION audit_chain_head(lock_key bigint) RETURNS TABLE (head_seq bigint, head_hash bytea)
        LANGUAGE plpgsql VOLATILE AS $$
        BEGIN
          PERFORM pg_advisory_xact_lock(lock_key);
          RETURN QUERY SELECT a.seq, a.row_hash FROM audit_event a ORDER BY a.seq DESC LIMIT 1;
        END; $$
        """
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION audit_chain_head(bigint)")

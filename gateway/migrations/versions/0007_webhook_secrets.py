"""Webhook signing secrets sealed at rest, rotation, thin payloads, endpoint health and replay.

* ``webhook_endpoint.secret``: every plain ``whsec_`` secret is sealed (AES-GCM under a key
  derived from ``CALLGATE_SECRET_KEY``, the endpoint id as associated data:
  ``gateway.webhooks.secrets``). The key is read exactly as the app reads it,
  ``Settings().resolved_secret_key()``, and only when a row needs sealing: migrating an empty
  database never needs a key (nor, in embedded mode, generates one). A missing key on
  PostgreSQL in production fails the migration loudly rather than leaving secrets in the clear.
  On PostgreSQL the column becomes ``TEXT`` (a sealed value is longer than a plain one and its
  format is versioned); SQLite does not enforce ``VARCHAR`` lengths.
* Rotation: ``previous_secret`` (sealed, still signing until ``previous_secret_expires_at``)
  and ``rotated_at``.
* ``include_args``: new endpoints get thin payloads (no ``data.args``, security.md §2.2). The
  endpoints that exist already were registered when every payload carried the (redacted)
  arguments, so they keep them: a receiver doing ``event.run(fn, **event.args)`` must not start
  failing because the gateway was upgraded. An admin who wants them thin re-registers them.
* Health: ``last_success_at``, ``first_failure_at`` (start of the current run of failures) and
  ``disabled_reason``: an endpoint failing for days with no success is disabled automatically.
* ``webhook_outbox.replay_base`` / ``replayed_at``: an admin replay gives a message a fresh
  attempt budget while attempt numbers keep counting up, so the delivery log stays unambiguous
  and an attempt from before the replay stays fenced out.

Residue of the plain values: SQLite is told to zero the space it frees (``PRAGMA
secure_delete``), so the rewritten rows leave no plaintext in the file. PostgreSQL keeps the old
row versions on disk (never in a dump) until the table is rewritten: after upgrading a database
that had endpoints, run ``VACUUM FULL webhook_endpoint`` (a small table) to purge them.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
ENDPOINT_COLUMNS = ("previous_secret", "previous_secret_expires_at", "rotated_at", "include_args", "last_success_at",
                    "first_failure_at", "disabled_reason")
OUTBOX_COLUMNS = ("replay_base", "replayed_at")

endpoint = sa.table("webhook_endpoint", sa.column("id", sa.String), sa.column("secret", sa.Text),
                    sa.column("previous_secret", sa.Text), sa.column("include_args", sa.Boolean))


def _secret_box():  # type: ignore[no-untyped-def]
    """The app's own sealing, keyed the app's own way: ``Settings().resolved_secret_key()`` from
    the same ``CALLGATE_*`` environment. The URL being migrated is passed in when the caller
    gave one (``gateway.migrate.upgrade``), so the embedded-versus-production rule of
    ``resolved_secret_key`` (a generated key file for SQLite, a required key for PostgreSQL in
    production) applies to *this* database. Imported here, not at module level, so listing or
    inspecting revisions never touches configuration."""
    from gateway.config import Settings
    from gateway.webhooks.secrets import SecretBox

    url = context.config.attributes.get("database_url")
    settings = Settings(database_url=str(url)) if url else Settings()
    return SecretBox(settings.resolved_secret_key())


def upgrade() -> None:
    from gateway.webhooks.secrets import is_sealed

    bind = op.get_bind()
    op.add_column("webhook_endpoint", sa.Column("previous_secret", sa.Text))
    op.add_column("webhook_endpoint", sa.Column("previous_secret_expires_at", TS))
    op.add_column("webhook_endpoint", sa.Column("rotated_at", TS))
    op.add_column("webhook_endpoint", sa.Column("include_args", sa.Boolean, nullable=False,
                                                server_default=sa.false()))
    op.add_column("webhook_endpoint", sa.Column("last_success_at", TS))
    op.add_column("webhook_endpoint", sa.Column("first_failure_at", TS))
    op.add_column("webhook_endpoint", sa.Column("disabled_reason", sa.Text))
    op.add_column("webhook_outbox", sa.Column("replay_base", sa.Integer, nullable=False, server_default="0"))
    op.add_column("webhook_outbox", sa.Column("replayed_at", TS))
    if bind.dialect.name == "postgresql":
        op.alter_column("webhook_endpoint", "secret", type_=sa.Text, existing_type=sa.String(128),
                        existing_nullable=False)

    rows = bind.execute(sa.select(endpoint.c.id, endpoint.c.secret)).all()
    # Endpoints registered before this revision keep receiving the arguments (see the docstring).
    if rows:
        bind.execute(sa.update(endpoint).values(include_args=True))
    plain = [(endpoint_id, secret) for endpoint_id, secret in rows if not is_sealed(secret)]
    if not plain:
        return
    box = _secret_box()
    if bind.dialect.name == "sqlite":
        bind.exec_driver_sql("PRAGMA secure_delete = ON")  # overwrite, not merely free, the plain values
    for endpoint_id, secret in plain:
        bind.execute(sa.update(endpoint).where(endpoint.c.id == endpoint_id)
                     .values(secret=box.seal(endpoint_id, secret)))


def downgrade() -> None:
    """Back to 0006: secrets in the clear again (an explicit operator decision), columns dropped.
    A secret still in its rotation overlap is dropped with ``previous_secret``: 0006 signs with
    one secret only."""
    from gateway.webhooks.secrets import is_sealed

    bind = op.get_bind()
    sealed = [(i, s) for i, s in bind.execute(sa.select(endpoint.c.id, endpoint.c.secret)).all() if is_sealed(s)]
    if sealed:
        box = _secret_box()
        for endpoint_id, secret in sealed:
            bind.execute(sa.update(endpoint).where(endpoint.c.id == endpoint_id)
                         .values(secret=box.unseal(endpoint_id, secret)))
    if bind.dialect.name == "postgresql":
        op.alter_column("webhook_endpoint", "secret", type_=sa.String(128), existing_type=sa.Text,
                        existing_nullable=False)
    for name in OUTBOX_COLUMNS:
        op.drop_column("webhook_outbox", name)
    for name in ENDPOINT_COLUMNS:
        op.drop_column("webhook_endpoint", name)

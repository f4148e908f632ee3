"""Tables. The schema itself is made only by the Alembic migrations; these classes describe it
for queries (and a test checks the two agree)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from gateway.db import Base


class ApiKey(Base):
    __tablename__ = "api_key"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key_id: Mapped[str] = mapped_column(String(12), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # agent | admin
    agent: Mapped[str | None] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(200))
    secret_sha256: Mapped[bytes] = mapped_column(LargeBinary(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class User(Base):
    __tablename__ = "console_user"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(128), unique=True)
    password_hash: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(String(16))  # admin | reviewer | viewer
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PolicyVersion(Base):
    __tablename__ = "policy_version"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    sources: Mapped[str] = mapped_column(Text)  # JSON: [{"source": name, "text": yaml}]
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ToolCall(Base):
    __tablename__ = "tool_call"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    agent: Mapped[str] = mapped_column(String(128), index=True)
    tool: Mapped[str] = mapped_column(String(200), index=True)
    args: Mapped[str] = mapped_column(Text)  # redacted, canonical JSON
    args_fp: Mapped[str] = mapped_column(String(64))  # HMAC of the raw canonical args
    redactions: Mapped[str] = mapped_column(Text)  # JSON list of [pointer, rule]
    session_id: Mapped[str | None] = mapped_column(String(128), index=True)
    framework: Mapped[str | None] = mapped_column(String(64))
    metadata_json: Mapped[str] = mapped_column("metadata", Text)
    fingerprint: Mapped[str] = mapped_column(String(64))
    fail_open: Mapped[bool] = mapped_column(Boolean, default=False)
    decision: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(32), index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    rule: Mapped[str | None] = mapped_column(String(200))
    policy_version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    decided_by: Mapped[str | None] = mapped_column(String(200))
    decided_channel: Mapped[str | None] = mapped_column(String(16))
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    claimed_by: Mapped[str | None] = mapped_column(String(12))
    comment: Mapped[str | None] = mapped_column(Text)
    outcome_status: Mapped[str | None] = mapped_column(String(16))
    outcome_error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[int | None] = mapped_column(BigInteger)
    outcome_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    outcome_fingerprint: Mapped[str | None] = mapped_column(String(64))


class ConsoleSession(Base):
    __tablename__ = "console_session"

    token_sha256: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer, ForeignKey("console_user.id"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    idle_expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    absolute_expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(256))


class AuditEvent(Base):
    __tablename__ = "audit_event"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    recorded_at: Mapped[str] = mapped_column(String(32))
    event_type: Mapped[str] = mapped_column(String(64))
    tool_call_id: Mapped[str | None] = mapped_column(String(36), index=True)
    canonical: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    row_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)


# -- webhooks: endpoints, the decision outbox, the delivery log (migration 0004) -----------------

from sqlalchemy import Index  # noqa: E402 - imported in its section: the file's sections have separate owners


class WebhookEndpoint(Base):
    """Where an agent's decision events are POSTed. The secret is kept retrievable (the gateway
    signs with it) but only sealed (AES-GCM, ``gateway.webhooks.secrets``, migration 0007); it is
    shown once, at registration or rotation, and never listed."""

    __tablename__ = "webhook_endpoint"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # ep_<16 hex>
    agent: Mapped[str] = mapped_column(String(128), index=True)
    url: Mapped[str] = mapped_column(Text)
    secret: Mapped[str] = mapped_column(Text)  # sealed:v1:<base64>: the whsec_ secret, sealed for this id
    event_types: Mapped[str] = mapped_column(Text)  # JSON list, e.g. ["approval.decided"]
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # migration 0007: rotation, payload shape, health
    previous_secret: Mapped[str | None] = mapped_column(Text)  # sealed; still signs during the rotation overlap
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    rotated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    include_args: Mapped[bool] = mapped_column(Boolean, default=False)  # false: thin payloads (no data.args)
    last_success_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    first_failure_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # of the current failing run
    disabled_reason: Mapped[str | None] = mapped_column(Text)


class WebhookOutbox(Base):
    """One event for one endpoint, written in the decision's transaction; ``id`` is the
    ``webhook-id`` header, identical on every retry."""

    __tablename__ = "webhook_outbox"
    __table_args__ = (Index("ix_webhook_outbox_due", "status", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # msg_<uuid7>
    endpoint_id: Mapped[str] = mapped_column(String(32), ForeignKey("webhook_endpoint.id"), index=True)
    event_type: Mapped[str] = mapped_column(String(64))
    call_id: Mapped[str | None] = mapped_column(String(36), index=True)
    payload: Mapped[str] = mapped_column(Text)  # the exact body bytes of every attempt (ASCII JSON)
    status: Mapped[str] = mapped_column(String(16))  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # attempts started (counted at claim), ever
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # due time, or lease end
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    # migration 0007: an admin replay starts a fresh attempt budget above this many attempts
    replay_base: Mapped[int] = mapped_column(Integer, default=0)
    replayed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class WebhookDelivery(Base):
    """The delivery log: one row per finished attempt."""

    __tablename__ = "webhook_delivery"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(String(40), ForeignKey("webhook_outbox.id"), index=True)
    endpoint_id: Mapped[str] = mapped_column(String(32), ForeignKey("webhook_endpoint.id"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    duration_ms: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer)
    result: Mapped[str] = mapped_column(String(16))  # delivered | retry | failed
    error: Mapped[str | None] = mapped_column(Text)
    response_excerpt: Mapped[str | None] = mapped_column(Text)
    resolved_ip: Mapped[str | None] = mapped_column(String(64))


# -- LLM usage: one append-only row per model call, priced at ingest (migration 0005) -------------


class LlmUsage(Base):
    """One LLM call's tokens and cost. Append-only at the database level (migration 0005), like
    ``audit_event``; every row also has an ``llm.usage`` event in the audit chain."""

    __tablename__ = "llm_usage"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # the SDK's uuid7: ingest is idempotent on it
    agent: Mapped[str] = mapped_column(String(128), index=True)  # the API key's agent
    session_id: Mapped[str | None] = mapped_column(String(128), index=True)
    model: Mapped[str] = mapped_column(String(256))  # as reported by the framework
    provider: Mapped[str | None] = mapped_column(String(64))
    framework: Mapped[str | None] = mapped_column(String(64))
    input_tokens: Mapped[int] = mapped_column(BigInteger)  # includes cache reads and writes
    output_tokens: Mapped[int] = mapped_column(BigInteger)  # includes reasoning tokens
    cache_read_tokens: Mapped[int] = mapped_column(BigInteger)
    cache_write_tokens: Mapped[int] = mapped_column(BigInteger)
    reasoning_tokens: Mapped[int] = mapped_column(BigInteger)
    cost_usd: Mapped[str | None] = mapped_column(Text)  # exact decimal string; null when unpriced
    price_status: Mapped[str] = mapped_column(String(16))  # priced | unpriced
    priced_model: Mapped[str | None] = mapped_column(String(200))  # genai-prices model id
    priced_provider: Mapped[str | None] = mapped_column(String(64))  # genai-prices provider id
    pricing_version: Mapped[str] = mapped_column(String(64))  # e.g. "genai-prices 0.2.3"
    ts: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # the SDK's clock
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # the gateway's clock

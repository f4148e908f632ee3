"""LLM usage ingest: validate a ``POST /v1/usage`` batch, price it, store it append-only.

Three steps, split where the work belongs:

* :func:`parse_usage_batch` (request thread): strict validation. Every error names the exact
  field (``events[3].input_tokens``, with the RFC 6901 pointer ``/events/3/input_tokens``),
  including the cross-field rules pydantic cannot place (cache tokens within input tokens,
  reasoning tokens within output tokens) and real calendar timestamps.
* :func:`prepare_usage` (request thread pool): price each event with the bundled genai-prices
  snapshot (:mod:`gateway.pricing`), so the writer thread does no pricing.
* :func:`submit_usage` (the group commit's writer thread): a set-based unit like
  ``submit_calls``: one key SELECT for every queued request, one multi-row
  ``INSERT ... ON CONFLICT (id) DO NOTHING RETURNING id`` per 1000 rows (both engines), and an
  ``llm.usage`` audit event for each row that was new, in the same transaction. A retried batch
  therefore stores and audits nothing twice; it is answered with its ``duplicates`` count.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql, sqlite

from gateway.audit import Actor, AuditBatch
from gateway.auth import authenticate_many, require_agent
from gateway.errors import DomainError
from gateway.keys import ParsedKey
from gateway.models import LlmUsage
from gateway.pricing import PRICING_VERSION, TokenCounts, format_usd, price_usage
from gateway.problems import ProblemException, validation_errors
from gateway.schemas import UsageBatchIn

__all__ = ["PricedEvent", "UsageReceipt", "UsageSubmission", "parse_usage_batch", "prepare_usage", "submit_usage"]

#: Rows per INSERT statement: 1000 x 19 parameters stays under SQLite's and PostgreSQL's limits.
INSERT_CHUNK = 1000
TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens")


def field_name(loc: Sequence[Any]) -> str:
    """A pydantic location as the field path people read: ``events[3].input_tokens``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _pointer(loc: Sequence[Any]) -> str:
    return "/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in loc)


def _invalid(errors: list[dict[str, Any]]) -> ProblemException:
    first = errors[0]
    detail = f"{first['field']}: {first['message']}" if first.get("field") else first["message"]
    if len(errors) > 1:
        detail += f" (and {len(errors) - 1} more)"
    return ProblemException(422, "validation_error", detail=detail, errors=errors[:50])


def parse_usage_batch(data: Any) -> list[dict[str, Any]]:
    """The validated events of a strictly parsed body, or a 422 problem naming each bad field."""
    try:
        UsageBatchIn.model_validate(data, strict=True)
    except ValidationError as exc:
        raw = exc.errors(include_input=False, include_url=False)
        errors = validation_errors(raw, body_prefix=False)
        for item, err in zip(errors, raw, strict=True):
            item["field"] = field_name(err["loc"]) or "body"
        raise _invalid(errors) from None
    events: list[dict[str, Any]] = data["events"]
    errors = []
    for i, event in enumerate(events):
        for name, message, code in _cross_field_errors(event):
            loc = ("events", i, name)
            errors.append({"pointer": _pointer(loc), "field": field_name(loc), "code": code, "message": message})
    if errors:
        raise _invalid(errors)
    return events


def _cross_field_errors(event: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    cache = event.get("cache_read_tokens", 0) + event.get("cache_write_tokens", 0)
    if cache > event["input_tokens"]:
        yield ("cache_read_tokens",
               "cache_read_tokens + cache_write_tokens exceed input_tokens, which must include cached tokens",
               "cache_exceeds_input")
    if event.get("reasoning_tokens", 0) > event["output_tokens"]:
        yield ("reasoning_tokens", "reasoning_tokens exceed output_tokens, which must include reasoning tokens",
               "reasoning_exceeds_output")
    try:
        datetime.fromisoformat(event["ts"])
    except ValueError:
        yield ("ts", "not a valid RFC 3339 date and time", "invalid_timestamp")


@dataclass(frozen=True, slots=True)
class PricedEvent:
    """A validated event with its price: the row to insert, minus agent and recorded_at."""

    row: dict[str, Any]


def _utc(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def prepare_usage(events: list[dict[str, Any]], *, now: datetime | None = None) -> list[PricedEvent]:
    """Price every event. The price is the one in force when the call was made (the SDK's
    ``ts``), but never a future one: an agent clock running ahead cannot pick tomorrow's price."""
    now = now or datetime.now(UTC)
    priced = []
    for event in events:
        ts = _utc(event["ts"])
        tokens = TokenCounts(**{name: event.get(name, 0) for name in TOKEN_FIELDS})
        price = price_usage(event["model"], event.get("provider"), tokens, min(ts, now))
        priced.append(PricedEvent({
            "id": event["id"].lower(),
            "session_id": event.get("session_id"),
            "model": event["model"],
            "provider": event.get("provider"),
            "framework": event.get("framework"),
            **{name: getattr(tokens, name) for name in TOKEN_FIELDS},
            "cost_usd": None if price.cost_usd is None else format_usd(price.cost_usd),
            "price_status": price.status,
            "priced_model": price.model_id,
            "priced_provider": price.provider_id,
            "pricing_version": PRICING_VERSION,
            "ts": ts,
        }))
    return priced


@dataclass(frozen=True, slots=True)
class UsageSubmission:
    """One ``POST /v1/usage`` waiting for the group commit."""

    events: list[PricedEvent]
    key: ParsedKey | None
    pepper: bytes


@dataclass(frozen=True, slots=True)
class UsageReceipt:
    accepted: int
    duplicates: int

    def body(self) -> dict[str, int]:
        return {"accepted": self.accepted, "duplicates": self.duplicates}


def _insert_new(conn: Connection, rows: list[dict[str, Any]]) -> set[str]:
    """Insert rows whose id is new; the ids actually inserted (RETURNING skips the conflicts).

    Executed as an executemany of one cached statement: SQLAlchemy's "insertmanyvalues" sends
    it as multi-row ``INSERT ... VALUES (...), (...) ON CONFLICT (id) DO NOTHING RETURNING id``
    pages of :data:`INSERT_CHUNK` rows, without compiling a new statement per batch size
    (compiling a 500-row VALUES clause costs more than inserting it)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    table = LlmUsage.__table__
    stmt = dialect.insert(table).on_conflict_do_nothing(index_elements=["id"]).returning(table.c.id)
    result = conn.execution_options(insertmanyvalues_page_size=INSERT_CHUNK).execute(stmt, rows)
    return set(result.scalars())


def submit_usage(
    conn: Connection, audit: AuditBatch, submissions: list[UsageSubmission]
) -> list[UsageReceipt | DomainError]:
    """Store every queued batch with set-based statements and audit each new row.

    Each submission is answered on its own (a bad key fails only its request). An id seen
    twice -- within a batch, across batches of this group commit, or already stored -- is
    stored once and counted as a duplicate everywhere else."""
    principals = authenticate_many(conn, [s.key for s in submissions], pepper=submissions[0].pepper)
    now = datetime.now(UTC)
    results: list[UsageReceipt | DomainError | None] = [None] * len(submissions)
    owners: list[tuple[int, str, Actor]] = []
    rows: list[dict[str, Any]] = []
    for index, (submission, principal) in enumerate(zip(submissions, principals, strict=True)):
        try:
            if isinstance(principal, DomainError):
                raise principal
            agent = require_agent(principal)
        except DomainError as exc:
            results[index] = exc
            continue
        owners.append((index, agent, Actor("agent_key", principal.key_id)))
        rows.extend({**event.row, "agent": agent, "recorded_at": now} for event in submission.events)
    inserted = _insert_new(conn, rows) if rows else set()
    credited: set[str] = set()
    for index, agent, actor in owners:
        accepted = duplicates = 0
        for event in submissions[index].events:
            row = event.row
            if row["id"] in inserted and row["id"] not in credited:
                credited.add(row["id"])
                accepted += 1
                audit.add("llm.usage", actor, _audit_data(row, agent))
            else:
                duplicates += 1
        results[index] = UsageReceipt(accepted, duplicates)
    return [r for r in results if r is not None]


def _audit_data(row: dict[str, Any], agent: str) -> dict[str, Any]:
    """What the chain proves about a usage row: who, which session, which model, tokens, cost."""
    return {
        "usage_id": row["id"],
        "agent": agent,
        "session_id": row["session_id"],
        "model": row["model"],
        "provider": row["provider"],
        "framework": row["framework"],
        **{name: row[name] for name in TOKEN_FIELDS},
        "cost_usd": row["cost_usd"],
        "price_status": row["price_status"],
        "priced_model": row["priced_model"],
        "priced_provider": row["priced_provider"],
        "pricing_version": row["pricing_version"],
    }

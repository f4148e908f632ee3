"""One session at a glance: its tool calls, its LLM calls and what they cost.

``read_session`` answers ``GET /v1/sessions/{id}``. An agent key sees only its own agent's
calls and usage (another agent's session is a 404, exactly like an unknown one); an admin key
sees every agent's. The two lists are bounded (oldest first, with ``truncated`` flags); the
usage aggregates always cover every LLM call of the session.

Costs are exact: stored as decimal strings, summed as ``Decimal`` in Python in one streamed
pass (SQLite has no exact numeric type, and one code path keeps both engines identical), and
answered as decimal strings. Only priced calls contribute to ``cost_usd``; unpriced ones are
counted in ``unpriced_calls`` so a partial total is never mistaken for a complete one.
"""

from __future__ import annotations

import decimal
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, select

from gateway.auth import authenticate
from gateway.calls import CallView, _iso
from gateway.errors import NotFound
from gateway.keys import ParsedKey, Principal
from gateway.models import LlmUsage, ToolCall
from gateway.pricing import format_usd

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "read_session", "session_usage"]

DEFAULT_LIMIT = 200
MAX_LIMIT = 1000
TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens")
CALL_FIELDS = ("tool", "agent", "status", "decision", "rule", "reason", "created_at", "decided_at", "decided_by",
               "outcome")
#: Room for exact sums: 28 significant digits (the default) could round a large session's total.
_SUM_CONTEXT = decimal.Context(prec=60)


@dataclass(slots=True)
class _Totals:
    calls: int = 0
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TOKEN_FIELDS, 0))
    cost: Decimal = Decimal(0)
    unpriced_calls: int = 0

    def add(self, row: Any) -> None:
        self.calls += 1
        for name in TOKEN_FIELDS:
            self.tokens[name] += getattr(row, name)
        if row.cost_usd is None:
            self.unpriced_calls += 1
        else:
            self.cost = _SUM_CONTEXT.add(self.cost, Decimal(row.cost_usd))

    def body(self) -> dict[str, Any]:
        return {"calls": self.calls, **self.tokens, "cost_usd": format_usd(self.cost),
                "unpriced_calls": self.unpriced_calls}


def read_session(
    conn: Connection, *, session_id: str, key: ParsedKey | None, pepper: bytes, limit: int = DEFAULT_LIMIT
) -> dict[str, Any]:
    """The ``GET /v1/sessions/{id}`` body, or ``NotFound`` when the caller can see nothing of it."""
    principal = authenticate(conn, key, pepper=pepper, touch=False)
    calls, calls_truncated = _calls(conn, principal, session_id, limit)
    usage = session_usage(conn, session_id=session_id, agent=None if principal.kind == "admin" else principal.agent)
    if not calls and usage["total"]["calls"] == 0:
        raise NotFound(f"no session {session_id}")
    llm_calls, llm_truncated = _llm_calls(conn, principal, session_id, limit)
    return {
        "session_id": session_id,
        "calls": calls,
        "calls_truncated": calls_truncated,
        "usage": usage,
        "llm_calls": llm_calls,
        "llm_calls_truncated": llm_truncated,
        "truncated": calls_truncated or llm_truncated,
    }


def _visible(principal: Principal, table: Any, session_id: str) -> list[Any]:
    """Rows of this session the principal may read: an agent key its own agent's only."""
    return _where(table, session_id, None if principal.kind == "admin" else principal.agent)


def _where(table: Any, session_id: str, agent: str | None) -> list[Any]:
    conditions = [table.c.session_id == session_id]
    if agent is not None:
        conditions.append(table.c.agent == agent)
    return conditions


def _calls(conn: Connection, principal: Principal, session_id: str, limit: int) -> tuple[list[dict[str, Any]], bool]:
    table = ToolCall.__table__
    rows = conn.execute(
        select(table).where(*_visible(principal, table, session_id))
        .order_by(table.c.created_at, table.c.id).limit(limit + 1)
    ).mappings().all()
    out = []
    for row in rows[:limit]:
        detail = CallView(dict(row)).detail_body()
        out.append({"id": detail["call_id"], **{name: detail[name] for name in CALL_FIELDS}})
    return out, len(rows) > limit


def session_usage(conn: Connection, *, session_id: str, agent: str | None) -> dict[str, Any]:
    """Token and cost totals of a session's LLM calls, by (model, provider) and overall, over
    every row (one streamed pass); ``agent=None`` sums every agent's rows of that session id.
    Also what the console's call detail page shows for the call's session."""
    table = LlmUsage.__table__
    query = select(table.c.model, table.c.provider, table.c.cost_usd, *(table.c[name] for name in TOKEN_FIELDS)).where(
        *_where(table, session_id, agent))
    by_model: dict[tuple[str, str | None], _Totals] = {}
    total = _Totals()
    for row in conn.execution_options(stream_results=True, yield_per=2000).execute(query):
        group = by_model.get((row.model, row.provider))
        if group is None:
            group = by_model[(row.model, row.provider)] = _Totals()
        group.add(row)
        total.add(row)
    ordered = sorted(by_model.items(), key=lambda item: (item[0][0], item[0][1] or ""))
    return {
        "by_model": [{"model": model, "provider": provider, **totals.body()} for (model, provider), totals in ordered],
        "total": total.body(),
    }


def _llm_calls(
    conn: Connection, principal: Principal, session_id: str, limit: int
) -> tuple[list[dict[str, Any]], bool]:
    table = LlmUsage.__table__
    rows = conn.execute(
        select(table).where(*_visible(principal, table, session_id))
        .order_by(table.c.ts, table.c.id).limit(limit + 1)
    ).mappings().all()
    out = [
        {
            "id": row["id"],
            "agent": row["agent"],
            "ts": _iso(row["ts"]),
            "recorded_at": _iso(row["recorded_at"]),
            "model": row["model"],
            "provider": row["provider"],
            "framework": row["framework"],
            **{name: row[name] for name in TOKEN_FIELDS},
            "cost_usd": row["cost_usd"],
            "price_status": row["price_status"],
            "priced_model": row["priced_model"],
            "priced_provider": row["priced_provider"],
        }
        for row in rows[:limit]
    ]
    return out, len(rows) > limit

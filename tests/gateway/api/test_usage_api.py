"""POST /v1/usage and GET /v1/sessions/{id} in-process, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import DBAPIError

from callgate.ids import uuid7
from gateway.audit import stream_rows, verify_rows
from gateway.models import AuditEvent, LlmUsage
from gateway.pricing import TokenCounts, format_usd, price_usage
from gateway.schemas import MAX_TOKENS

TS = "2026-06-01T12:00:00.000000Z"
AT = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def event(model: str = "gpt-4o", input_tokens: int = 1000, output_tokens: int = 100, **extra: Any) -> dict[str, Any]:
    return {"id": uuid7(), "ts": TS, "session_id": "s-1", "model": model, "provider": "openai",
            "framework": "langchain", "input_tokens": input_tokens, "output_tokens": output_tokens,
            "cache_read_tokens": 0, "cache_write_tokens": 0, "reasoning_tokens": 0, **extra}


def post_usage(client: TestClient, key: str | None, body: Any, **kw: Any) -> Any:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return client.post("/v1/usage", json=body, headers=headers, **kw)


def get_session(client: TestClient, key: str | None, session_id: str, **params: Any) -> Any:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return client.get(f"/v1/sessions/{session_id}", headers=headers, params=params)


def usage_rows(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(LlmUsage.__table__).order_by(LlmUsage.id)).mappings()]


def usage_events(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        q = select(AuditEvent.canonical).where(AuditEvent.event_type == "llm.usage").order_by(AuditEvent.seq)
        return [json.loads(c) for (c,) in conn.execute(q)]


def expected_cost(model: str, provider: str | None, tokens: TokenCounts) -> str | None:
    price = price_usage(model, provider, tokens, AT)
    return None if price.cost_usd is None else format_usd(price.cost_usd)


class TestIngest:
    def test_batch_is_stored_priced_and_audited(self, client: TestClient, agent_key: str, engine: Engine) -> None:
        """Every event becomes a priced row of the key's agent plus one llm.usage audit event."""
        events = [
            event(input_tokens=1200, output_tokens=300, cache_read_tokens=1024),
            event("claude-sonnet-4-5", 10_000, 800, provider="anthropic", cache_read_tokens=6000,
                  cache_write_tokens=2000),
            event("my-finetune", 50, 5, provider=None, session_id=None, framework=None),
        ]
        r = post_usage(client, agent_key, {"events": events})
        assert r.status_code == 200, r.text
        assert r.json() == {"accepted": 3, "duplicates": 0}
        rows = {row["id"]: row for row in usage_rows(engine)}
        assert set(rows) == {e["id"] for e in events}
        first = rows[events[0]["id"]]
        assert first["agent"] == "billing-bot"
        assert (first["price_status"], first["priced_model"], first["priced_provider"]) == ("priced", "gpt-4o", "openai")
        assert first["cost_usd"] == expected_cost("gpt-4o", "openai", TokenCounts(1200, 300, cache_read_tokens=1024))
        second = rows[events[1]["id"]]
        assert second["cost_usd"] == expected_cost(
            "claude-sonnet-4-5", "anthropic", TokenCounts(10_000, 800, cache_read_tokens=6000, cache_write_tokens=2000))
        unknown = rows[events[2]["id"]]
        assert (unknown["price_status"], unknown["cost_usd"], unknown["session_id"]) == ("unpriced", None, None)
        assert unknown["input_tokens"] == 50
        assert all(row["pricing_version"].startswith("genai-prices ") for row in rows.values())
        audited = usage_events(engine)
        assert [a["data"]["usage_id"] for a in audited] == [e["id"] for e in events]
        assert audited[0]["actor"]["type"] == "agent_key"
        assert audited[0]["data"]["cost_usd"] == first["cost_usd"]
        assert audited[0]["data"]["session_id"] == "s-1"
        assert audited[0]["data"]["cache_read_tokens"] == 1024

    def test_optional_fields_default(self, client: TestClient, agent_key: str, engine: Engine) -> None:
        """Only id, ts, model and the input/output counts are required."""
        body = {"events": [{"id": uuid7(), "ts": "2026-06-01T12:00:00+02:00", "model": "gpt-4o",
                            "input_tokens": 10, "output_tokens": 2}]}
        assert post_usage(client, agent_key, body).json() == {"accepted": 1, "duplicates": 0}
        row = usage_rows(engine)[0]
        assert (row["session_id"], row["provider"], row["cache_read_tokens"], row["price_status"]) == (
            None, None, 0, "priced")

    def test_retried_batch_is_not_counted_twice(self, client: TestClient, agent_key: str, engine: Engine) -> None:
        """Idempotent on event ids: a full retry stores and audits nothing; a partial overlap only
        the new events."""
        events = [event() for _ in range(3)]
        assert post_usage(client, agent_key, {"events": events}).json() == {"accepted": 3, "duplicates": 0}
        n_audit = len(usage_events(engine))
        assert post_usage(client, agent_key, {"events": events}).json() == {"accepted": 0, "duplicates": 3}
        more = [*events[:2], event()]
        assert post_usage(client, agent_key, {"events": more}).json() == {"accepted": 1, "duplicates": 2}
        assert len(usage_rows(engine)) == 4
        assert len(usage_events(engine)) == n_audit + 1

    def test_uppercase_id_is_the_same_event(self, client: TestClient, agent_key: str, engine: Engine) -> None:
        e = event()
        post_usage(client, agent_key, {"events": [e]})
        again = {**e, "id": e["id"].upper()}
        assert post_usage(client, agent_key, {"events": [again]}).json() == {"accepted": 0, "duplicates": 1}
        assert len(usage_rows(engine)) == 1

    def test_repeated_id_within_a_batch_counts_once(self, client: TestClient, agent_key: str, engine: Engine) -> None:
        e = event()
        assert post_usage(client, agent_key, {"events": [e, e]}).json() == {"accepted": 1, "duplicates": 1}
        assert len(usage_rows(engine)) == 1
        assert len(usage_events(engine)) == 1

    def test_concurrent_identical_batches_store_once(self, client: TestClient, agent_key: str, engine: Engine) -> None:
        """Retries racing each other (often in one group commit) still store each event once."""
        events = [event() for _ in range(20)]
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda _: post_usage(client, agent_key, {"events": events}).json(), range(6)))
        assert sum(a["accepted"] for a in answers) == 20
        assert sum(a["duplicates"] for a in answers) == 100
        assert len(usage_rows(engine)) == 20
        assert len(usage_events(engine)) == 20

    def test_audit_chain_verifies_after_usage_ingest(self, client: TestClient, agent_key: str, engine: Engine) -> None:
        for _ in range(3):
            post_usage(client, agent_key, {"events": [event() for _ in range(50)]})
        with engine.connect() as conn:
            result = verify_rows(stream_rows(conn))
        assert result.ok, result
        assert result.events >= 150


def _error(r: Any) -> dict[str, Any]:
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["code"] == "validation_error"
    return body


class TestValidation:
    @pytest.mark.parametrize(
        ("change", "field", "code"),
        [
            ({"input_tokens": -1}, "events[3].input_tokens", "greater_than_equal"),
            ({"output_tokens": MAX_TOKENS + 1}, "events[3].output_tokens", "less_than_equal"),
            ({"input_tokens": 1.0}, "events[3].input_tokens", "int_type"),
            ({"input_tokens": True}, "events[3].input_tokens", "int_type"),
            ({"input_tokens": "10"}, "events[3].input_tokens", "int_type"),
            ({"cache_read_tokens": None}, "events[3].cache_read_tokens", "int_type"),
            ({"model": ""}, "events[3].model", "string_pattern_mismatch"),
            ({"model": "x" * 257}, "events[3].model", "string_pattern_mismatch"),
            ({"model": "gpt\n4o"}, "events[3].model", "string_pattern_mismatch"),
            ({"provider": "open ai"}, "events[3].provider", "string_pattern_mismatch"),
            ({"framework": "LangChain"}, "events[3].framework", "string_pattern_mismatch"),
            ({"session_id": "has space"}, "events[3].session_id", "string_pattern_mismatch"),
            ({"session_id": "s" * 129}, "events[3].session_id", "string_pattern_mismatch"),
            ({"id": "not-a-uuid"}, "events[3].id", "string_pattern_mismatch"),
            ({"ts": "2026-06-01 12:00:00"}, "events[3].ts", "string_pattern_mismatch"),
            ({"ts": "2026-02-30T12:00:00Z"}, "events[3].ts", "invalid_timestamp"),
            ({"agent": "someone-else"}, "events[3].agent", "extra_forbidden"),
            ({"cost_usd": "0"}, "events[3].cost_usd", "extra_forbidden"),
            ({"input_tokens": 10, "cache_read_tokens": 8, "cache_write_tokens": 5}, "events[3].cache_read_tokens",
             "cache_exceeds_input"),
            ({"output_tokens": 10, "reasoning_tokens": 11}, "events[3].reasoning_tokens", "reasoning_exceeds_output"),
        ],
    )
    def test_errors_name_the_field(
        self, client: TestClient, agent_key: str, engine: Engine, change: dict[str, Any], field: str, code: str
    ) -> None:
        """A bad value in event 3 is reported as events[3].<field> (and its JSON pointer), and
        nothing of the batch is stored."""
        events = [event() for _ in range(5)]
        events[3].update(change)
        body = _error(post_usage(client, agent_key, {"events": events}))
        err = body["errors"][0]
        assert (err["field"], err["code"]) == (field, code)
        assert err["pointer"] == "/" + field.replace("[", "/").replace("]", "").replace(".", "/")
        assert body["detail"].startswith(field)
        assert usage_rows(engine) == []

    def test_missing_required_field(self, client: TestClient, agent_key: str) -> None:
        e = event()
        del e["model"]
        err = _error(post_usage(client, agent_key, {"events": [event(), e]}))["errors"][0]
        assert (err["field"], err["code"]) == ("events[1].model", "missing")

    @pytest.mark.parametrize(
        ("body", "field", "code"),
        [
            ({"events": []}, "events", "too_short"),
            ({}, "events", "missing"),
            ({"events": [], "agent": "x"}, "agent", "extra_forbidden"),
            ([], "body", "model_type"),
            ({"events": {"0": {}}}, "events", "list_type"),
        ],
    )
    def test_envelope_errors(self, client: TestClient, agent_key: str, body: Any, field: str, code: str) -> None:
        errors = _error(post_usage(client, agent_key, body))["errors"]
        assert (field, code) in [(e["field"], e["code"]) for e in errors]

    def test_every_bad_field_is_listed(self, client: TestClient, agent_key: str) -> None:
        events = [event(), event(input_tokens=-1), event(output_tokens=-2)]
        body = _error(post_usage(client, agent_key, {"events": events}))
        assert [e["field"] for e in body["errors"]] == ["events[1].input_tokens", "events[2].output_tokens"]
        assert "and 1 more" in body["detail"]

    @pytest.mark.parametrize(
        ("raw", "code"),
        [
            (b'{"events": [{"input_tokens": NaN}]}', "non_finite_number"),
            (b'{"events": [], "events": []}', "duplicate_key"),
            (b'{"events": [{"model": "a\\u0000"}]}', "nul_character"),
            (b'{"events": [{"input_tokens": 99999999999999999999}]}', "number_out_of_range"),
            (b'{"events": [', "malformed_json"),
        ],
    )
    def test_strict_json(self, client: TestClient, agent_key: str, raw: bytes, code: str) -> None:
        r = client.post("/v1/usage", content=raw, headers={"Authorization": f"Bearer {agent_key}",
                                                           "Content-Type": "application/json"})
        assert r.status_code == 422, r.text
        assert r.json()["code"] == code

    def test_json_content_type_required(self, client: TestClient, agent_key: str) -> None:
        r = client.post("/v1/usage", content=json.dumps({"events": [event()]}),
                        headers={"Authorization": f"Bearer {agent_key}", "Content-Type": "text/plain"})
        assert r.status_code == 415


class TestLimits:
    def test_at_most_1000_events(self, client: TestClient, agent_key: str, engine: Engine) -> None:
        """1000 events are accepted (when they fit the body limit); 1001 are refused as a whole."""
        small = [{"id": uuid7(), "ts": TS, "model": "m", "input_tokens": 1, "output_tokens": 1} for _ in range(1001)]
        errors = _error(post_usage(client, agent_key, {"events": small}))["errors"]
        assert [(e["field"], e["code"]) for e in errors] == [("events", "too_long")]
        assert post_usage(client, agent_key, {"events": small[:1000]}).json() == {"accepted": 1000, "duplicates": 0}
        assert len(usage_rows(engine)) == 1000

    def test_body_size_limit(self, client: TestClient, agent_key: str, engine: Engine) -> None:
        """The /v1 body limit (256 KiB by default) applies before parsing: 413, nothing stored."""
        events = [event("m" * 250, session_id="s" * 128) for _ in range(700)]
        raw = json.dumps({"events": events}).encode()
        assert len(raw) > 256 * 1024
        r = client.post("/v1/usage", content=raw, headers={"Authorization": f"Bearer {agent_key}",
                                                           "Content-Type": "application/json"})
        assert r.status_code == 413
        assert r.json()["code"] == "payload_too_large"
        assert usage_rows(engine) == []


class TestAuth:
    def test_no_or_bad_key_is_401(self, client: TestClient, agent_key: str) -> None:
        assert post_usage(client, None, {"events": [event()]}).status_code == 401
        assert post_usage(client, "cg_agent_nope", {"events": [event()]}).status_code == 401
        bogus = agent_key[:-4] + ("AAAA" if not agent_key.endswith("AAAA") else "BBBB")
        r = post_usage(client, bogus, {"events": [event()]})
        assert (r.status_code, r.json()["code"]) == (401, "invalid_api_key")
        assert get_session(client, None, "s-1").status_code == 401

    def test_admin_keys_do_not_report_usage(self, client: TestClient, admin_key: str, engine: Engine) -> None:
        r = post_usage(client, admin_key, {"events": [event()]})
        assert (r.status_code, r.json()["code"]) == (403, "agent_key_required")
        assert usage_rows(engine) == []

    def test_the_agent_is_the_keys(self, client: TestClient, agent_key: str, other_agent_key: str, engine: Engine) -> None:
        post_usage(client, other_agent_key, {"events": [event()]})
        assert [row["agent"] for row in usage_rows(engine)] == ["other-bot"]

    def test_an_agent_cannot_read_another_agents_session(
        self, client: TestClient, agent_key: str, other_agent_key: str, admin_key: str
    ) -> None:
        post_usage(client, agent_key, {"events": [event(session_id="private")]})
        r = get_session(client, other_agent_key, "private")
        assert (r.status_code, r.json()["code"]) == (404, "not_found")
        assert get_session(client, agent_key, "private").status_code == 200
        assert get_session(client, admin_key, "private").status_code == 200


def post_call(client: TestClient, key: str, session_id: str, tool: str = "send_email",
              args: dict[str, Any] | None = None) -> dict[str, Any]:
    body = {"id": str(uuid.uuid4()), "tool": tool, "args": args or {"to": "a@example.com"}, "session_id": session_id}
    r = client.post("/v1/calls", json=body, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 201, r.text
    return r.json()


class TestSessions:
    def test_calls_and_usage_aggregates(self, client: TestClient, agent_key: str) -> None:
        """Tool calls, LLM calls and exact per-model and total sums, unpriced calls counted apart."""
        allowed = post_call(client, agent_key, "s-agg")
        blocked = post_call(client, agent_key, "s-agg", "stripe.refund", {"amount": 5, "customer_id": "cus_test_1"})
        post_call(client, agent_key, "elsewhere")
        specs = [
            ("gpt-4o", "openai", TokenCounts(1200, 300, cache_read_tokens=1024)),
            ("gpt-4o", "openai", TokenCounts(5000, 700, reasoning_tokens=0)),
            ("claude-sonnet-4-5", "anthropic", TokenCounts(10_000, 800, cache_read_tokens=6000, cache_write_tokens=2000)),
            ("my-finetune", None, TokenCounts(50, 5)),
            ("o3-mini", "openai", TokenCounts(900, 4000, reasoning_tokens=3500)),
        ]
        events = [event(m, t.input_tokens, t.output_tokens, provider=p, session_id="s-agg",
                        cache_read_tokens=t.cache_read_tokens, cache_write_tokens=t.cache_write_tokens,
                        reasoning_tokens=t.reasoning_tokens) for m, p, t in specs]
        events.append(event(session_id="another-session"))
        assert post_usage(client, agent_key, {"events": events}).json()["accepted"] == 6

        r = get_session(client, agent_key, "s-agg")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["session_id"] == "s-agg"
        assert [c["id"] for c in body["calls"]] == [allowed["call_id"], blocked["call_id"]]
        call = body["calls"][1]
        assert (call["tool"], call["status"], call["decision"], call["rule"]) == (
            "stripe.refund", "blocked", "block", "test-customers-never")
        assert call["reason"] == "Test customers cannot be refunded"
        assert call["agent"] == "billing-bot" and call["outcome"] is None and call["created_at"].endswith("Z")

        costs = [price_usage(m, p, t, AT).cost_usd for m, p, t in specs]
        by_model = {(g["model"], g["provider"]): g for g in body["usage"]["by_model"]}
        assert list(by_model) == [("claude-sonnet-4-5", "anthropic"), ("gpt-4o", "openai"), ("my-finetune", None),
                                  ("o3-mini", "openai")]
        gpt = by_model[("gpt-4o", "openai")]
        assert (gpt["calls"], gpt["input_tokens"], gpt["output_tokens"], gpt["cache_read_tokens"]) == (2, 6200, 1000, 1024)
        assert gpt["cost_usd"] == format_usd(costs[0] + costs[1])  # type: ignore[operator]
        assert gpt["unpriced_calls"] == 0
        unpriced = by_model[("my-finetune", None)]
        assert (unpriced["calls"], unpriced["cost_usd"], unpriced["unpriced_calls"]) == (1, "0", 1)
        assert by_model[("o3-mini", "openai")]["reasoning_tokens"] == 3500
        total = body["usage"]["total"]
        assert total["calls"] == 5 and total["unpriced_calls"] == 1
        assert total["input_tokens"] == sum(t.input_tokens for _, _, t in specs)
        assert total["cache_write_tokens"] == 2000
        assert Decimal(total["cost_usd"]) == sum(c for c in costs if c is not None)
        assert total["cost_usd"] == format_usd(sum((c for c in costs if c is not None), Decimal(0)))

        llm = body["llm_calls"]
        assert [c["id"] for c in llm] == [e["id"] for e in events[:5]]  # ts ties: uuid7 order = creation order
        assert llm[3]["cost_usd"] is None and llm[3]["price_status"] == "unpriced"
        assert llm[0]["cost_usd"] == format_usd(costs[0])  # type: ignore[arg-type]
        assert llm[0]["ts"] == "2026-06-01T12:00:00.000000Z"
        assert (llm[0]["priced_model"], llm[0]["priced_provider"]) == ("gpt-4o", "openai")
        assert body["truncated"] is body["calls_truncated"] is body["llm_calls_truncated"] is False

    def test_lists_are_bounded_aggregates_are_not(self, client: TestClient, agent_key: str) -> None:
        for _ in range(3):
            post_call(client, agent_key, "s-big")
        post_usage(client, agent_key, {"events": [event(session_id="s-big") for _ in range(5)]})
        body = get_session(client, agent_key, "s-big", limit=2).json()
        assert len(body["calls"]) == 2 and body["calls_truncated"] is True
        assert len(body["llm_calls"]) == 2 and body["llm_calls_truncated"] is True
        assert body["truncated"] is True
        assert body["usage"]["total"]["calls"] == 5
        assert get_session(client, agent_key, "s-big", limit=0).status_code == 422
        assert get_session(client, agent_key, "s-big", limit=5000).status_code == 422

    def test_session_with_only_usage_or_only_calls(self, client: TestClient, agent_key: str) -> None:
        post_usage(client, agent_key, {"events": [event(session_id="llm-only")]})
        body = get_session(client, agent_key, "llm-only").json()
        assert body["calls"] == [] and body["usage"]["total"]["calls"] == 1
        post_call(client, agent_key, "calls-only")
        body = get_session(client, agent_key, "calls-only").json()
        assert len(body["calls"]) == 1 and body["usage"]["by_model"] == []
        assert body["usage"]["total"] == {"calls": 0, "input_tokens": 0, "output_tokens": 0, "cache_read_tokens": 0,
                                          "cache_write_tokens": 0, "reasoning_tokens": 0, "cost_usd": "0",
                                          "unpriced_calls": 0}

    def test_unknown_session_is_404(self, client: TestClient, agent_key: str) -> None:
        r = get_session(client, agent_key, "never-seen")
        assert r.status_code == 404
        assert r.headers["content-type"].startswith("application/problem+json")
        assert get_session(client, agent_key, "bad%20id").status_code == 404
        assert get_session(client, agent_key, "x" * 129).status_code == 404

    def test_agent_sees_its_own_share_admin_sees_all(
        self, client: TestClient, agent_key: str, other_agent_key: str, admin_key: str
    ) -> None:
        """Session ids are the agents' own: an agent key sees only its agent's rows."""
        post_usage(client, agent_key, {"events": [event(session_id="shared")]})
        post_usage(client, other_agent_key, {"events": [event(session_id="shared"), event(session_id="shared")]})
        post_call(client, other_agent_key, "shared")
        mine = get_session(client, agent_key, "shared").json()
        assert mine["usage"]["total"]["calls"] == 1 and mine["calls"] == []
        assert {c["agent"] for c in mine["llm_calls"]} == {"billing-bot"}
        everyone = get_session(client, admin_key, "shared").json()
        assert everyone["usage"]["total"]["calls"] == 3 and len(everyone["calls"]) == 1
        assert {c["agent"] for c in everyone["llm_calls"]} == {"billing-bot", "other-bot"}


class TestAppendOnly:
    def _one_row(self, client: TestClient, agent_key: str) -> str:
        e = event()
        assert post_usage(client, agent_key, {"events": [e]}).json()["accepted"] == 1
        return str(e["id"])

    @pytest.mark.parametrize(
        "statement",
        [
            "UPDATE llm_usage SET input_tokens = 0",
            "UPDATE llm_usage SET cost_usd = '0.0' WHERE id = :id",
            "DELETE FROM llm_usage",
            "DELETE FROM llm_usage WHERE id = :id",
        ],
    )
    def test_update_and_delete_are_refused(
        self, client: TestClient, agent_key: str, engine: Engine, statement: str
    ) -> None:
        row_id = self._one_row(client, agent_key)
        before = usage_rows(engine)
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(text(statement), {"id": row_id})
        assert usage_rows(engine) == before

    def test_overwrite_is_impossible(self, client: TestClient, agent_key: str, engine: Engine) -> None:
        """INSERT OR REPLACE (SQLite) / ON CONFLICT DO UPDATE and TRUNCATE (PostgreSQL) change nothing."""
        row_id = self._one_row(client, agent_key)
        before = usage_rows(engine)
        columns = ("id, agent, model, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, "
                   "reasoning_tokens, price_status, pricing_version, ts, recorded_at")
        values = "(:id, 'x', 'm', 1, 1, 0, 0, 0, 'unpriced', 'v', :now, :now)"
        now = datetime.now(UTC)
        if engine.dialect.name == "sqlite":
            with engine.begin() as conn:
                conn.execute(text(f"INSERT OR REPLACE INTO llm_usage ({columns}) VALUES {values}"),
                             {"id": row_id, "now": now})
                conn.execute(text(f"REPLACE INTO llm_usage ({columns}) VALUES {values}"), {"id": row_id, "now": now})
        else:
            with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
                conn.execute(text(f"INSERT INTO llm_usage ({columns}) VALUES {values} "
                                  "ON CONFLICT (id) DO UPDATE SET agent = 'x'"), {"id": row_id, "now": now})
            with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
                conn.execute(text("TRUNCATE llm_usage"))
        assert usage_rows(engine) == before

    def test_sqlite_guards_hold_without_the_gateways_pragmas(
        self, client: TestClient, agent_key: str, engine: Engine
    ) -> None:
        """A plain sqlite3 connection (no recursive_triggers, as the sqlite3 CLI would have):
        REPLACE still cannot overwrite, UPDATE and DELETE still fail."""
        if engine.dialect.name != "sqlite":
            pytest.skip("SQLite's INSERT OR REPLACE guard")
        import sqlite3

        row_id = self._one_row(client, agent_key)
        before = usage_rows(engine)
        con = sqlite3.connect(str(engine.url.database), isolation_level=None)
        try:
            assert con.execute("PRAGMA recursive_triggers").fetchone() == (0,)
            con.execute("INSERT OR REPLACE INTO llm_usage (id, agent, model, input_tokens, output_tokens, "
                        "cache_read_tokens, cache_write_tokens, reasoning_tokens, price_status, pricing_version, ts, "
                        "recorded_at) VALUES (?, 'x', 'm', 1, 1, 0, 0, 0, 'unpriced', 'v', '2026-01-01', '2026-01-01')",
                        (row_id,))
            for statement in ("UPDATE llm_usage SET agent = 'x'", "DELETE FROM llm_usage"):
                with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                    con.execute(statement)
        finally:
            con.close()
        assert usage_rows(engine) == before

    def test_check_constraints_hold_even_for_direct_inserts(self, engine: Engine) -> None:
        """Negative counts, cache beyond input, or a cost on an unpriced row never get in."""
        columns = ("id, agent, model, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, "
                   "reasoning_tokens, cost_usd, price_status, pricing_version, ts, recorded_at")
        bad = [
            "(:id, 'a', 'm', -1, 1, 0, 0, 0, NULL, 'unpriced', 'v', :now, :now)",
            "(:id, 'a', 'm', 5, 1, 4, 2, 0, NULL, 'unpriced', 'v', :now, :now)",
            "(:id, 'a', 'm', 5, 1, 0, 0, 2, NULL, 'unpriced', 'v', :now, :now)",
            "(:id, 'a', 'm', 5, 1, 0, 0, 0, '0.1', 'unpriced', 'v', :now, :now)",
            "(:id, 'a', 'm', 5, 1, 0, 0, 0, NULL, 'priced', 'v', :now, :now)",
            "(:id, 'a', 'm', 5, 1, 0, 0, 0, NULL, 'free', 'v', :now, :now)",
        ]
        for values in bad:
            with pytest.raises(DBAPIError), engine.begin() as conn:
                conn.execute(text(f"INSERT INTO llm_usage ({columns}) VALUES {values}"),
                             {"id": uuid7(), "now": datetime.now(UTC)})
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(LlmUsage)).scalar_one() == 0


@pytest.mark.postgres
def test_the_app_role_may_only_select_and_insert_usage() -> None:
    """Migrated with CALLGATE_DB_APP_ROLE, the runtime role can ingest idempotently (INSERT ... ON
    CONFLICT DO NOTHING needs no UPDATE right) but can never change or remove a usage row."""
    import psycopg

    from gateway.migrate import upgrade
    from tests.pg import PG_ADMIN_DSN, PG_URL_PREFIX, throwaway_database

    role = f"cg_app_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        with throwaway_database("cg_role") as db_name:
            upgrade(PG_URL_PREFIX + db_name, app_role=role)
            app_dsn = PG_ADMIN_DSN.replace("user=postgres", f"user={role}").replace("dbname=postgres", f"dbname={db_name}")
            insert = ("INSERT INTO llm_usage (id, agent, model, input_tokens, output_tokens, cache_read_tokens, "
                      "cache_write_tokens, reasoning_tokens, price_status, pricing_version, ts, recorded_at) "
                      "VALUES (%s, 'a', 'm', 1, 1, 0, 0, 0, 'unpriced', 'v', now(), now()) "
                      "ON CONFLICT (id) DO NOTHING RETURNING id")
            row_id = uuid7()
            with psycopg.connect(app_dsn, autocommit=True) as conn:
                assert conn.execute(insert, (row_id,)).fetchall() == [(row_id,)]
                assert conn.execute(insert, (row_id,)).fetchall() == []
                for statement in ("UPDATE llm_usage SET agent = 'x'", "DELETE FROM llm_usage", "TRUNCATE llm_usage",
                                  insert.replace("DO NOTHING", "DO UPDATE SET agent = 'x'")):
                    with pytest.raises(psycopg.errors.InsufficientPrivilege):
                        conn.execute(statement, (row_id,) if "%s" in statement else None)
                with pytest.raises(psycopg.errors.InsufficientPrivilege, match="must be owner"):
                    conn.execute("ALTER TABLE llm_usage DISABLE TRIGGER ALL")
                assert conn.execute("SELECT count(*) FROM llm_usage").fetchone() == (1,)
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP ROLE IF EXISTS "{role}"')

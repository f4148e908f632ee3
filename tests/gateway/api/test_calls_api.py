"""The /v1/calls API in-process, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from gateway.audit import stream_rows, verify_rows
from gateway.key_admin import revoke_key
from gateway.audit import SYSTEM
from gateway.models import AuditEvent, ToolCall


def call_body(tool: str = "send_email", args: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "tool": tool, "args": {"to": "a@example.com"} if args is None else args, **extra}


def post(client: TestClient, key: str, body: Any, **kw: Any) -> Any:
    return client.post("/v1/calls", json=body, headers={"Authorization": f"Bearer {key}"}, **kw)


def events(engine: Engine, call_id: str | None = None) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        q = select(AuditEvent.canonical).order_by(AuditEvent.seq)
        if call_id:
            q = q.where(AuditEvent.tool_call_id == call_id)
        return [json.loads(c) for (c,) in conn.execute(q)]


def count_calls(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(ToolCall)).scalar_one())


class TestDecisions:
    def test_allowed_call_is_recorded_with_its_audit_events(self, client: TestClient, agent_key: str, engine: Engine) -> None:
        """An allowed call answers 201 allow and writes received + evaluated events in one chain."""
        body = call_body(session_id="s-1", framework="guard")
        r = post(client, agent_key, body)
        assert r.status_code == 201, r.text
        data = r.json()
        assert data["call_id"] == body["id"]
        assert (data["decision"], data["status"], data["rule"]) == ("allow", "allowed", None)
        assert isinstance(data["policy_version"], int)
        kinds = [e["event_type"] for e in events(engine, body["id"])]
        assert kinds == ["tool_call.received", "policy.evaluated"]
        received = events(engine, body["id"])[0]
        assert received["data"]["agent"] == "billing-bot"
        assert received["data"]["session_id"] == "s-1"
        assert received["actor"]["type"] == "agent_key"

    def test_block_rule_gives_the_reason(self, client: TestClient, agent_key: str) -> None:
        """A matching block rule answers block with the rule name and the reason the agent will see."""
        r = post(client, agent_key, call_body("stripe.refund", {"amount": 5, "customer_id": "cus_test_1"}))
        assert r.status_code == 201
        assert r.json()["decision"] == "block"
        assert r.json()["status"] == "blocked"
        assert r.json()["rule"] == "test-customers-never"
        assert r.json()["reason"] == "Test customers cannot be refunded"

    def test_require_approval_creates_a_pending_call(self, client: TestClient, agent_key: str, engine: Engine) -> None:
        """A require_approval rule leaves the call pending with an expiry and an approval.requested event."""
        body = call_body("stripe.refund", {"amount": 850, "customer_id": "cus_1"})
        r = post(client, agent_key, body)
        assert r.json()["decision"] == "require_approval"
        assert r.json()["status"] == "pending"
        assert r.json()["expires_at"].endswith("Z")
        assert [e["event_type"] for e in events(engine, body["id"])][-1] == "approval.requested"

    def test_tool_default_applies_when_no_rule_matches(self, client: TestClient, agent_key: str) -> None:
        """A tool's default decides when none of its rules match."""
        r = post(client, agent_key, call_body("delete_database", {"name": "prod"}))
        assert r.json()["decision"] == "block"


class TestIdempotency:
    def test_retry_with_same_body_replays_without_duplicates(self, client: TestClient, agent_key: str, engine: Engine) -> None:
        """The same id and body answers 200 with the same decision and writes nothing new."""
        body = call_body()
        first = post(client, agent_key, body)
        n_events = len(events(engine))
        again = post(client, agent_key, body)
        assert (first.status_code, again.status_code) == (201, 200)
        assert again.json() == first.json()
        assert count_calls(engine) == 1
        assert len(events(engine)) == n_events

    def test_same_id_with_another_body_is_refused(self, client: TestClient, agent_key: str, engine: Engine) -> None:
        """Reusing an id for a different call is a 422 and leaves the original untouched."""
        body = call_body()
        post(client, agent_key, body)
        r = post(client, agent_key, {**body, "args": {"to": "b@example.com"}})
        assert r.status_code == 422
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["code"] == "idempotency_key_reused"
        assert count_calls(engine) == 1

    def test_uppercase_id_is_the_same_call(self, client: TestClient, agent_key: str, engine: Engine) -> None:
        """Ids are normalized, so a retry that changes the id's case cannot create a second call."""
        body = call_body()
        post(client, agent_key, body)
        r = post(client, agent_key, {**body, "id": body["id"].upper()})
        assert r.status_code == 200
        assert count_calls(engine) == 1

    def test_concurrent_identical_posts_make_one_call(self, client: TestClient, agent_key: str, engine: Engine) -> None:
        """Many simultaneous identical requests give one row and the same answer to all."""
        body = call_body()
        with ThreadPoolExecutor(16) as pool:
            responses = list(pool.map(lambda _: post(client, agent_key, body), range(40)))
        assert all(r.status_code in (200, 201) for r in responses)
        assert sum(r.status_code == 201 for r in responses) == 1
        assert len({json.dumps(r.json(), sort_keys=True) for r in responses}) == 1
        assert count_calls(engine) == 1
        assert [e["event_type"] for e in events(engine, body["id"])] == ["tool_call.received", "policy.evaluated"]


class TestAuth:
    def test_missing_and_malformed_keys_are_401(self, client: TestClient, agent_key: str) -> None:
        """No key, a wrong scheme, a bad checksum and an unknown key are all 401 problems."""
        body = call_body()
        bad_checksum = agent_key[:-1] + ("A" if agent_key[-1] != "A" else "B")
        unknown = "cg_agent_000000000000_" + agent_key.split("_", 3)[3]
        for headers in ({}, {"Authorization": f"Basic {agent_key}"}, {"Authorization": f"Bearer {bad_checksum}"},
                        {"Authorization": f"Bearer {unknown}"}, {"Authorization": "Bearer " + "x" * 10_000}):
            r = client.post("/v1/calls", json=body, headers=headers)
            assert r.status_code == 401, headers
            assert r.json()["code"] == "invalid_api_key"

    def test_revoked_key_is_refused_on_the_next_request(self, client: TestClient, agent_key: str, engine: Engine) -> None:
        """Revocation takes effect immediately: there is no positive cache."""
        assert post(client, agent_key, call_body()).status_code == 201
        with engine.begin() as conn:
            revoke_key(conn, key_id=agent_key.split("_")[2], actor=SYSTEM)
        assert post(client, agent_key, call_body()).status_code == 401

    def test_admin_keys_cannot_submit_calls(self, client: TestClient, admin_key: str) -> None:
        """Admin keys manage the gateway; they never act as an agent."""
        assert post(client, admin_key, call_body()).status_code == 403

    def test_declared_agent_must_match_the_key(self, client: TestClient, agent_key: str) -> None:
        """The agent is stamped from the key; a body naming another agent is refused."""
        r = post(client, agent_key, call_body(agent="other-bot"))
        assert r.status_code == 403
        assert r.json()["code"] == "agent_mismatch"
        assert post(client, agent_key, call_body(agent="billing-bot")).status_code == 201

    def test_agents_cannot_see_each_others_calls(self, client: TestClient, agent_key: str, other_agent_key: str, admin_key: str) -> None:
        """Another agent gets 404 for a call id it does not own, and cannot reuse that id."""
        body = call_body()
        post(client, agent_key, body)
        assert client.get(f"/v1/calls/{body['id']}", headers={"Authorization": f"Bearer {other_agent_key}"}).status_code == 404
        assert post(client, other_agent_key, body).status_code == 422
        assert client.get(f"/v1/calls/{body['id']}", headers={"Authorization": f"Bearer {admin_key}"}).status_code == 200


class TestReadAndOutcome:
    def test_read_returns_redacted_args(self, client: TestClient, agent_key: str) -> None:
        """Secrets never come back: stored and returned arguments are redacted."""
        body = call_body("login", {"user": "bob", "password": "hunter2-SENTINEL"})
        post(client, agent_key, body)
        r = client.get(f"/v1/calls/{body['id']}", headers={"Authorization": f"Bearer {agent_key}"})
        assert r.status_code == 200
        assert "SENTINEL" not in r.text
        assert r.json()["args"]["user"] == "bob"
        assert r.json()["redactions"]

    def test_unknown_and_malformed_ids_are_404(self, client: TestClient, agent_key: str) -> None:
        """Unknown or malformed ids are 404 problems, never 500."""
        h = {"Authorization": f"Bearer {agent_key}"}
        assert client.get(f"/v1/calls/{uuid.uuid4()}", headers=h).status_code == 404
        assert client.get("/v1/calls/not-a-uuid", headers=h).status_code == 404

    def test_outcome_is_recorded_once(self, client: TestClient, agent_key: str, engine: Engine) -> None:
        """The same outcome twice is 200 both times; a different one is 409; one tool.outcome event."""
        body = call_body()
        post(client, agent_key, body)
        h = {"Authorization": f"Bearer {agent_key}"}
        outcome = {"status": "succeeded", "duration_ms": 12}
        r1 = client.post(f"/v1/calls/{body['id']}/outcome", json=outcome, headers=h)
        r2 = client.post(f"/v1/calls/{body['id']}/outcome", json=outcome, headers=h)
        r3 = client.post(f"/v1/calls/{body['id']}/outcome", json={"status": "failed", "error": "x"}, headers=h)
        assert (r1.status_code, r2.status_code, r3.status_code) == (200, 200, 409)
        assert r1.json()["status"] == "succeeded"
        assert r1.json()["outcome"]["duration_ms"] == 12
        assert r3.json()["code"] == "outcome_already_recorded"
        assert [e["event_type"] for e in events(engine, body["id"])].count("tool.outcome") == 1

    def test_blocked_call_cannot_have_an_outcome(self, client: TestClient, agent_key: str) -> None:
        """A blocked call never ran, so an outcome for it is a 409."""
        body = call_body("delete_database", {"name": "x"})
        post(client, agent_key, body)
        r = client.post(f"/v1/calls/{body['id']}/outcome", json={"status": "succeeded"},
                        headers={"Authorization": f"Bearer {agent_key}"})
        assert r.status_code == 409
        assert r.json()["code"] == "not_runnable"

    def test_chain_verifies_after_traffic(self, client: TestClient, agent_key: str, engine: Engine) -> None:
        """After a mix of calls and outcomes the audit chain is intact."""
        for i in range(10):
            body = call_body(args={"to": f"u{i}@example.com"})
            post(client, agent_key, body)
            client.post(f"/v1/calls/{body['id']}/outcome", json={"status": "succeeded"},
                        headers={"Authorization": f"Bearer {agent_key}"})
        with engine.connect() as conn:
            result = verify_rows(stream_rows(conn))
        assert result.ok, result
        assert result.events >= 30


class TestBadInput:
    @pytest.mark.parametrize(
        ("raw", "code"),
        [
            (b'{"id": "x", "tool": "t", "args": {"a": NaN}}', "non_finite_number"),
            (b'{"id": "x", "tool": "t", "args": {"a": 1e400}}', "number_out_of_range"),
            (b'{"id": "x", "tool": "t", "tool": "u", "args": {}}', "duplicate_key"),
            (b'{"id": "x", "tool": "t", "args": {"a": "\\ud800"}}', "lone_surrogate"),
            (b'{"id": "x", "tool": "t", "args": {"a": "\\u0000"}}', "nul_character"),
            (b'{"id": "x", "tool": "t", "args": {"a": 9007199254740992}}', "number_out_of_range"),
            (b"[" * 10_000 + b"]" * 10_000, "too_deep"),
            (b"\xff\xfe", "invalid_utf8"),
            (b"", "malformed_json"),
            (b'{"a": 1} x', "malformed_json"),
        ],
    )
    def test_hostile_json_is_a_422_problem(self, client: TestClient, agent_key: str, raw: bytes, code: str) -> None:
        """Each hostile-JSON case gets its documented code, never a 5xx."""
        r = client.post("/v1/calls", content=raw,
                        headers={"Authorization": f"Bearer {agent_key}", "Content-Type": "application/json"})
        assert r.status_code == 422, r.text
        assert r.json()["code"] == code

    def test_validation_errors_name_the_field(self, client: TestClient, agent_key: str) -> None:
        """A wrong type is a 422 whose error points at the exact field."""
        body = call_body()
        body["args"] = "not an object"
        r = post(client, agent_key, body)
        assert r.status_code == 422
        assert any(e["pointer"] == "/args" for e in r.json()["errors"])

    def test_extra_fields_and_bad_tool_names_are_refused(self, client: TestClient, agent_key: str) -> None:
        """Unknown fields and tool names outside the allowed alphabet are 422."""
        assert post(client, agent_key, {**call_body(), "surprise": 1}).status_code == 422
        assert post(client, agent_key, call_body(tool="rm -rf /")).status_code == 422

    def test_wrong_media_type_is_415(self, client: TestClient, agent_key: str) -> None:
        """Only application/json (UTF-8) bodies are accepted."""
        r = client.post("/v1/calls", content=json.dumps(call_body()),
                        headers={"Authorization": f"Bearer {agent_key}", "Content-Type": "text/plain"})
        assert r.status_code == 415

    def test_oversized_body_is_413(self, client: TestClient, agent_key: str) -> None:
        """Bodies over the limit are refused before parsing."""
        r = post(client, agent_key, call_body(args={"blob": "x" * 300_000}))
        assert r.status_code == 413

    def test_oversized_arguments_are_413(self, client: TestClient, agent_key: str) -> None:
        """Arguments over 64 KiB after redaction are refused, never truncated."""
        r = post(client, agent_key, call_body(args={f"k{i}": "y" * 60_000 for i in range(2)}))
        assert r.status_code == 413
        assert r.json()["code"] == "arguments_too_large"

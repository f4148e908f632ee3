"""The call detail page shows the LLM tokens and cost of the call's session."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.testclient import TestClient

from callgate.ids import uuid7
from tests.gateway import conftest as gateway_fixtures

from .conftest import signed_in

other_agent_key = gateway_fixtures.other_agent_key  # a second agent's key (fixture)


def _call(client: TestClient, agent_key: str, session_id: str | None) -> str:
    call_id = str(uuid.uuid4())
    body: dict[str, Any] = {"id": call_id, "tool": "stripe.refund", "args": {"customer_id": "cus_1", "amount": 900}}
    if session_id:
        body["session_id"] = session_id
    r = client.post("/v1/calls", json=body, headers={"Authorization": f"Bearer {agent_key}"})
    assert r.status_code == 201, r.text
    return call_id


def _usage(client: TestClient, key: str, session_id: str, model: str, provider: str | None, i: int, o: int) -> None:
    event = {"id": uuid7(), "ts": "2026-06-01T12:00:00Z", "session_id": session_id, "model": model,
             "provider": provider, "input_tokens": i, "output_tokens": o, "cache_read_tokens": 0}
    r = client.post("/v1/usage", json={"events": [event]}, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text


def test_detail_shows_the_sessions_llm_cost(client: TestClient, users: dict, agent_key: str) -> None:
    """Per model: calls, tokens and cost; the total; unpriced calls are called out, not priced."""
    call_id = _call(client, agent_key, "conv-9")
    _usage(client, agent_key, "conv-9", "gpt-4o", "openai", 1_000_000, 0)  # $2.50 at $2.50/MTok input
    _usage(client, agent_key, "conv-9", "gpt-4o", "openai", 0, 100_000)  # $1.00 at $10/MTok output
    _usage(client, agent_key, "conv-9", "my-local-model", None, 10, 1)
    _usage(client, agent_key, "other-conversation", "gpt-4o", "openai", 5_000_000, 0)
    signed_in(client, "vic")
    page = client.get(f"/calls/{call_id}").text
    assert "LLM usage in this session" in page
    assert "<code>gpt-4o</code>" in page and "$3.5</td>" in page
    assert "no price" in page and "1 call(s) had no known price" in page
    assert "<th>$3.5</th>" in page  # the other conversation's $12.50 is not included


def test_no_usage_section_without_session_or_usage(client: TestClient, users: dict, agent_key: str) -> None:
    signed_in(client, "vic")
    for session_id in (None, "quiet-session"):
        page = client.get(f"/calls/{_call(client, agent_key, session_id)}").text
        assert "LLM usage" not in page


def test_another_agents_usage_in_a_same_named_session_is_not_shown(
    client: TestClient, users: dict, agent_key: str, other_agent_key: str
) -> None:
    """Session ids belong to their agent: the page shows the call's agent's usage only."""
    call_id = _call(client, agent_key, "s-1")
    _usage(client, other_agent_key, "s-1", "gpt-4o", "openai", 1000, 10)
    signed_in(client, "vic")
    assert "LLM usage" not in client.get(f"/calls/{call_id}").text

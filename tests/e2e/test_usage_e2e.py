"""LLM usage end to end: a real `callgate serve`, the real SDK, genai-prices as the reference."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from genai_prices import Usage, calc_price

import callgate
from tests.e2e.processes import cli, serve

pytestmark = pytest.mark.slow

POLICY = """
defaults: {action: allow}
policies:
  - tool: drop_table
    default: block
"""


@pytest.fixture
def env(empty_database_url: str, tmp_path: Path) -> dict[str, str]:
    (tmp_path / "policy.yaml").write_text(POLICY)
    return {
        "CALLGATE_DATABASE_URL": empty_database_url,
        "CALLGATE_DATA_DIR": str(tmp_path / "data"),
        "CALLGATE_SECRET_KEY": "e2e-secret-" + uuid.uuid4().hex,
        "CALLGATE_POLICIES": str(tmp_path / "policy.yaml"),
        "CALLGATE_ENV": "test",
    }


def _get(url: str, key: str) -> tuple[int, Any]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_session_shows_tool_calls_and_llm_cost(env: dict[str, str], tmp_path: Path, sdk_reset: None) -> None:
    """log_usage and a guarded call in one session: GET /v1/sessions/s1 shows both, with the
    cost genai-prices gives, the unpriced call counted apart, and the audit chain intact."""
    cli(env, "migrate")
    key = cli(env, "keys", "create", "--agent", "e2e-bot").stdout.strip().splitlines()[-1]
    other = cli(env, "keys", "create", "--agent", "other-bot").stdout.strip().splitlines()[-1]

    with serve(env, tmp_path) as gw:
        callgate.configure(url=gw.url, api_key=key, agent="e2e-bot", spool_dir=tmp_path / "spool")

        @callgate.guard
        def lookup_order(order_id: str) -> str:
            return f"order {order_id}: shipped"

        with callgate.session("s1"):
            callgate.log_usage("gpt-4o", 1200, 300, cache_read_tokens=1024, provider="openai", framework="custom")
            assert lookup_order("A-17") == "order A-17: shipped"
            callgate.log_usage("gpt-4o", 2500, 120, provider="openai", framework="custom")
            callgate.log_usage("my-local-model", 50, 5, provider="ollama")
        callgate.log_usage("gpt-4o", 999, 9)  # no session: not part of s1
        assert callgate.flush(timeout=15)

        status, body = _get(gw.url + "/v1/sessions/s1", key)
        assert status == 200, body
        assert _get(gw.url + "/v1/sessions/s1", other)[0] == 404
        assert _get(gw.url + "/v1/sessions/nope", key)[0] == 404

    (call,) = body["calls"]
    assert (call["tool"], call["status"], call["decision"]) == ("lookup_order", "succeeded", "allow")
    assert call["outcome"]["status"] == "succeeded"

    def reference(i: int, o: int, cached: int = 0) -> Decimal:
        usage = Usage(input_tokens=i, output_tokens=o, cache_read_tokens=cached)
        return calc_price(usage, model_ref="gpt-4o", provider_id="openai").total_price

    gpt_cost = reference(1200, 300, 1024) + reference(2500, 120)
    by_model = {(g["model"], g["provider"]): g for g in body["usage"]["by_model"]}
    gpt = by_model[("gpt-4o", "openai")]
    assert (gpt["calls"], gpt["input_tokens"], gpt["output_tokens"], gpt["cache_read_tokens"]) == (2, 3700, 420, 1024)
    assert Decimal(gpt["cost_usd"]) == gpt_cost
    local = by_model[("my-local-model", "ollama")]
    assert (local["calls"], local["unpriced_calls"], local["cost_usd"]) == (1, 1, "0")
    total = body["usage"]["total"]
    assert (total["calls"], total["unpriced_calls"], Decimal(total["cost_usd"])) == (3, 1, gpt_cost)
    assert [c["model"] for c in body["llm_calls"]] == ["gpt-4o", "gpt-4o", "my-local-model"]
    assert body["truncated"] is False

    verified = cli(env, "audit", "verify", "--json")
    assert json.loads(verified.stdout)["ok"] is True

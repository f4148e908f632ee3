"""Every LLM call's tokens reach the gateway, on every path, priced by genai-prices.

The scripted models report fixed usage per response (``scripted.OPENAI_USAGE`` /
``REACT_USAGE``); each run makes two LLM calls (a tool call, then the answer). The gateway must
hold one usage row per call with exactly the model's numbers, in the caller's session, agreeing
with CrewAI's own ``crew.usage_metrics``, and priced as genai-prices prices them.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from genai_prices import Usage as PricedUsage
from genai_prices import calc_price

import callgate
from tests.sdk.integrations.crewai.drive import PATHS, directive, run, script_for
from tests.sdk.integrations.crewai.scripted import Usage
from tests.sdk.integrations.harness import Gateway, new_session

TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens")


def _expected_row(usage: Usage) -> dict[str, int]:
    return {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens,
            "cache_read_tokens": usage.cached_tokens, "cache_write_tokens": 0,
            "reasoning_tokens": usage.reasoning_tokens}


def _price(model: str, provider: str, usage: Usage) -> Decimal:
    priced = PricedUsage(input_tokens=usage.prompt_tokens, cache_read_tokens=usage.cached_tokens,
                         output_tokens=usage.completion_tokens, output_reasoning_tokens=usage.reasoning_tokens)
    return calc_price(priced, model_ref=model, provider_id=provider).total_price


@pytest.mark.parametrize("path", PATHS)
def test_every_llm_call_is_recorded_with_the_models_numbers(path: str, configured: Gateway, session_id: str) -> None:
    script = script_for(path)
    out = run(path, script, directive("get_weather", city="Paris"))
    assert callgate.flush(15)

    session = configured.session(session_id)
    calls = session["llm_calls"]
    react = "react" in path
    # CrewAI's native provider names its provider; a custom BaseLLM's is inferred from the model.
    model, provider = ("gpt-4o-mini", None) if react else ("gpt-4o", "openai")
    assert script.responses == 2
    assert [{"model": c["model"], "provider": c["provider"], "framework": c["framework"],
             **{f: c[f] for f in TOKEN_FIELDS}} for c in calls] == [
        {"model": model, "provider": provider, "framework": "crewai", **_expected_row(script.usage)}] * 2

    # Priced exactly as genai-prices prices the model's own numbers.
    price = _price(model, "openai", script.usage)
    assert [(c["price_status"], c["priced_provider"], Decimal(c["cost_usd"])) for c in calls] == [
        ("priced", "openai", price)] * 2
    assert Decimal(session["usage"]["total"]["cost_usd"]) == 2 * price

    if out.token_usage is not None:  # crews: the same totals CrewAI reports for itself
        totals = session["usage"]["total"]
        assert (out.token_usage.prompt_tokens, out.token_usage.completion_tokens,
                out.token_usage.cached_prompt_tokens, out.token_usage.reasoning_tokens,
                out.token_usage.successful_requests) == (
            totals["input_tokens"], totals["output_tokens"], totals["cache_read_tokens"],
            totals["reasoning_tokens"], totals["calls"])


def test_usage_follows_the_callers_session(configured: Gateway) -> None:
    """Two runs in two sessions: each session holds its own run's calls, and only those."""
    sessions = []
    for city in ("Lyon", "Nice"):
        with callgate.session(new_session()) as sid:
            run("native-akickoff", script_for("native-akickoff"), directive("get_weather", city=city))
            sessions.append(sid)
    assert callgate.flush(15)

    for sid in sessions:
        session = configured.session(sid)
        assert len(session["llm_calls"]) == 2
        assert [c["tool"] for c in session["calls"]] == ["get_weather"]

"""Every LLM call's tokens reach the gateway exactly as the model reported them, and are priced
exactly as genai-prices prices them.

The SDK's real model classes run over a mocked OpenAI API (``mock_openai.py``), streamed and not;
the scripted model covers ``run_sync`` and the model classes users write themselves -- including
the ones that would be counted twice by a naive patch.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import callgate
import genai_prices
import pytest
from agents import Agent, ModelResponse, OpenAIChatCompletionsModel, OpenAIResponsesModel
from agents.models.interface import Model

from tests.sdk.integrations.harness import Gateway

from . import tools
from .drive import MODES, run
from .mock_openai import SERVED, MockOpenAI
from .scripted_model import ScriptedModel, user

TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens")


@pytest.fixture(autouse=True)
def _clean_ran() -> Iterator[None]:
    tools.RAN.clear()
    yield
    tools.RAN.clear()


def recorded(gateway: Gateway, session_id: str) -> dict[str, Any]:
    """The session as the gateway answers it, once every usage event has been delivered."""
    assert callgate.flush(10)
    return gateway.session(session_id)


def llm_rows(session: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [(c["model"], c["provider"], c["framework"], *(c[f] for f in TOKEN_FIELDS)) for c in session["llm_calls"]]


def price(model: str, provider: str | None, tokens: tuple[int, ...]) -> Decimal:
    usage = genai_prices.Usage(input_tokens=tokens[0], output_tokens=tokens[1], cache_read_tokens=tokens[2],
                               cache_write_tokens=tokens[3], output_reasoning_tokens=tokens[4])
    return genai_prices.calc_price(usage, model, provider_id=provider).total_price


def assert_priced_like_genai_prices(session: dict[str, Any], provider: str | None) -> None:
    """Per model, the gateway's cost is the sum of genai-prices' price of each call."""
    assert session["llm_calls"], "no LLM call recorded"
    for group in session["usage"]["by_model"]:
        calls = [c for c in session["llm_calls"] if c["model"] == group["model"]]
        expected = sum((price(group["model"], provider, tuple(c[f] for f in TOKEN_FIELDS)) for c in calls),
                       Decimal(0))
        assert group["unpriced_calls"] == 0
        assert expected > 0
        assert Decimal(group["cost_usd"]) == expected
        for name in TOKEN_FIELDS:
            assert group[name] == sum(c[name] for c in calls)


# -- the SDK's own model classes, over the (mocked) OpenAI API -----------------------------------
REAL_MODELS = {"chat_completions": OpenAIChatCompletionsModel, "responses": OpenAIResponsesModel}


@pytest.mark.parametrize("mode", ["run", "run_streamed"])
@pytest.mark.parametrize("api", sorted(REAL_MODELS))
def test_real_openai_models_record_what_the_api_reported(configured: Gateway, session_id: str, api: str,
                                                         mode: str) -> None:
    mock = MockOpenAI(tool="delete_file", args={"path": "/tmp/x"})
    model = REAL_MODELS[api](model="gpt-4o", openai_client=mock.client())
    agent = Agent(name="a", instructions="Be brief.", tools=[tools.delete_file], model=model)

    result = run(agent, "delete /tmp/x please", mode)

    blocked = "Tool call blocked by policy: deleting files is not allowed"
    assert result.final_output == f"final: {blocked}"
    assert mock.seen == [blocked] and tools.RAN == []
    # Only the Responses *stream* names the served snapshot; every other path the requested model.
    name = SERVED if (api, mode) == ("responses", "run_streamed") else "gpt-4o"
    expected = [(name, "openai", "openai-agents", u.input_tokens, u.output_tokens, u.cached_tokens,
                 u.cache_write_tokens, u.reasoning_tokens) for u in mock.reported]
    assert len(expected) == 2
    session = recorded(configured, session_id)
    assert llm_rows(session) == expected
    assert_priced_like_genai_prices(session, "openai")
    assert [c["tool"] for c in session["calls"]] == ["delete_file"]


def test_the_provider_is_named_only_for_openais_own_hosts() -> None:
    from callgate.integrations.openai_agents import _provider
    from openai import AsyncOpenAI

    def provider(base_url: str) -> str | None:
        return _provider(OpenAIResponsesModel(model="gpt-4o", openai_client=AsyncOpenAI(api_key="k", base_url=base_url)))

    assert provider("https://api.openai.com/v1") == "openai"
    assert provider("https://acme.openai.azure.com/openai/v1") == "azure"
    # Any other OpenAI-compatible server: unknown, so the gateway prices by the model name alone.
    assert provider("https://openrouter.ai/api/v1") is None
    assert provider("http://127.0.0.1:11434/v1") is None
    assert _provider(ScriptedModel()) is None


# -- the scripted model: every entry point ---------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_every_run_entry_point_records_each_model_call_once(configured: Gateway, session_id: str, mode: str) -> None:
    model = ScriptedModel("gpt-4.1")
    result = run(Agent(name="a", tools=[tools.get_weather], model=model), user("get_weather", city="Lima"), mode)

    assert result.final_output == "final: Sunny in Lima"
    expected = [(r.model, None, "openai-agents", r.input_tokens, r.output_tokens, r.cached_tokens,
                 r.cache_write_tokens, r.reasoning_tokens) for r in model.reported]
    assert len(expected) == 2
    session = recorded(configured, session_id)
    assert llm_rows(session) == expected
    assert_priced_like_genai_prices(session, None)
    # What the SDK itself summed up for the run matches what the gateway got.
    total = result.context_wrapper.usage
    assert (total.input_tokens, total.output_tokens) == (session["usage"]["total"]["input_tokens"],
                                                         session["usage"]["total"]["output_tokens"])


def test_a_nested_agents_calls_are_recorded_per_model(configured: Gateway, session_id: str) -> None:
    inner, outer = ScriptedModel("gpt-4.1-mini"), ScriptedModel("gpt-4.1")
    researcher = Agent(name="researcher", tools=[tools.get_weather], model=inner)
    agent = Agent(name="a", tools=[researcher.as_tool(tool_name="ask", tool_description="Ask.")], model=outer)

    run(agent, user("ask", input=user("get_weather", city="Kyiv")), "run")

    session = recorded(configured, session_id)
    assert {(g["model"], g["calls"]) for g in session["usage"]["by_model"]} == {("gpt-4.1", 2), ("gpt-4.1-mini", 2)}
    assert_priced_like_genai_prices(session, None)


# -- model classes users write: each call counted once ---------------------------------------------
def test_a_model_class_defined_after_configure_that_calls_super_is_counted_once(configured: Gateway,
                                                                                session_id: str) -> None:
    class Audited(ScriptedModel):  # defined now, after configure(): patched as the class is created
        calls = 0

        async def get_response(self, *args: Any, **kwargs: Any) -> ModelResponse:
            Audited.calls += 1
            return await super().get_response(*args, **kwargs)

        async def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            Audited.calls += 1
            async for event in super().stream_response(*args, **kwargs):
                yield event

    from wrapt import FunctionWrapper

    assert isinstance(Audited.__dict__["get_response"], FunctionWrapper)
    model = Audited("gpt-4.1")
    run(Agent(name="a", tools=[tools.get_weather], model=model), user("get_weather", city="Quito"), "run")
    run(Agent(name="a", tools=[tools.get_weather], model=model), user("get_weather", city="Lima"), "run_streamed")

    assert Audited.calls == 4
    session = recorded(configured, session_id)
    assert [c["input_tokens"] for c in session["llm_calls"]] == [r.input_tokens for r in model.reported]
    assert session["usage"]["total"]["calls"] == 4


def test_a_routing_model_is_counted_once_under_the_model_that_answered(configured: Gateway,
                                                                       session_id: str) -> None:
    class Router(Model):
        """Delegates every call to a real model: the served model is the one that counts."""

        model = "router"

        def __init__(self, target: Model) -> None:
            self.target = target

        async def get_response(self, *args: Any, **kwargs: Any) -> ModelResponse:
            return await self.target.get_response(*args, **kwargs)

        def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            return self.target.stream_response(*args, **kwargs)

    target = ScriptedModel("gpt-4.1-nano")
    for mode in ("run", "run_streamed"):
        run(Agent(name="a", tools=[tools.get_weather], model=Router(target)), user("get_weather", city="Baku"), mode)

    session = recorded(configured, session_id)
    assert [(c["model"], c["input_tokens"]) for c in session["llm_calls"]] == [
        (r.model, r.input_tokens) for r in target.reported]
    assert len(target.reported) == 4

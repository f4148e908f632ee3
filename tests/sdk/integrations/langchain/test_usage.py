"""Token usage of every LangChain LLM call, recorded at the gateway and priced with genai-prices.

The scripted models report distinct usage per call (every detail field set); each test compares the
gateway's stored LLM calls of its session with exactly what the model reported, and each call's
cost with genai-prices' own price for that model and usage.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from genai_prices import Usage, calc_price
from langchain.agents import create_agent
from langchain_core.caches import InMemoryCache
from langchain_core.messages import HumanMessage
from langchain_core.prompts import ChatPromptTemplate

import callgate
from tests.sdk.integrations.harness import Gateway
from tests.sdk.integrations.langchain import tools as T
from tests.sdk.integrations.langchain.scripted import (
    DelegatingChatModel,
    ScriptedChatModel,
    ScriptedCompletionModel,
    ask,
)

TOKENS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens")


def recorded(gateway: Gateway, session_id: str) -> list[dict[str, Any]]:
    """The session's LLM calls as the gateway stored them."""
    assert callgate.flush(10), "the SDK could not deliver its usage"
    return gateway.session(session_id)["llm_calls"]


def as_recorded(usage: dict[str, Any]) -> tuple[int, ...]:
    """A LangChain ``UsageMetadata`` in the gateway's columns (the same inclusive semantics)."""
    inputs, outputs = usage["input_token_details"], usage["output_token_details"]
    return (
        usage["input_tokens"],
        usage["output_tokens"],
        inputs["cache_read"],
        inputs["cache_creation"],
        outputs["reasoning"],
    )


def genai_price(call: dict[str, Any]) -> Decimal:
    usage = Usage(
        input_tokens=call["input_tokens"],
        output_tokens=call["output_tokens"],
        cache_read_tokens=call["cache_read_tokens"],
        cache_write_tokens=call["cache_write_tokens"],
        output_reasoning_tokens=call["reasoning_tokens"],
    )
    return calc_price(usage, model_ref=call["model"], provider_id=call["provider"]).total_price


def assert_recorded_as_reported(
    gateway: Gateway, session_id: str, model: ScriptedChatModel, *, expected_calls: int
) -> list[dict[str, Any]]:
    calls = recorded(gateway, session_id)
    assert len(model.reported) == expected_calls
    assert sorted(tuple(c[name] for name in TOKENS) for c in calls) == sorted(
        map(as_recorded, model.reported)
    )
    for call in calls:
        assert (call["model"], call["provider"], call["framework"]) == (
            model.served_model,
            model.provider,
            "langchain",
        )
        assert call["price_status"] == "priced"
        assert Decimal(call["cost_usd"]) == genai_price(call)
    total = gateway.session(session_id)["usage"]["total"]
    assert total["calls"] == expected_calls and total["unpriced_calls"] == 0
    assert Decimal(total["cost_usd"]) == sum((genai_price(c) for c in calls), Decimal(0))
    return calls


def prompt(text: str = "hello") -> list[HumanMessage]:
    return [HumanMessage(text)]


async def _astream(model: ScriptedChatModel) -> None:
    async for _ in model.astream(prompt()):
        pass


async def _lcel_astream(model: ScriptedChatModel) -> None:
    async for _ in (ChatPromptTemplate.from_messages([("human", "{q}")]) | model).astream({"q": "hi"}):
        pass


#: path -> (drive the bare model, LLM calls it makes)
BARE: dict[str, tuple[Callable[[ScriptedChatModel], Any], int]] = {
    "invoke": (lambda m: m.invoke(prompt()), 1),
    "ainvoke": (lambda m: asyncio.run(m.ainvoke(prompt())), 1),
    "stream": (lambda m: list(m.stream(prompt())), 1),
    "astream": (lambda m: asyncio.run(_astream(m)), 1),
    "batch": (lambda m: m.batch([prompt("a"), prompt("b"), prompt("c")]), 3),
    "abatch": (lambda m: asyncio.run(m.abatch([prompt("a"), prompt("b")])), 2),
    "generate": (lambda m: m.generate([prompt("a"), prompt("b")]), 2),
    "lcel-stream": (
        lambda m: list((ChatPromptTemplate.from_messages([("human", "{q}")]) | m).stream({"q": "x"})),
        1,
    ),
    "lcel-astream": (lambda m: asyncio.run(_lcel_astream(m)), 1),
}


@pytest.mark.parametrize("path", sorted(BARE))
def test_every_call_path_of_a_bare_model_is_recorded(gateway: Gateway, session_id: str, path: str) -> None:
    model = ScriptedChatModel()
    drive, calls = BARE[path]

    drive(model)

    assert_recorded_as_reported(gateway, session_id, model, expected_calls=calls)


def _graph_messages(agent: Any) -> None:
    for _ in agent.stream(ask(("get_weather", {"city": "Oslo"})), stream_mode="messages"):
        pass


def _graph_updates(agent: Any) -> None:
    for _ in agent.stream(ask(("get_weather", {"city": "Oslo"})), stream_mode="updates"):
        pass


async def _graph_astream(agent: Any) -> None:
    async for _ in agent.astream(ask(("get_weather", {"city": "Oslo"})), stream_mode=["messages", "updates"]):
        pass


GRAPH: dict[str, Callable[[Any], Any]] = {
    "invoke": lambda agent: agent.invoke(ask(("get_weather", {"city": "Oslo"}))),
    "ainvoke": lambda agent: asyncio.run(agent.ainvoke(ask(("get_weather", {"city": "Oslo"})))),
    "stream-messages": _graph_messages,
    "stream-updates": _graph_updates,
    "astream": lambda agent: asyncio.run(_graph_astream(agent)),
}


@pytest.mark.parametrize("path", sorted(GRAPH))
def test_agent_runs_record_each_model_turn(gateway: Gateway, session_id: str, path: str) -> None:
    model = ScriptedChatModel()
    agent = create_agent(model=model, tools=[T.get_weather])

    GRAPH[path](agent)

    assert T.ran("get_weather") == [{"city": "Oslo"}]  # a real two-turn loop: tool call, then answer
    assert_recorded_as_reported(gateway, session_id, model, expected_calls=2)


def test_cache_writes_of_another_provider_are_priced(gateway: Gateway, session_id: str) -> None:
    model = ScriptedChatModel(
        served_model="claude-sonnet-4-5-20250929",
        requested_model="claude-sonnet-4-5",
        provider="anthropic",
        cache_write=512,
    )

    model.invoke(prompt())
    list(model.stream(prompt()))

    calls = assert_recorded_as_reported(gateway, session_id, model, expected_calls=2)
    assert {c["cache_write_tokens"] for c in calls} == {512}
    by_model = gateway.session(session_id)["usage"]["by_model"]
    assert [(m["model"], m["provider"], m["calls"]) for m in by_model] == [
        ("claude-sonnet-4-5-20250929", "anthropic", 2)
    ]


def test_without_a_served_model_name_the_requested_one_is_recorded(gateway: Gateway, session_id: str) -> None:
    model = ScriptedChatModel(report_served_model=False)

    model.invoke(prompt())

    [call] = recorded(gateway, session_id)
    assert (call["model"], call["provider"], call["priced_model"]) == ("gpt-4o", "openai", "gpt-4o")


def test_an_llm_cache_hit_is_not_counted_again(gateway: Gateway, session_id: str) -> None:
    """A cache hit replays the original usage (with ``total_cost: 0``): nothing was called or billed."""
    model = ScriptedChatModel(cache=InMemoryCache())

    first = model.invoke(prompt("same"))
    second = model.invoke(prompt("same"))
    asyncio.run(model.ainvoke(prompt("same")))
    assert second.content == first.content and second.usage_metadata["total_cost"] == 0
    assert_recorded_as_reported(gateway, session_id, model, expected_calls=1)

    list(model.stream(prompt("same")))  # stream() does not consult the cache: a real call, recorded
    assert_recorded_as_reported(gateway, session_id, model, expected_calls=2)


def test_several_choices_of_one_call_are_one_call(gateway: Gateway, session_id: str) -> None:
    model = ScriptedChatModel(choices=3)  # each choice carries the call's usage, as OpenAI's n=3 does

    model.generate([prompt()])

    assert_recorded_as_reported(gateway, session_id, model, expected_calls=1)


@pytest.mark.parametrize("as_child", [True, False], ids=["child-run", "sibling-run"])
def test_a_model_that_delegates_to_another_is_one_call(
    gateway: Gateway, session_id: str, as_child: bool
) -> None:
    inner = ScriptedChatModel()
    outer = DelegatingChatModel(inner=inner, as_child=as_child)

    outer.invoke(prompt())
    asyncio.run(outer.ainvoke(prompt()))

    assert_recorded_as_reported(gateway, session_id, inner, expected_calls=2)


def test_legacy_completion_models_report_llm_output_usage(gateway: Gateway, session_id: str) -> None:
    llm = ScriptedCompletionModel()

    llm.invoke("one")
    # One call for both prompts: LangChain reports it per prompt and keeps the usage on the first.
    llm.generate(["two", "three"])
    llm.batch(["four", "five"])  # BaseLLM batches into one generate() call as well

    calls = recorded(gateway, session_id)
    expected = sorted((u["prompt_tokens"], u["completion_tokens"], 100, 0, 0) for u in llm.reported)
    assert len(llm.reported) == 3
    assert sorted(tuple(c[name] for name in TOKENS) for c in calls) == expected
    # BaseLLM.generate() adds the ls_provider metadata only when it is given metadata (invoke and
    # batch always give some), so the direct generate() call has no provider: the gateway then
    # prices by the model name, as genai-prices does.
    assert {c["input_tokens"]: c["provider"] for c in calls} == {300: "openai", 601: None, 602: "openai"}
    for call in calls:
        assert (call["model"], call["priced_model"], call["price_status"]) == (
            "gpt-3.5-turbo-instruct",
            "gpt-3.5-turbo-instruct",
            "priced",
        )
        assert Decimal(call["cost_usd"]) == genai_price(call)


def test_usage_belongs_to_the_session_it_happened_in(gateway: Gateway, session_id: str) -> None:
    model = ScriptedChatModel()
    with callgate.session(session_id + "-other"):
        model.invoke(prompt("elsewhere"))
    model.invoke(prompt("here"))

    assert len(recorded(gateway, session_id)) == 1
    assert len(recorded(gateway, session_id + "-other")) == 1

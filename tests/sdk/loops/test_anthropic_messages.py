"""The Messages loop, driven through the real ``anthropic`` clients against a real gateway.

Same set-up as ``test_openai_chat.py``: a scripted provider behind ``httpx2.MockTransport``, a real
``callgate serve`` with the shared policy. Messages-specific points: every ``tool_use`` is answered
by a ``tool_result`` block in ONE user message (``is_error: true`` for refusals and errors), the
assistant's blocks go back unchanged, ``pause_turn`` is continued, and usage is converted from
Anthropic's "input excludes the cache" convention to callgate's inclusive one.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from genai_prices import Usage, calc_price

import callgate
from callgate.loops import LoopResult, anthropic_messages
from tests.sdk.integrations.harness import Gateway
from tests.sdk.loops.scripted import (
    ANTHROPIC_MODEL,
    ScriptedAPI,
    Tools,
    message_reply,
    messages_usage,
    text_block,
    tool_use,
)

USER = [{"role": "user", "content": "go"}]
SYSTEM = "You are careful."


@pytest.fixture
def tools() -> Tools:
    return Tools()


def run_sync(api: ScriptedAPI, tools: Tools, **options: Any) -> LoopResult:
    return anthropic_messages.run_tools(
        api.anthropic(),
        model="claude-sonnet-4-6",
        max_tokens=512,
        messages=USER,
        tools=tools.mapping(),
        system=SYSTEM,
        **options,
    )


def run_async(api: ScriptedAPI, tools: Tools, **options: Any) -> LoopResult:
    return asyncio.run(
        anthropic_messages.arun_tools(
            api.async_anthropic(),
            model="claude-sonnet-4-6",
            max_tokens=512,
            messages=USER,
            tools=tools.mapping(),
            system=SYSTEM,
            **options,
        )
    )


RUNNERS = pytest.mark.parametrize("run", [run_sync, run_async], ids=["sync", "async"])


@RUNNERS
def test_allowed_tool_runs_and_the_model_reads_its_result(
    run: Callable[..., LoopResult], tools: Tools, gateway: Gateway, session_id: str
) -> None:
    thinking = {"type": "thinking", "thinking": "The user wants weather.", "signature": "sig-abc"}
    api = ScriptedAPI(
        message_reply(
            1, thinking, text_block("Let me check."), tool_use("tu_1", "get_weather", {"city": "Oslo"})
        ),
        message_reply(2, text_block("It is "), text_block("sunny.")),
    )
    result = run(api, tools)

    assert tools.runs == [("get_weather", {"city": "Oslo"})]
    assert api.paths == ["/v1/messages"] * 2
    first = api.requests[0]
    assert (first["model"], first["max_tokens"], first["system"], first["messages"]) == (
        "claude-sonnet-4-6",
        512,
        SYSTEM,
        USER,
    )
    assert first["tools"][0] == {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
    second = api.sent(1)
    # the assistant turn goes back block for block (the thinking block keeps its signature)
    assert second[1] == {
        "role": "assistant",
        "content": [thinking, text_block("Let me check."), tool_use("tu_1", "get_weather", {"city": "Oslo"})],
    }
    assert second[2] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "tu_1", "content": "sunny in Oslo"}],
    }
    assert result.stop_reason == "final" and result.text == "It is sunny."
    assert result.messages == [*second, result.final_message]

    (record,) = result.tool_calls
    assert (record.status, record.permit_status, record.is_error) == ("succeeded", "allowed", False)
    callgate.flush(10)
    (row,) = gateway.calls(session_id)
    assert (row["id"], row["tool"], row["framework"], row["outcome_status"]) == (
        record.call_id,
        "get_weather",
        "anthropic-messages",
        "succeeded",
    )


@RUNNERS
def test_refusals_are_error_results_in_one_user_message(
    run: Callable[..., LoopResult], tools: Tools, gateway: Gateway, session_id: str
) -> None:
    """A blocked call and an allowed one in the same turn: both answered, in order, in one message."""
    api = ScriptedAPI(
        message_reply(
            1,
            tool_use("tu_d", "delete_file", {"path": "/etc/passwd"}),
            tool_use("tu_w", "get_weather", {"city": "Rome"}),
        ),
        message_reply(2, text_block("Deleting is not allowed.")),
    )
    result = run(api, tools)

    assert tools.runs == [("get_weather", {"city": "Rome"})]
    last = api.sent(1)[-1]
    assert last == {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "tu_d",
                "is_error": True,
                "content": "Tool call blocked by policy: deleting files is not allowed",
            },
            {"type": "tool_result", "tool_use_id": "tu_w", "content": "sunny in Rome"},
        ],
    }
    assert [r.status for r in result.tool_calls] == ["blocked", "succeeded"]
    callgate.flush(10)
    assert [(c["tool"], c["status"]) for c in gateway.calls(session_id)] == [
        ("delete_file", "blocked"),
        ("get_weather", "succeeded"),
    ]


def _in_thread(fn: Callable[[], LoopResult]) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised by the test
            box["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


@RUNNERS
@pytest.mark.parametrize("decision", ["approve", "deny"])
def test_approval(
    run: Callable[..., LoopResult], decision: str, tools: Tools, gateway: Gateway, session_id: str
) -> None:
    api = ScriptedAPI(
        message_reply(1, tool_use("tu_m", "send_money", {"amount": 750, "to": "bob"})),
        message_reply(2, text_block("done")),
    )
    thread, box = _in_thread(lambda: run(api, tools))
    pending = gateway.wait_for_call(status="pending", tool="send_money", session_id=session_id)
    assert tools.runs == []
    getattr(gateway, decision)(pending["id"], comment="checked the invoice")
    thread.join(60)
    assert not thread.is_alive() and "error" not in box, box

    (record,) = box["result"].tool_calls
    result_block = api.tool_results(1)["tu_m"]
    assert record.call_id == pending["id"]
    if decision == "approve":
        assert tools.runs == [("send_money", {"amount": 750, "to": "bob"})]
        assert result_block == {
            "type": "tool_result",
            "tool_use_id": "tu_m",
            "content": '{"sent": 750, "to": "bob"}',
        }
        assert (record.status, record.permit_status) == ("succeeded", "approved")
    else:
        assert tools.runs == []
        assert result_block == {
            "type": "tool_result",
            "tool_use_id": "tu_m",
            "is_error": True,
            "content": "Tool call denied by a human reviewer: checked the invoice. The tool did not run.",
        }
        assert record.status == "denied"


def test_input_that_is_not_an_object_and_unknown_tools_are_answered(
    tools: Tools, gateway: Gateway, session_id: str
) -> None:
    api = ScriptedAPI(
        message_reply(
            1,
            tool_use("a", "get_weather", "Oslo"),
            tool_use("b", "get_weather", {}),
            tool_use("c", "format_disk", {"drive": "C"}),
        ),
        message_reply(2, text_block("sorry")),
    )
    result = run_sync(api, tools)

    answers = api.tool_results(1)
    assert all(block["is_error"] is True for block in answers.values())
    assert "the arguments must be a JSON object, not a string" in answers["a"]["content"]
    assert "missing a required argument: 'city'" in answers["b"]["content"]
    assert answers["c"]["content"].startswith("Error: there is no tool named 'format_disk'")
    assert [r.status for r in result.tool_calls] == ["invalid_arguments", "invalid_arguments", "unknown_tool"]
    assert gateway.calls(session_id) == [] and tools.runs == []


@RUNNERS
def test_max_turns(run: Callable[..., LoopResult], tools: Tools, gateway: Gateway, session_id: str) -> None:
    api = ScriptedAPI(
        *(message_reply(n, tool_use(f"t{n}", "get_weather", {"city": f"c{n}"})) for n in range(1, 5))
    )
    result = run(api, tools, max_turns=3)

    assert len(api.requests) == 3 and result.stop_reason == "max_turns" and result.final_message is None
    assert [args["city"] for args in tools.ran("get_weather")] == ["c1", "c2", "c3"]
    assert result.messages[-1] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "t3", "content": "sunny in c3"}],
    }


def test_pause_turn_is_continued_without_a_tool_result(
    tools: Tools, gateway: Gateway, session_id: str
) -> None:
    """A long server-tool turn pauses; the paused content goes back as is and the model continues."""
    paused = [{"type": "server_tool_use", "id": "srv_1", "name": "web_search", "input": {"query": "oslo"}}]
    api = ScriptedAPI(
        message_reply(1, *paused, stop_reason="pause_turn"), message_reply(2, text_block("found it"))
    )
    result = run_sync(api, tools)

    assert len(api.requests) == 2 and api.sent(1)[-1] == {"role": "assistant", "content": paused}
    assert result.text == "found it" and result.tool_calls == [] and result.turns == 2


def test_a_tool_may_return_content_blocks(gateway: Gateway, session_id: str) -> None:
    def chart(metric: str) -> list[dict[str, Any]]:
        return [
            {"type": "text", "text": f"{metric} rose"},
            {
                "type": "image",
                "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
            },
        ]

    api = ScriptedAPI(
        message_reply(1, tool_use("c", "chart", {"metric": "sales"})), message_reply(2, text_block("ok"))
    )
    anthropic_messages.run_tools(
        api.anthropic(), model="claude-sonnet-4-6", max_tokens=100, messages=USER, tools={"chart": chart}
    )
    assert api.tool_results(1)["c"]["content"] == chart("sales")


@RUNNERS
def test_usage_is_converted_to_inclusive_input_and_priced(
    run: Callable[..., LoopResult], tools: Tools, gateway: Gateway, session_id: str
) -> None:
    api = ScriptedAPI(
        message_reply(1, tool_use("w", "get_weather", {"city": "Oslo"})),
        message_reply(2, text_block("sunny")),
    )
    run(api, tools)
    assert callgate.flush(10)
    usage = gateway.session(session_id)["usage"]

    reported = [messages_usage(1), messages_usage(2)]

    def total_input(u: dict[str, Any]) -> int:
        return u["input_tokens"] + u["cache_read_input_tokens"] + u["cache_creation_input_tokens"]

    expected = {
        "calls": 2,
        "input_tokens": sum(total_input(u) for u in reported),
        "output_tokens": sum(u["output_tokens"] for u in reported),
        "cache_read_tokens": sum(u["cache_read_input_tokens"] for u in reported),
        "cache_write_tokens": sum(u["cache_creation_input_tokens"] for u in reported),
        "reasoning_tokens": sum(u["output_tokens_details"]["thinking_tokens"] for u in reported),
    }
    (by_model,) = usage["by_model"]
    assert (by_model["model"], by_model["provider"]) == (ANTHROPIC_MODEL, "anthropic")
    assert {k: by_model[k] for k in expected} == expected
    cost = sum(
        (
            calc_price(
                Usage(
                    input_tokens=total_input(u),
                    cache_read_tokens=u["cache_read_input_tokens"],
                    cache_write_tokens=u["cache_creation_input_tokens"],
                    output_tokens=u["output_tokens"],
                    output_reasoning_tokens=u["output_tokens_details"]["thinking_tokens"],
                ),
                model_ref=ANTHROPIC_MODEL,
                provider_id="anthropic",
            ).total_price
            for u in reported
        ),
        Decimal(0),
    )
    assert cost > 0 and Decimal(by_model["cost_usd"]) == cost


def test_usage_without_cache_fields_counts_them_as_zero(
    tools: Tools, gateway: Gateway, session_id: str
) -> None:
    reply = message_reply(1, text_block("hi"))
    reply["usage"] = {"input_tokens": 42, "output_tokens": 7}
    api = ScriptedAPI(reply)
    run_sync(api, tools)
    assert callgate.flush(10)
    total = gateway.session(session_id)["usage"]["total"]
    assert (
        total["input_tokens"],
        total["output_tokens"],
        total["cache_read_tokens"],
        total["cache_write_tokens"],
    ) == (42, 7, 0, 0)


class TestMisuse:
    def test_unconfigured_raises_before_calling_the_model(self, tools: Tools) -> None:
        callgate.reset()
        api = ScriptedAPI(message_reply(1, text_block("-")))
        with pytest.raises(callgate.ConfigurationError):
            run_sync(api, tools)
        assert api.requests == []

    def test_wrong_client_kind_is_a_type_error(self, tools: Tools, configured: Gateway) -> None:
        api = ScriptedAPI(message_reply(1, text_block("-")), message_reply(2, text_block("-")))
        with pytest.raises(TypeError, match="arun_tools"):
            anthropic_messages.run_tools(
                api.async_anthropic(), model="m", max_tokens=5, messages=USER, tools=tools.mapping()
            )
        with pytest.raises(TypeError, match="run_tools"):
            asyncio.run(
                anthropic_messages.arun_tools(
                    api.anthropic(), model="m", max_tokens=5, messages=USER, tools=tools.mapping()
                )
            )
        with pytest.raises(TypeError, match="messages.create"):
            anthropic_messages.run_tools(
                object(), model="m", max_tokens=5, messages=USER, tools=tools.mapping()
            )

    def test_definition_naming_another_tool_is_refused(self, configured: Gateway) -> None:
        schema = {"name": "other", "input_schema": {"type": "object", "properties": {}}}
        with pytest.raises(ValueError, match="must agree"):
            anthropic_messages.run_tools(
                ScriptedAPI().anthropic(),
                model="m",
                max_tokens=5,
                messages=USER,
                tools={"mine": (schema, lambda: None)},
            )

"""The Chat Completions loop, driven through the real ``openai`` clients against a real gateway.

The provider is a script (``scripted.ScriptedAPI`` behind ``httpx2.MockTransport``); the gateway is
a real ``callgate serve`` (``tests/sdk/integrations/harness.py``) with the shared policy:
``delete_file`` blocked, ``send_money`` over 200 needs a human (13: expires after 2 s), the rest
allowed. Each test proves three things: what ran, what the gateway recorded, what the model saw.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from genai_prices import Usage, calc_price

import callgate
from callgate.loops import LoopResult, openai_chat
from tests.sdk.integrations.harness import Gateway
from tests.sdk.loops.scripted import (
    OPENAI_MODEL,
    ScriptedAPI,
    Tools,
    chat_call,
    chat_reply,
    chat_usage,
)

USER = [{"role": "system", "content": "You are careful."}, {"role": "user", "content": "go"}]


@pytest.fixture
def tools() -> Tools:
    return Tools()


def run_sync(api: ScriptedAPI, tools: Tools, **options: Any) -> LoopResult:
    return openai_chat.run_tools(
        api.openai(), model="gpt-4o", messages=USER, tools=tools.mapping(), **options
    )


def run_async(api: ScriptedAPI, tools: Tools, **options: Any) -> LoopResult:
    return asyncio.run(
        openai_chat.arun_tools(
            api.async_openai(), model="gpt-4o", messages=USER, tools=tools.mapping(), **options
        )
    )


RUNNERS = pytest.mark.parametrize("run", [run_sync, run_async], ids=["sync", "async"])


@RUNNERS
def test_allowed_tool_runs_and_the_model_reads_its_result(
    run: Callable[..., LoopResult], tools: Tools, gateway: Gateway, session_id: str
) -> None:
    """An allowed call runs once; the next request carries the assistant's tool call and the result."""
    api = ScriptedAPI(
        chat_reply(1, chat_call("call_w", "get_weather", {"city": "Oslo"})),
        chat_reply(2, content="It is sunny in Oslo."),
    )
    result = run(api, tools)

    assert tools.runs == [("get_weather", {"city": "Oslo"})]
    assert result.stop_reason == "final" and result.text == "It is sunny in Oslo." and result.turns == 2
    assert api.paths == ["/v1/chat/completions"] * 2
    first = api.requests[0]
    assert first["model"] == "gpt-4o" and first["messages"] == USER
    assert first["tools"][0] == {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
    second = api.sent(1)
    assert second[:2] == USER
    assert second[2] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [chat_call("call_w", "get_weather", {"city": "Oslo"})],
    }
    assert second[3] == {"role": "tool", "tool_call_id": "call_w", "content": "sunny in Oslo"}
    assert result.messages == [*second, result.final_message]

    (record,) = result.tool_calls
    assert (record.status, record.permit_status, record.ran, record.is_error) == (
        "succeeded",
        "allowed",
        True,
        False,
    )
    callgate.flush(10)
    (row,) = gateway.calls(session_id)
    assert (row["id"], row["tool"], row["args"], row["framework"]) == (
        record.call_id,
        "get_weather",
        {"city": "Oslo"},
        "openai-chat",
    )
    assert row["outcome_status"] == "succeeded"


@RUNNERS
def test_blocked_tool_does_not_run_and_the_model_reads_why(
    run: Callable[..., LoopResult], tools: Tools, gateway: Gateway, session_id: str
) -> None:
    api = ScriptedAPI(
        chat_reply(1, chat_call("call_d", "delete_file", {"path": "/etc/passwd"})),
        chat_reply(2, content="I may not delete that."),
    )
    result = run(api, tools)

    assert tools.ran("delete_file") == []
    assert api.tool_messages(1) == {"call_d": "Tool call blocked by policy: deleting files is not allowed"}
    (record,) = result.tool_calls
    assert (record.status, record.ran, record.is_error) == ("blocked", False, True)
    assert isinstance(record.error, callgate.CallBlocked) and record.error.rule == "no-deletes"
    (row,) = gateway.calls(session_id)
    assert (row["id"], row["status"], row["outcome_status"]) == (record.call_id, "blocked", None)
    assert result.text == "I may not delete that."


def test_one_turn_with_several_calls_answers_each_in_order(
    tools: Tools, gateway: Gateway, session_id: str
) -> None:
    """Parallel tool calls: each is checked on its own; one message per call, in the model's order."""
    api = ScriptedAPI(
        chat_reply(
            1, chat_call("a", "delete_file", {"path": "/x"}), chat_call("b", "get_weather", {"city": "Rome"})
        ),
        chat_reply(2, content="done"),
    )
    result = run_sync(api, tools)

    assert tools.runs == [("get_weather", {"city": "Rome"})]
    tool_messages = [m for m in api.sent(1) if m["role"] == "tool"]
    assert [(m["tool_call_id"], m["content"]) for m in tool_messages] == [
        ("a", "Tool call blocked by policy: deleting files is not allowed"),
        ("b", "sunny in Rome"),
    ]
    assert [r.status for r in result.tool_calls] == ["blocked", "succeeded"]
    assert [r["tool"] for r in gateway.calls(session_id)] == ["delete_file", "get_weather"]


def _in_thread(fn: Callable[[], LoopResult]) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised by the test
            box["error"] = e

    thread = threading.Thread(target=target, daemon=True)  # callgate carries the session into it
    thread.start()
    return thread, box


@RUNNERS
def test_approval_approved_runs_the_tool_after_the_human_decides(
    run: Callable[..., LoopResult], tools: Tools, gateway: Gateway, session_id: str
) -> None:
    api = ScriptedAPI(
        chat_reply(1, chat_call("call_m", "send_money", {"amount": 500, "to": "bob"})),
        chat_reply(2, content="Sent."),
    )
    thread, box = _in_thread(lambda: run(api, tools))
    pending = gateway.wait_for_call(status="pending", tool="send_money", session_id=session_id)
    assert tools.runs == [] and len(api.requests) == 1  # waiting: nothing ran, the model is not called
    gateway.approve(pending["id"], comment="ok, once")
    thread.join(60)
    assert not thread.is_alive() and "error" not in box, box

    result: LoopResult = box["result"]
    assert tools.runs == [("send_money", {"amount": 500, "to": "bob"})]
    assert api.tool_messages(1) == {"call_m": json.dumps({"sent": 500, "to": "bob"})}
    (record,) = result.tool_calls
    assert (record.status, record.permit_status, record.call_id) == ("succeeded", "approved", pending["id"])
    callgate.flush(10)
    (row,) = gateway.calls(session_id)
    assert (row["status"], row["decided_by"], row["outcome_status"]) == ("succeeded", "riley", "succeeded")


@RUNNERS
def test_approval_denied_with_a_comment_tells_the_model(
    run: Callable[..., LoopResult], tools: Tools, gateway: Gateway, session_id: str
) -> None:
    api = ScriptedAPI(
        chat_reply(1, chat_call("call_m", "send_money", {"amount": 900, "to": "eve"})),
        chat_reply(2, content="The payment was refused."),
    )
    thread, box = _in_thread(lambda: run(api, tools))
    pending = gateway.wait_for_call(status="pending", tool="send_money", session_id=session_id)
    gateway.deny(pending["id"], comment="eve is not a customer")
    thread.join(60)
    assert not thread.is_alive() and "error" not in box, box

    assert tools.ran("send_money") == []
    assert api.tool_messages(1) == {
        "call_m": "Tool call denied by a human reviewer: eve is not a customer. The tool did not run."
    }
    (record,) = box["result"].tool_calls
    assert (record.status, record.call_id) == ("denied", pending["id"])
    assert isinstance(record.error, callgate.ApprovalDenied)


def test_approval_expired_is_refused(tools: Tools, gateway: Gateway, session_id: str) -> None:
    """Nobody decides within the rule's 2 s: the call expires and the model is told so."""
    api = ScriptedAPI(
        chat_reply(1, chat_call("call_m", "send_money", {"amount": 13, "to": "bob"})),
        chat_reply(2, content="It timed out."),
    )
    result = run_sync(api, tools)
    assert tools.runs == []
    assert api.tool_messages(1) == {
        "call_m": "Tool call not approved in time (the approval request expired). The tool did not run."
    }
    assert result.tool_calls[0].status == "expired"


@RUNNERS
def test_bad_json_arguments_are_answered_and_the_model_can_retry(
    run: Callable[..., LoopResult], tools: Tools, gateway: Gateway, session_id: str
) -> None:
    """Malformed arguments never crash the loop and never reach the gateway; a retry then works."""
    api = ScriptedAPI(
        chat_reply(
            1,
            chat_call("bad", "get_weather", '{"city": "Oslo"'),
            chat_call("arr", "get_weather", '["Oslo"]'),
            chat_call("miss", "get_weather", {"town": "Oslo"}),
        ),
        chat_reply(2, chat_call("good", "get_weather", {"city": "Oslo"})),
        chat_reply(3, content="sunny"),
    )
    result = run(api, tools)

    answers = api.tool_messages(1)
    assert answers["bad"].startswith("Error: invalid call of get_weather: the arguments are not valid JSON (")
    assert "must be a JSON object, not an array" in answers["arr"]
    assert "do not fit the tool" in answers["miss"] and "city" in answers["miss"]
    assert all(
        text.endswith("call it again with a JSON object of its parameters.") for text in answers.values()
    )
    assert [r.status for r in result.tool_calls] == ["invalid_arguments"] * 3 + ["succeeded"]
    assert result.tool_calls[0].arguments is None and result.tool_calls[2].arguments == {"town": "Oslo"}
    assert tools.runs == [("get_weather", {"city": "Oslo"})]
    assert [(c["tool"], c["args"]) for c in gateway.calls(session_id)] == [("get_weather", {"city": "Oslo"})]


def test_unknown_tool_name_is_answered_not_run(tools: Tools, gateway: Gateway, session_id: str) -> None:
    api = ScriptedAPI(
        chat_reply(1, chat_call("x", "launch_rockets", {"count": 3})),
        chat_reply(2, content="I cannot do that."),
    )
    result = run_sync(api, tools)

    assert api.tool_messages(1) == {
        "x": "Error: there is no tool named 'launch_rockets' (available tools: "
        "delete_file, get_weather, send_money). Nothing was run."
    }
    (record,) = result.tool_calls
    assert (record.status, record.call_id, record.arguments) == ("unknown_tool", None, {"count": 3})
    assert gateway.calls(session_id) == [] and tools.runs == []


@RUNNERS
def test_max_turns_stops_after_answering_the_last_turns_calls(
    run: Callable[..., LoopResult], tools: Tools, gateway: Gateway, session_id: str
) -> None:
    """A model that never stops is cut off after max_turns model calls; the transcript stays valid
    (the last turn's calls are answered), so it can be sent again to continue."""
    api = ScriptedAPI(
        *(chat_reply(n, chat_call(f"c{n}", "get_weather", {"city": f"city{n}"})) for n in (1, 2, 3))
    )
    result = run(api, tools, max_turns=2)

    assert len(api.requests) == 2 and result.turns == 2
    assert result.stop_reason == "max_turns" and result.final_message is None and result.text is None
    assert tools.runs == [("get_weather", {"city": "city1"}), ("get_weather", {"city": "city2"})]
    assert result.messages[-1] == {"role": "tool", "tool_call_id": "c2", "content": "sunny in city2"}
    assert len(api.replies) == 1  # the third reply was never requested

    more = ScriptedAPI(chat_reply(4, content="finally"))
    resumed = openai_chat.run_tools(
        more.openai(), model="gpt-4o", messages=result.messages, tools=tools.mapping()
    )
    assert more.sent(0) == result.messages and resumed.text == "finally"


@RUNNERS
def test_usage_of_every_response_reaches_the_gateway_and_is_priced(
    run: Callable[..., LoopResult], tools: Tools, gateway: Gateway, session_id: str
) -> None:
    api = ScriptedAPI(
        chat_reply(1, chat_call("w", "get_weather", {"city": "Oslo"})), chat_reply(2, content="sunny")
    )
    run(api, tools)
    assert callgate.flush(10)
    usage = gateway.session(session_id)["usage"]

    reported = [chat_usage(1), chat_usage(2)]
    expected = {
        "calls": 2,
        "input_tokens": sum(u["prompt_tokens"] for u in reported),
        "output_tokens": sum(u["completion_tokens"] for u in reported),
        "cache_read_tokens": sum(u["prompt_tokens_details"]["cached_tokens"] for u in reported),
        "cache_write_tokens": 0,
        "reasoning_tokens": sum(u["completion_tokens_details"]["reasoning_tokens"] for u in reported),
    }
    (by_model,) = usage["by_model"]
    assert (by_model["model"], by_model["provider"]) == (OPENAI_MODEL, "openai")
    assert {k: by_model[k] for k in expected} == expected
    cost = sum(
        (
            calc_price(
                Usage(
                    input_tokens=u["prompt_tokens"],
                    cache_read_tokens=u["prompt_tokens_details"]["cached_tokens"],
                    output_tokens=u["completion_tokens"],
                    output_reasoning_tokens=u["completion_tokens_details"]["reasoning_tokens"],
                ),
                model_ref=OPENAI_MODEL,
                provider_id="openai",
            ).total_price
            for u in reported
        ),
        Decimal(0),
    )
    assert cost > 0 and Decimal(by_model["cost_usd"]) == cost == Decimal(usage["total"]["cost_usd"])
    assert usage["total"]["unpriced_calls"] == 0


def test_a_tool_that_raises_is_reported_failed_and_the_model_reads_the_error(
    gateway: Gateway, session_id: str
) -> None:
    def flaky(n: int) -> int:
        raise RuntimeError(f"disk full at {n}")

    api = ScriptedAPI(chat_reply(1, chat_call("f", "flaky", {"n": 3})), chat_reply(2, content="sorry"))
    result = openai_chat.run_tools(api.openai(), model="gpt-4o", messages=USER, tools={"flaky": flaky})

    assert api.tool_messages(1) == {"f": "Error: the tool flaky failed: RuntimeError: disk full at 3"}
    (record,) = result.tool_calls
    assert (record.status, record.ran, record.is_error) == ("failed", True, True)
    assert isinstance(record.error, RuntimeError)
    callgate.flush(10)
    (row,) = gateway.calls(session_id)
    assert row["outcome_status"] == "failed" and "disk full" in row["outcome_error"]


def test_tool_errors_raise_propagates_the_tools_exception(gateway: Gateway, session_id: str) -> None:
    def flaky() -> None:
        raise KeyError("boom")

    api = ScriptedAPI(chat_reply(1, chat_call("f", "flaky", {})), chat_reply(2, content="never"))
    with pytest.raises(KeyError, match="boom"):
        openai_chat.run_tools(
            api.openai(), model="gpt-4o", messages=USER, tools={"flaky": flaky}, tool_errors="raise"
        )
    assert len(api.requests) == 1


def test_raise_on_block_raises_out_of_the_loop(
    tools: Tools, gateway: Gateway, session_id: str, tmp_path: Any
) -> None:
    gateway.configure(spool_dir=tmp_path / "spool2", raise_on_block=True)
    api = ScriptedAPI(
        chat_reply(1, chat_call("d", "delete_file", {"path": "/x"})), chat_reply(2, content="-")
    )
    with pytest.raises(callgate.CallBlocked):
        run_sync(api, tools)
    assert tools.runs == [] and len(api.requests) == 1


def test_async_loop_awaits_async_tools_and_runs_sync_ones_off_the_event_loop(
    gateway: Gateway, session_id: str
) -> None:
    seen: dict[str, Any] = {}

    async def lookup(key: str) -> str:
        seen["lookup_loop"] = asyncio.get_running_loop()
        return f"value of {key}"

    def blocking(key: str) -> str:
        seen["blocking_thread"] = threading.current_thread()
        seen["session"] = callgate.current_session()
        return f"slow {key}"

    api = ScriptedAPI(
        chat_reply(1, chat_call("a", "lookup", {"key": "k"}), chat_call("b", "blocking", {"key": "k"})),
        chat_reply(2, content="ok"),
    )

    async def main() -> LoopResult:
        seen["loop"] = asyncio.get_running_loop()
        return await openai_chat.arun_tools(
            api.async_openai(), model="gpt-4o", messages=USER, tools={"lookup": lookup, "blocking": blocking}
        )

    result = asyncio.run(main())
    assert api.tool_messages(1) == {"a": "value of k", "b": "slow k"}
    assert seen["lookup_loop"] is seen["loop"]
    assert seen["blocking_thread"] is not threading.main_thread() and seen["session"] == session_id
    assert [r.status for r in result.tool_calls] == ["succeeded", "succeeded"]


def test_an_inner_guard_of_the_same_function_is_not_checked_twice(gateway: Gateway, session_id: str) -> None:
    runs: list[str] = []

    @callgate.guard
    def archive(name: str) -> str:
        runs.append(name)
        return "archived"

    api = ScriptedAPI(chat_reply(1, chat_call("a", "archive", {"name": "q3"})), chat_reply(2, content="ok"))
    openai_chat.run_tools(api.openai(), model="gpt-4o", messages=USER, tools={"archive": archive})
    assert runs == ["q3"]
    assert [c["tool"] for c in gateway.calls(session_id)] == ["archive"]


def test_explicit_schema_and_create_kwargs_are_sent_as_given(gateway: Gateway, session_id: str) -> None:
    schema = {
        "type": "function",
        "function": {
            "name": "search",
            "description": "Search the docs.",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
        },
    }
    api = ScriptedAPI(chat_reply(1, content="nothing to do"))
    result = openai_chat.run_tools(
        api.openai(),
        model="gpt-4o",
        messages=USER,
        tools={"search": (schema, lambda q: q)},
        temperature=0,
        tool_choice="auto",
    )
    assert api.requests[0]["tools"] == [schema]
    assert (api.requests[0]["temperature"], api.requests[0]["tool_choice"]) == (0, "auto")
    assert result.tool_calls == [] and result.text == "nothing to do"


class TestMisuse:
    def test_unconfigured_raises_before_calling_the_model(self, tools: Tools) -> None:
        callgate.reset()
        api = ScriptedAPI(chat_reply(1, content="-"))
        with pytest.raises(callgate.ConfigurationError):
            run_sync(api, tools)
        assert api.requests == []

    def test_wrong_client_kind_is_a_type_error(self, tools: Tools, configured: Gateway) -> None:
        api = ScriptedAPI(chat_reply(1, content="-"), chat_reply(2, content="-"))
        with pytest.raises(TypeError, match="arun_tools"):
            openai_chat.run_tools(api.async_openai(), model="gpt-4o", messages=USER, tools=tools.mapping())
        with pytest.raises(TypeError, match="run_tools"):
            asyncio.run(
                openai_chat.arun_tools(api.openai(), model="gpt-4o", messages=USER, tools=tools.mapping())
            )
        with pytest.raises(TypeError, match="chat.completions.create"):
            openai_chat.run_tools(object(), model="gpt-4o", messages=USER, tools=tools.mapping())

    def test_async_tool_in_the_sync_loop_is_refused(self, configured: Gateway) -> None:
        async def fetch(url: str) -> str:
            return url

        with pytest.raises(TypeError, match="coroutine function"):
            openai_chat.run_tools(
                ScriptedAPI().openai(), model="gpt-4o", messages=USER, tools={"fetch": fetch}
            )

    @pytest.mark.parametrize(
        "options", [{"max_turns": 0}, {"tool_errors": "ignore"}, {"stream": True}, {"n": 2}]
    )
    def test_unsupported_options_are_refused(
        self, options: dict[str, Any], tools: Tools, configured: Gateway
    ) -> None:
        api = ScriptedAPI()
        with pytest.raises(ValueError):
            run_sync(api, tools, **options)
        assert api.requests == []

    def test_a_provider_error_propagates(self, tools: Tools, configured: Gateway) -> None:
        import openai

        api = ScriptedAPI((400, {"error": {"message": "bad request", "type": "invalid_request_error"}}))
        with pytest.raises(openai.BadRequestError):
            run_sync(api, tools)

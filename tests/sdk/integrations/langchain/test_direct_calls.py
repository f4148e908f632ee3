"""Tools called directly, outside any agent: ``invoke`` with a ToolCall or a dict, ``run``, ``ainvoke``.

Outside a loop there is no ``tool_call_id`` to answer, so a refusal comes back as the text the
model would have read; with one, as the ``ToolMessage`` ``run()`` returns for a handled error.
"""

from __future__ import annotations

import asyncio
from typing import Any

import wrapt
from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool, Tool

import callgate
from tests.sdk.integrations.harness import Gateway
from tests.sdk.integrations.langchain import tools as T
from tests.sdk.integrations.langchain.checks import only_row, rows

BLOCKED = "Tool call blocked by policy: deleting files is not allowed"


def test_invoke_with_a_tool_call_returns_an_error_tool_message(gateway: Gateway, session_id: str) -> None:
    call = {"type": "tool_call", "name": "delete_file", "args": {"path": "/z"}, "id": "call-abc"}

    result = T.delete_file.invoke(call)

    assert isinstance(result, ToolMessage)
    assert (result.content, result.status, result.tool_call_id, result.name) == (
        BLOCKED,
        "error",
        "call-abc",
        "delete_file",
    )
    assert T.ran("delete_file") == []
    assert only_row(gateway, session_id, "delete_file")["args"] == {"path": "/z"}


def test_invoke_run_and_ainvoke_without_a_tool_call_return_the_reason(
    gateway: Gateway, session_id: str
) -> None:
    assert T.delete_file.invoke({"path": "/a"}) == BLOCKED
    assert T.delete_file.run({"path": "/b"}) == BLOCKED
    assert asyncio.run(T.delete_file.ainvoke({"path": "/c"})) == BLOCKED  # arun: the async body's path
    assert asyncio.run(T.delete_file.arun({"path": "/d"}, tool_call_id="call-d")).status == "error"

    assert T.ran("delete_file") == []
    assert sorted(r["args"]["path"] for r in rows(gateway, session_id, "delete_file")) == [
        "/a",
        "/b",
        "/c",
        "/d",
    ]


def test_allowed_direct_calls_run_once_each(gateway: Gateway, session_id: str) -> None:
    assert T.get_weather.invoke({"city": "Paris"}) == "Sunny in Paris"
    assert asyncio.run(T.get_weather.ainvoke({"city": "Lima"})) == "Sunny in Lima"  # sync body, worker thread
    assert asyncio.run(T.Calculator().ainvoke({"a": 1, "b": 2})) == "3"
    message = T.Calculator().invoke(
        {"type": "tool_call", "name": "calculator", "args": {"a": 4, "b": 5}, "id": "c1"}
    )
    assert (message.content, message.status) == ("9", "success")

    assert T.ran("get_weather") == [{"city": "Paris"}, {"city": "Lima"}]
    assert [(r["args"], r["status"]) for r in rows(gateway, session_id, "get_weather")] == [
        ({"city": "Paris"}, "succeeded"),
        ({"city": "Lima"}, "succeeded"),
    ]
    assert [r["args"] for r in rows(gateway, session_id, "calculator")] == [
        {"a": 1, "b": 2},
        {"a": 4, "b": 5},
    ]


def test_a_string_input_is_sent_under_the_argument_it_fills(gateway: Gateway, session_id: str) -> None:
    """``tool.run("/etc")`` is validated as the schema's first field; sending it as ``{"input": ...}``
    would let a string side-step a policy condition on ``path``."""
    assert T.delete_file.run("/etc/shadow") == BLOCKED
    assert T.get_weather.run("Rome") == "Sunny in Rome"
    echo = Tool(name="echo", func=lambda text: f"echo {text}", description="Echo the input.")
    assert echo.run("hi") == "echo hi"

    assert only_row(gateway, session_id, "delete_file")["args"] == {"path": "/etc/shadow"}
    assert only_row(gateway, session_id, "get_weather")["args"] == {"city": "Rome"}
    assert only_row(gateway, session_id, "echo")["args"] == {"input": "hi"}  # no schema: a single input


def test_another_wrapt_instrumentation_does_not_switch_enforcement_off(
    gateway: Gateway, session_id: str, tmp_path: Any
) -> None:
    """An APM or tracing library may have wrapt-wrapped ``BaseTool.run`` before callgate is configured:
    callgate wraps on top of it (checked, and the other wrapper still runs), and reset restores it."""
    callgate.reset()
    seen: list[str] = []

    def tracer(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        seen.append(instance.name)
        return wrapped(*args, **kwargs)

    original = vars(BaseTool)["run"]
    wrapt.wrap_function_wrapper(BaseTool, "run", tracer)
    traced = vars(BaseTool)["run"]
    try:
        gateway.configure(spool_dir=tmp_path / "spool-traced")
        assert T.delete_file.invoke({"path": "/traced"}) == BLOCKED
        assert T.get_weather.invoke({"city": "Bergen"}) == "Sunny in Bergen"
        assert T.ran("delete_file") == []
        assert seen == ["get_weather"]  # blocked before the inner wrapper; allowed passes through it
        assert only_row(gateway, session_id, "delete_file")["status"] == "blocked"
        callgate.reset()
        assert vars(BaseTool)["run"] is traced
    finally:
        callgate.reset()
        BaseTool.run = original

"""Real LangChain/LangGraph agent loops, a scripted model, the real gateway: every tool call checked once.

The tools (tools.py) were created at import time, before any ``configure()``; the model is a
scripted ``BaseChatModel`` (scripted.py), so these are the framework's real loops
(``create_agent``'s and ``create_react_agent``'s graphs, ``ToolNode``) with no network.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, AIMessageChunk

import callgate
from tests.sdk.integrations.harness import Gateway
from tests.sdk.integrations.langchain import tools as T
from tests.sdk.integrations.langchain.checks import only_row, rows
from tests.sdk.integrations.langchain.scripted import ScriptedChatModel, ask, final_text

BLOCKED = "Tool call blocked by policy: deleting files is not allowed"
ALL_TOOLS = [
    T.get_weather,
    T.delete_file,
    T.send_money,
    T.Calculator(),
    T.whoami,
    T.greet,
    T.guarded_lookup,
    T.flaky,
]


def react_agent(model: ScriptedChatModel, tools: list[Any]) -> Any:
    """LangGraph's prebuilt agent (superseded by ``create_agent`` in LangGraph 1.0, still shipped)."""
    import warnings

    from langgraph.prebuilt import create_react_agent
    from langgraph.warnings import LangGraphDeprecatedSinceV10

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LangGraphDeprecatedSinceV10)
        return create_react_agent(model, tools)


BUILDERS: dict[str, Callable[[ScriptedChatModel, list[Any]], Any]] = {
    "create_agent": lambda model, tools: create_agent(model=model, tools=tools),
    "create_react_agent": react_agent,
}


def assert_blocked_and_allowed(gateway: Gateway, session_id: str, model: ScriptedChatModel) -> None:
    """One turn called delete_file (blocked) and get_weather (allowed): the shared expectations."""
    assert T.ran("delete_file") == [], "a blocked tool ran"
    assert T.ran("get_weather") == [{"city": "Oslo"}]
    # The model's next turn was shown the refusal reason, as a tool error, and the real result.
    assert ("delete_file", "error", BLOCKED) in model.seen
    assert ("get_weather", "success", "Sunny in Oslo") in model.seen
    blocked = only_row(gateway, session_id, "delete_file")
    assert (blocked["status"], blocked["args"], blocked["framework"]) == (
        "blocked",
        {"path": "/etc/passwd"},
        "langchain",
    )
    allowed = only_row(gateway, session_id, "get_weather")
    assert (allowed["status"], allowed["args"], allowed["outcome_status"]) == (
        "succeeded",
        {"city": "Oslo"},
        "succeeded",
    )


BLOCK_AND_ALLOW = ask(("delete_file", {"path": "/etc/passwd"}), ("get_weather", {"city": "Oslo"}))


@pytest.mark.parametrize("builder", sorted(BUILDERS))
def test_invoke_blocks_refused_tools_and_runs_allowed_ones(
    gateway: Gateway, session_id: str, builder: str
) -> None:
    model = ScriptedChatModel()
    agent = BUILDERS[builder](model, ALL_TOOLS)

    state = agent.invoke(BLOCK_AND_ALLOW)

    # The run ended normally with the model's final answer, after exactly two model turns.
    assert final_text(state) == f"final: [error] {BLOCKED} | [success] Sunny in Oslo"
    assert len(model.reported) == 2
    assert_blocked_and_allowed(gateway, session_id, model)


@pytest.mark.parametrize("builder", sorted(BUILDERS))
def test_ainvoke_checks_async_and_sync_only_tools(gateway: Gateway, session_id: str, builder: str) -> None:
    model = ScriptedChatModel()
    agent = BUILDERS[builder](model, ALL_TOOLS)

    state = asyncio.run(
        agent.ainvoke(
            ask(
                ("delete_file", {"path": "/etc/passwd"}),
                ("get_weather", {"city": "Oslo"}),
                ("calculator", {"a": 2, "b": 3}),
            )
        )
    )

    assert final_text(state).startswith(f"final: [error] {BLOCKED} | [success] Sunny in Oslo | [success] 5")
    assert_blocked_and_allowed(gateway, session_id, model)
    assert T.ran("calculator") == [{"a": 2, "b": 3}]
    assert only_row(gateway, session_id, "calculator")["args"] == {"a": 2, "b": 3}


def _stream_messages(agent: Any) -> list[Any]:
    return [chunk for chunk, _meta in agent.stream(BLOCK_AND_ALLOW, stream_mode="messages")]


def _stream_updates(agent: Any) -> list[Any]:
    return [
        m
        for update in agent.stream(BLOCK_AND_ALLOW, stream_mode="updates")
        for node in update.values()
        if node
        for m in node.get("messages", [])
    ]


def _astream_messages(agent: Any) -> list[Any]:
    async def main() -> list[Any]:
        return [chunk async for chunk, _meta in agent.astream(BLOCK_AND_ALLOW, stream_mode="messages")]

    return asyncio.run(main())


def _astream_updates(agent: Any) -> list[Any]:
    async def main() -> list[Any]:
        return [
            m
            async for update in agent.astream(BLOCK_AND_ALLOW, stream_mode="updates")
            for node in update.values()
            if node
            for m in node.get("messages", [])
        ]

    return asyncio.run(main())


STREAMS = {
    "stream-messages": _stream_messages,
    "stream-updates": _stream_updates,
    "astream-messages": _astream_messages,
    "astream-updates": _astream_updates,
}


@pytest.mark.parametrize("mode", sorted(STREAMS))
def test_streamed_runs_are_enforced(gateway: Gateway, session_id: str, mode: str) -> None:
    model = ScriptedChatModel()
    agent = create_agent(model=model, tools=ALL_TOOLS)

    streamed = STREAMS[mode](agent)

    assert_blocked_and_allowed(gateway, session_id, model)
    # The stream carried the refusal to the caller too, and ended with the model's final answer.
    refusals = [m for m in streamed if getattr(m, "type", None) == "tool" and m.name == "delete_file"]
    assert [(m.status, m.content) for m in refusals] == [("error", BLOCKED)]
    answer = "".join(str(m.content) for m in streamed if isinstance(m, (AIMessage, AIMessageChunk)))
    assert answer.endswith(f"final: [error] {BLOCKED} | [success] Sunny in Oslo")


def test_injected_runtime_values_are_not_sent(gateway: Gateway, session_id: str) -> None:
    """``ToolNode`` adds the ``ToolRuntime`` (state, store, config, tool call id) to the tool's input;
    the gateway must get only what the model chose, and the tool must still get its runtime."""
    model = ScriptedChatModel()
    agent = create_agent(model=model, tools=ALL_TOOLS)

    agent.invoke(ask(("whoami", {}), ("greet", {"name": "Ada"})))

    assert only_row(gateway, session_id, "whoami")["args"] == {}
    assert only_row(gateway, session_id, "greet")["args"] == {"name": "Ada"}
    [whoami] = T.ran("whoami")
    assert whoami["tool_call_id"].startswith("call_")  # the runtime was injected all the same
    assert T.ran("greet") == [{"name": "Ada", "state_keys": ["messages"]}]


def test_guarded_function_used_as_a_tool_is_checked_once(gateway: Gateway, session_id: str) -> None:
    """``@callgate.guard`` inside, LangChain's patch outside: the outer check hands the inner one a
    pass, so the gateway sees the call once -- on the sync path, the async path and a direct call."""
    model = ScriptedChatModel()
    agent = create_agent(model=model, tools=ALL_TOOLS)

    agent.invoke(ask(("lookup", {"term": "sync"})))
    asyncio.run(agent.ainvoke(ask(("lookup", {"term": "async"}))))
    assert T.guarded_lookup.invoke({"term": "direct"}) == "direct: found"

    checked = rows(gateway, session_id, "lookup")
    assert sorted(r["args"]["term"] for r in checked) == ["async", "direct", "sync"]
    assert {(r["framework"], r["status"]) for r in checked} == {("langchain", "succeeded")}
    assert [a["term"] for a in T.ran("lookup")] == ["sync", "async", "direct"]
    # Called outside LangChain, the guard alone checks it (once).
    assert T.lookup(term="plain") == "plain: found"
    plain = [r for r in rows(gateway, session_id, "lookup") if r["args"]["term"] == "plain"]
    assert [(r["framework"], r["status"]) for r in plain] == [("guard", "succeeded")]


def test_tools_made_before_configure_are_enforced(gateway: Gateway, session_id: str) -> None:
    """The tools module was imported (tools built) while callgate was not configured; the patch is on
    the class, so those very instances are checked -- no re-creation, no per-instance wrapping."""
    assert T.CREATED_BEFORE_CONFIGURE
    assert "run" not in vars(T.delete_file) and "run" not in vars(type(T.delete_file))
    agent = create_agent(model=ScriptedChatModel(), tools=[T.delete_file])

    agent.invoke(ask(("delete_file", {"path": "/srv/data"})))

    assert T.ran("delete_file") == []
    assert only_row(gateway, session_id, "delete_file")["status"] == "blocked"


def test_a_handled_tool_error_is_reported_as_a_failure(gateway: Gateway, session_id: str) -> None:
    """``handle_tool_error=True``: LangChain turns the tool's exception into a result; the gateway
    must still learn that the call failed, and why (agent path and direct call alike)."""
    model = ScriptedChatModel()
    agent = create_agent(model=model, tools=ALL_TOOLS)

    agent.invoke(ask(("flaky", {"path": "/agent"})))
    assert T.flaky.invoke({"path": "/direct"}) == "no such file: /direct"

    assert ("flaky", "error", "no such file: /agent") in model.seen
    outcomes = {
        r["args"]["path"]: (r["status"], r["outcome_error"]) for r in rows(gateway, session_id, "flaky")
    }
    assert outcomes == {
        "/agent": ("failed", "ToolException: no such file: /agent"),
        "/direct": ("failed", "ToolException: no such file: /direct"),
    }


def test_a_tool_that_raises_is_reported_and_the_error_propagates(gateway: Gateway, session_id: str) -> None:
    def explode(path: str) -> str:
        T.RAN.add("explode", path=path)
        raise RuntimeError("disk on fire")

    from langchain_core.tools import StructuredTool

    exploding = StructuredTool.from_function(explode, name="explode", description="Explode.")
    with pytest.raises(RuntimeError, match="disk on fire"):
        exploding.invoke({"path": "/x"})

    row = only_row(gateway, session_id, "explode")
    assert (row["status"], row["outcome_error"]) == ("failed", "RuntimeError: disk on fire")


def test_raise_on_block_raises_instead(gateway: Gateway, session_id: str, tmp_path: Any) -> None:
    gateway.configure(spool_dir=tmp_path / "spool-raise", raise_on_block=True)
    agent = create_agent(model=ScriptedChatModel(), tools=ALL_TOOLS)

    with pytest.raises(callgate.CallBlocked) as raised:
        agent.invoke(BLOCK_AND_ALLOW)
    assert raised.value.reason == "deleting files is not allowed"
    with pytest.raises(callgate.CallBlocked):
        asyncio.run(T.delete_file.ainvoke({"path": "/async"}))

    assert T.ran("delete_file") == []
    assert {r["args"]["path"] for r in rows(gateway, session_id, "delete_file")} == {"/etc/passwd", "/async"}

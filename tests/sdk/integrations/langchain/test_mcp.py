"""MCP tools in a LangChain agent, against a real local stdio MCP server (../mcp_server.py).

langchain 1.4.7 ships its own MCP adapter, ``langchain.mcp.as_langchain_tool`` (beta, FastMCP
client; langchain-mcp-adapters needs mcp < 2). Like every MCP adapter it builds
``StructuredTool(coroutine=...)`` tools -- async only -- so they are checked in ``arun``. The
server is a separate process that journals every execution: that is how the test proves a blocked
MCP tool never ran on the server.
"""

from __future__ import annotations

import asyncio
import warnings
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core._api import LangChainBetaWarning

import callgate
from tests.sdk.integrations.harness import Gateway
from tests.sdk.integrations.langchain.checks import only_row
from tests.sdk.integrations.langchain.scripted import ScriptedChatModel, ask, final_text
from tests.sdk.integrations.mcp_server import read_journal, stdio_params

with warnings.catch_warnings():
    warnings.simplefilter("ignore", LangChainBetaWarning)  # "langchain.mcp is in beta", once per process
    from langchain.mcp import as_langchain_tool

from fastmcp import Client  # noqa: E402 - after the adapter, whose import checks for it
from fastmcp.client.transports import StdioTransport  # noqa: E402

BLOCKED = "Tool call blocked by policy: rm -rf is not allowed"
RM_AND_LIST = ask(("rm_rf", {"path": "/victim"}), ("list_dir", {"path": "/"}))


@pytest.fixture
def sandbox(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "root"
    (root / "victim").mkdir(parents=True)
    (root / "victim" / "precious.txt").write_text("keep me")
    return root, tmp_path / "journal.jsonl"


async def _mcp_tools(client: Any) -> list[Any]:
    return [await as_langchain_tool(tool, client) for tool in await client.list_tools()]


def _client(sandbox: tuple[Path, Path]) -> Any:
    params = stdio_params(*sandbox)
    return Client(StdioTransport(params["command"], params["args"]))


def _assert_enforced(
    gateway: Gateway, session_id: str, sandbox: tuple[Path, Path], model: ScriptedChatModel
) -> None:
    root, journal = sandbox
    assert read_journal(journal) == [{"tool": "list_dir", "path": "/"}], (
        "the server ran something it must not"
    )
    assert (root / "victim" / "precious.txt").read_text() == "keep me"
    assert ("rm_rf", "error", BLOCKED) in model.seen
    [(listed_status, listed)] = [
        (status, content) for name, status, content in model.seen if name == "list_dir"
    ]
    assert listed_status == "success" and "/: victim" in listed
    blocked = only_row(gateway, session_id, "rm_rf")
    assert (blocked["status"], blocked["args"]) == ("blocked", {"path": "/victim"})
    allowed = only_row(gateway, session_id, "list_dir")
    assert (allowed["status"], allowed["args"]) == ("succeeded", {"path": "/"})


def test_mcp_tools_made_before_configure_are_enforced(
    gateway: Gateway, session_id: str, sandbox: Any, tmp_path: Path
) -> None:
    model = ScriptedChatModel()

    async def main() -> dict[str, Any]:
        callgate.reset()  # the MCP tools are converted while callgate is off ...
        client = _client(sandbox)
        async with client:
            tools = await _mcp_tools(client)
            gateway.configure(spool_dir=tmp_path / "spool-mcp")  # ... and configured afterwards
            return await create_agent(model=model, tools=tools).ainvoke(RM_AND_LIST)

    state = asyncio.run(main())

    assert final_text(state).startswith(f"final: [error] {BLOCKED} | [success]")
    _assert_enforced(gateway, session_id, sandbox, model)


def test_mcp_tools_in_a_streamed_run(gateway: Gateway, session_id: str, sandbox: Any) -> None:
    model = ScriptedChatModel()

    async def main() -> list[Any]:
        client = _client(sandbox)
        async with client:
            agent = create_agent(model=model, tools=await _mcp_tools(client))
            return [chunk async for chunk, _ in agent.astream(RM_AND_LIST, stream_mode="messages")]

    streamed = asyncio.run(main())

    assert [m.content for m in streamed if getattr(m, "name", None) == "rm_rf"] == [BLOCKED]
    _assert_enforced(gateway, session_id, sandbox, model)

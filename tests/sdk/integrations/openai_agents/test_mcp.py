"""MCP tools over a real local stdio server (``agents.mcp.MCPServerStdio`` + ../mcp_server.py).

The SDK rebuilds a ``FunctionTool`` for each MCP tool on every turn, long after ``configure()``;
each one must be checked. The server runs in its own process and journals every tool it really
executes, which is how a blocked ``rm_rf`` is proven never to have run there.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import callgate
import pytest
from agents import Agent
from agents.mcp import MCPServerStdio

from tests.sdk.integrations.harness import Gateway
from tests.sdk.integrations.mcp_server import read_journal, stdio_params

from .drive import arun
from .scripted_model import ScriptedModel, user


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    root = tmp_path / "sandbox"
    (root / "home").mkdir(parents=True)
    (root / "home" / "a.txt").write_text("a")
    (root / "home" / "b.txt").write_text("b")
    return root


@pytest.mark.parametrize("mode", ["run", "run_streamed"])
def test_mcp_tools_are_checked_blocked_ones_never_reach_the_server(configured: Gateway, session_id: str,
                                                                   sandbox: Path, tmp_path: Path, mode: str) -> None:
    journal = tmp_path / "journal.jsonl"
    model = ScriptedModel()

    async def scenario() -> tuple[Any, Any]:
        async with MCPServerStdio(params=stdio_params(sandbox, journal), cache_tools_list=True,
                                  client_session_timeout_seconds=60) as server:
            agent = Agent(name="fs", instructions="Manage files.", mcp_servers=[server], model=model)
            removed = await arun(agent, user("rm_rf", path="/home"), mode)
            listed = await arun(agent, user("list_dir", path="/home"), mode)
            return removed, listed

    removed, listed = asyncio.run(scenario())

    assert removed.final_output == "final: Tool call blocked by policy: rm -rf is not allowed"
    assert listed.final_output == "final: /home: a.txt b.txt"
    assert model.seen == ["Tool call blocked by policy: rm -rf is not allowed", "/home: a.txt b.txt"]
    assert read_journal(journal) == [{"tool": "list_dir", "path": "/home"}]  # rm_rf never executed
    assert (sandbox / "home" / "a.txt").exists()
    assert callgate.flush(10)
    calls = configured.calls(session_id)
    assert [(c["tool"], c["args"], c["status"], c["framework"]) for c in calls] == [
        ("rm_rf", {"path": "/home"}, "blocked", "openai-agents"),
        ("list_dir", {"path": "/home"}, "succeeded", "openai-agents")]

"""Tools called directly, outside any agent: ``tool.run()``, ``await tool.arun()``,
``tool.to_structured_tool().invoke()/ainvoke()`` (the ReAct loop's entry point) -- the paths
CrewAI's own tool hooks never see. A refusal is CrewAI's ``ToolFailure``; every call is one row."""

from __future__ import annotations

import asyncio
from typing import Any

from crewai.tools import tool
from crewai.tools.tool_failure import ToolFailure

from tests.sdk.integrations.crewai.checks import recorded
from tests.sdk.integrations.crewai.tools import delete_file, fetch_url, get_weather, read_file, rm_rf
from tests.sdk.integrations.harness import Gateway

DELETE_BLOCKED = "Tool call blocked by policy: deleting files is not allowed"


def _refusal(result: Any, message: str = DELETE_BLOCKED) -> ToolFailure:
    assert isinstance(result, ToolFailure), result
    assert (result.message, result.code, result.retryable) == (message, "policy_blocked", False)
    return result


def test_sync_entry_points(configured: Gateway, session_id: str, ran: list[Any]) -> None:
    by_keyword = _refusal(delete_file.run(path="/etc/hosts"))  # BaseTool.run
    _refusal(delete_file.run("/etc/fstab"))  # a positional argument, named by the tool's schema
    assert read_file.run("/notes.txt") == "contents of /notes.txt"
    assert get_weather.run(city="Rome") == "Sunny in Rome"  # Tool.run (@tool overrides run)
    _refusal(rm_rf.to_structured_tool().invoke({"path": "/var"}), "Tool call blocked by policy: rm -rf is not allowed")
    assert get_weather.to_structured_tool().invoke('{"city": "Oslo"}') == "Sunny in Oslo"  # JSON string input

    assert ran == [("read_file", {"path": "/notes.txt"}), ("get_weather", {"city": "Rome"}),
                   ("get_weather", {"city": "Oslo"})]
    assert recorded(configured, session_id) == [
        ("delete_file", "blocked", {"path": "/etc/hosts"}),
        ("delete_file", "blocked", {"path": "/etc/fstab"}),
        ("read_file", "succeeded", {"path": "/notes.txt"}),
        ("get_weather", "succeeded", {"city": "Rome"}),
        ("rm_rf", "blocked", {"path": "/var"}),
        ("get_weather", "succeeded", {"city": "Oslo"}),
    ]
    # The refusal names the gateway call it came from.
    assert by_keyword.details["callgate_call_id"] == configured.calls(session_id)[0]["id"]


def test_async_entry_points(configured: Gateway, session_id: str, ran: list[Any]) -> None:
    async def calls() -> list[Any]:
        return [
            await fetch_url.arun(url="https://example.com"),  # Tool.arun
            await delete_file.arun(path="/a"),  # BaseTool.arun: refused before _arun is reached
            await rm_rf.to_structured_tool().ainvoke({"path": "/b"}),
            await get_weather.to_structured_tool().ainvoke('{"city": "Lima"}'),  # sync tool, run in an executor
        ]

    fetched, deleted, removed, weather = asyncio.run(calls())

    assert fetched == "<html>https://example.com</html>"
    _refusal(deleted)
    _refusal(removed, "Tool call blocked by policy: rm -rf is not allowed")
    assert weather == "Sunny in Lima"
    assert ran == [("fetch_url", {"url": "https://example.com"}), ("get_weather", {"city": "Lima"})]
    assert recorded(configured, session_id) == [
        ("fetch_url", "succeeded", {"url": "https://example.com"}),
        ("delete_file", "blocked", {"path": "/a"}),
        ("rm_rf", "blocked", {"path": "/b"}),
        ("get_weather", "succeeded", {"city": "Lima"}),
    ]


def test_a_tool_calling_tools_gets_every_inner_call_checked(
        configured: Gateway, session_id: str, ran: list[Any]) -> None:
    """The re-entrancy pass covers the outer call only: tools its body calls are new calls."""

    @tool("tidy_up")
    def tidy_up(path: str) -> str:
        """Read a file, then delete it."""
        contents = read_file.run(path=path)
        deleted = delete_file.run(path=path)
        return f"{contents}; delete: {deleted.code if isinstance(deleted, ToolFailure) else deleted}"

    assert tidy_up.run(path="/old.log") == "contents of /old.log; delete: policy_blocked"
    assert ran == [("read_file", {"path": "/old.log"})]
    assert recorded(configured, session_id) == [
        ("tidy_up", "succeeded", {"path": "/old.log"}),
        ("read_file", "succeeded", {"path": "/old.log"}),
        ("delete_file", "blocked", {"path": "/old.log"}),
    ]


def test_a_tool_that_reports_its_own_failure_is_recorded_as_failed(
        configured: Gateway, session_id: str) -> None:
    """A tool that returns a ``ToolFailure`` (as MCP tools do for ``isError``) ran, but did not succeed."""

    @tool("flaky")
    def flaky() -> ToolFailure:
        """Always fails."""
        return ToolFailure(message="upstream said no", code="upstream_error")

    assert flaky.run().code == "upstream_error"
    recorded(configured, session_id)
    (call,) = configured.calls(session_id)
    assert (call["tool"], call["status"], call["outcome_error"]) == ("flaky", "failed",
                                                                    "upstream said no (code: upstream_error)")

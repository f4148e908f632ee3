"""Real CrewAI agent loops, driven by scripted models, against a real gateway (``DEFAULT_POLICY``).

Every run makes four tool calls -- a blocked ``BaseTool`` subclass, an allowed ``@tool``, a
blocked ``@tool`` and an allowed subclass, all created before ``configure()`` -- on each path
(native function calling and the ReAct loop; ``kickoff``, ``akickoff``, ``stream=True``, a
standalone ``Agent.kickoff``). The run must end normally, the model must read each block's
reason, blocked tools must not run, and the gateway must hold exactly one row per call with the
model's arguments, in the caller's ``callgate.session``.
"""

from __future__ import annotations

from typing import Any

import pytest
from crewai.tools.tool_failure import ToolExecutionFailedError

import callgate
from tests.sdk.integrations.crewai.checks import blocked, recorded
from tests.sdk.integrations.crewai.drive import PATHS, crew, directive, llm_for, run, script_for
from tests.sdk.integrations.crewai.scripted import Script, openai_llm
from tests.sdk.integrations.crewai.tools import ALL_TOOLS, delete_file, rm_rf
from tests.sdk.integrations.harness import Gateway

FOUR_CALLS = " ".join([
    directive("delete_file", path="/etc/passwd"),
    directive("get_weather", city="Paris"),
    directive("rm_rf", path="/srv"),
    directive("read_file", path="/notes.txt"),
])
DELETE_BLOCKED = "Tool call blocked by policy: deleting files is not allowed"
RM_BLOCKED = "Tool call blocked by policy: rm -rf is not allowed"


@pytest.mark.parametrize("path", PATHS)
def test_every_call_is_checked_once_and_blocked_tools_never_run(
        path: str, configured: Gateway, session_id: str, ran: list[Any]) -> None:
    script = script_for(path)

    out = run(path, script, FOUR_CALLS)

    # The run ended normally and the model read every result, the blocks with their reasons.
    assert script.seen == [blocked("deleting files is not allowed"), "Sunny in Paris",
                           blocked("rm -rf is not allowed"), "contents of /notes.txt"]
    assert out.raw == "FINAL: " + " | ".join(script.seen)
    # Blocked tools never ran; allowed ones ran once each.
    assert ran == [("get_weather", {"city": "Paris"}), ("read_file", {"path": "/notes.txt"})]
    # One gateway row per call, named as the model called it, with the model's arguments.
    assert recorded(configured, session_id) == [
        ("delete_file", "blocked", {"path": "/etc/passwd"}),
        ("get_weather", "succeeded", {"city": "Paris"}),
        ("rm_rf", "blocked", {"path": "/srv"}),
        ("read_file", "succeeded", {"path": "/notes.txt"}),
    ]
    # CrewAI itself records the blocks as tool failures (TaskOutput / LiteAgentOutput.tool_failures).
    assert [(r.tool_name, r.failure.code, r.failure.message) for r in out.tool_failures] == [
        ("delete_file", "policy_blocked", DELETE_BLOCKED),
        ("rm_rf", "policy_blocked", RM_BLOCKED),
    ]


def test_a_blocked_call_stops_the_crew_under_crewais_raise_policy(
        configured: Gateway, session_id: str, ran: list[Any]) -> None:
    """CrewAI's own way to stop a run on a failed tool, ``tool_failure_policy="raise"``, applies to a
    policy block: the refusal is a ``ToolFailure``, so the crew aborts with the block's reason."""
    script = Script()
    team = crew(openai_llm(script), " ".join([directive("delete_file", path="/etc/shadow"),
                                              directive("get_weather", city="Oslo")]),
                tool_failure_policy="raise")

    with pytest.raises(ToolExecutionFailedError) as failed:
        team.kickoff()

    assert failed.value.record.failure.code == "policy_blocked"
    assert failed.value.record.failure.message == DELETE_BLOCKED
    assert ran == []
    assert recorded(configured, session_id) == [("delete_file", "blocked", {"path": "/etc/shadow"})]


class TestRaiseOnBlock:
    """``configure(raise_on_block=True)``: the wrappers raise the ``CallgateError``. CrewAI catches
    what a tool raises inside a run, so there the run goes on with CrewAI's error text; a direct
    call raises to the caller."""

    @pytest.fixture
    def raising(self, configured: Gateway, tmp_path: Any) -> Gateway:
        configured.configure(spool_dir=tmp_path / "spool", raise_on_block=True)
        return configured

    def test_direct_calls_raise(self, raising: Gateway, session_id: str, ran: list[Any]) -> None:
        with pytest.raises(callgate.CallBlocked) as error:
            delete_file.run(path="/boot")
        assert error.value.reason == "deleting files is not allowed"
        with pytest.raises(callgate.CallBlocked):
            rm_rf.to_structured_tool().invoke({"path": "/boot"})
        assert ran == []
        assert recorded(raising, session_id) == [("delete_file", "blocked", {"path": "/boot"}),
                                                 ("rm_rf", "blocked", {"path": "/boot"})]

    def test_native_run_reports_crewais_error_text(self, raising: Gateway, session_id: str, ran: list[Any]) -> None:
        script = Script()
        out = run("native-kickoff", script, " ".join([directive("delete_file", path="/boot"),
                                                       directive("get_weather", city="Rome")]))

        error, weather = script.seen
        assert error.startswith("Error executing tool: callgate blocked delete_file: deleting files is not allowed")
        assert weather == "Sunny in Rome"
        assert ran == [("get_weather", {"city": "Rome"})]
        assert [r.failure.code for r in out.tool_failures] == ["CallBlocked"]
        assert "deleting files is not allowed" in out.tool_failures[0].failure.message
        assert recorded(raising, session_id) == [("delete_file", "blocked", {"path": "/boot"}),
                                                 ("get_weather", "succeeded", {"city": "Rome"})]

    def test_react_run_retries_a_raising_tool_and_every_retry_is_refused(
            self, raising: Gateway, session_id: str, ran: list[Any]) -> None:
        """Why returning is the default: CrewAI's ReAct loop retries a tool that raised (crewai
        1.15.30: three attempts of two invocations each). Each retry is a new invocation, checked and
        refused again; the tool never runs, and the run still ends."""
        script = script_for("react-kickoff")
        out = run("react-kickoff", script, directive("delete_file", path="/boot"))

        assert ran == []
        rows = recorded(raising, session_id)
        assert len(rows) > 1
        assert set(map(repr, rows)) == {repr(("delete_file", "blocked", {"path": "/boot"}))}
        assert "deleting files is not allowed" in script.seen[0]
        assert out.raw
        assert [r.failure.code for r in out.tool_failures] == ["CallBlocked"]


def test_guarded_function_as_a_tool_is_checked_once(configured: Gateway, session_id: str, ran: list[Any]) -> None:
    """A ``@callgate.guard``-ed function made a CrewAI tool: the integration checks the call and hands
    the guard a pass, so the gateway sees one call, not two."""
    from crewai.tools import tool

    @tool("lookup_order")
    @callgate.guard(name="lookup_order")
    def lookup_order(order_id: str) -> str:
        """Look an order up."""
        ran.append(("lookup_order", {"order_id": order_id}))
        return f"order {order_id}: shipped"

    script = Script()
    run("native-kickoff", script, directive("lookup_order", order_id="A-17"), tools=[lookup_order])

    assert script.seen == ["order A-17: shipped"]
    assert ran == [("lookup_order", {"order_id": "A-17"})]
    assert recorded(configured, session_id) == [("lookup_order", "succeeded", {"order_id": "A-17"})]


def test_react_llm_is_really_on_the_react_path() -> None:
    """The suite's premise: the scripted ReAct model has no native function calling, the OpenAI one has."""
    from crewai.utilities.agent_utils import check_native_tool_support

    assert not check_native_tool_support(llm_for("react-kickoff", Script()), ALL_TOOLS)
    assert check_native_tool_support(llm_for("native-kickoff", Script()), ALL_TOOLS)

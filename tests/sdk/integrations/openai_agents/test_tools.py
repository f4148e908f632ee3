"""Every Agents SDK function tool call goes through the real gateway, in real agent loops.

The tools (``tools.py``) were all made at import time, before ``configure()``. A scripted model
drives ``Runner.run``, ``run_sync`` and ``run_streamed``; what the model was told comes back in
``model.seen``, what really ran in ``tools.RAN``, and what the gateway decided in its database.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import callgate
import pytest
from agents import Agent, RunContextWrapper, Runner
from agents.exceptions import AgentsException
from agents.tool_context import ToolContext
from callgate.integrations.openai_agents import _GuardedInvoker

from tests.sdk.integrations.harness import Gateway

from . import tools
from .drive import MODES, RUN_CONFIG, run
from .scripted_model import ScriptedModel, user, users

BLOCKED = "Tool call blocked by policy: deleting files is not allowed"


@pytest.fixture(autouse=True)
def _clean_ran() -> Iterator[None]:
    tools.RAN.clear()
    yield
    tools.RAN.clear()


def agent_with(*agent_tools: Any, model: ScriptedModel | None = None, name: str = "assistant") -> Agent[Any]:
    return Agent(name=name, instructions="Use the tools.", tools=list(agent_tools), model=model or ScriptedModel())


def settled_calls(gateway: Gateway, session_id: str) -> list[dict[str, Any]]:
    """The session's calls once every outcome report is in."""
    assert callgate.flush(10)
    return gateway.calls(session_id)


def test_the_tools_were_made_before_configure() -> None:
    assert tools.MADE_BEFORE_CONFIGURE


@pytest.mark.parametrize("mode", MODES)
def test_a_blocked_tool_does_not_run_and_the_model_reads_why(configured: Gateway, session_id: str, mode: str) -> None:
    model = ScriptedModel()
    result = run(agent_with(tools.delete_file, tools.get_weather, model=model), user("delete_file", path="/etc/passwd"),
                 mode)

    assert tools.RAN == []
    assert model.seen == [BLOCKED]
    assert result.final_output == f"final: {BLOCKED}"  # the run went on and ended normally
    [call] = settled_calls(configured, session_id)
    assert (call["tool"], call["args"], call["status"], call["framework"]) == (
        "delete_file", {"path": "/etc/passwd"}, "blocked", "openai-agents")


@pytest.mark.parametrize("mode", MODES)
def test_an_allowed_tool_runs_once_with_the_models_arguments(configured: Gateway, session_id: str, mode: str) -> None:
    model = ScriptedModel()
    result = run(agent_with(tools.delete_file, tools.get_weather, model=model), user("get_weather", city="Paris"), mode)

    assert tools.RAN == [("get_weather", {"city": "Paris"})]
    assert model.seen == ["Sunny in Paris"]
    assert result.final_output == "final: Sunny in Paris"
    [call] = settled_calls(configured, session_id)
    assert (call["tool"], call["args"], call["status"]) == ("get_weather", {"city": "Paris"}, "succeeded")
    assert call["outcome_status"] == "succeeded"


def test_several_calls_in_one_turn_are_each_checked_once(configured: Gateway, session_id: str) -> None:
    model = ScriptedModel()
    run(agent_with(tools.delete_file, tools.get_weather, model=model),
        users(("delete_file", {"path": "/a"}), ("get_weather", {"city": "Oslo"}), ("delete_file", {"path": "/b"})),
        "run")

    assert tools.RAN == [("get_weather", {"city": "Oslo"})]
    assert model.seen == [BLOCKED, "Sunny in Oslo", BLOCKED]
    calls = settled_calls(configured, session_id)
    assert sorted((c["tool"], c["args"].get("path") or c["args"].get("city"), c["status"]) for c in calls) == [
        ("delete_file", "/a", "blocked"), ("delete_file", "/b", "blocked"), ("get_weather", "Oslo", "succeeded")]


def test_a_tool_built_directly_with_FunctionTool(configured: Gateway, session_id: str) -> None:
    model = ScriptedModel()
    agent = agent_with(tools.raw_delete_file, tools.raw_lookup, model=model)
    blocked = run(agent, user("delete_file", path="/x"), "run")
    allowed = run(agent, user("lookup", path="/y"), "run")

    assert blocked.final_output == f"final: {BLOCKED}"
    assert allowed.final_output == 'final: looked up {"path": "/y"}'
    assert tools.RAN == [("lookup", {"arguments": '{"path": "/y"}'})]
    calls = settled_calls(configured, session_id)
    assert [(c["tool"], c["args"], c["status"]) for c in calls] == [
        ("delete_file", {"path": "/x"}, "blocked"), ("lookup", {"path": "/y"}, "succeeded")]


@pytest.mark.parametrize("mode", ["run", "run_streamed"])
def test_a_blocked_tool_with_a_typed_output_still_ends_the_run_normally(configured: Gateway, session_id: str,
                                                                        mode: str) -> None:
    assert tools.delete_file_typed.output_json_schema is not None  # a plain string would fail its schema
    model = ScriptedModel()
    result = run(agent_with(tools.delete_file_typed, model=model), user("delete_file", path="/srv"), mode)

    assert tools.RAN == []
    assert model.seen == [BLOCKED]
    assert result.final_output == f"final: {BLOCKED}"
    assert len(settled_calls(configured, session_id)) == 1


def test_a_tool_that_fails_is_reported_failed_and_the_run_goes_on(configured: Gateway, session_id: str) -> None:
    model = ScriptedModel()
    result = run(agent_with(tools.flaky, model=model), user("flaky", x=3), "run")

    assert tools.RAN == [("flaky", {"x": 3})]
    assert result.final_output.startswith("final: An error occurred while running the tool")
    [call] = settled_calls(configured, session_id)
    assert (call["status"], call["outcome_status"]) == ("failed", "failed")
    assert "error occurred" in call["outcome_error"]


def test_an_agent_used_as_a_tool_checks_both_layers_once_each(configured: Gateway, session_id: str) -> None:
    inner_model, outer_model = ScriptedModel("gpt-4.1-mini"), ScriptedModel()
    researcher = agent_with(tools.delete_file, tools.get_weather, model=inner_model, name="researcher")
    ask = researcher.as_tool(tool_name="ask_researcher", tool_description="Ask the researcher.")
    outer = agent_with(ask, model=outer_model)

    result = run(outer, user("ask_researcher", input=user("delete_file", path="/deep")), "run")

    assert tools.RAN == []
    assert inner_model.seen == [BLOCKED]  # the inner model is told why
    assert outer_model.seen == [f"final: {BLOCKED}"]  # and the outer one gets the inner answer
    assert result.final_output == f"final: final: {BLOCKED}"
    calls = settled_calls(configured, session_id)
    assert [(c["tool"], c["status"]) for c in calls] == [("ask_researcher", "succeeded"), ("delete_file", "blocked")]
    assert calls[0]["args"] == {"input": user("delete_file", path="/deep")}


def test_an_agent_tool_named_like_its_inner_tool_still_has_the_inner_call_checked(configured: Gateway,
                                                                                   session_id: str) -> None:
    # The outer permit hands no re-entrancy pass into a nested run: the inner get_weather is a new call.
    inner = agent_with(tools.get_weather, model=ScriptedModel("gpt-4.1-mini"), name="forecaster")
    outer = agent_with(inner.as_tool(tool_name="get_weather", tool_description="Ask the forecaster."))

    result = run(outer, user("get_weather", input=user("get_weather", city="Rome")), "run")

    assert result.final_output == "final: final: Sunny in Rome"
    assert tools.RAN == [("get_weather", {"city": "Rome"})]
    calls = settled_calls(configured, session_id)
    assert [(c["tool"], c["args"], c["status"]) for c in calls] == [
        ("get_weather", {"input": user("get_weather", city="Rome")}, "succeeded"),
        ("get_weather", {"city": "Rome"}, "succeeded")]


def test_copies_of_tools_are_enforced_exactly_once(configured: Gateway, session_id: str) -> None:
    copied = copy.copy(tools.delete_file)
    replaced = dataclasses.replace(tools.get_weather, name="get_weather_v2")
    deep = copy.deepcopy(tools.get_weather)
    cloned = Agent(name="clone-src", tools=[deep], model=ScriptedModel()).clone(name="clone")
    # A copy stores the raw invoker (never our proxy: that would check twice) and gets its own proxy.
    for tool in (copied, replaced, deep):
        assert type(tool.__dict__["on_invoke_tool"]) is not _GuardedInvoker
        assert type(tool.on_invoke_tool) is _GuardedInvoker
        assert tool.on_invoke_tool is not tools.get_weather.on_invoke_tool

    model = ScriptedModel()
    run(agent_with(copied, replaced, model=model),
        users(("delete_file", {"path": "/c"}), ("get_weather_v2", {"city": "Nice"})), "run")
    run(cloned, user("get_weather", city="Bern"), "run")

    assert model.seen == [BLOCKED, "Sunny in Nice"]
    assert tools.RAN == [("get_weather", {"city": "Nice"}), ("get_weather", {"city": "Bern"})]
    calls = settled_calls(configured, session_id)
    assert sorted((c["tool"], c["status"]) for c in calls) == [
        ("delete_file", "blocked"), ("get_weather", "succeeded"), ("get_weather_v2", "succeeded")]


def test_the_sdks_own_tool_features_keep_working(configured: Gateway) -> None:
    proxy = tools.get_weather.on_invoke_tool
    assert proxy is tools.get_weather.on_invoke_tool  # identity-stable, as the approval check needs
    assert type(proxy) is _GuardedInvoker
    from agents.tool import _FailureHandlingFunctionToolInvoker

    assert isinstance(proxy, _FailureHandlingFunctionToolInvoker)
    assert tools.get_weather.__wrapped__.__name__ == "get_weather"
    assert repr(proxy) == repr(proxy.__wrapped__)


def test_a_callable_needs_approval_policy_still_works(configured: Gateway, session_id: str) -> None:
    # The SDK evaluates the policy, then refuses to run if `tool.on_invoke_tool` is not the very
    # invoker it evaluated against ("Function tool invocation changed during approval evaluation").
    model = ScriptedModel()
    result = run(agent_with(tools.audited, model=model), user("audited", x=7), "run")

    assert result.final_output == "final: audited 7"
    assert tools.RAN == [("audited", {"x": 7})]
    assert [(c["tool"], c["status"]) for c in settled_calls(configured, session_id)] == [("audited", "succeeded")]


def test_the_sdks_own_approval_interruption_then_one_gateway_check(configured: Gateway, session_id: str) -> None:
    # SDK-native human-in-the-loop (needs_approval) pauses the run before the tool is invoked; the
    # gateway sees the call once, when the approved run resumes and really invokes it.
    agent = agent_with(tools.wire_transfer)

    async def scenario() -> Any:
        first = await Runner.run(agent, user("wire_transfer", to="bob", amount=5000), run_config=RUN_CONFIG)
        assert first.interruptions and tools.RAN == []
        assert configured.calls(session_id) == []
        state = first.to_state()
        state.approve(first.interruptions[0])
        return await Runner.run(agent, state, run_config=RUN_CONFIG)

    result = asyncio.run(scenario())
    assert tools.RAN == [("wire_transfer", {"to": "bob", "amount": 5000})]
    assert result.final_output == "final: wired 5000 to bob"
    assert [(c["tool"], c["args"], c["status"]) for c in settled_calls(configured, session_id)] == [
        ("wire_transfer", {"to": "bob", "amount": 5000}, "succeeded")]


def test_a_guarded_function_used_as_a_tool_is_checked_once(configured: Gateway, session_id: str) -> None:
    result = run(agent_with(tools.guarded_lookup), user("guarded_lookup", path="/etc"), "run")

    assert result.final_output == "final: found /etc"
    assert tools.RAN == [("guarded_lookup", {"path": "/etc"})]
    assert [(c["tool"], c["status"]) for c in settled_calls(configured, session_id)] == [
        ("guarded_lookup", "succeeded")]


def test_raise_on_block_raises_the_gateways_error_out_of_the_run(configured: Gateway, session_id: str,
                                                                 tmp_path: Path) -> None:
    configured.configure(spool_dir=tmp_path / "spool-raise", raise_on_block=True)
    model = ScriptedModel()
    for mode in MODES:
        with pytest.raises(callgate.CallBlocked) as raised:
            run(agent_with(tools.delete_file, model=model), user("delete_file", path="/r"), mode)
        assert raised.value.reason == "deleting files is not allowed"
        assert isinstance(raised.value, AgentsException)  # the runner re-raised it unchanged

    assert tools.RAN == []
    assert model.seen == []
    assert [c["status"] for c in settled_calls(configured, session_id)] == ["blocked"] * 3


def test_invoking_a_tool_directly_is_enforced_too(configured: Gateway, session_id: str) -> None:
    async def direct() -> list[Any]:
        tool_ctx = ToolContext(context=None, tool_name="delete_file", tool_call_id="c1", tool_arguments="{}")
        plain_ctx = RunContextWrapper(context=None)  # no tool name: the tool's own name is used
        return [await tools.delete_file.on_invoke_tool(tool_ctx, '{"path": "/d1"}'),
                await tools.raw_delete_file.on_invoke_tool(plain_ctx, '{"path": "/d2"}'),
                await tools.raw_lookup.on_invoke_tool(plain_ctx, "not json")]

    outputs = asyncio.run(direct())
    assert outputs == [BLOCKED, BLOCKED, "looked up not json"]
    assert tools.RAN == [("lookup", {"arguments": "not json"})]
    calls = settled_calls(configured, session_id)
    assert [(c["tool"], c["args"]) for c in calls] == [
        ("delete_file", {"path": "/d1"}), ("delete_file", {"path": "/d2"}), ("lookup", {"input": "not json"})]

"""The Agents SDK's local tools that are not function tools -- shell, local shell, computer,
apply_patch and custom tools -- go through the real gateway too, in real agent loops.

The scripted model emits each kind of call (``scripted_model.native``); the fake executors in
``local_tools.py`` record what really ran in ``EXECUTED``; what the model was told comes back
in ``model.seen``/``model.seen_items``, what the gateway decided in its database.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import logging
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import callgate
import pytest
from agents import Agent, Runner, ShellTool, WebSearchTool
from agents.exceptions import AgentsException
from agents.run_internal import tool_actions
from agents.tool import ApplyPatchTool, CustomTool

from tests.sdk.integrations.harness import Gateway

from . import local_tools
from .drive import MODES, RUN_CONFIG, arun, run
from .local_tools import EXECUTED
from .scripted_model import ScriptedModel, ask, native

RM_RF = "Tool call blocked by policy: rm -rf is not allowed"
PASSWORD = "Tool call blocked by policy: typing passwords is not allowed"
SYSTEM_FILES = "Tool call blocked by policy: system files are off limits"
DROP = "Tool call blocked by policy: dropping tables is not allowed"
DIFF = "@@ -1 +1 @@\n-old\n+new\n"

EXECUTORS = ("ShellAction", "LocalShellAction", "ComputerAction", "ApplyPatchAction", "CustomToolAction")
#: The executors and the gated fields as the SDK defined them, taken before this suite configured anything.
ORIGINAL_EXECUTE = {name: getattr(tool_actions, name).__dict__["execute"] for name in EXECUTORS}
ORIGINAL_FIELDS = {(cls, field): cls.__dict__.get(field, "absent")
                   for cls, field in ((ShellTool, "executor"), (ApplyPatchTool, "editor"), (CustomTool, "on_invoke_tool"))}


@pytest.fixture(autouse=True)
def _clean_executed() -> Iterator[None]:
    EXECUTED.clear()
    yield
    EXECUTED.clear()


def agent_with(*agent_tools: Any, model: ScriptedModel) -> Agent[Any]:
    return Agent(name="operator", instructions="Use the tools.", tools=list(agent_tools), model=model)


def settled_calls(gateway: Gateway, session_id: str) -> list[dict[str, Any]]:
    """The session's calls once every outcome report is in."""
    assert callgate.flush(10)
    return gateway.calls(session_id)


def shell_args(*commands: str) -> dict[str, Any]:
    return {"commands": list(commands), "command_line": "\n".join(commands), "timeout_ms": None,
            "max_output_length": None}


def png_notice(image_url: str) -> tuple[str, tuple[int, int], bytes]:
    """The text a refusal PNG carries in its iTXt ``Description``, its size, and its pixels."""
    prefix = "data:image/png;base64,"
    assert image_url.startswith(prefix)
    png = base64.b64decode(image_url[len(prefix):])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, offset = {}, 8
    while offset < len(png):
        (length,), kind = struct.unpack(">I", png[offset:offset + 4]), png[offset + 4:offset + 8]
        data = png[offset + 8:offset + 8 + length]
        assert struct.unpack(">I", png[offset + 8 + length:offset + 12 + length])[0] == zlib.crc32(kind + data)
        chunks[kind] = data
        offset += 12 + length
    width, height, depth, color = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (depth, color) == (8, 0)
    pixels = zlib.decompress(chunks[b"IDAT"])
    assert len(pixels) == height * (width + 1)
    keyword, _, rest = chunks[b"iTXt"].partition(b"\x00")
    assert keyword == b"Description" and rest[:4] == b"\x00\x00\x00\x00"
    return rest[4:].decode("utf-8"), (width, height), pixels


# -- shell ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_a_blocked_shell_call_never_runs_and_the_model_reads_why(configured: Gateway, session_id: str,
                                                                 mode: str) -> None:
    assert local_tools.MADE_BEFORE_CONFIGURE  # the tool existed before configure(): it is covered all the same
    model = ScriptedModel()
    # The dangerous command hides behind a harmless one: the policy reads the whole command line.
    result = run(agent_with(local_tools.shell, model=model), ask(native("shell", commands=["ls", "rm -rf /srv"])),
                 mode)

    assert EXECUTED == []
    assert model.seen == [RM_RF]
    [item] = model.seen_items
    assert item["type"] == "shell_call_output"  # the shell's own output shape, as the SDK's own rejections
    assert item["output"][0]["stderr"] == RM_RF and item["output"][0]["outcome"]["exit_code"] == 1
    assert result.final_output == f"final: {RM_RF}"  # the run went on and ended normally
    [call] = settled_calls(configured, session_id)
    assert (call["tool"], call["args"], call["status"], call["framework"]) == (
        "shell", shell_args("ls", "rm -rf /srv"), "blocked", "openai-agents")
    assert json.loads(call["metadata"]) == {"tool_type": "shell", "tool_call_id": "call_1_0"}


@pytest.mark.parametrize("mode", MODES)
def test_an_allowed_shell_call_runs_once(configured: Gateway, session_id: str, mode: str) -> None:
    model = ScriptedModel()
    result = run(agent_with(local_tools.shell, model=model), ask(native("shell", commands=["ls -la"], timeout_ms=500)),
                 mode)

    assert EXECUTED == [("shell", ["ls -la"])]
    assert result.final_output == "final: ran ls -la"
    [call] = settled_calls(configured, session_id)
    assert (call["tool"], call["status"], call["outcome_status"]) == ("shell", "succeeded", "succeeded")
    assert call["args"] == {**shell_args("ls -la"), "timeout_ms": 500}


# -- local shell ------------------------------------------------------------------------------------
def test_local_shell_calls_are_checked_with_their_argv_env_and_directory(configured: Gateway,
                                                                        session_id: str) -> None:
    model = ScriptedModel()
    agent = agent_with(local_tools.local_shell, model=model)
    blocked = run(agent, ask(native("local_shell", command=["bash", "-lc", "rm -rf ~"], env={"HOME": "/root"},
                                    working_directory="/tmp")), "run")
    allowed = run(agent, ask(native("local_shell", command=["ls", "-l"])), "run_streamed")

    assert EXECUTED == [("local_shell", ["ls", "-l"])]
    assert blocked.final_output == f"final: {RM_RF}"
    assert model.seen_items[0] == {"type": "local_shell_call_output", "call_id": "call_1_0", "output": RM_RF}
    assert allowed.final_output == "final: local ok"
    calls = settled_calls(configured, session_id)
    assert [(c["tool"], c["status"]) for c in calls] == [("local_shell", "blocked"), ("local_shell", "succeeded")]
    assert calls[0]["args"] == {"command": ["bash", "-lc", "rm -rf ~"], "command_line": "bash -lc 'rm -rf ~'",
                                "env": {"HOME": "/root"}, "working_directory": "/tmp", "timeout_ms": None,
                                "user": None}


# -- computer ---------------------------------------------------------------------------------------
def test_an_allowed_computer_call_runs_each_action_once_under_its_own_check(configured: Gateway,
                                                                            session_id: str) -> None:
    model = ScriptedModel()
    actions = [{"type": "click", "x": 10, "y": 20, "button": "left"}, {"type": "type", "text": "hello"}]
    result = run(agent_with(local_tools.sync_computer, model=model), ask(native("computer", actions=actions)), "run")

    assert EXECUTED == [("computer", ("click", 10, 20, "left")), ("computer", ("type", "hello")),
                        ("computer", ("screenshot",))]
    assert result.final_output == f"final: data:image/png;base64,{local_tools.SCREENSHOT}"
    calls = settled_calls(configured, session_id)
    assert [(c["tool"], c["args"], c["status"]) for c in calls] == [
        ("computer", {"action": "click", "x": 10, "y": 20, "button": "left"}, "succeeded"),
        ("computer", {"action": "type", "text": "hello"}, "succeeded")]


@pytest.mark.parametrize("mode", ["run", "run_streamed"])
def test_a_refused_computer_call_touches_nothing_and_the_model_sees_the_reason(configured: Gateway, session_id: str,
                                                                               mode: str) -> None:
    model = ScriptedModel()
    actions = [{"type": "click", "x": 1, "y": 2, "button": "left"}, {"type": "type", "text": "my password"}]
    result = run(agent_with(local_tools.async_computer, model=model), ask(native("computer", actions=actions)), mode)

    assert EXECUTED == []  # not the click before it, not even a screenshot
    [item] = model.seen_items
    assert item["type"] == "computer_call_output" and item["output"]["type"] == "computer_screenshot"
    text, (width, height), pixels = png_notice(item["output"]["image_url"])
    assert text == PASSWORD
    assert 300 < width < 1100 and 20 < height < 400 and b"\x00" in pixels  # the reason, written in black
    assert result.final_output.startswith("final: data:image/png;base64,")
    calls = settled_calls(configured, session_id)
    assert [(c["args"]["action"], c["status"]) for c in calls] == [("click", "failed"), ("type", "blocked")]
    assert calls[0]["outcome_error"] == f"not run: {PASSWORD}"


def test_a_computer_call_without_actions_is_checked_as_a_screenshot(configured: Gateway, session_id: str) -> None:
    model = ScriptedModel()
    run(agent_with(local_tools.sync_computer, model=model), ask(native("computer", action={"type": "screenshot"})),
        "run")
    run(agent_with(local_tools.sync_computer, model=model), ask(native("computer")), "run")

    assert EXECUTED == [("computer", ("screenshot",)), ("computer", ("screenshot",))]
    assert [(c["args"], c["status"]) for c in settled_calls(configured, session_id)] == [
        ({"action": "screenshot"}, "succeeded"), ({"action": "screenshot"}, "succeeded")]


# -- apply_patch ------------------------------------------------------------------------------------
def test_apply_patch_operations_are_checked_with_path_and_diff(configured: Gateway, session_id: str) -> None:
    model = ScriptedModel()
    agent = agent_with(local_tools.apply_patch, model=model)
    allowed = run(agent, ask(native("apply_patch", operation={"type": "update_file", "path": "src/app.py",
                                                              "diff": DIFF})), "run")
    blocked = run(agent, ask(native("apply_patch", operation={"type": "create_file", "path": "/etc/cron.d/job",
                                                              "diff": "+* * * * * root sh\n"})), "run_streamed")
    failing = run(agent, ask(native("apply_patch", operation={"type": "delete_file", "path": "README"})), "run")

    assert EXECUTED == [("apply_patch", ("update_file", "src/app.py")), ("apply_patch", ("delete_file", "README"))]
    assert allowed.final_output == "final: updated src/app.py"
    assert blocked.final_output == f"final: {SYSTEM_FILES}"
    assert model.seen_items[1] == {"type": "apply_patch_call_output", "call_id": "call_3_0", "status": "failed",
                                   "output": SYSTEM_FILES}
    assert failing.final_output == "final: README is read-only"
    calls = settled_calls(configured, session_id)
    assert [(c["args"], c["status"]) for c in calls] == [
        ({"operation": "update_file", "path": "src/app.py", "diff": DIFF}, "succeeded"),
        ({"operation": "create_file", "path": "/etc/cron.d/job", "diff": "+* * * * * root sh\n"}, "blocked"),
        ({"operation": "delete_file", "path": "README", "diff": None}, "failed")]
    assert calls[2]["outcome_error"] == "README is read-only"


def test_a_patch_with_one_refused_operation_applies_none(configured: Gateway, session_id: str) -> None:
    # A multi-operation patch (here the SDK's custom-tool fallback form): every operation is
    # checked before any is applied.
    model = ScriptedModel()
    patch = {"operations": [{"type": "update_file", "path": "src/a.py", "diff": DIFF},
                            {"type": "delete_file", "path": "/etc/hosts"}]}
    result = run(agent_with(local_tools.apply_patch, model=model),
                 ask(native("custom", "apply_patch", input=json.dumps(patch))), "run")

    assert EXECUTED == []
    assert result.final_output == f"final: {SYSTEM_FILES}"
    calls = settled_calls(configured, session_id)
    assert [(c["args"]["path"], c["status"]) for c in calls] == [("src/a.py", "failed"), ("/etc/hosts", "blocked")]
    assert calls[0]["outcome_error"] == f"not run: {SYSTEM_FILES}"

    EXECUTED.clear()
    patch["operations"][1] = {"type": "create_file", "path": "src/b.py", "diff": "+b\n"}
    result = run(agent_with(local_tools.apply_patch, model=model),
                 ask(native("custom", "apply_patch", input=json.dumps(patch))), "run")
    assert EXECUTED == [("apply_patch", ("update_file", "src/a.py")), ("apply_patch", ("create_file", "src/b.py"))]
    assert result.final_output == "final: updated src/a.py\ncreated src/b.py"
    assert [(c["args"]["path"], c["status"]) for c in settled_calls(configured, session_id)[2:]] == [
        ("src/a.py", "succeeded"), ("src/b.py", "succeeded")]


# -- custom tools -----------------------------------------------------------------------------------
def test_custom_tools_are_checked_by_their_own_name_with_the_raw_input(configured: Gateway, session_id: str) -> None:
    model = ScriptedModel()
    agent = agent_with(local_tools.run_sql, model=model)
    blocked = run(agent, ask(native("custom", "run_sql", input="DROP  TABLE users")), "run")
    allowed = run(agent, ask(native("custom", "run_sql", input="select 1")), "run_streamed")

    assert EXECUTED == [("custom", "select 1")]
    assert blocked.final_output == f"final: {DROP}"
    assert model.seen_items[0] == {"type": "custom_tool_call_output", "call_id": "call_1_0", "output": DROP}
    assert allowed.final_output == "final: 1 row for select 1"
    assert [(c["tool"], c["args"], c["status"]) for c in settled_calls(configured, session_id)] == [
        ("run_sql", {"input": "DROP  TABLE users"}, "blocked"), ("run_sql", {"input": "select 1"}, "succeeded")]


# -- together ---------------------------------------------------------------------------------------
def test_every_kind_in_one_turn_one_check_each(configured: Gateway, session_id: str) -> None:
    model = ScriptedModel()
    agent = agent_with(local_tools.shell, local_tools.local_shell, local_tools.sync_computer, local_tools.apply_patch,
                       local_tools.run_sql, model=model)
    result = run(agent, ask(native("shell", commands=["rm -rf /"]), native("local_shell", command=["pwd"]),
                            native("computer", action={"type": "type", "text": "password1"}),
                            native("apply_patch", operation={"type": "update_file", "path": "a.txt", "diff": DIFF}),
                            native("custom", "run_sql", input="drop table t")), "run")

    assert sorted(EXECUTED) == [("apply_patch", ("update_file", "a.txt")), ("local_shell", ["pwd"])]
    told = {item["type"]: text for item, text in zip(model.seen_items, model.seen, strict=True)}
    assert png_notice(told.pop("computer_call_output"))[0] == PASSWORD
    assert told == {"shell_call_output": RM_RF, "local_shell_call_output": "local ok",
                    "apply_patch_call_output": "updated a.txt", "custom_tool_call_output": DROP}
    assert result.final_output == "final: " + " | ".join(model.seen)
    calls = settled_calls(configured, session_id)
    assert sorted((c["tool"], c["status"]) for c in calls) == [
        ("apply_patch", "succeeded"), ("computer", "blocked"), ("local_shell", "succeeded"), ("run_sql", "blocked"),
        ("shell", "blocked")]


# -- approvals --------------------------------------------------------------------------------------
async def run_while_a_human_decides(gateway: Gateway, session_id: str, agent: Agent[Any], input: str, mode: str,
                                    decide: Callable[[str], None]) -> tuple[Any, int]:
    """Run the agent; once its call is pending, ``decide(call_id)`` from another thread. Returns
    the result and how often a ticker task ran on the loop while the human was deciding."""
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    def human() -> int:
        call = gateway.wait_for_call(status="pending", tool="shell", session_id=session_id, timeout=60)
        before = ticks
        time.sleep(1.0)  # the agent is waiting for us now: is its loop still free?
        ticked = ticks - before
        decide(call["id"])
        return ticked

    ticking = asyncio.create_task(ticker())
    running = asyncio.create_task(arun(agent, input, mode))
    try:
        ticked = await asyncio.to_thread(human)
        result = await asyncio.wait_for(running, 60)
    finally:
        stop.set()
        await ticking
        running.cancel()
    return result, ticked


@pytest.mark.parametrize("mode", ["run", "run_streamed"])
def test_an_approved_shell_call_runs_exactly_once_and_the_loop_never_stalls(configured: Gateway, session_id: str,
                                                                            mode: str) -> None:
    model = ScriptedModel()
    result, ticked = asyncio.run(run_while_a_human_decides(
        configured, session_id, agent_with(local_tools.shell, model=model),
        ask(native("shell", commands=["deploy prod"])), mode, lambda call_id: configured.approve(call_id)))

    assert ticked >= 20
    assert EXECUTED == [("shell", ["deploy prod"])]
    assert result.final_output == "final: ran deploy prod"
    assert callgate.flush(10)
    [call] = configured.calls(session_id)
    assert (call["status"], call["decided_by"]) == ("succeeded", "riley")


def test_a_denied_shell_call_never_runs_and_the_model_reads_the_reviewers_comment(configured: Gateway,
                                                                                  session_id: str) -> None:
    model = ScriptedModel()
    result, ticked = asyncio.run(run_while_a_human_decides(
        configured, session_id, agent_with(local_tools.shell, model=model),
        ask(native("shell", commands=["deploy prod --force"])), "run",
        lambda call_id: configured.deny(call_id, comment="not on a Friday")))

    expected = "Tool call denied by a human reviewer: not on a Friday. The tool did not run."
    assert ticked >= 20
    assert EXECUTED == []
    assert model.seen == [expected]
    assert result.final_output == f"final: {expected}"
    [call] = configured.calls(session_id)
    assert (call["status"], call["comment"]) == ("denied", "not on a Friday")


def test_the_sdks_own_approval_comes_first_and_the_gateway_checks_the_resumed_call_once(configured: Gateway,
                                                                                        session_id: str) -> None:
    # needs_approval pauses the run inside ShellAction.execute, before the executor: the gateway is
    # asked only when the approved call really runs, as for function tools.
    reviewed = ShellTool(executor=local_tools.run_shell, needs_approval=True)

    async def scenario(commands: list[str], approve: bool) -> Any:
        model = ScriptedModel()
        agent = agent_with(reviewed, model=model)
        first = await Runner.run(agent, ask(native("shell", commands=commands)), run_config=RUN_CONFIG)
        assert first.interruptions and EXECUTED == []
        assert configured.calls(session_id) == calls_before
        state = first.to_state()
        (state.approve if approve else state.reject)(first.interruptions[0])
        return await Runner.run(agent, state, run_config=RUN_CONFIG)

    calls_before: list[dict[str, Any]] = []
    rejected = asyncio.run(scenario(["ls /srv"], approve=False))
    assert EXECUTED == [] and "final: " in rejected.final_output
    assert settled_calls(configured, session_id) == []  # the SDK said no: the gateway never heard of it

    approved = asyncio.run(scenario(["ls /srv"], approve=True))
    assert EXECUTED == [("shell", ["ls /srv"])]
    assert approved.final_output == "final: ran ls /srv"
    calls_before = settled_calls(configured, session_id)
    assert [(c["args"]["commands"], c["status"]) for c in calls_before] == [(["ls /srv"], "succeeded")]

    EXECUTED.clear()
    blocked = asyncio.run(scenario(["rm -rf /srv"], approve=True))  # a human said yes, the policy still says no
    assert EXECUTED == []
    assert blocked.final_output == f"final: {RM_RF}"
    assert [(c["args"]["commands"], c["status"]) for c in settled_calls(configured, session_id)] == [
        (["ls /srv"], "succeeded"), (["rm -rf /srv"], "blocked")]


def test_runs_sharing_one_shell_tool_are_each_checked_while_one_waits_for_a_human(configured: Gateway,
                                                                                  session_id: str) -> None:
    # The check is scoped to each call: while one run waits for its approval inside the shared
    # tool's executor, other runs of the same tool instance get their own checks.
    def agent() -> Agent[Any]:
        return agent_with(local_tools.shell, model=ScriptedModel())

    async def scenario() -> tuple[Any, Any, Any]:
        deploying = asyncio.create_task(arun(agent(), ask(native("shell", commands=["deploy prod"]))))
        pending = await asyncio.to_thread(configured.wait_for_call, status="pending", tool="shell",
                                          session_id=session_id, timeout=60)
        blocked = await arun(agent(), ask(native("shell", commands=["rm -rf /"])))
        allowed = await arun(agent(), ask(native("shell", commands=["uptime"])))
        assert EXECUTED == [("shell", ["uptime"])] and not deploying.done()
        await asyncio.to_thread(configured.approve, pending["id"])
        return blocked, allowed, await asyncio.wait_for(deploying, 60)

    blocked, allowed, deployed = asyncio.run(scenario())
    assert (blocked.final_output, allowed.final_output, deployed.final_output) == (
        f"final: {RM_RF}", "final: ran uptime", "final: ran deploy prod")
    assert EXECUTED == [("shell", ["uptime"]), ("shell", ["deploy prod"])]
    assert sorted((c["args"]["commands"][0], c["status"]) for c in settled_calls(configured, session_id)) == [
        ("deploy prod", "succeeded"), ("rm -rf /", "blocked"), ("uptime", "succeeded")]


# -- raise_on_block ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["shell", "local_shell", "custom"])
def test_raise_on_block_raises_out_of_the_run(configured: Gateway, session_id: str, tmp_path: Path,
                                              kind: str) -> None:
    configured.configure(spool_dir=tmp_path / "spool-raise", raise_on_block=True)
    calls = {"shell": (local_tools.shell, native("shell", commands=["rm -rf /"])),
             "local_shell": (local_tools.local_shell, native("local_shell", command=["rm", "-rf", "/"])),
             "custom": (local_tools.run_sql, native("custom", "run_sql", input="drop table t"))}
    tool, call = calls[kind]
    model = ScriptedModel()
    with pytest.raises(callgate.CallBlocked) as raised:
        run(agent_with(tool, model=model), ask(call), "run")

    assert isinstance(raised.value, AgentsException)
    assert EXECUTED == [] and model.seen == []
    assert [c["status"] for c in settled_calls(configured, session_id)] == ["blocked"]


# -- a tool the field gate cannot reach -------------------------------------------------------------
@dataclasses.dataclass
class PinnedShell(ShellTool):
    """Re-declares the executor field: its default shadows the class-level gate on ShellTool."""

    executor: Any = local_tools.run_shell


def test_a_shell_tool_that_shadows_the_gate_is_checked_before_execute_instead(configured: Gateway,
                                                                              session_id: str) -> None:
    assert "executor" in PinnedShell.__dict__
    model = ScriptedModel()
    agent = agent_with(PinnedShell(), model=model)
    blocked = run(agent, ask(native("shell", commands=["rm -rf /var"])), "run")
    allowed = run(agent, ask(native("shell", commands=["uptime"])), "run")

    assert EXECUTED == [("shell", ["uptime"])]
    assert blocked.final_output == f"final: {RM_RF}"
    output = model.seen_items[0]["output"][0]
    assert (output["stderr"], output["outcome"]["exit_code"]) == (RM_RF, 1)
    assert allowed.final_output == "final: ran uptime"
    assert [(c["args"]["commands"], c["status"]) for c in settled_calls(configured, session_id)] == [
        (["rm -rf /var"], "blocked"), (["uptime"], "succeeded")]


# -- hosted tools -----------------------------------------------------------------------------------
def test_a_hosted_tool_offered_to_the_model_is_named_in_a_warning_once(configured: Gateway, session_id: str,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    model = ScriptedModel()
    agent = agent_with(WebSearchTool(), local_tools.run_sql, model=model)
    with caplog.at_level(logging.WARNING, logger="callgate"):
        run(agent, ask(native("custom", "run_sql", input="select 2")), "run")
        run(agent, ask(native("custom", "run_sql", input="select 3")), "run_streamed")

    warnings = [r.getMessage() for r in caplog.records if "OpenAI's servers" in r.getMessage()]
    assert warnings == [("callgate: WebSearchTool runs on OpenAI's servers: its calls are not checked by the "
                         "gateway (only tools that run in this process are)")]
    assert EXECUTED == [("custom", "select 2"), ("custom", "select 3")]


# -- the patches themselves -------------------------------------------------------------------------
def test_the_tools_read_as_before_outside_a_call(configured: Gateway) -> None:
    for name in EXECUTORS:
        assert getattr(tool_actions, name).__dict__["execute"].__wrapped__ is ORIGINAL_EXECUTE[name]
    assert local_tools.shell.executor is local_tools.run_shell
    assert isinstance(local_tools.apply_patch.editor, local_tools.Editor)
    assert local_tools.run_sql.on_invoke_tool is local_tools._run_sql
    assert ShellTool.executor is None  # the dataclass default, as before
    copied = dataclasses.replace(local_tools.shell, name="sh")
    assert copied.executor is local_tools.run_shell and copied == dataclasses.replace(copied)
    assert local_tools.shell == ShellTool(executor=local_tools.run_shell)


def test_reset_removes_every_patch_and_configure_brings_them_back(configured: Gateway, session_id: str,
                                                                  tmp_path: Path) -> None:
    callgate.reset()
    for name in EXECUTORS:
        assert getattr(tool_actions, name).__dict__["execute"] is ORIGINAL_EXECUTE[name]
    for (cls, field), original in ORIGINAL_FIELDS.items():
        assert cls.__dict__.get(field, "absent") is original, f"{cls.__name__}.{field}"
    model = ScriptedModel()
    result = run(agent_with(local_tools.shell, model=model), ask(native("shell", commands=["rm -rf /tmp/x"])), "run")
    assert result.final_output == "final: ran rm -rf /tmp/x"  # nothing checks it any more
    assert configured.calls(session_id) == []

    EXECUTED.clear()
    configured.configure(spool_dir=tmp_path / "spool-again")
    result = run(agent_with(local_tools.shell, model=model), ask(native("shell", commands=["rm -rf /tmp/x"])), "run")
    assert EXECUTED == []
    assert result.final_output == f"final: {RM_RF}"

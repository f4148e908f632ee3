"""Require-approval end to end: the run waits for a human at the real gateway, then resumes.

A human decides with the operator CLI while the agent waits. On the async paths a ticker task
must keep running the whole time: the wait happens inside the tool invoker, *on* the event loop,
so a blocking wait there would freeze every other task of the application.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import callgate
import pytest
from agents import Agent

from tests.sdk.integrations.harness import Gateway

from . import tools
from .drive import arun, run
from .scripted_model import ScriptedModel, user

#: While the agent waits for the human, a ticker task sleeping 10 ms per tick runs ~100 times a
#: second on a free loop, and not at all on a blocked one. A generous floor, for a loaded machine.
WATCH_SECONDS = 1.0
MIN_TICKS_WHILE_WAITING = 20


@pytest.fixture(autouse=True)
def _clean_ran() -> Iterator[None]:
    tools.RAN.clear()
    yield
    tools.RAN.clear()


def payer(model: ScriptedModel) -> Agent[Any]:
    return Agent(name="payer", instructions="Pay people.", tools=[tools.send_money], model=model)


async def run_while_a_human_decides(gateway: Gateway, session_id: str, agent: Agent[Any], input: str, mode: str,
                                    decide: Callable[[str], None]) -> tuple[Any, int]:
    """Run the agent; once its call is pending, ``decide(call_id)`` on another thread. Returns the
    result and how often a ticker task ran on the loop while the human was deciding."""
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    def human() -> int:
        call = gateway.wait_for_call(status="pending", tool="send_money", session_id=session_id, timeout=60)
        before = ticks
        time.sleep(WATCH_SECONDS)  # the agent is waiting for us now: is its loop still free?
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
def test_approved_the_tool_runs_exactly_once_and_the_loop_never_stalls(configured: Gateway, session_id: str,
                                                                       mode: str) -> None:
    model = ScriptedModel()
    result, ticked = asyncio.run(run_while_a_human_decides(
        configured, session_id, payer(model), user("send_money", to="ann", amount=500), mode,
        lambda call_id: configured.approve(call_id, comment="known vendor")))

    assert ticked >= MIN_TICKS_WHILE_WAITING
    assert tools.RAN == [("send_money", {"to": "ann", "amount": 500})]
    assert model.seen == ["sent 500 to ann"]
    assert result.final_output == "final: sent 500 to ann"
    assert callgate.flush(10)
    [call] = configured.calls(session_id)
    assert (call["status"], call["decided_by"], call["args"]) == ("succeeded", "riley", {"to": "ann", "amount": 500})


def test_denied_the_tool_never_runs_and_the_model_reads_the_reviewers_comment(configured: Gateway,
                                                                              session_id: str) -> None:
    model = ScriptedModel()
    result, ticked = asyncio.run(run_while_a_human_decides(
        configured, session_id, payer(model), user("send_money", to="mallory", amount=900), "run",
        lambda call_id: configured.deny(call_id, comment="mallory is not a customer")))

    expected = "Tool call denied by a human reviewer: mallory is not a customer. The tool did not run."
    assert ticked >= MIN_TICKS_WHILE_WAITING
    assert tools.RAN == []
    assert model.seen == [expected]
    assert result.final_output == f"final: {expected}"
    [call] = configured.calls(session_id)
    assert (call["status"], call["comment"]) == ("denied", "mallory is not a customer")


def test_run_sync_waits_for_the_human_too(configured: Gateway, session_id: str) -> None:
    def human() -> None:
        call = configured.wait_for_call(status="pending", tool="send_money", session_id=session_id, timeout=60)
        configured.approve(call["id"])

    approver = threading.Thread(target=human, daemon=True)
    approver.start()
    model = ScriptedModel()
    result = run(payer(model), user("send_money", to="bo", amount=250), "run_sync")
    approver.join(30)

    assert result.final_output == "final: sent 250 to bo"
    assert tools.RAN == [("send_money", {"to": "bo", "amount": 250})]
    assert callgate.flush(10)
    assert [c["status"] for c in configured.calls(session_id)] == ["succeeded"]


def test_an_approval_nobody_gives_in_time_expires_and_the_tool_never_runs(configured: Gateway,
                                                                          session_id: str) -> None:
    model = ScriptedModel()  # amount 13: the policy's 2-second approval timeout
    result = run(payer(model), user("send_money", to="eve", amount=13), "run")

    assert tools.RAN == []
    assert model.seen == ["Tool call not approved in time (the approval request expired). The tool did not run."]
    assert result.final_output.startswith("final: Tool call not approved in time")
    assert [c["status"] for c in configured.session(session_id)["calls"]] == ["expired"]  # as the API tells it

"""Require-approval end to end inside CrewAI runs: a human approves or denies with the operator CLI
while the crew waits. ``send_money`` needs approval above 200 (``amount == 13``: a 2 s approval
timeout). Approve -> the tool runs exactly once; deny -> it never runs and the model reads the
reviewer's comment; an approval wait under ``akickoff`` or ``ainvoke`` never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import pytest

from tests.sdk.integrations.crewai.checks import recorded
from tests.sdk.integrations.crewai.drive import Outcome, crew, directive, run, script_for
from tests.sdk.integrations.crewai.scripted import Script, openai_llm
from tests.sdk.integrations.crewai.tools import send_money
from tests.sdk.integrations.harness import Gateway

T = TypeVar("T")
PAYMENT = {"to": "bob", "amount": 500}


@pytest.fixture
def background() -> Any:
    """Runs a blocking agent run on a worker (in the test's context: its callgate.session)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="crew-run") as pool:

        def start(fn: Callable[[], T]) -> Future[T]:
            return pool.submit(contextvars.copy_context().run, fn)

        yield start


@pytest.mark.parametrize("path", ["native-kickoff", "react-kickoff"])
def test_approved_call_runs_exactly_once(path: str, configured: Gateway, session_id: str, ran: list[Any],
                                         background: Any) -> None:
    script = script_for(path)
    finished: Future[Outcome] = background(lambda: run(path, script, directive("send_money", **PAYMENT)))

    pending = configured.wait_for_call(status="pending", tool="send_money", session_id=session_id)
    assert pending["args"] == PAYMENT
    assert ran == []  # held until a human decides
    configured.approve(pending["id"], comment="known vendor")
    out = finished.result(timeout=120)

    assert ran == [("send_money", PAYMENT)]
    assert script.seen == ["sent 500 to bob"]
    assert out.tool_failures == []
    assert recorded(configured, session_id) == [("send_money", "succeeded", PAYMENT)]


@pytest.mark.parametrize("path", ["native-kickoff", "react-kickoff"])
def test_denied_call_never_runs_and_the_model_reads_the_comment(
        path: str, configured: Gateway, session_id: str, ran: list[Any], background: Any) -> None:
    script = script_for(path)
    finished: Future[Outcome] = background(lambda: run(path, script, directive("send_money", **PAYMENT)))

    pending = configured.wait_for_call(status="pending", tool="send_money", session_id=session_id)
    configured.deny(pending["id"], comment="bob is not a vendor of ours")
    out = finished.result(timeout=120)

    denial = "Tool call denied by a human reviewer: bob is not a vendor of ours. The tool did not run."
    assert script.seen == [f"{denial} (code: approval_denied)"]
    assert out.raw == f"FINAL: {denial} (code: approval_denied)"
    assert ran == []
    assert [(r.failure.code, r.failure.message) for r in out.tool_failures] == [("approval_denied", denial)]
    assert recorded(configured, session_id) == [("send_money", "denied", PAYMENT)]


def test_unanswered_approval_expires_and_the_tool_never_runs(
        configured: Gateway, session_id: str, ran: list[Any]) -> None:
    script = Script()
    out = run("native-kickoff", script, directive("send_money", to="eve", amount=13))  # 2 s approval timeout

    expired = "Tool call not approved in time (the approval request expired). The tool did not run."
    assert script.seen == [f"{expired} (code: approval_expired)"]
    assert [r.failure.code for r in out.tool_failures] == ["approval_expired"]
    assert ran == []
    # The API tells the effective status at once; the database row turns "expired" at the next sweep.
    assert [(c["tool"], c["status"]) for c in configured.session(session_id)["calls"]] == [("send_money", "expired")]
    assert [c["args"] for c in configured.calls(session_id)] == [{"to": "eve", "amount": 13}]


async def _ticking(gateway: Gateway, session_id: str, work: Any) -> tuple[Any, int]:
    """Run ``work`` while a ticker coroutine counts 20 ms ticks; approve the pending payment.
    Returns the result and the ticks counted while the human decided (a blocked loop counts none)."""
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0.02)

    ticking = asyncio.create_task(ticker())
    running = asyncio.ensure_future(work)
    pending = await asyncio.to_thread(gateway.wait_for_call, status="pending", tool="send_money",
                                      session_id=session_id)
    before = ticks
    await asyncio.to_thread(gateway.approve, pending["id"])  # the operator CLI: seconds
    during = ticks - before
    result = await running
    done.set()
    await ticking
    return result, during


def test_akickoff_waits_for_approval_without_blocking_the_event_loop(
        configured: Gateway, session_id: str, ran: list[Any]) -> None:
    script = Script()
    team = crew(openai_llm(script), directive("send_money", **PAYMENT))

    out, ticks = asyncio.run(_ticking(configured, session_id, team.akickoff()))

    assert ticks >= 10, f"the event loop stalled while the approval was pending ({ticks} ticks)"
    assert out.raw == "FINAL: sent 500 to bob"
    assert ran == [("send_money", PAYMENT)]
    assert recorded(configured, session_id) == [("send_money", "succeeded", PAYMENT)]


def test_ainvoke_waits_for_approval_on_the_loop_without_blocking_it(
        configured: Gateway, session_id: str, ran: list[Any]) -> None:
    """``CrewStructuredTool.ainvoke`` is checked on the event loop itself: the wait must be async."""
    payment = {"to": "carol", "amount": 900}

    result, ticks = asyncio.run(_ticking(configured, session_id, send_money.to_structured_tool().ainvoke(payment)))

    assert ticks >= 10, f"the event loop stalled while the approval was pending ({ticks} ticks)"
    assert result == "sent 900 to carol"
    assert ran == [("send_money", payment)]
    assert recorded(configured, session_id) == [("send_money", "succeeded", payment)]

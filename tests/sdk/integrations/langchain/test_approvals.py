"""Require-approval inside LangGraph: the run waits for a human, then resumes, end to end.

``send_money`` above 200 needs an approval (``amount == 13``: it expires after 2 s). A human decides
with the real ``callgate calls approve|deny`` CLI while the agent waits -- on a ``ToolNode`` worker
thread for the sync path, on the event loop (without blocking it) for the async path.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from langchain.agents import create_agent

from tests.sdk.integrations.harness import Gateway
from tests.sdk.integrations.langchain import tools as T
from tests.sdk.integrations.langchain.checks import only_row
from tests.sdk.integrations.langchain.scripted import ScriptedChatModel, ask, final_text

PAY = ask(("send_money", {"to": "bob", "amount": 500}))
COMMENT = "bob is not a known payee"
DENIED = f"Tool call denied by a human reviewer: {COMMENT}. The tool did not run."


class Background:
    """Run ``fn`` on a thread (in this context, so in this test's callgate session); keep its result."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        context = contextvars.copy_context()
        self.thread = threading.Thread(target=context.run, args=(self._run, fn), daemon=True)
        self.thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self.result = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            self.error = e

    def join(self, timeout: float = 90) -> Any:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the agent run did not finish"
        if self.error is not None:
            raise self.error
        return self.result


def _streamed_state(agent: Any) -> dict[str, Any]:
    messages = [
        m
        for update in agent.stream(PAY, stream_mode="updates")
        for node in update.values()
        if node
        for m in node.get("messages", [])
    ]
    return {"messages": messages}


RUNS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "invoke": lambda agent: agent.invoke(PAY),
    "stream": _streamed_state,
}


@pytest.mark.parametrize("run", sorted(RUNS))
def test_sync_run_waits_for_approval_then_runs_the_tool_once(
    gateway: Gateway, session_id: str, run: str
) -> None:
    model = ScriptedChatModel()
    agent = create_agent(model=model, tools=[T.send_money])

    background = Background(lambda: RUNS[run](agent))
    pending = gateway.wait_for_call(status="pending", tool="send_money", session_id=session_id)
    assert pending["args"] == {"to": "bob", "amount": 500}
    assert T.ran("send_money") == [], "the tool ran before the human decided"
    gateway.approve(pending["id"], comment="fine")
    state = background.join()

    assert final_text(state) == "final: [success] sent 500 to bob"
    assert T.ran("send_money") == [{"to": "bob", "amount": 500}]
    assert T.RAN.threads("send_money") != ["MainThread"]  # ToolNode ran it (and the wait) on a worker
    row = only_row(gateway, session_id, "send_money")
    assert (row["status"], row["decided_by"], row["outcome_status"]) == ("succeeded", "riley", "succeeded")


def test_sync_run_denied_never_runs_and_the_model_reads_the_comment(
    gateway: Gateway, session_id: str
) -> None:
    model = ScriptedChatModel()
    agent = create_agent(model=model, tools=[T.send_money])

    background = Background(lambda: agent.invoke(PAY))
    pending = gateway.wait_for_call(status="pending", tool="send_money", session_id=session_id)
    gateway.deny(pending["id"], comment=COMMENT)
    state = background.join()

    assert final_text(state) == f"final: [error] {DENIED}"
    assert model.seen == [("send_money", "error", DENIED)]
    assert T.ran("send_money") == []
    assert only_row(gateway, session_id, "send_money")["status"] == "denied"


async def _decide_while_ticking(
    gateway: Gateway, session_id: str, agent: Any, decide: Callable[[str], None]
) -> tuple[dict[str, Any], list[float], float, float]:
    """Run the agent and a ticker on one loop; a human decides from another thread. Returns the final
    state, the tick times and the window in which the call was waiting for the human."""
    ticks: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            ticks.append(time.monotonic())
            await asyncio.sleep(0.02)

    ticking = asyncio.create_task(ticker())
    run = asyncio.create_task(agent.ainvoke(PAY))
    pending = await asyncio.to_thread(
        gateway.wait_for_call, status="pending", tool="send_money", session_id=session_id
    )
    waiting_from = time.monotonic()
    await asyncio.to_thread(decide, pending["id"])
    waiting_until = time.monotonic()
    state = await asyncio.wait_for(run, 60)
    stop.set()
    await ticking
    return state, ticks, waiting_from, waiting_until


def assert_loop_kept_running(ticks: list[float], start: float, end: float) -> None:
    assert end - start > 0.5, "the decision came too fast to show anything"
    during = [t for t in ticks if start <= t <= end]
    assert len(during) >= 5, f"the event loop was blocked while waiting for approval ({len(during)} ticks)"
    gaps = [b - a for a, b in zip([start, *during], [*during, end], strict=True)]
    assert max(gaps) < 1.0, f"the event loop stalled for {max(gaps):.2f}s while waiting for approval"


def test_async_tool_waits_on_the_loop_without_blocking_it(gateway: Gateway, session_id: str) -> None:
    """An async-bodied tool is checked through ``arun``: the wait is an awaited long-poll."""
    model = ScriptedChatModel()
    agent = create_agent(model=model, tools=[T.asend_money])

    state, ticks, start, end = asyncio.run(
        _decide_while_ticking(gateway, session_id, agent, lambda call_id: gateway.approve(call_id))
    )

    assert_loop_kept_running(ticks, start, end)
    assert final_text(state) == "final: [success] sent 500 to bob"
    assert T.ran("send_money") == [{"to": "bob", "amount": 500}]
    assert T.RAN.threads("send_money") == ["MainThread"]  # the async body ran on the loop
    assert only_row(gateway, session_id, "send_money")["status"] == "succeeded"


def test_sync_only_tool_on_the_async_path_waits_on_a_worker_thread(gateway: Gateway, session_id: str) -> None:
    """A sync-only tool on ``ainvoke`` runs through the sync ``run`` in an executor: the blocking wait
    happens there, and the loop keeps running; the denial reaches the model."""
    model = ScriptedChatModel()
    agent = create_agent(model=model, tools=[T.send_money])

    state, ticks, start, end = asyncio.run(
        _decide_while_ticking(
            gateway, session_id, agent, lambda call_id: gateway.deny(call_id, comment=COMMENT)
        )
    )

    assert_loop_kept_running(ticks, start, end)
    assert final_text(state) == f"final: [error] {DENIED}"
    assert T.ran("send_money") == []
    assert only_row(gateway, session_id, "send_money")["status"] == "denied"


def test_an_expired_approval_never_runs_and_the_model_is_told(gateway: Gateway, session_id: str) -> None:
    model = ScriptedChatModel()
    agent = create_agent(model=model, tools=[T.send_money])

    state = agent.invoke(ask(("send_money", {"to": "bob", "amount": 13})))  # nobody decides within 2 s

    expired = "Tool call not approved in time (the approval request expired). The tool did not run."
    assert final_text(state) == f"final: [error] {expired}"
    assert T.ran("send_money") == []
    # The gateway's expiry sweep records it (the SDK learnt "expired" from the long-poll first).
    gateway.wait_for_call(status="expired", tool="send_money", session_id=session_id)
    assert len(gateway.calls(session_id, "send_money")) == 1

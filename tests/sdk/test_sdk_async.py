"""Tests for the asyncio path: acheck_call, async guards, never blocking the loop."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

import callgate

from .conftest import API_KEY, FakeGateway


class TestAsync:
    def test_acheck_call_allow_and_block(self, configured: FakeGateway) -> None:
        """acheck_call has check_call's semantics."""
        configured.rules["rm"] = ("block", "no", None)

        async def main() -> str:
            p = await callgate.acheck_call("t", {"a": 1})
            with pytest.raises(callgate.CallBlocked):
                await callgate.acheck_call("rm", {})
            return p.call_id

        cid = asyncio.run(main())
        assert configured.of("POST", "/v1/calls")[0].body["id"] == cid

    def test_async_guard_runs_and_reports(self, configured: FakeGateway) -> None:
        """An async guarded function is awaited after allow; the outcome is reported."""

        @callgate.guard
        async def fetch(url: str) -> str:
            await asyncio.sleep(0)
            return url

        assert asyncio.run(fetch("u")) == "u"
        assert callgate.flush(5)
        (out,) = configured.outcomes.values()
        assert out["status"] == "succeeded"

    def test_200_concurrent_long_polls_keep_loop_ticking(self, configured: FakeGateway) -> None:
        """200 concurrent held calls complete after approval while a heartbeat keeps ticking."""
        configured.rules["t"] = ("require_approval", None, None)
        ticks: list[float] = []

        async def heartbeat(stop: asyncio.Event) -> None:
            while not stop.is_set():
                ticks.append(time.monotonic())
                await asyncio.sleep(0.01)

        window: list[int] = []

        def approver() -> None:
            ids = configured.wait_for_pending(200, timeout=20)
            before = len(ticks)  # all 200 are parked in long-polls now
            time.sleep(0.5)
            window.append(len(ticks) - before)
            for cid in ids:
                configured.decide(cid, "approved")

        async def main() -> list[callgate.Permit]:
            stop = asyncio.Event()
            hb = asyncio.create_task(heartbeat(stop))
            th = threading.Thread(target=approver)
            th.start()
            permits = await asyncio.gather(*(callgate.acheck_call("t", {"i": i}) for i in range(200)))
            stop.set()
            await hb
            th.join()
            return permits

        permits = asyncio.run(main())
        assert len({p.call_id for p in permits}) == 200 and all(p.status == "approved" for p in permits)
        assert window[0] >= 10  # ~50 expected at 10 ms per tick; a blocked loop would give 0

    def test_async_gateway_down(self, dead_url: str, tmp_path: Any) -> None:
        """The async path fails closed too."""
        callgate.configure(dead_url, API_KEY, "a", spool_dir=tmp_path, timeout=2)

        async def main() -> None:
            await callgate.acheck_call("t", {})

        with pytest.raises(callgate.GatewayUnavailable):
            asyncio.run(main())

    def test_async_approval_denied(self, configured: FakeGateway) -> None:
        """A denied async call raises ApprovalDenied and the coroutine body never runs."""
        configured.rules["t"] = ("require_approval", None, None)
        ran = []

        @callgate.guard(name="t")
        async def tool() -> None:
            ran.append(1)

        def deny() -> None:
            (cid,) = configured.wait_for_pending()
            configured.decide(cid, "denied", "no")

        th = threading.Thread(target=deny)
        th.start()
        with pytest.raises(callgate.ApprovalDenied, match="no"):
            asyncio.run(tool())
        th.join()
        assert ran == []

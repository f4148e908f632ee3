"""P2 helper: a reviewer's decision made through ``gateway.approvals.decide`` itself, in its own
process, stamping the moment the decision was committed.

    python bench/_decider.py  (configured by the CALLGATE_* environment, like a gateway worker)

It builds a gateway runtime exactly as a worker does (``gateway.app.build_runtime``, plus a Redis
bridge), so ``decide`` runs the real path: the group commit, then ``announce`` (local notifier,
Redis publish). Only the commit queue is wrapped, to read the clock when the commit returned.

Line protocol: ``decide CALL_ID`` -> ``{"committed": T1, "announced": T2}`` (``time.monotonic()``,
which on Linux is CLOCK_MONOTONIC: one clock for every process on the machine); ``quit``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from gateway.app import build_runtime
from gateway.approvals import decide
from gateway.audit import Actor
from gateway.config import Settings
from gateway.pubsub import RedisBridge

REVIEWER = Actor("user", "bench-reviewer")


class StampingQueue:
    """The runtime's commit queue, recording when each unit of work's commit returned."""

    def __init__(self, queue: Any) -> None:
        self._queue = queue
        self.committed = 0.0

    async def run(self, work: Any) -> Any:
        result = await self._queue.run(work)
        self.committed = time.monotonic()
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queue, name)


async def main() -> None:
    settings = Settings()
    runtime = build_runtime(settings)
    runtime.notifier.bind(asyncio.get_running_loop())
    stamping = StampingQueue(runtime.commit_queue)
    runtime.commit_queue = stamping  # type: ignore[assignment]
    runtime.pubsub = RedisBridge(settings.redis_url, runtime.notifier, client_name="bench-decider")
    await runtime.pubsub.start()
    await asyncio.wait_for(runtime.pubsub.subscribed.wait(), 10)
    loop = asyncio.get_running_loop()
    print(json.dumps({"ready": True}), flush=True)
    try:
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            cmd = line.split()
            if not cmd or cmd[0] == "quit":
                break
            view = await decide(runtime, call_id=cmd[1], approve=True, actor=REVIEWER, channel="console",
                                comment=None)
            announced = time.monotonic()
            assert view.row["status"] == "approved", view.row["status"]
            print(json.dumps({"committed": stamping.committed, "announced": announced}), flush=True)
    finally:
        await runtime.pubsub.stop()
        stamping._queue.stop()
        runtime.writer.dispose()
        runtime.reader.dispose()


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())

"""Coalesce concurrent database reads of the event loop into set-based ones.

Why: a gateway worker holds thousands of long-polls, and they read in bursts: when they open
together, and when many calls are decided together (a reviewer's bulk action, an expiry sweep)
and their waiters all wake at once. Read one by one, each costs a thread hop and two round trips,
and 5,000 of them take seconds of CPU (bench/p5_held_waiters.py measured 6.3 s to release 2,000).
Here every read requested while the loop runs one iteration joins one batch, and one worker thread
answers the whole batch with one set-based function (``gateway.calls.read_calls``: one key SELECT,
one call SELECT). A lone read pays one extra loop iteration (microseconds) over a direct call.

At most ``max_in_flight`` batches run at once: requests arriving meanwhile wait and form the next,
larger batch, so the batch size grows with the load instead of the number of threads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

Q = TypeVar("Q")
R = TypeVar("R")


class ReadBatcher(Generic[Q, R]):
    """``await batcher.read(request)`` -> the result ``run`` gave for it, from a batch.

    ``run(requests) -> results`` is a blocking function (it runs in the loop's default executor)
    answering each request in order; a result may be an exception object for the caller to
    raise. If ``run`` itself raises, every request of that batch gets the exception."""

    def __init__(self, run: Callable[[list[Q]], list[R]], *, max_batch: int = 1000, max_in_flight: int = 2) -> None:
        self._run = run
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self._queue: list[tuple[Q, asyncio.Future[R]]] = []
        self._in_flight = 0
        self._scheduled = False
        self.batches = 0  # batches run so far (for tests and metrics)

    async def read(self, request: Q) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((request, future))
        self._schedule()
        return await future

    def _schedule(self) -> None:
        if self._scheduled or not self._queue or self._in_flight >= self.max_in_flight:
            return
        self._scheduled = True
        # call_soon: every read requested during this loop iteration joins the batch.
        asyncio.get_running_loop().call_soon(self._start)

    def _start(self) -> None:
        self._scheduled = False
        loop = asyncio.get_running_loop()
        while self._queue and self._in_flight < self.max_in_flight:
            batch = [item for item in self._queue[: self.max_batch] if not item[1].done()]  # drop cancelled
            del self._queue[: self.max_batch]
            if not batch:
                continue
            self._in_flight += 1
            self.batches += 1
            try:
                done = loop.run_in_executor(None, self._run, [request for request, _ in batch])
            except RuntimeError as exc:  # the executor is shut down: the loop is closing
                done = loop.create_future()
                done.set_exception(exc)
            done.add_done_callback(lambda result, batch=batch: self._finish(batch, result))  # type: ignore[misc]

    def _finish(self, batch: list[tuple[Q, asyncio.Future[R]]], result: asyncio.Future[list[R]]) -> None:
        self._in_flight -= 1
        try:
            error = None if result.cancelled() else result.exception()
            for index, (_, future) in enumerate(batch):
                if future.done():
                    continue  # its request was cancelled (the client went away)
                if result.cancelled():
                    future.cancel()
                elif error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(result.result()[index])
        finally:
            self._schedule()

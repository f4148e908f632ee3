"""The background threads behind blocking pending-approval handles: at most two per process.

* **the waiter** (thread ``callgate-approvals``): one asyncio event loop. Every watched handle is
  one task on it that long-polls through the same async wait path ``acheck_call`` uses: a
  socket each and no thread each, so a thousand pending approvals cost one thread, and the
  shape of the waiting (hold times, retries while the gateway is lost, ``approval_timeout``)
  is exactly that of ``approval_mode="wait"``;
* **the callback runner** (thread ``callgate-approval-callbacks``): calls
  ``add_done_callback`` callbacks one at a time, in order. A slow callback, or one that calls
  ``handle.result()`` and so runs the tool, delays later callbacks but never the waits.

Both start on first use, stop by themselves after :data:`IDLE_SECONDS` with nothing to do (so
an agent that is done with approvals is back to no extra threads), are daemons (they never hold
up interpreter exit) and are replaced in a forked child. This module imports asyncio; it is
itself imported only when a handle first needs it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import threading
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["IDLE_SECONDS", "call_back", "spawn"]

log = logging.getLogger("callgate")

#: How long an idle background thread lingers before it exits (a new one starts on demand).
IDLE_SECONDS = 10.0


class _LoopThread:
    """One daemon thread running an event loop for as long as it has tasks (plus the idle linger)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid = os.getpid()
        self._jobs = 0  # tasks submitted and not finished; the loop stops only at zero
        self._tasks: set[asyncio.Task[Any]] = set()  # strong references: the loop keeps only weak ones

    def spawn(self, make: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        """Run the coroutine ``make()`` returns as a task on the waiter loop (from any thread)."""
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                self._loop = self._start()
                self._pid = os.getpid()
                self._tasks = set()
                self._jobs = 0
            self._jobs += 1
            self._loop.call_soon_threadsafe(self._create, self._loop, make)

    def _create(self, loop: asyncio.AbstractEventLoop, make: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        task = loop.create_task(make())
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._done(loop, t))

    def _done(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("callgate: approval waiter task failed", exc_info=task.exception())
        with self._lock:
            self._jobs -= 1
            if self._jobs == 0:
                loop.call_later(IDLE_SECONDS, self._stop_if_idle, loop)

    def _stop_if_idle(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            if self._jobs or self._loop is not loop:
                return
            self._loop = None  # from now on spawn() starts a fresh thread
        loop.stop()

    @staticmethod
    def _start() -> asyncio.AbstractEventLoop:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=_run_loop, args=(loop,), name="callgate-approvals", daemon=True)
        thread.start()
        return loop


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        try:
            leftovers = asyncio.all_tasks(loop)
            for task in leftovers:
                task.cancel()
            if leftovers:
                loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
            _close_pool(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def _close_pool(loop: asyncio.AbstractEventLoop) -> None:
    """Close the keep-alive connections the long-polls opened on this loop, and let the
    transports finish closing before the loop does."""
    import sys

    aio = sys.modules.get("callgate._aio")
    pool = aio._pools.pop(loop, None) if aio is not None else None  # noqa: SLF001 - our own package
    if pool is not None:
        pool.close()
        for _ in range(2):
            loop.run_until_complete(asyncio.sleep(0))


class _SerialRunner:
    """Calls queued functions one at a time on one daemon thread that exits when idle."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: collections.deque[tuple[Callable[..., Any], tuple[Any, ...]]] = collections.deque()
        self._running = False
        self._pid = os.getpid()

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        with self._cond:
            if self._pid != os.getpid():  # forked: the parent's thread does not exist here
                self._running = False
                self._pid = os.getpid()
            self._queue.append((fn, args))
            if not self._running:
                self._running = True
                threading.Thread(target=self._run, name="callgate-approval-callbacks", daemon=True).start()
            else:
                self._cond.notify()

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    if not self._queue:
                        self._cond.wait(IDLE_SECONDS)
                    if not self._queue:
                        self._running = False  # under the lock: a submit() after this starts a new thread
                        return
                    fn, args = self._queue.popleft()
                try:
                    fn(*args)
                except Exception:  # noqa: BLE001 - one bad callback must not stop the others
                    log.exception("callgate: an approval callback raised")
        except BaseException:  # SystemExit/KeyboardInterrupt from a callback: the next submit restarts us
            with self._cond:
                self._running = False
            raise


_waiter = _LoopThread()
_callbacks = _SerialRunner()


def spawn(make: Callable[[], Coroutine[Any, Any, Any]]) -> None:
    """Run a coroutine on the shared waiter loop (started on demand)."""
    _waiter.spawn(make)


def call_back(fn: Callable[..., Any], *args: Any) -> None:
    """Call ``fn(*args)`` on the callback thread, after every callback queued before it."""
    _callbacks.submit(fn, *args)


def _after_fork_in_child() -> None:
    global _waiter, _callbacks
    _waiter = _LoopThread()
    _callbacks = _SerialRunner()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

"""A one-shot signal that blocking threads and coroutines on any event loop can wait for.

Why not ``threading.Event`` or ``asyncio.Event`` alone: a pending-approval handle is resolved
from wherever its decision arrives (the shared waiter thread, a webhook receiver's thread or
event loop, the agent's own loop) and waited for from wherever the agent is (a thread blocked in
``result()``, or a coroutine awaiting it). ``threading.Event.wait`` would block an event loop;
an ``asyncio.Event`` belongs to one loop and must not be set from another thread.

Imports nothing at module level beyond ``threading``: ``asyncio`` is loaded only by the first
coroutine that waits (``import callgate`` must stay light).
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["Latch"]


def _wake(future: Any) -> None:
    if not future.done():
        future.set_result(None)


class Latch:
    """Set once, never reset. :meth:`set` may be called from any thread, any number of times."""

    __slots__ = ("_event", "_lock", "_futures")

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._futures: list[tuple[Any, Any]] = []  # (loop, future) of coroutines waiting

    def is_set(self) -> bool:
        return self._event.is_set()

    def set(self) -> None:
        with self._lock:
            if self._event.is_set():
                return
            self._event.set()
            futures, self._futures = self._futures, []
        for loop, future in futures:
            try:
                loop.call_soon_threadsafe(_wake, future)
            except RuntimeError:  # that loop is closed: nobody is waiting there any more
                pass

    def wait(self, timeout: float | None = None) -> bool:
        """Block the calling thread until set (True) or ``timeout`` seconds passed (False)."""
        return self._event.wait(timeout)

    async def wait_async(self, timeout: float | None = None) -> bool:
        """Wait without blocking the running event loop: True once set, False after ``timeout``."""
        if self._event.is_set():
            return True
        import asyncio

        loop = asyncio.get_running_loop()
        entry = (loop, loop.create_future())
        with self._lock:
            if self._event.is_set():
                return True
            self._futures.append(entry)
        try:
            async with asyncio.timeout(timeout):
                await entry[1]
            return True
        except TimeoutError:
            return self._event.is_set()
        finally:
            with self._lock:
                try:
                    self._futures.remove(entry)
                except ValueError:  # set() took it already
                    pass

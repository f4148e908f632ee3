"""Wake held long-polls the moment a call's state changes.

In-process: one ``asyncio.Event`` per watched call id, per worker. Waiters register, a publisher
sets the event; waiters always re-read the database afterwards, so a lost or spurious wake-up
only costs a read. (Across workers, a Redis pub/sub listener calls ``publish`` here.)
"""

from __future__ import annotations

import asyncio
from collections import defaultdict


class Notifier:
    def __init__(self) -> None:
        self._events: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    async def wait(self, call_id: str, timeout: float) -> bool:
        """True if woken by a publish, False on timeout."""
        event = asyncio.Event()
        self._events[call_id].add(event)
        try:
            await asyncio.wait_for(event.wait(), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            waiters = self._events.get(call_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._events[call_id]

    def publish(self, call_id: str) -> None:
        """Wake every waiter of ``call_id``; callable from the event loop thread only."""
        for event in self._events.get(call_id, ()):
            event.set()

    def publish_threadsafe(self, call_id: str) -> None:
        """Wake waiters from another thread (e.g. the commit thread after its commit)."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.publish, call_id)

    @property
    def waiting(self) -> int:
        return sum(len(v) for v in self._events.values())

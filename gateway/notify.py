"""Wake held long-polls the moment a call's state changes.

In-process: one ``asyncio.Event`` per watched call id, per worker. Waiters register, a publisher
sets the event; waiters always re-read the database afterwards, so a lost or spurious wake-up
only costs a read. Across workers (and from the CLI and Celery), the Redis bridge
(``gateway.pubsub``) calls ``publish`` here for every call id announced on the channel.

A long-poll registers with :meth:`Notifier.watch` *before* its first read, so a publish that
lands between the read and the wait is never lost.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager


class Notifier:
    def __init__(self) -> None:
        self._events: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    @contextmanager
    def watch(self, call_id: str) -> Iterator[asyncio.Event]:
        """Register interest in ``call_id`` for the duration of the block; the event is set on
        every publish (clear it before waiting again)."""
        event = asyncio.Event()
        self._events[call_id].add(event)
        try:
            yield event
        finally:
            waiters = self._events.get(call_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._events[call_id]

    async def wait(self, call_id: str, timeout: float) -> bool:
        """True if woken by a publish, False on timeout."""
        with self.watch(call_id) as event:
            return await wait_event(event, timeout)

    def publish(self, call_id: str) -> None:
        """Wake every waiter of ``call_id``; callable from the event loop thread only."""
        for event in self._events.get(call_id, ()):
            event.set()

    def publish_all(self) -> None:
        """Wake every waiter (after a Redis reconnect: messages may have been missed)."""
        for waiters in self._events.values():
            for event in waiters:
                event.set()

    def publish_threadsafe(self, call_id: str) -> None:
        """Wake waiters from another thread (e.g. the commit thread after its commit)."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.publish, call_id)

    @property
    def waiting(self) -> int:
        return sum(len(v) for v in self._events.values())


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait for ``event`` at most ``timeout`` seconds; True if it was set."""
    if event.is_set():
        return True
    try:
        await asyncio.wait_for(event.wait(), max(0.0, timeout))
        return True
    except TimeoutError:
        return False

"""Wake held long-polls the moment a call's state changes.

In-process: one :class:`Watch` per waiting request, per worker. Waiters register, a
publisher sets the event; waiters always re-read the database (or try their claim) afterwards,
so a lost or spurious wake-up only costs a read. Across workers (and from the CLI and Celery),
the Redis bridge (``gateway.pubsub``) calls ``publish`` here for every call id announced on the
channel.

A long-poll registers with :meth:`Notifier.watch` *before* its first read, so a publish that
lands between the read and the wait is never lost.

The fallback when no push comes (a decision by a process without Redis, a message lost while
Redis reconnected) is the *re-check*: every ``interval`` while anyone waits, ONE query asks the
database which of the watched calls are no longer pending, and only their waiters are woken.
Held long-polls themselves never poll: a worker holding 20,000 of them does one query a second,
not 20,000 (bench/p5_held_waiters.py: per-waiter re-reads kept a core busy with 2,000 held).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

log = logging.getLogger("callgate.notify")

#: ``settled(call_ids) -> the ids among them that no longer wait`` (blocking: runs in a thread).
Settled = Callable[[list[str]], Iterable[str]]


class Watch:
    """One request's interest in one call: set by every publish for that call until cleared.

    Deliberately lighter than ``asyncio.Event`` + ``asyncio.wait_for`` (which builds a task, a
    deque and a timeout context per wait): one future and one timer handle while waiting, a few
    dozen bytes otherwise. A worker holds one per held long-poll, thousands at once (P5)."""

    __slots__ = ("_set", "_future")

    def __init__(self) -> None:
        self._set = False
        self._future: asyncio.Future[bool] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        future = self._future
        if future is not None and not future.done():
            future.set_result(True)

    def clear(self) -> None:
        self._set = False

    async def wait(self, timeout: float | None = None) -> bool:
        """True once set (at once if it already is); False when ``timeout`` seconds pass first."""
        if self._set:
            return True
        loop = asyncio.get_running_loop()
        future = self._future = loop.create_future()
        timer = None if timeout is None else loop.call_later(max(0.0, timeout), _time_up, future)
        try:
            return await future
        finally:
            if timer is not None:
                timer.cancel()
            self._future = None


def _time_up(future: asyncio.Future[bool]) -> None:
    if not future.done():
        future.set_result(False)


class Notifier:
    def __init__(self) -> None:
        self._watches: dict[str, set[Watch]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._settled: Settled | None = None
        self._interval = 1.0
        self._timer: asyncio.TimerHandle | None = None
        self._checking = False
        self.rechecks = 0  # re-check queries run so far (tests, metrics)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    @contextmanager
    def watch(self, call_id: str) -> Iterator[Watch]:
        """Register interest in ``call_id`` for the duration of the block; the watch is set on
        every publish (clear it before waiting again)."""
        watch = Watch()
        watches = self._watches.get(call_id)
        if watches is None:
            watches = self._watches[call_id] = set()
        watches.add(watch)
        self._arm()
        try:
            yield watch
        finally:
            watches = self._watches.get(call_id)
            if watches is not None:
                watches.discard(watch)
                if not watches:
                    del self._watches[call_id]

    async def wait(self, call_id: str, timeout: float) -> bool:
        """True if woken by a publish, False on timeout."""
        with self.watch(call_id) as watch:
            return await watch.wait(timeout)

    def publish(self, call_id: str) -> None:
        """Wake every waiter of ``call_id``; callable from the event loop thread only."""
        for watch in self._watches.get(call_id, ()):
            watch.set()

    def publish_all(self) -> None:
        """Wake every waiter (after a Redis reconnect: messages may have been missed)."""
        for watches in self._watches.values():
            for watch in watches:
                watch.set()

    def publish_threadsafe(self, call_id: str) -> None:
        """Wake waiters from another thread (e.g. the commit thread after its commit)."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.publish, call_id)

    @property
    def waiting(self) -> int:
        return sum(len(v) for v in self._watches.values())

    def watched(self) -> list[str]:
        """The call ids somebody is waiting on right now."""
        return list(self._watches)

    # -- the re-check ------------------------------------------------------------------------

    def recheck_with(self, settled: Settled, interval: float) -> None:
        """Every ``interval`` seconds while anyone waits, run ``settled(watched ids)`` in a worker
        thread and wake the waiters of every id it returns. Idempotent: the latest ``settled``
        and ``interval`` apply from the next tick on.

        The schedule is a chain of loop timers rather than a task: with nobody waiting nothing is
        scheduled at all (0 % CPU when idle), and nothing is left pending when the loop closes."""
        self._settled = settled
        self._interval = interval
        self._arm()

    def _arm(self) -> None:
        if self._settled is None or self._timer is not None or self._checking or not self._watches:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # watched outside a loop (a test's bare Notifier): nothing to schedule
            return
        self._timer = loop.call_later(self._interval, self._recheck)

    def _recheck(self) -> None:
        self._timer = None
        ids = self.watched()
        if not ids or self._settled is None:
            return  # idle: the next watch() arms the timer again
        self._checking = True
        self.rechecks += 1
        loop = asyncio.get_running_loop()
        try:
            done = loop.run_in_executor(None, lambda: list(self._settled(ids)))  # type: ignore[misc]
        except RuntimeError:  # the executor is shut down: the loop is closing
            self._checking = False
            return
        done.add_done_callback(self._rechecked)

    def _rechecked(self, done: asyncio.Future[list[str]]) -> None:
        self._checking = False
        if done.cancelled():
            return
        error = done.exception()
        if error is not None:
            # The database is unreachable: the waiters keep waiting (a re-read would fail too)
            # and the next tick tries again; pushes still wake them meanwhile.
            log.warning("long-poll re-check failed (%s: %s); retrying in %.2gs", type(error).__name__, error,
                        self._interval)
        else:
            for call_id in done.result():
                self.publish(call_id)
        self._arm()


async def wait_event(watch: Watch, timeout: float) -> bool:
    """Wait for ``watch`` at most ``timeout`` seconds; True if it was set."""
    return await watch.wait(timeout)

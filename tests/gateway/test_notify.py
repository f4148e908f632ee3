"""The in-process notifier: watches, publishes, and the worker's single periodic re-check."""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid

import pytest

from gateway.notify import Notifier, Watch, wait_event


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


class TestWatch:
    def test_a_set_watch_returns_at_once_and_clear_rearms_it(self) -> None:
        async def main() -> tuple[bool, bool]:
            watch = Watch()
            watch.set()
            first = await watch.wait(5)  # already set: no waiting
            watch.clear()
            second = await watch.wait(0.01)
            return first, second

        assert run(main()) == (True, False)

    def test_set_while_waiting_wakes_the_waiter(self) -> None:
        async def main() -> bool:
            watch = Watch()
            asyncio.get_running_loop().call_later(0.01, watch.set)
            return await wait_event(watch, 5)

        assert run(main()) is True

    def test_a_cancelled_wait_leaves_nothing_behind(self) -> None:
        """The client went away: the waiting task is cancelled; its future and timer are dropped,
        and a later set() is harmless."""

        async def main() -> tuple[bool, bool]:
            watch = Watch()
            task = asyncio.create_task(watch.wait(30))
            await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            dropped = watch._future is None
            watch.set()
            return dropped, await watch.wait(0)

        assert run(main()) == (True, True)


class TestNotifier:
    def test_publish_wakes_only_that_calls_waiters(self) -> None:
        async def main() -> tuple[bool, bool, bool, int, int]:
            notifier = Notifier()
            a, b = str(uuid.uuid4()), str(uuid.uuid4())
            with notifier.watch(a) as wa1, notifier.watch(a) as wa2, notifier.watch(b) as wb:
                during = notifier.waiting
                notifier.publish(a)
                notifier.publish(str(uuid.uuid4()))  # nobody waits on it: nothing happens
                result = wa1.is_set(), wa2.is_set(), wb.is_set()
            return (*result, during, notifier.waiting)

        assert run(main()) == (True, True, False, 3, 0)

    def test_publish_all_and_threadsafe_publish(self) -> None:
        async def main() -> tuple[bool, bool, bool]:
            notifier = Notifier()
            notifier.bind(asyncio.get_running_loop())
            a, b = str(uuid.uuid4()), str(uuid.uuid4())
            with notifier.watch(a) as wa, notifier.watch(b) as wb:
                threading.Thread(target=notifier.publish_threadsafe, args=(a,)).start()
                woke = await wa.wait(5)
                notifier.publish_all()
                return woke, wa.is_set(), wb.is_set()

        assert run(main()) == (True, True, True)


class TestRecheck:
    def test_one_query_per_interval_for_all_waiters_and_only_settled_calls_wake(self) -> None:
        """500 held waiters cost one ``settled`` call per interval (with all 500 ids), not 500; the
        waiters of the ids it returns wake, the others keep waiting."""
        calls: list[list[str]] = []
        ids = [str(uuid.uuid4()) for _ in range(500)]
        decided = set(ids[:3])

        def settled(watched: list[str]) -> list[str]:
            calls.append(watched)
            return [i for i in watched if i in decided]

        async def main() -> tuple[list[bool], int]:
            notifier = Notifier()
            notifier.recheck_with(settled, 0.05)
            with contextlib_watches(notifier, ids) as watches:
                await asyncio.sleep(0.32)
                return [w.is_set() for w in watches], notifier.rechecks

        woken, rechecks = run(main())
        assert woken == [True, True, True] + [False] * 497
        assert 2 <= rechecks <= 8 and len(calls) == rechecks  # ~6 intervals in 0.32 s, at most one query each
        assert all(sorted(c) == sorted(ids) for c in calls)

    def test_nothing_is_scheduled_while_nobody_waits(self) -> None:
        calls: list[list[str]] = []

        async def main() -> tuple[int, int]:
            notifier = Notifier()
            notifier.recheck_with(lambda watched: calls.append(watched) or [], 0.02)  # type: ignore[func-returns-value]
            await asyncio.sleep(0.1)
            idle = notifier.rechecks
            with notifier.watch(str(uuid.uuid4())):
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.1)
            after = notifier.rechecks
            await asyncio.sleep(0.1)
            return idle, after - notifier.rechecks

        idle, later = run(main())
        assert idle == 0 and later == 0 and 1 <= len(calls) <= 6

    def test_a_failing_recheck_is_logged_and_retried(self, caplog: pytest.LogCaptureFixture) -> None:
        attempts: list[int] = []
        call_id = str(uuid.uuid4())

        def settled(watched: list[str]) -> list[str]:
            attempts.append(1)
            if len(attempts) == 1:
                raise ConnectionError("database unreachable")
            return watched

        async def main() -> bool:
            notifier = Notifier()
            notifier.recheck_with(settled, 0.02)
            with notifier.watch(call_id) as watch:
                return await watch.wait(5)

        with caplog.at_level(logging.WARNING, logger="callgate.notify"):
            assert run(main()) is True
        assert len(attempts) >= 2
        assert "re-check failed" in caplog.text


class contextlib_watches:  # noqa: N801 - used as a context manager, like notifier.watch
    """Watch many ids at once for the duration of a block."""

    def __init__(self, notifier: Notifier, ids: list[str]) -> None:
        self.contexts = [notifier.watch(i) for i in ids]

    def __enter__(self) -> list[Watch]:
        return [c.__enter__() for c in self.contexts]

    def __exit__(self, *exc: object) -> None:
        for c in self.contexts:
            c.__exit__(None, None, None)

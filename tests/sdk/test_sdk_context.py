"""Tests for callgate._context: sessions and their propagation."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import callgate

from .conftest import FakeGateway


class TestSession:
    def test_nesting_and_restore(self) -> None:
        """The innermost session wins and the outer one is restored on exit."""
        assert callgate.current_session() is None
        with callgate.session("a"):
            with callgate.session("b"):
                assert callgate.current_session() == "b"
            assert callgate.current_session() == "a"
        assert callgate.current_session() is None

    def test_decorator_sync_and_async(self) -> None:
        """session() decorates sync and async functions (entered when they run)."""

        @callgate.session("d")
        def f() -> str | None:
            return callgate.current_session()

        @callgate.session("ad")
        async def g() -> str | None:
            return callgate.current_session()

        assert f() == "d" and asyncio.run(g()) == "ad" and callgate.current_session() is None
        assert f.__name__ == "f"

    def test_sent_with_calls(self, configured: FakeGateway) -> None:
        """The session id travels with every call made inside it."""
        with callgate.session("s1"):
            callgate.check_call("t", {})
        callgate.check_call("t", {})
        bodies = [r.body for r in configured.of("POST", "/v1/calls")]
        assert bodies[0]["session_id"] == "s1" and "session_id" not in bodies[1]


class TestPropagation:
    def test_tasks(self) -> None:
        """asyncio tasks inherit the session."""

        async def main() -> str | None:
            with callgate.session("s1"):
                return await asyncio.create_task(asyncio.sleep(0, callgate.current_session()))

        assert asyncio.run(main()) == "s1"

    def test_threads_and_executor(self, configured: FakeGateway) -> None:
        """Threads (plain and subclassed) and ThreadPoolExecutor work items see the creating session."""
        seen: dict[str, str | None] = {}

        class Sub(threading.Thread):
            def run(self) -> None:
                seen["sub"] = callgate.current_session()

        with callgate.session("s1"):
            t = threading.Thread(target=lambda: seen.__setitem__("thread", callgate.current_session()))
            t.start()
            s = Sub()
            s.start()
            with ThreadPoolExecutor(2) as ex:
                seen["pool"] = ex.submit(callgate.current_session).result()
            t.join()
            s.join()
        with ThreadPoolExecutor(1) as ex:
            seen["outside"] = ex.submit(callgate.current_session).result()
        assert seen == {"thread": "s1", "sub": "s1", "pool": "s1", "outside": None}

    def test_reset_uninstalls(self, configured: FakeGateway) -> None:
        """After reset() threads no longer carry the session (the patch is removed)."""
        callgate.reset()
        seen = []
        with callgate.session("s1"):
            t = threading.Thread(target=lambda: seen.append(callgate.current_session()))
            t.start()
            t.join()
        assert seen == [None]
        assert not hasattr(threading.Thread.start, "__wrapped__")

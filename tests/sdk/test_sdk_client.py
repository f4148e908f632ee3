"""Tests for callgate._client and callgate._transport against a real local server."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import pytest

import callgate
from callgate._config import runtime

from .conftest import API_KEY, FakeGateway


def call_ids(gw: FakeGateway) -> list[str]:
    return [r.body["id"] for r in gw.of("POST", "/v1/calls")]


class TestRetries:
    def test_5xx_then_success_reuses_id(self, configured: FakeGateway) -> None:
        """Two 503s then success: three attempts, all with the same call id and body."""
        configured.inject += [("/v1/calls", 503), ("/v1/calls", 503)]
        permit = callgate.check_call("t", {"a": 1})
        reqs = configured.of("POST", "/v1/calls")
        assert len(reqs) == 3 and {r.body["id"] for r in reqs} == {permit.call_id}
        assert reqs[0].body == reqs[2].body

    def test_gives_up_after_three_attempts(self, configured: FakeGateway) -> None:
        """5xx on every attempt: at most 3 attempts, then GatewayUnavailable."""
        configured.inject += [("/v1/calls", 500)] * 5
        with pytest.raises(callgate.GatewayUnavailable) as ei:
            callgate.check_call("t", {})
        assert len(configured.of("POST", "/v1/calls")) == 3 and ei.value.attempts == 3

    def test_429_honours_retry_after(self, configured: FakeGateway) -> None:
        """429 waits Retry-After (within the deadline) and then succeeds with the same id."""
        configured.inject.append(("/v1/calls", ("retry_after", 0.3)))
        t0 = time.monotonic()
        callgate.check_call("t", {})
        assert time.monotonic() - t0 >= 0.3 and len(set(call_ids(configured))) == 1

    def test_429_never_fails_open(self, configured: FakeGateway) -> None:
        """Rate limits are never bypassed by fail-open."""
        configured.inject += [("/v1/calls", ("retry_after", 100))]
        ran = []
        with pytest.raises(callgate.GatewayUnavailable) as ei:
            callgate.guard(lambda: ran.append(1), name="t", fail_open=True)()
        assert ei.value.status == 429 and not ei.value.allows_fail_open and ran == []

    def test_idempotency_key_reused_raises(self, configured: FakeGateway) -> None:
        """422 idempotency_key_reused is raised as GatewayRejected with its code, never retried."""
        configured.inject.append(("/v1/calls", 422))
        with pytest.raises(callgate.GatewayRejected) as ei:
            callgate.check_call("t", {})
        assert ei.value.status == 422 and len(configured.of("POST", "/v1/calls")) == 1

    def test_dropped_connection_retried(self, configured: FakeGateway) -> None:
        """The server closing the connection without an answer is retried with the same id."""
        configured.inject.append(("/v1/calls", "drop"))
        callgate.check_call("t", {})
        assert len(call_ids(configured)) == 2 and len(set(call_ids(configured))) == 1


class TestCircuitBreaker:
    def test_opens_after_five_failures_then_zero_attempts(self, gateway: FakeGateway, tmp_path: Any) -> None:
        """After 5 consecutive failures calls fail instantly without touching the network."""
        callgate.configure(gateway.url, API_KEY, "a", spool_dir=tmp_path)
        gateway.inject += [("/v1/calls", 503)] * 5
        for _ in range(2):
            with pytest.raises(callgate.GatewayUnavailable):
                callgate.check_call("t", {})
        assert len(gateway.of("POST", "/v1/calls")) == 5
        t0 = time.monotonic()
        with pytest.raises(callgate.GatewayUnavailable, match="circuit open"):
            callgate.check_call("t", {})
        assert time.monotonic() - t0 < 0.5 and len(gateway.of("POST", "/v1/calls")) == 5

    def test_half_open_probe_closes(self, configured: FakeGateway) -> None:
        """After the open period one probe goes out; its success closes the circuit."""
        b = runtime().breaker
        for _ in range(5):
            b.failure()
        b.opened_at = time.monotonic() - 31
        callgate.check_call("t", {})
        assert b.state == "closed"


class TestConnectionPool:
    def test_keep_alive_one_connection(self, configured: FakeGateway) -> None:
        """N sequential calls travel over one TCP connection."""
        for _ in range(20):
            callgate.check_call("t", {})
        assert configured.connections == 1 and runtime().client.pool.connections_opened == 1

    def test_stale_idle_connection_replaced(self, configured: FakeGateway) -> None:
        """An idle connection the server closed is replaced transparently (no retry used)."""
        callgate.check_call("t", {})
        for c in runtime().client.pool._idle:  # simulate the server's idle timeout from its side
            c.sock.shutdown(1)  # half-close: our next request must detect and not use it blindly
        callgate.check_call("t", {})
        assert len(configured.of("POST", "/v1/calls")) == 2

    def test_threads_share_bounded_pool(self, gateway: FakeGateway, tmp_path: Any) -> None:
        """32 threads x 20 calls all succeed, each with its own id, over a bounded set of connections."""
        callgate.configure(gateway.url, API_KEY, "a", spool_dir=tmp_path, max_connections=8)
        errors: list[BaseException] = []
        ids: list[str] = []
        lock = threading.Lock()

        def work() -> None:
            try:
                for _ in range(20):
                    p = callgate.check_call("t", {"x": threading.get_ident()})
                    with lock:
                        ids.append(p.call_id)
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=work) for _ in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert errors == [] and len(ids) == 640 and len(set(ids)) == 640
        assert sorted(ids) == sorted(call_ids(gateway))
        assert runtime().client.pool.connections_opened <= 8

    @pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
    def test_fork_child_uses_new_socket(self, configured: FakeGateway) -> None:
        """A forked child never reuses the parent's socket; both keep working."""
        callgate.check_call("parent-1", {})
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            code = 1
            try:
                callgate.check_call("child", {})
                pool = runtime().client.pool
                code = 0 if pool.connections_opened >= 1 and pool._pid == os.getpid() else 2
            finally:
                os.write(w, bytes([code]))
                os._exit(0)
        os.close(w)
        status = os.read(r, 1)
        os.close(r)
        os.waitpid(pid, 0)
        assert status == b"\x00"
        callgate.check_call("parent-2", {})
        by_tool = {rq.body["tool"]: rq.conn for rq in configured.of("POST", "/v1/calls")}
        assert by_tool["parent-1"] == by_tool["parent-2"] != by_tool["child"]

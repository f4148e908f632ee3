"""Fixtures for the SDK tests: a small real HTTP/1.1 keep-alive server that behaves like the
gateway's wire protocol (records every request; long-poll; failure injection)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

import callgate

API_KEY = "cg_agent_test_key"
AGENT = "agent-1"


class Recorded:
    def __init__(self, method: str, path: str, headers: dict[str, str], body: Any, conn: int) -> None:
        self.method, self.path, self.headers, self.body, self.conn = method, path, headers, body, conn

    def __repr__(self) -> str:
        return f"<{self.method} {self.path} conn={self.conn}>"


class FakeGateway:
    """State machine of the protocol in memory. ``rules[tool] = (decision, reason, rule)``;
    ``inject`` is a list of (path_prefix, action) consumed one per matching request:
    action is an int status, ("retry_after", s), "drop" (close without answering) or
    ("sleep", s)."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.calls: dict[str, dict[str, Any]] = {}
        self.bodies: dict[str, Any] = {}
        self.outcomes: dict[str, dict[str, Any]] = {}
        self.claims: dict[str, int] = {}
        self.claim_conflict = False
        self.rules: dict[str, tuple[str, str | None, str | None]] = {}
        self.inject: list[tuple[str, Any]] = []
        self.cond = threading.Condition()
        self.connections = 0
        self.closing = False
        self.lock = threading.Lock()
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.gw = self
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FakeGateway:
        self.thread.start()
        return self

    def stop(self) -> None:
        with self.cond:
            self.closing = True
            self.cond.notify_all()
        self.server.shutdown()
        self.server.server_close()

    def decide(self, call_id: str, status: str, comment: str | None = None) -> None:
        with self.cond:
            self.calls[call_id].update(status=status, comment=comment, decided_by="reviewer@example.com")
            self.cond.notify_all()

    def wait_for_pending(self, n: int = 1, timeout: float = 5.0) -> list[str]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.cond:
                ids = [cid for cid, c in self.calls.items() if c["status"] == "pending"]
            if len(ids) >= n:
                return ids
            time.sleep(0.005)
        raise AssertionError(f"expected {n} pending calls")

    def of(self, method: str, prefix: str) -> list[Recorded]:
        """Requests to exactly ``prefix`` (or under it, when it ends with "/")."""
        with self.lock:
            return [r for r in self.requests if r.method == method and (
                r.path.split("?")[0] == prefix or (prefix.endswith("/") and r.path.startswith(prefix)))]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # 200+ clients connect at once in the async test
    gw: FakeGateway

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, OSError)):
            super().handle_error(request, client_address)  # clients hanging up are expected

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.gw.lock:
            self.gw.connections += 1
        super().process_request(request, client_address)


def _problem(status: int, code: str, detail: str = "") -> tuple[int, dict[str, Any]]:
    return status, {"type": f"https://callgate.dev/errors/{code}", "title": code, "status": status,
                    "detail": detail, "code": code}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        ctype = "application/problem+json" if status >= 400 else "application/json"
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _handle(self, method: str) -> None:
        gw = self.server.gw
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        url = urlsplit(self.path)
        with gw.lock:
            gw.requests.append(Recorded(method, self.path, {k.lower(): v for k, v in self.headers.items()}, body,
                                        id(self.connection)))
            action = None
            for i, (prefix, act) in enumerate(gw.inject):
                if url.path.startswith(prefix):
                    action = gw.inject.pop(i)[1]
                    break
        if action == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if isinstance(action, tuple) and action[0] == "sleep":
            time.sleep(action[1])
        elif isinstance(action, tuple) and action[0] == "retry_after":
            self._send(*_problem(429, "rate_limited"), headers={"Retry-After": str(action[1])})
            return
        elif isinstance(action, int):
            self._send(*_problem(action, f"http_{action}"))
            return
        if self.headers.get("Authorization") != f"Bearer {API_KEY}":
            self._send(*_problem(401, "unauthorized", "bad api key"))
            return
        parts = url.path.strip("/").split("/")
        if method == "POST" and parts == ["v1", "calls"]:
            self._send(*self._create(gw, body))
        elif method == "GET" and len(parts) == 3 and parts[:2] == ["v1", "calls"]:
            wait = float(parse_qs(url.query).get("wait", ["0"])[0])
            self._send(*self._get(gw, parts[2], wait))
        elif method == "POST" and len(parts) == 4 and parts[3] == "claim":
            self._send(*self._claim(gw, parts[2]))
        elif method == "POST" and len(parts) == 4 and parts[3] == "outcome":
            self._send(*self._outcome(gw, parts[2], body))
        else:
            self._send(*_problem(404, "not_found"))

    @staticmethod
    def _create(gw: FakeGateway, body: dict[str, Any]) -> tuple[int, Any]:
        cid = body["id"]
        with gw.cond:
            if cid in gw.calls:
                if gw.bodies[cid] != body:
                    return _problem(422, "idempotency_key_reused", "same id, different body")
                return 200, gw.calls[cid]
            if body.get("fail_open"):
                decision, reason, rule = "allow", "fail-open upload", None
                status = "succeeded"
            else:
                decision, reason, rule = gw.rules.get(body["tool"], ("allow", None, None))
                status = {"allow": "allowed", "block": "blocked", "require_approval": "pending"}[decision]
            gw.bodies[cid] = body
            gw.calls[cid] = {"call_id": cid, "tool": body["tool"], "decision": decision, "status": status, "reason": reason, "rule": rule,
                             "policy_version": 3, "expires_at": None}
            return 201, gw.calls[cid]

    @staticmethod
    def _get(gw: FakeGateway, cid: str, wait: float) -> tuple[int, Any]:
        end = time.monotonic() + min(wait, 30)
        with gw.cond:
            if cid not in gw.calls:
                return _problem(404, "call_not_found")
            while gw.calls[cid]["status"] == "pending" and not gw.closing:
                left = end - time.monotonic()
                if left <= 0:
                    break
                gw.cond.wait(left)
            return 200, dict(gw.calls[cid])

    @staticmethod
    def _claim(gw: FakeGateway, cid: str) -> tuple[int, Any]:
        """The one-shot claim: approved -> running once; anything else is a 409."""
        with gw.cond:
            if cid not in gw.calls:
                return _problem(404, "call_not_found")
            call = gw.calls[cid]
            gw.claims[cid] = gw.claims.get(cid, 0) + 1
            if gw.claim_conflict:  # another process won the claim
                return _problem(409, "already_claimed", "claimed by another process")
            if call["status"] == "approved":
                call["status"] = "running"
                return 200, {"claimed": True, **call}
            if call["status"] in ("running", "succeeded", "failed", "allowed"):
                return _problem(409, "already_claimed", "already claimed")
            return _problem(409, "not_runnable", f"call is {call['status']}")

    @staticmethod
    def _outcome(gw: FakeGateway, cid: str, body: dict[str, Any]) -> tuple[int, Any]:
        with gw.cond:
            if cid not in gw.calls:
                return _problem(404, "call_not_found")
            if cid in gw.outcomes:
                if gw.outcomes[cid] != body:
                    return _problem(409, "outcome_already_recorded")
                return 200, {"call_id": cid}
            gw.outcomes[cid] = body
            return 200, {"call_id": cid}


@pytest.fixture(autouse=True)
def _clean_slate(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts unconfigured, with no CALLGATE_* environment, and ends reset."""
    for var in ("CALLGATE_URL", "CALLGATE_API_KEY", "CALLGATE_AGENT", "CALLGATE_SDK_FORCE_FAIL_CLOSED",
                "CALLGATE_SPOOL_DIR"):
        monkeypatch.delenv(var, raising=False)
    callgate.reset()
    yield
    callgate.reset()


@pytest.fixture(name="gateway")
def _gateway() -> Iterator[FakeGateway]:
    gw = FakeGateway().start()
    yield gw
    gw.stop()


@pytest.fixture(name="configured")
def _configured(gateway: FakeGateway, tmp_path: Any) -> FakeGateway:
    callgate.configure(gateway.url, API_KEY, AGENT, spool_dir=tmp_path / "spool")
    return gateway


def closed_port_url() -> str:
    """A URL on which nothing listens (connection refused at once)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


@pytest.fixture(name="dead_url")
def _dead_url() -> str:
    return closed_port_url()

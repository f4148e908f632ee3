"""A real webhook receiver for tests: ``http.server`` on 127.0.0.1 in a thread.

It records every request (headers, exact body bytes, arrival time) and answers from a script:
each request takes the next ``Reply`` (status, delay before answering, extra headers, body); when
the script runs out it answers ``default``. ``arrived`` is set on every request, so a test can
act (e.g. kill a worker) while a slow reply is still being held.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook


@dataclass(frozen=True)
class Reply:
    status: int = 200
    delay: float = 0.0
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b"ok"


@dataclass
class Received:
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    at: float

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    def verify(self, secret: str) -> Any:
        """The parsed payload if the Standard Webhooks signature verifies (raises otherwise)."""
        return Webhook(secret).verify(self.body, self.headers)


@dataclass
class Receiver:
    url: str
    port: int
    requests: list[Received] = field(default_factory=list)
    script: list[Reply] = field(default_factory=list)
    default: Reply = field(default_factory=Reply)
    arrived: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer_with(self, replies: Iterable[Reply | int]) -> None:
        with self.lock:
            self.script = [r if isinstance(r, Reply) else Reply(r) for r in replies]

    def _next(self) -> Reply:
        with self.lock:
            return self.script.pop(0) if self.script else self.default

    def wait_for(self, count: int, timeout: float = 15.0) -> list[Received]:
        """Block until at least ``count`` requests arrived (completed bodies); all of them."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                if len(self.requests) >= count:
                    return list(self.requests)
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} webhook requests within {timeout}s, got {len(self.requests)}")
            time.sleep(0.02)

    def ids(self) -> list[str]:
        with self.lock:
            return [r.webhook_id for r in self.requests]


class QuietHTTPServer(ThreadingHTTPServer):
    """Clients that hang up (a sender's timeout, a capped read) are expected here, not errors."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            with receiver.lock:
                receiver.requests.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body,
                                                  time.time()))
            receiver.arrived.set()
            reply = receiver._next()
            if reply.delay:
                time.sleep(reply.delay)
            try:
                self.send_response(reply.status)
                for name, value in reply.headers:
                    self.send_header(name, value)
                self.send_header("content-length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)
            except OSError:
                pass  # the client gave up (timeout): nothing to answer

        do_GET = do_POST  # a followed redirect would arrive as a GET: recorded, so tests can see it

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def running_receiver(path: str = "/hook") -> Iterator[Receiver]:
    server = QuietHTTPServer(("127.0.0.1", 0), _handler(Receiver("", 0)))
    port = server.server_address[1]
    receiver = Receiver(f"http://127.0.0.1:{port}{path}", port)
    server.RequestHandlerClass = _handler(receiver)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)

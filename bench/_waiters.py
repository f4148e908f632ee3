"""Asyncio raw-socket HTTP/1.1 clients for P5: submit many calls, then hold one long-poll each.

Why not httpx or aiohttp: holding 20,000 requests at once, the client must cost far less than
the server it measures. Each held poll here is one ``asyncio.Protocol`` with a ~200-byte
request and a Content-Length parser: nothing else is allocated per waiter, and the parent runs
it on uvloop when installed.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


def _parse(buf: bytes) -> tuple[int, bytes, int] | None:
    """(status, body, bytes consumed) of the first complete Content-Length framed response."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = buf[:end]
    i = head.lower().find(b"content-length:")
    length = 0
    if i >= 0:
        j = head.find(b"\r\n", i)
        length = int(head[i + 15:j if j > 0 else None])
    total = end + 4 + length
    if len(buf) < total:
        return None
    return int(head[9:12]), buf[end + 4:total], total


@dataclass(slots=True)
class Answer:
    status: int = 0
    body: bytes = b""
    at: float = 0.0  # time.monotonic() when the final answer had arrived
    error: str = ""


class HeldPolls:
    """N long-polls, one keep-alive connection each (see :func:`hold_polls`)."""

    def __init__(self, n: int) -> None:
        self.answers = [Answer() for _ in range(n)]
        self.opened_at = time.monotonic()
        self.all_sent_at = 0.0
        self.connected = 0
        self.repolls = 0  # waits that ended still pending and were renewed, as the SDK renews them
        self._remaining = n
        self._all_answered = asyncio.Event()

    @property
    def answered(self) -> int:
        return len(self.answers) - self._remaining

    def _done(self, answer: Answer, status: int, body: bytes, error: str = "") -> None:
        if answer.at:
            return
        answer.at, answer.status, answer.body, answer.error = time.monotonic(), status, body, error
        self._remaining -= 1
        if self._remaining == 0:
            self._all_answered.set()

    async def wait_all(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._all_answered.wait(), timeout)
            return True
        except TimeoutError:
            return False


class _Poll(asyncio.Protocol):
    """One held long-poll: sends the GET, renews it on the same connection while the answer is
    still ``pending`` (the gateway caps a wait at 30 s), records the first other answer."""

    __slots__ = ("request", "answer", "held", "buf", "transport")

    def __init__(self, request: bytes, answer: Answer, held: HeldPolls) -> None:
        self.request = request
        self.answer = answer
        self.held = held
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.held.connected += 1
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        parsed = _parse(self.buf)
        if parsed is None:
            return
        status, body, used = parsed
        self.buf = self.buf[used:]
        assert self.transport is not None
        if status == 200 and b'"status":"pending"' in body:
            self.held.repolls += 1
            self.transport.write(self.request)
            return
        self.held._done(self.answer, status, body)
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.held._done(self.answer, 0, b"", f"connection lost before the answer: {exc!r}")


async def hold_polls(host: str, port: int, key: str, call_ids: Sequence[str], *, wait: int,
                     concurrency: int = 256) -> HeldPolls:
    """Open one keep-alive connection per call id and long-poll ``GET /v1/calls/{id}?wait=`` on it
    until the call is no longer pending; returns once every first request is sent (the answers
    arrive later, into ``HeldPolls.answers``)."""
    loop = asyncio.get_running_loop()
    held = HeldPolls(len(call_ids))
    gate = asyncio.Semaphore(concurrency)  # bounded connects: never overflow the listen backlog

    async def open_one(call_id: str, answer: Answer) -> None:
        request = (f"GET /v1/calls/{call_id}?wait={wait} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                   f"Authorization: Bearer {key}\r\n\r\n").encode()
        async with gate:
            try:
                await loop.create_connection(lambda: _Poll(request, answer, held), host, port)
            except OSError as exc:
                held._done(answer, 0, b"", f"connect failed: {exc!r}")

    await asyncio.gather(*(open_one(c, a) for c, a in zip(call_ids, held.answers, strict=True)))
    held.all_sent_at = time.monotonic()
    return held


async def submit_calls(host: str, port: int, key: str, n: int, body: Callable[[str], dict[str, Any]], *,
                       connections: int = 32, expect: str = "pending") -> list[str]:
    """Submit ``n`` calls (``POST /v1/calls``) over ``connections`` keep-alive connections;
    returns their ids. Every answer must be 201 with status ``expect``."""
    ids = [str(uuid.uuid4()) for _ in range(n)]
    head = (f"POST /v1/calls HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {key}\r\n"
            "Content-Type: application/json\r\n").encode()
    cursor = iter(ids)

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for call_id in cursor:
                payload = json.dumps(body(call_id), separators=(",", ":")).encode()
                writer.write(head + b"Content-Length: %d\r\n\r\n" % len(payload) + payload)
                response_head = await reader.readuntil(b"\r\n\r\n")
                i = response_head.lower().find(b"content-length:")
                length = int(response_head[i + 15:response_head.find(b"\r\n", i)]) if i >= 0 else 0
                answer = await reader.readexactly(length)
                status = int(response_head[9:12])
                if status != 201 or json.loads(answer)["status"] != expect:
                    raise RuntimeError(f"POST /v1/calls answered {status}: {answer[:300]!r}")
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return ids

"""P2's floors: a held long-poll woken through Redis pub/sub, with nothing else in the way.

    python bench/_wakeup_floor.py PORT REDIS_PORT CHANNEL [PG_DSN]

One asyncio.Protocol HTTP/1.1 server (uvloop when installed) and two raw RESP connections to
Redis on 127.0.0.1 (one SUBSCRIBEd to CHANNEL, one to PUBLISH). No framework, no JSON: what is
left is the loopback, Redis and the event loop, i.e. the physical floor of "a decision made
elsewhere releases a waiting agent".

- ``GET /wait/{id}``         held until a message ``{id}`` arrives on CHANNEL, then 200 ``approved``
- ``GET /wait/{id}?claim=1`` the same, but before answering it claims ``{id}`` once, durably:
  ``INSERT INTO floor_claim ... ON CONFLICT DO NOTHING`` in autocommit on PG_DSN (psycopg async,
  ``synchronous_commit`` on). The floor of an at-most-once release: one fsync'd write.
- ``POST /approve/{id}``     PUBLISH CHANNEL ``{id}``; 200 once Redis acknowledged (the approver's
  request: run two of these servers, approve on one, wait on the other)
- anything else              200 ``ok`` (readiness probe)
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections import deque
from typing import Any


def _response(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


APPROVED = _response(b"approved")
OK = _response(b"ok")


def _resp_command(*parts: bytes) -> bytes:
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


def _parse_resp(buf: bytes, pos: int) -> tuple[object, int] | None:
    """One RESP2 value (simple string, error, integer, bulk string, array) at ``pos``."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        return None
    kind, line = buf[pos:pos + 1], buf[pos + 1:end]
    if kind in (b"+", b"-"):
        return line, end + 2
    if kind == b":":
        return int(line), end + 2
    if kind == b"$":
        n = int(line)
        if n < 0:
            return None, end + 2
        if len(buf) < end + 2 + n + 2:
            return None
        return buf[end + 2:end + 2 + n], end + 2 + n + 2
    if kind == b"*":
        items, at = [], end + 2
        for _ in range(int(line)):
            parsed = _parse_resp(buf, at)
            if parsed is None:
                return None
            item, at = parsed
            items.append(item)
        return items, at
    raise ValueError(f"unexpected RESP type {kind!r}")


class _Redis(asyncio.Protocol):
    """A raw RESP connection: feeds every parsed value to ``on_value``."""

    def __init__(self, on_value) -> None:  # type: ignore[no-untyped-def]
        self.on_value = on_value
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        pos = 0
        while True:
            parsed = _parse_resp(self.buf, pos)
            if parsed is None:
                break
            value, pos = parsed
            self.on_value(value)
        self.buf = self.buf[pos:]


class Floor:
    def __init__(self, channel: bytes, claims: Any = None) -> None:
        self.channel = channel
        self.waiting: dict[bytes, list[tuple[asyncio.Transport, bool]]] = {}
        self.acks: deque[asyncio.Transport] = deque()
        self.publisher: _Redis | None = None
        self.claims = claims  # psycopg.AsyncConnection (autocommit) for ?claim=1

    def on_message(self, value: object) -> None:
        if isinstance(value, list) and len(value) == 3 and value[0] == b"message":
            for transport, claim in self.waiting.pop(value[2], ()):  # type: ignore[arg-type]
                if claim:
                    asyncio.ensure_future(self.claim_then_answer(value[2], transport))  # type: ignore[arg-type]
                else:
                    transport.write(APPROVED)

    async def claim_then_answer(self, token: bytes, transport: asyncio.Transport) -> None:
        await self.claims.execute("INSERT INTO floor_claim (token) VALUES (%s) ON CONFLICT DO NOTHING",
                                  (token.decode(),))
        transport.write(APPROVED)

    def on_publish_reply(self, _value: object) -> None:
        self.acks.popleft().write(OK)

    def http(self) -> asyncio.Protocol:
        floor = self

        class Http(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport
                self.buf = b""

            def data_received(self, data: bytes) -> None:
                self.buf += data
                while True:
                    end = self.buf.find(b"\r\n\r\n")
                    if end < 0:
                        return
                    head = self.buf[:end]
                    i = head.lower().find(b"content-length:")
                    length = int(head[i + 15:head.find(b"\r\n", i) if head.find(b"\r\n", i) > 0 else None]) \
                        if i >= 0 else 0
                    if len(self.buf) < end + 4 + length:
                        return
                    self.buf = self.buf[end + 4 + length:]
                    method, target = head.split(b" ", 2)[:2]
                    if method == b"GET" and target.startswith(b"/wait/"):
                        token, _, query = target[6:].partition(b"?")
                        floor.waiting.setdefault(token, []).append((self.transport, query == b"claim=1"))
                    elif method == b"POST" and target.startswith(b"/approve/"):
                        assert floor.publisher is not None and floor.publisher.transport is not None
                        floor.acks.append(self.transport)  # type: ignore[arg-type]
                        floor.publisher.transport.write(_resp_command(b"PUBLISH", floor.channel, target[9:]))
                    else:
                        self.transport.write(OK)  # type: ignore[attr-defined]

        return Http()


async def main(port: int, redis_port: int, channel: bytes, pg_dsn: str | None) -> None:
    loop = asyncio.get_running_loop()
    claims = None
    if pg_dsn:
        import psycopg

        claims = await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True)
        await claims.execute("CREATE TABLE IF NOT EXISTS floor_claim (token text PRIMARY KEY)")
    floor = Floor(channel, claims)
    subscribed = loop.create_future()

    def on_sub_value(value: object) -> None:
        if isinstance(value, list) and value and value[0] == b"subscribe" and not subscribed.done():
            subscribed.set_result(True)
        else:
            floor.on_message(value)

    sub_transport, _ = await loop.create_connection(lambda: _Redis(on_sub_value), "127.0.0.1", redis_port)
    sub_transport.write(_resp_command(b"SUBSCRIBE", channel))
    await asyncio.wait_for(subscribed, 10)
    _, floor.publisher = await loop.create_connection(lambda: _Redis(floor.on_publish_reply), "127.0.0.1",
                                                      redis_port)
    server = await loop.create_server(floor.http, "127.0.0.1", port, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    args = (int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].encode(), sys.argv[4] if len(sys.argv) > 4 else None)
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(*args))
    else:
        uvloop.run(main(*args))

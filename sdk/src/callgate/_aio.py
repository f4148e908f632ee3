"""asyncio HTTP/1.1 driver: the event loop is never blocked.

Same framing code as the blocking driver (``_http.ResponseParser``), different I/O:
asyncio streams, one small keep-alive pool per event loop (connections belong to the
loop that opened them). Long-polls cost a socket each and no thread, so thousands of
concurrent ``acheck_call`` approvals wait for free. Imported lazily: ``import callgate``
never pulls in asyncio through us.
"""

from __future__ import annotations

import asyncio
import time
import weakref

from ._http import ProtocolError, Response, ResponseParser, build_request
from ._transport import Origin, TransportError

__all__ = ["AsyncPool", "pool_for_loop"]


class _AConn:
    __slots__ = ("reader", "writer", "uses")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.uses = 0

    def close(self) -> None:
        try:
            self.writer.close()
        except Exception:  # noqa: BLE001 - loop may be closed already
            pass

    def usable(self) -> bool:
        # Buffered bytes on an idle connection are junk (or an early close): never reuse it.
        return not (self.writer.is_closing() or self.reader.at_eof() or self.reader._buffer)  # type: ignore[attr-defined]


class AsyncPool:
    """Keep-alive pool bound to the running loop. Not thread-safe: one per loop."""

    def __init__(self, origin: Origin, *, max_idle: int = 32, connect_timeout: float = 2.0) -> None:
        self.origin = origin
        self.max_idle = max_idle
        self.connect_timeout = connect_timeout
        self._idle: list[_AConn] = []
        self.connections_opened = 0
        self._closed = False

    async def request(self, method: str, path: str, body: bytes | None, *, read_timeout: float,
                      deadline: float) -> Response:
        if self._closed:
            raise TransportError("closed", "connection pool closed")
        data = build_request(method, self.origin.target(path), self.origin.head, body)
        conn = self._checkout()
        fresh = conn is None
        if conn is None:
            conn = await self._connect(deadline)
        try:
            return await self._exchange(conn, data, read_timeout, deadline)
        except _Stale:
            if fresh:
                raise TransportError("reset", "connection closed before any response") from None
            conn = await self._connect(deadline)
            try:
                return await self._exchange(conn, data, read_timeout, deadline)
            except _Stale:
                raise TransportError("reset", "connection closed before any response") from None

    def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for c in idle:
            c.close()

    def _checkout(self) -> _AConn | None:
        while self._idle:
            conn = self._idle.pop()
            if conn.usable():
                return conn
            conn.close()
        return None

    async def _connect(self, deadline: float) -> _AConn:
        timeout = min(self.connect_timeout, deadline - time.monotonic())
        if timeout <= 0:
            raise TransportError("timeout", "deadline reached before connecting")
        o = self.origin
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    o.host, o.port, ssl=o.ssl_context, server_hostname=o.host if o.ssl_context else None,
                    limit=1 << 20,
                )
        except TimeoutError:
            raise TransportError("connect_timeout", f"connect to {o.host}:{o.port} timed out") from None
        except OSError as e:
            raise TransportError("connect", f"connect to {o.host}:{o.port} failed: {e}") from None
        self.connections_opened += 1
        return _AConn(reader, writer)  # asyncio sets TCP_NODELAY on TCP transports itself

    async def _exchange(self, conn: _AConn, data: bytes, read_timeout: float, deadline: float) -> Response:
        reused = conn.uses > 0
        conn.uses += 1
        parser = ResponseParser()
        ok = False
        timeout = min(read_timeout, deadline - time.monotonic())
        try:
            if timeout <= 0:
                raise TransportError("timeout", "deadline reached")
            async with asyncio.timeout(timeout):
                try:
                    conn.writer.write(data)
                    await conn.writer.drain()
                except (BrokenPipeError, ConnectionResetError) as e:
                    if reused:
                        raise _Stale() from e
                    raise TransportError("reset", f"send failed: {e}") from None
                while True:
                    try:
                        chunk = await conn.reader.read(65536)
                    except ConnectionResetError as e:
                        if reused and parser.bytes_seen == 0:
                            raise _Stale() from e
                        raise TransportError("reset", f"connection reset: {e}") from None
                    if not chunk:
                        if reused and parser.bytes_seen == 0:
                            raise _Stale()
                        resp = parser.feed_eof()
                        break
                    got = parser.feed(chunk)
                    if got is not None:
                        resp = got
                        break
            ok = resp.keep_alive and not parser.leftover
            return resp
        except TimeoutError:
            raise TransportError("read_timeout", f"no response within {timeout:.1f}s") from None
        except ProtocolError as e:
            raise TransportError("protocol", str(e)) from None
        except OSError as e:
            raise TransportError("io", str(e)) from None
        finally:
            if ok and not self._closed and len(self._idle) < self.max_idle:
                self._idle.append(conn)
            else:
                conn.close()


class _Stale(Exception):
    """Internal: reused idle connection failed before any response byte."""


_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncPool] = weakref.WeakKeyDictionary()


def pool_for_loop(origin: Origin, connect_timeout: float) -> AsyncPool:
    """The running loop's pool for ``origin`` (a new one after reconfigure)."""
    loop = asyncio.get_running_loop()
    pool = _pools.get(loop)
    if pool is None or pool.origin is not origin:
        if pool is not None:
            pool.close()
        pool = _pools[loop] = AsyncPool(origin, connect_timeout=connect_timeout)
    return pool


def close_all() -> None:
    """Close every loop's pool (reset/reconfigure); thread-safe towards running loops."""
    for loop, pool in list(_pools.items()):
        if loop.is_closed():
            continue
        try:
            loop.call_soon_threadsafe(pool.close)
        except RuntimeError:  # loop closed concurrently
            pass
    _pools.clear()

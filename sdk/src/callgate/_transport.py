"""Blocking HTTP/1.1 driver: a small keep-alive connection pool over raw sockets.

Why: one pooled connection per process is the single biggest latency lever
(performance.md: building a client per call costs ~42 ms; a reused raw socket ~0.1 ms).
Design:

* a connection is checked out per in-flight request, so threads never share a socket
  mid-request; idle connections are reused LIFO (warmest first); at most
  ``max_connections`` exist at once (callers wait for a slot within their deadline);
* fork-safe: the pool remembers its pid; a child never touches an inherited socket
  (they are closed without ``shutdown()``, which would also kill the parent's), and
  ``os.register_at_fork`` drops them eagerly;
* http and https (one ``SSLContext`` built once at configure), TCP_NODELAY;
* a reused idle socket that turns out dead before any response byte arrives (the server
  closed it while idle) is retried once, immediately, on a fresh socket: that is not a
  gateway failure and must not consume a retry attempt or trip the circuit breaker.

Framing lives in ``_http`` and is shared with the asyncio driver (``_aio``).
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time
import weakref
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ._http import ProtocolError, Response, ResponseParser, build_request

if TYPE_CHECKING:
    import ssl

__all__ = ["Origin", "SyncPool", "TransportError"]

_USER_AGENT = "callgate-python/0.1.0"


class TransportError(Exception):
    """Connect/read/write failure, timeout or malformed response: no usable HTTP answer."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


class Origin:
    """Where the gateway is and how to reach it; immutable, built once at configure."""

    __slots__ = ("url", "scheme", "host", "port", "base_path", "ssl_context", "head")

    def __init__(self, url: str, api_key: str | None, ssl_context: ssl.SSLContext | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"gateway url must be http(s)://host[:port][/prefix], got {url!r}")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ValueError("gateway url must not carry credentials, a query or a fragment")
        self.url = url.rstrip("/")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.base_path = parts.path.rstrip("/")
        if self.scheme == "https":
            if ssl_context is None:
                import ssl as _ssl  # only https users pay for the ssl import (~10 ms)

                ssl_context = _ssl.create_default_context()
            self.ssl_context: ssl.SSLContext | None = ssl_context
        else:
            self.ssl_context = None
        default_port = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        host_header = host if self.port == default_port else f"{host}:{self.port}"
        head = f"Host: {host_header}\r\nUser-Agent: {_USER_AGENT}\r\nAccept: application/json\r\n"
        if api_key:
            if any(c in api_key for c in "\r\n"):
                raise ValueError("api key contains a line break")
            head += f"Authorization: Bearer {api_key}\r\n"
        self.head = head.encode("latin-1")

    def target(self, path: str) -> str:
        return self.base_path + path


class _Conn:
    __slots__ = ("sock", "pid", "uses")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.pid = os.getpid()
        self.uses = 0

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:  # pragma: no cover
            pass


_POOLS: weakref.WeakSet[SyncPool] = weakref.WeakSet()


class SyncPool:
    """Thread-safe keep-alive pool for one origin."""

    def __init__(self, origin: Origin, *, max_connections: int = 32, max_idle: int = 8,
                 connect_timeout: float = 2.0) -> None:
        self.origin = origin
        self.max_connections = max_connections
        self.max_idle = max_idle
        self.connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_connections)
        self._idle: list[_Conn] = []
        self._pid = os.getpid()
        self.connections_opened = 0  # observability / tests
        self._closed = False
        _POOLS.add(self)

    # -- public ------------------------------------------------------------------------
    def request(self, method: str, path: str, body: bytes | None, *, read_timeout: float,
                deadline: float) -> Response:
        """Send one request and return the response. Raises :class:`TransportError`."""
        if self._closed:
            raise TransportError("closed", "connection pool closed (callgate was reconfigured or reset)")
        self._check_pid()
        data = build_request(method, self.origin.target(path), self.origin.head, body)
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not self._slots.acquire(timeout=remaining):
            raise TransportError("timeout", "no connection slot before the deadline")
        try:
            conn = self._checkout()
            fresh = conn is None
            try:
                if conn is None:
                    conn = self._connect(deadline)
                return self._exchange(conn, data, read_timeout, deadline)
            except _StaleConnection:
                # The idle socket died while parked; one immediate retry on a fresh one.
                if fresh:
                    raise TransportError("reset", "connection closed before any response") from None
                conn = self._connect(deadline)
                try:
                    return self._exchange(conn, data, read_timeout, deadline)
                except _StaleConnection:
                    raise TransportError("reset", "connection closed before any response") from None
        finally:
            self._slots.release()

    def close(self) -> None:
        """Close idle connections and refuse new requests."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for c in idle:
            c.close()

    def drop_after_fork(self) -> None:
        """In a forked child: forget (close our fd of) every inherited socket."""
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self.max_connections)
        idle, self._idle = self._idle, []
        self._pid = os.getpid()
        for c in idle:
            c.close()

    # -- internals ---------------------------------------------------------------------
    def _check_pid(self) -> None:
        if self._pid != os.getpid():  # fork without register_at_fork (or it raced)
            self.drop_after_fork()

    def _checkout(self) -> _Conn | None:
        while True:
            with self._lock:
                if not self._idle:
                    return None
                conn = self._idle.pop()
            # A readable idle socket means EOF (server closed it) or junk: never reuse it.
            try:
                readable = select.select([conn.sock], [], [], 0)[0]
            except (OSError, ValueError):
                readable = [conn.sock]
            if not readable:
                return conn
            conn.close()

    def _checkin(self, conn: _Conn) -> None:
        if conn.pid == os.getpid():
            with self._lock:
                if not self._closed and len(self._idle) < self.max_idle:
                    self._idle.append(conn)
                    return
        conn.close()

    def _connect(self, deadline: float) -> _Conn:
        timeout = min(self.connect_timeout, deadline - time.monotonic())
        if timeout <= 0:
            raise TransportError("timeout", "deadline reached before connecting")
        o = self.origin
        try:
            sock = socket.create_connection((o.host, o.port), timeout=timeout)
        except socket.timeout:
            raise TransportError("connect_timeout", f"connect to {o.host}:{o.port} timed out") from None
        except OSError as e:
            raise TransportError("connect", f"connect to {o.host}:{o.port} failed: {e}") from None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if o.ssl_context is not None:
                sock = o.ssl_context.wrap_socket(sock, server_hostname=o.host)
        except OSError as e:  # ssl.SSLError is an OSError
            sock.close()
            raise TransportError("tls", f"TLS handshake with {o.host}:{o.port} failed: {e}") from None
        with self._lock:
            self.connections_opened += 1
        return _Conn(sock)

    def _exchange(self, conn: _Conn, data: bytes, read_timeout: float, deadline: float) -> Response:
        reused = conn.uses > 0
        conn.uses += 1
        sock = conn.sock
        parser = ResponseParser()
        ok = False
        try:
            timeout = min(read_timeout, deadline - time.monotonic())
            if timeout <= 0:
                raise TransportError("timeout", "deadline reached")
            sock.settimeout(timeout)
            try:
                sock.sendall(data)
            except (BrokenPipeError, ConnectionResetError) as e:
                if reused:
                    raise _StaleConnection() from e
                raise TransportError("reset", f"send failed: {e}") from None
            while True:
                try:
                    chunk = sock.recv(65536)
                except socket.timeout:
                    raise TransportError("read_timeout", f"no response within {timeout:.1f}s") from None
                except ConnectionResetError as e:
                    if reused and parser.bytes_seen == 0:
                        raise _StaleConnection() from e
                    raise TransportError("reset", f"connection reset: {e}") from None
                if not chunk:
                    if reused and parser.bytes_seen == 0:
                        raise _StaleConnection()
                    resp = parser.feed_eof()
                    break
                resp_or_none = parser.feed(chunk)
                if resp_or_none is not None:
                    resp = resp_or_none
                    break
            ok = resp.keep_alive and not parser.leftover
            return resp
        except ProtocolError as e:
            raise TransportError("protocol", str(e)) from None
        except OSError as e:
            raise TransportError("io", str(e)) from None
        finally:
            if ok:
                self._checkin(conn)
            else:
                conn.close()


class _StaleConnection(Exception):
    """Internal: a reused idle socket failed before any response byte (retry once)."""


def _after_fork_in_child() -> None:
    for pool in list(_POOLS):
        pool.drop_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

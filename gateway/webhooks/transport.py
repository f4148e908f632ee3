"""One webhook POST to an address the SSRF guard has already checked.

Built on the standard library (``socket``, ``ssl``, ``http.client``) because it needs three
things generic HTTP clients make awkward:

* **IP pinning**: the TCP connection goes to the checked address (``ssrf.resolve_checked``),
  never to a fresh DNS answer, while ``Host`` and the TLS server name (SNI and the certificate
  check) still carry the URL's host name;
* **a hard deadline** for the whole attempt: a watchdog shuts the socket down when the time is
  up, so a receiver that drips one byte a second cannot hold a worker (or outlive its lease);
* **no redirects, a capped read**: ``http.client`` never follows a ``Location``, and only the
  first ``MAX_EXCERPT`` bytes of the answer are read (what the delivery log keeps).

No proxy from the environment is consulted (it would bypass the pinning).
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gateway.webhooks.ssrf import Destination, IPAddress

__all__ = ["CONNECT_TIMEOUT", "MAX_EXCERPT", "HttpAnswer", "TransportError", "post"]

CONNECT_TIMEOUT = 5.0
MAX_EXCERPT = 1024


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """What the receiver answered (any status: judging it is ``retry``'s job)."""

    status: int
    retry_after: str | None
    excerpt: str  # the first MAX_EXCERPT bytes of the body, decoded leniently
    ip: str


class TransportError(Exception):
    """No HTTP answer. ``kind``: ``timeout``, ``connect``, ``tls`` or ``protocol``."""

    def __init__(self, kind: str, message: str, ip: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.ip = ip


def _ssl_context() -> ssl.SSLContext:
    return ssl.create_default_context()


def post(dest: Destination, addresses: Sequence[IPAddress], body: bytes, headers: Mapping[str, str], *,
         timeout: float, max_excerpt: int = MAX_EXCERPT) -> HttpAnswer:
    """POST ``body`` to ``dest`` through the first of ``addresses`` that accepts a connection.

    Raises ``TransportError`` when no HTTP answer arrives within ``timeout`` seconds in total."""
    deadline = time.monotonic() + timeout
    sock, ip = _connect(addresses, dest.port, deadline)
    watchdog = _Watchdog(sock, deadline)
    try:
        if dest.scheme == "https":
            try:
                sock = _ssl_context().wrap_socket(sock, server_hostname=dest.host)
            except (ssl.SSLError, ssl.CertificateError) as exc:
                raise TransportError("tls", f"TLS handshake with {dest.host} failed: {exc}", ip) from None
            watchdog.sock = sock
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        conn = http.client.HTTPConnection(dest.host, dest.port)
        conn.sock = sock  # already connected to the pinned address: http.client will not resolve again
        try:
            conn.request("POST", dest.target, body=body, headers={**headers, "Host": dest.host_header})
            response = conn.getresponse()
            excerpt = response.read(max_excerpt) if max_excerpt > 0 else b""
            if watchdog.fired:  # the shutdown can look like a (truncated) answer: it is not one
                raise TransportError("timeout", f"no complete answer within {timeout:g} s", ip)
            return HttpAnswer(response.status, response.getheader("retry-after"),
                              excerpt.decode("utf-8", "replace"), ip)
        finally:
            conn.close()
    except TransportError:
        raise
    except (TimeoutError, socket.timeout):
        raise TransportError("timeout", f"no answer within {timeout:g} s", ip) from None
    except (http.client.HTTPException, OSError, ValueError) as exc:
        if watchdog.fired:
            raise TransportError("timeout", f"no complete answer within {timeout:g} s", ip) from None
        kind = "tls" if isinstance(exc, ssl.SSLError) else "protocol"
        raise TransportError(kind, f"{type(exc).__name__}: {exc}", ip) from None
    finally:
        watchdog.cancel()
        try:
            sock.close()
        except OSError:
            pass


def _connect(addresses: Sequence[IPAddress], port: int, deadline: float) -> tuple[socket.socket, str]:
    """A TCP connection to the first reachable checked address (``socket.create_connection`` is
    given an IP literal, so no name is resolved here)."""
    failure = TransportError("connect", "no address to connect to")
    for address in addresses:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        ip = str(address)
        try:
            return socket.create_connection((ip, port), timeout=min(CONNECT_TIMEOUT, remaining)), ip
        except (TimeoutError, socket.timeout):
            failure = TransportError("timeout", f"connecting to {ip}:{port} timed out", ip)
        except OSError as exc:
            failure = TransportError("connect", f"cannot connect to {ip}:{port}: {exc.strerror or exc}", ip)
    if time.monotonic() >= deadline and failure.kind == "connect" and failure.ip is None:
        failure = TransportError("timeout", "the attempt's time ran out before connecting")
    raise failure


class _Watchdog:
    """Shut the socket down at the deadline, whatever the reads are waiting for."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.fired = False
        self._timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        self.fired = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def cancel(self) -> None:
        self._timer.cancel()

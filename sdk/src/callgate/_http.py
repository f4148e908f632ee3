"""HTTP/1.1 framing shared by the sync and the asyncio drivers (sans-I/O).

Why hand-rolled: the SDK client is the largest single cost on an allowed call
(performance.md). ``http.client`` spends most of its time in email-header parsing and
buffered-file layers; a minimal framer over a raw socket is ~2x cheaper per call, and the
same parser drives both the blocking socket driver (``_transport``) and the asyncio
driver (``_aio``), so there is exactly one piece of code that understands HTTP.

Scope, deliberately small: we only talk to our own gateway (or a proxy in front of it),
send small JSON bodies with Content-Length, and parse responses framed by
Content-Length, chunked transfer-coding, or connection close. 1xx interim responses are
skipped. Anything malformed raises :class:`ProtocolError`, which callers treat as a
transport failure.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["MAX_BODY", "MAX_HEAD", "ProtocolError", "Response", "ResponseParser", "build_request"]

MAX_HEAD = 64 * 1024
MAX_BODY = 16 * 1024 * 1024


class ProtocolError(Exception):
    """The peer sent bytes that are not a valid HTTP/1.1 response (or too large)."""


def build_request(method: str, target: str, head: bytes, body: bytes | None) -> bytes:
    """Serialize one request. ``head`` holds the pre-built per-origin header lines
    (Host, Authorization, User-Agent, ...) each ending in CRLF; built once at configure."""
    if body is None:
        return b"%s %s HTTP/1.1\r\n%s\r\n" % (method.encode(), target.encode(), head)
    return b"%s %s HTTP/1.1\r\n%sContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        method.encode(),
        target.encode(),
        head,
        len(body),
        body,
    )


class Response:
    """A complete response. ``headers`` keys are lower-case; repeated headers are joined."""

    __slots__ = ("status", "reason", "headers", "body", "keep_alive")

    def __init__(self, status: int, reason: str, headers: dict[str, str], body: bytes, keep_alive: bool):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive

    def json(self) -> Any:
        """The body parsed as JSON, or None when it is empty or not JSON."""
        if not self.body:
            return None
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def __repr__(self) -> str:
        return f"<Response {self.status} {len(self.body)}B keep_alive={self.keep_alive}>"


_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _TRAILER, _UNTIL_CLOSE, _DONE = range(7)


class ResponseParser:
    """Incremental parser: ``feed()`` bytes until it returns a :class:`Response`.

    ``bytes_seen`` lets the driver tell "the idle socket was dead before anything
    arrived" (safe to retry at once on a fresh socket) from a mid-response failure.
    """

    __slots__ = ("_buf", "_state", "_need", "_body", "_status", "_reason", "_headers", "_keep_alive",
                 "bytes_seen", "_head_only")

    def __init__(self, head_only: bool = False) -> None:
        self._buf = bytearray()
        self._state = _HEAD
        self._need = 0
        self._body = bytearray()
        self._status = 0
        self._reason = ""
        self._headers: dict[str, str] = {}
        self._keep_alive = True
        self.bytes_seen = 0
        self._head_only = head_only

    def feed(self, data: bytes) -> Response | None:
        """Consume ``data``; return the response once complete, else None."""
        self.bytes_seen += len(data)
        self._buf += data
        return self._advance()

    def feed_eof(self) -> Response:
        """The peer closed the connection: complete a close-delimited body or fail."""
        if self._state == _UNTIL_CLOSE:
            self._body += self._buf
            self._buf.clear()
            self._keep_alive = False
            return self._finish()
        if self.bytes_seen == 0:
            raise ProtocolError("connection closed before any response bytes")
        raise ProtocolError("connection closed mid-response")

    # -- internals ---------------------------------------------------------------------
    def _advance(self) -> Response | None:
        buf = self._buf
        while True:
            state = self._state
            if state == _HEAD:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > MAX_HEAD:
                        raise ProtocolError("response head too large")
                    return None
                head = bytes(buf[:end])
                del buf[: end + 4]
                if self._parse_head(head):
                    continue  # 1xx interim response: parse the next head
                if self._state == _DONE:
                    return self._finish()
            elif state == _LENGTH:
                if len(buf) < self._need:
                    return None
                self._body += buf[: self._need]
                del buf[: self._need]
                return self._finish()
            elif state == _CHUNK_SIZE:
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > 1024:
                        raise ProtocolError("chunk size line too long")
                    return None
                line = bytes(buf[:end]).split(b";", 1)[0].strip()
                del buf[: end + 2]
                try:
                    size = int(line, 16)
                except ValueError:
                    raise ProtocolError(f"bad chunk size {line!r}") from None
                if size < 0:
                    raise ProtocolError("negative chunk size")
                if size == 0:
                    self._state = _TRAILER
                else:
                    if len(self._body) + size > MAX_BODY:
                        raise ProtocolError("response body too large")
                    self._need = size + 2
                    self._state = _CHUNK_DATA
            elif state == _CHUNK_DATA:
                if len(buf) < self._need:
                    return None
                if buf[self._need - 2 : self._need] != b"\r\n":
                    raise ProtocolError("chunk not terminated by CRLF")
                self._body += buf[: self._need - 2]
                del buf[: self._need]
                self._state = _CHUNK_SIZE
            elif state == _TRAILER:
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > MAX_HEAD:
                        raise ProtocolError("trailers too large")
                    return None
                del buf[: end + 2]
                if end == 0:  # blank line: end of trailers
                    return self._finish()
            elif state == _UNTIL_CLOSE:
                if len(self._body) + len(buf) > MAX_BODY:
                    raise ProtocolError("response body too large")
                self._body += buf
                buf.clear()
                return None
            else:  # pragma: no cover - _DONE is returned above
                raise ProtocolError("parser reused after completion")

    def _parse_head(self, head: bytes) -> bool:
        """Parse status line + headers; set the body state. Return True for a 1xx."""
        try:
            text = head.decode("latin-1")
        except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes anything
            raise ProtocolError("undecodable head") from None
        lines = text.split("\r\n")
        status_line = lines[0]
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise ProtocolError(f"bad status line {status_line[:80]!r}")
        try:
            status = int(parts[1])
        except ValueError:
            raise ProtocolError(f"bad status code {parts[1][:10]!r}") from None
        if not 100 <= status <= 999:
            raise ProtocolError(f"bad status code {status}")
        if 100 <= status < 200 and status != 101:
            return True
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise ProtocolError(f"bad header line {line[:80]!r}")
            key = name.lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        conn = headers.get("connection", "").lower()
        if parts[0] == "HTTP/1.0":
            keep_alive = "keep-alive" in conn
        else:
            keep_alive = "close" not in conn
        self._status, self._reason, self._headers, self._keep_alive = status, parts[2] if len(parts) > 2 else "", headers, keep_alive
        te = headers.get("transfer-encoding")
        if self._head_only or status in (204, 304):
            self._state = _DONE
        elif te is not None:
            if te.lower().rsplit(",", 1)[-1].strip() != "chunked":
                raise ProtocolError(f"unsupported transfer-encoding {te!r}")
            self._state = _CHUNK_SIZE
        elif "content-length" in headers:
            raw = headers["content-length"].split(",")[0].strip()
            if not raw.isdigit():
                raise ProtocolError(f"bad content-length {raw[:20]!r}")
            self._need = int(raw)
            if self._need > MAX_BODY:
                raise ProtocolError("response body too large")
            self._state = _LENGTH if self._need else _DONE
        else:
            self._state = _UNTIL_CLOSE
            self._keep_alive = False
        return False

    def _finish(self) -> Response:
        self._state = _DONE
        return Response(self._status, self._reason, self._headers, bytes(self._body), self._keep_alive)

    @property
    def leftover(self) -> bool:
        """True when bytes beyond the response arrived (the connection must not be reused)."""
        return bool(self._buf)

"""Tests for callgate._http: the shared HTTP/1.1 response framer."""

from __future__ import annotations

import pytest

from callgate._http import ProtocolError, ResponseParser, build_request


def parse_in_pieces(data: bytes, step: int) -> object:
    p = ResponseParser()
    for i in range(0, len(data), step):
        r = p.feed(data[i : i + step])
        if r is not None:
            return r
    return p.feed_eof()


class TestResponseParser:
    @pytest.mark.parametrize("step", [1, 3, 1000])
    def test_content_length(self, step: int) -> None:
        """A Content-Length body is read exactly, however the bytes are split."""
        r = parse_in_pieces(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-A: 1\r\n\r\n{}", step)
        assert (r.status, r.body, r.keep_alive, r.headers["x-a"]) == (201, b"{}", True, "1")  # type: ignore[attr-defined]

    @pytest.mark.parametrize("step", [1, 7, 1000])
    def test_chunked_with_trailers(self, step: int) -> None:
        """Chunked bodies (with extensions and trailers) are reassembled."""
        data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\nT: v\r\n\r\n"
        r = parse_in_pieces(data, step)
        assert r.body == b'{"a":1}'  # type: ignore[attr-defined]

    def test_close_delimited(self) -> None:
        """Without length or chunking the body runs to EOF and the connection is not reused."""
        p = ResponseParser()
        assert p.feed(b"HTTP/1.1 200 OK\r\n\r\nabc") is None
        r = p.feed_eof()
        assert (r.body, r.keep_alive) == (b"abc", False)

    def test_connection_close_and_http10(self) -> None:
        """Connection: close and HTTP/1.0 without keep-alive disable reuse."""
        assert not ResponseParser().feed(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").keep_alive
        assert not ResponseParser().feed(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").keep_alive

    def test_interim_100_skipped(self) -> None:
        """1xx interim responses are skipped."""
        r = ResponseParser().feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")
        assert r is not None and r.status == 204 and r.body == b""

    @pytest.mark.parametrize("data", [b"garbage\r\n\r\n", b"HTTP/1.1 abc OK\r\n\r\n",
                                      b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
                                      b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                                      b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n"])
    def test_malformed_raises(self, data: bytes) -> None:
        """Malformed responses raise ProtocolError (treated as a transport failure)."""
        with pytest.raises(ProtocolError):
            ResponseParser().feed(data)

    def test_eof_before_bytes(self) -> None:
        """EOF mid-response is an error, never a truncated success."""
        p = ResponseParser()
        p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        with pytest.raises(ProtocolError):
            p.feed_eof()


class TestBuildRequest:
    def test_shape(self) -> None:
        """Requests carry the pre-built head, JSON content type and exact length."""
        raw = build_request("POST", "/v1/calls", b"Host: h\r\n", b"{}")
        assert raw == b"POST /v1/calls HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        assert build_request("GET", "/x", b"Host: h\r\n", None) == b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n"

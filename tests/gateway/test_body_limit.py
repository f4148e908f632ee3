"""Tests for gateway.body_limit (security.md §6.3, §8.3 scenario 25)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator

import pytest
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient
from pydantic import BaseModel

from gateway.body_limit import BodySizeLimitMiddleware, PayloadTooLarge
from gateway.problems import PROBLEM_MEDIA_TYPE, install_problem_handlers

LIMIT = 100


class Body(BaseModel):
    data: str


def create_app(calls: list[str] | None = None, *, limited: bool = True) -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)
    if limited:
        app.add_middleware(BodySizeLimitMiddleware, max_bytes=LIMIT, path_prefixes=("/v1/",))
    seen = calls if calls is not None else []

    @app.post("/v1/raw")
    async def raw(request: Request) -> dict:
        seen.append("raw")
        return {"len": len(await request.body())}

    @app.post("/v1/model")
    async def model(body: Body) -> dict:  # FastAPI reads the body itself
        return {"len": len(body.data)}

    @app.post("/other")
    async def other(request: Request) -> dict:
        return {"len": len(await request.body())}

    @app.get("/v1/stream")
    async def stream() -> StreamingResponse:
        async def gen() -> AsyncIterator[bytes]:
            for i in range(5):
                yield b"x" * 50 + str(i).encode()

        return StreamingResponse(gen(), media_type="text/plain")

    @app.websocket("/v1/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text((await websocket.receive_text()) * 2)
        await websocket.close()

    return app


@pytest.fixture(name="client")
def _client() -> Iterator[TestClient]:
    with TestClient(create_app()) as client:  # runs the lifespan through the middleware
        yield client


def assert_413(resp) -> None:
    assert resp.status_code == 413
    assert resp.headers["content-type"] == PROBLEM_MEDIA_TYPE
    body = resp.json()
    assert body == {
        "type": "https://callgate.dev/errors/payload-too-large",
        "title": "Payload too large",
        "status": 413,
        "detail": f"Request body exceeds {LIMIT} bytes",
        "code": "payload_too_large",
        "limit_bytes": LIMIT,
    }


def chunks(n: int, size: int) -> Iterator[bytes]:
    for _ in range(n):
        yield b"a" * size


class TestThroughTestClient:
    def test_under_and_at_limit(self, client: TestClient) -> None:
        assert client.post("/v1/raw", content=b"a" * LIMIT).json() == {"len": LIMIT}
        assert client.post("/v1/raw", content=b"").json() == {"len": 0}

    def test_content_length_over_limit_rejected_before_the_app(self) -> None:
        calls: list[str] = []
        with TestClient(create_app(calls)) as client:
            assert_413(client.post("/v1/raw", content=b"a" * (LIMIT + 1)))
        assert calls == []

    def test_chunked_body_over_limit(self, client: TestClient) -> None:
        """A body without Content-Length is counted while it is read."""
        resp = client.post("/v1/raw", content=chunks(10, 30))
        assert_413(resp)

    def test_chunked_body_under_limit(self, client: TestClient) -> None:
        assert client.post("/v1/raw", content=chunks(3, 30)).json() == {"len": 90}

    def test_fastapi_body_parsing_gets_413_not_400(self, client: TestClient) -> None:
        """FastAPI turns errors while reading the body into 400; the 413 must win."""
        resp = client.post("/v1/model", content=chunks(5, 40), headers={"content-type": "application/json"})
        assert_413(resp)
        ok = client.post("/v1/model", content=json.dumps({"data": "x"}).encode(), headers={"content-type": "application/json"})
        assert ok.json() == {"len": 1}

    def test_other_paths_are_not_limited(self, client: TestClient) -> None:
        assert client.post("/other", content=b"a" * 10 * LIMIT).json() == {"len": 10 * LIMIT}

    def test_streaming_response_unaffected(self, client: TestClient) -> None:
        resp = client.get("/v1/stream")
        assert resp.status_code == 200
        assert len(resp.content) == 5 * 51

    def test_websocket_unaffected(self, client: TestClient) -> None:
        with client.websocket_connect("/v1/ws") as ws:
            ws.send_text("x" * 80)
            assert ws.receive_text() == "x" * 160


# ---------------------------------------------------------------------------------------------
# the raw ASGI contract


def run_asgi(app, *, headers: list[tuple[bytes, bytes]], body_chunks: list[bytes], path: str = "/v1/raw"):
    """Call ``app`` directly; return (messages sent, number of receive() calls served)."""
    sent: list[dict] = []
    served = 0

    async def receive() -> dict:
        nonlocal served
        if served < len(body_chunks):
            served += 1
            return {"type": "http.request", "body": body_chunks[served - 1], "more_body": served < len(body_chunks)}
        await asyncio.sleep(3600)  # pragma: no cover - a real server would wait for the client
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": headers, "client": ("127.0.0.1", 1), "server": ("testserver", 80),
    }  # fmt: skip
    asyncio.run(asyncio.wait_for(app(scope, receive, send), 5))
    return sent, served


def status_and_body(sent: list[dict]) -> tuple[int, dict]:
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(body)


class TestASGI:
    def test_reads_at_most_limit_plus_one_chunk(self) -> None:
        """A 10 MiB chunked stream: the middleware stops after the chunk that crosses the limit."""
        app = BodySizeLimitMiddleware(create_app(limited=False), max_bytes=256 * 1024)
        chunk = b"a" * 65536
        sent, served = run_asgi(app, headers=[(b"transfer-encoding", b"chunked")], body_chunks=[chunk] * 160)
        status, body = status_and_body(sent)
        assert (status, body["code"], body["limit_bytes"]) == (413, "payload_too_large", 256 * 1024)
        assert served == 5  # 4 chunks = the limit, the 5th crosses it; 155 chunks never read
        assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]

    def test_body_longer_than_declared_length(self) -> None:
        app = BodySizeLimitMiddleware(create_app(limited=False), max_bytes=LIMIT)
        sent, _ = run_asgi(app, headers=[(b"content-length", b"10")], body_chunks=[b"a" * 60, b"a" * 60])
        assert status_and_body(sent)[0] == 413

    @pytest.mark.parametrize("value", [b"abc", b"-1", b"1.5", b"", b"1 2", b"99999999999999999999999", b"10, 11"])
    def test_malformed_content_length_is_400(self, value: bytes) -> None:
        app = BodySizeLimitMiddleware(create_app(limited=False), max_bytes=LIMIT)
        sent, served = run_asgi(app, headers=[(b"content-length", value)], body_chunks=[b"a"])
        status, body = status_and_body(sent)
        assert (status, body["code"]) == (400, "invalid_content_length")
        assert served == 0

    def test_duplicate_equal_content_length_is_fine(self) -> None:
        app = BodySizeLimitMiddleware(create_app(limited=False), max_bytes=LIMIT)
        sent, _ = run_asgi(app, headers=[(b"content-length", b"1, 1")], body_chunks=[b"a"])
        assert status_and_body(sent) == (200, {"len": 1})

    def test_declared_length_over_limit_reads_nothing(self) -> None:
        app = BodySizeLimitMiddleware(create_app(limited=False), max_bytes=LIMIT)
        sent, served = run_asgi(app, headers=[(b"content-length", b"1000000")], body_chunks=[b"a"])
        assert status_and_body(sent)[0] == 413
        assert served == 0

    def test_response_already_started_propagates(self) -> None:
        """If the app answered before reading the body, no 413 can be sent: the error propagates."""

        async def early(scope, receive, send) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            while True:
                await receive()

        app = BodySizeLimitMiddleware(early, max_bytes=LIMIT)
        with pytest.raises(PayloadTooLarge):
            run_asgi(app, headers=[], body_chunks=[b"a" * 80, b"a" * 80])

    def test_lifespan_passes_through(self) -> None:
        seen: list[str] = []

        async def inner(scope, receive, send) -> None:
            seen.append(scope["type"])

        app = BodySizeLimitMiddleware(inner, max_bytes=1)

        async def main() -> None:
            await app({"type": "lifespan"}, None, None)  # type: ignore[arg-type]
            await app({"type": "websocket", "path": "/v1/ws"}, None, None)  # type: ignore[arg-type]

        asyncio.run(main())
        assert seen == ["lifespan", "websocket"]

    def test_all_paths_when_prefixes_is_none(self) -> None:
        app = BodySizeLimitMiddleware(create_app(limited=False), max_bytes=LIMIT, path_prefixes=None)
        sent, _ = run_asgi(app, headers=[], body_chunks=[b"a" * (LIMIT + 1)], path="/other")
        assert status_and_body(sent)[0] == 413

    def test_negative_limit_rejected(self) -> None:
        with pytest.raises(ValueError):
            BodySizeLimitMiddleware(create_app(limited=False), max_bytes=-1)

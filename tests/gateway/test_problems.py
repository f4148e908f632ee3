"""Tests for gateway.problems (RFC 9457 problem+json, security.md §7.3)."""

from __future__ import annotations

import logging

import pydantic
import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from pydantic import BaseModel, field_validator

from gateway.problems import (
    PROBLEM_MEDIA_TYPE,
    PROBLEM_RESPONSES,
    Problem,
    ProblemError,
    ProblemException,
    install_problem_handlers,
    problem_response,
    problem_responses,
    type_uri,
)
from gateway.strict_json import parse_strict


class ToolCallIn(BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    tool_name: str
    arguments: dict[str, int]

    @field_validator("tool_name")
    @classmethod
    def no_spaces(cls, v: str) -> str:
        if " " in v:
            raise ValueError(f"bad tool name {v}")  # echoes the input: must not reach the client
        return v


def create_app() -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/v1/calls/{call_id}", responses=problem_responses(401, 404))
    async def read_call(call_id: int) -> dict:
        if call_id == 0:
            raise ProblemException(404, "call_not_found", detail="No such call", errors=[ProblemError(pointer=None, code="x", message="y")])
        if call_id == 1:
            raise ProblemException(409, "already_decided", title="Already decided", headers={"Retry-After": "3"}, version=7)
        return {"id": call_id}

    @app.post("/v1/strict")
    async def strict(request: Request) -> dict:
        return {"value": parse_strict(await request.body())}

    @app.post("/v1/model", responses=problem_responses(422))
    async def model(body: ToolCallIn) -> dict:
        return body.model_dump()

    @app.post("/v1/manual")
    async def manual(request: Request) -> dict:
        ToolCallIn.model_validate(parse_strict(await request.body()), strict=True)
        return {}

    @app.get("/boom")
    async def boom() -> dict:
        raise RuntimeError("SENTINEL internal detail")

    return app


@pytest.fixture(name="client")
def _client() -> TestClient:
    return TestClient(create_app(), raise_server_exceptions=False)


def assert_problem(resp, status: int, code: str) -> dict:
    assert resp.status_code == status
    assert resp.headers["content-type"] == PROBLEM_MEDIA_TYPE
    body = resp.json()
    Problem.model_validate(body)
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == type_uri(code) == "https://callgate.dev/errors/" + code.replace("_", "-")
    return body


class TestProblemException:
    def test_rendered(self, client: TestClient) -> None:
        """ProblemException becomes a problem document with its errors."""
        body = assert_problem(client.get("/v1/calls/0"), 404, "call_not_found")
        assert body["title"] == "Not Found"
        assert body["detail"] == "No such call"
        assert body["errors"] == [{"code": "x", "message": "y"}]

    def test_headers_and_extension_members(self, client: TestClient) -> None:
        resp = client.get("/v1/calls/1")
        body = assert_problem(resp, 409, "already_decided")
        assert resp.headers["retry-after"] == "3"
        assert body["title"] == "Already decided"
        assert body["version"] == 7
        assert "errors" not in body and "detail" not in body

    def test_problem_response(self) -> None:
        resp = problem_response(413, "payload_too_large", detail="too big", limit_bytes=10)
        assert resp.media_type == PROBLEM_MEDIA_TYPE
        assert resp.status_code == 413
        assert b'"limit_bytes":10' in resp.body

    def test_lone_surrogate_in_detail_cannot_break_encoding(self) -> None:
        resp = problem_response(400, detail="bad \ud800 key", errors=[{"pointer": "/\ud800", "code": "c", "message": "m"}])
        resp.body.decode("utf-8")


class TestBadJSON:
    def test_bad_json_is_422_with_pointer(self, client: TestClient) -> None:
        body = assert_problem(client.post("/v1/strict", content=b'{"a": {"b": NaN}}'), 422, "non_finite_number")
        assert body["errors"] == [{"pointer": "/a/b", "code": "non_finite_number", "message": "NaN is not allowed"}]

    @pytest.mark.parametrize(
        ("raw", "code"),
        [
            (b'{"a": 1, "a": 2}', "duplicate_key"),
            (b'{"\\u0000": 1}', "nul_character"),
            (b'{"\\ud800": 1}', "lone_surrogate"),
            (b"[" * 10_000, "too_deep"),
            (b"\xff", "invalid_utf8"),
            (b"", "malformed_json"),
        ],
    )
    def test_corpus_is_never_5xx(self, client: TestClient, raw: bytes, code: str) -> None:
        assert_problem(client.post("/v1/strict", content=raw), 422, code)

    def test_accepted(self, client: TestClient) -> None:
        assert client.post("/v1/strict", content='{"e": "😀"}'.encode()).json() == {"value": {"e": "😀"}}


class TestValidation:
    def test_request_validation_error(self, client: TestClient) -> None:
        """One error per pydantic error, with a pointer built from loc and no input value."""
        resp = client.post("/v1/model", json={"tool_name": 5, "arguments": {"a/b": "SENTINELVALUE"}, "x": 1})
        body = assert_problem(resp, 422, "validation_error")
        errors = {(e["pointer"], e["code"]) for e in body["errors"]}
        assert errors == {("/tool_name", "string_type"), ("/arguments/a~1b", "int_parsing"), ("/x", "extra_forbidden")}
        assert "SENTINELVALUE" not in resp.text
        assert all(set(e) == {"pointer", "code", "message"} for e in body["errors"])

    def test_custom_validator_message_echoing_input_is_replaced(self, client: TestClient) -> None:
        resp = client.post("/v1/model", json={"tool_name": "SENTINEL NAME", "arguments": {}})
        body = assert_problem(resp, 422, "validation_error")
        assert "SENTINEL" not in resp.text
        assert body["errors"] == [{"pointer": "/tool_name", "code": "value_error", "message": "invalid value"}]

    def test_query_and_path_parameters(self, client: TestClient) -> None:
        body = assert_problem(client.get("/v1/calls/abc"), 422, "validation_error")
        assert body["errors"][0]["parameter"] == "path.call_id"
        assert "pointer" not in body["errors"][0]

    def test_invalid_json_body_has_no_offset_pointer(self, client: TestClient) -> None:
        resp = client.post("/v1/model", content=b"{not json", headers={"content-type": "application/json"})
        body = assert_problem(resp, 422, "validation_error")
        assert body["errors"][0]["code"] == "json_invalid"
        assert body["errors"][0]["pointer"] == ""

    def test_pydantic_validation_error_in_route(self, client: TestClient) -> None:
        body = assert_problem(client.post("/v1/manual", content=b'{"tool_name": "t", "arguments": {"a": "1"}}'), 422, "validation_error")
        assert body["errors"][0]["pointer"] == "/arguments/a"


class TestHTTPErrors:
    def test_not_found(self, client: TestClient) -> None:
        body = assert_problem(client.get("/nope"), 404, "not_found")
        assert "detail" not in body

    def test_method_not_allowed_keeps_allow_header(self, client: TestClient) -> None:
        resp = client.delete("/v1/strict")
        assert_problem(resp, 405, "method_not_allowed")
        assert resp.headers["allow"] == "POST"


class TestUnexpected:
    def test_500_is_opaque_and_logged(self, client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
        """Unexpected errors give 500 internal_error with an error id; the message stays in the log."""
        with caplog.at_level(logging.ERROR, logger="callgate.gateway.problems"):
            resp = client.get("/boom")
        body = assert_problem(resp, 500, "internal_error")
        assert "SENTINEL" not in resp.text
        assert len(body["error_id"]) == 32
        record = next(r for r in caplog.records if body["error_id"] in r.getMessage())
        assert record.exc_info is not None
        assert "SENTINEL internal detail" in caplog.text


class TestOpenAPI:
    def test_documented_as_problem_json(self) -> None:
        schema = TestClient(create_app()).get("/openapi.json").json()
        responses = schema["paths"]["/v1/calls/{call_id}"]["get"]["responses"]
        for status in ("401", "404"):
            content = responses[status]["content"]
            assert content[PROBLEM_MEDIA_TYPE]["schema"] == {"$ref": "#/components/schemas/Problem"}
        assert "Problem" in schema["components"]["schemas"]
        assert "ProblemError" in schema["components"]["schemas"]
        # our 422 replaces FastAPI's HTTPValidationError
        model_422 = schema["paths"]["/v1/model"]["post"]["responses"]["422"]["content"]
        assert model_422[PROBLEM_MEDIA_TYPE]["schema"]["$ref"].endswith("/Problem")

    def test_problem_responses_table(self) -> None:
        assert set(PROBLEM_RESPONSES) >= {400, 401, 403, 404, 409, 413, 415, 422, 429, 503}
        assert problem_responses(401)[401]["description"] == "Unauthorized"
        assert problem_responses(409, descriptions={409: "Already decided"})[409]["description"] == "Already decided"

"""The API fuzz gate (security.md §7.4 and §8.3 scenarios 31-32), in-process on SQLite.

Schemathesis generates requests for every operation of the gateway's own OpenAPI document
(positive and negative data; the examples, coverage and fuzzing phases) and sends them to the real
app (lifespan, group commit, audit chain, strict ingress), once per auth mode: an agent key, an
admin key and no key at all. Every response must be

* not a server error: no 500, and no 503 either (the database is up the whole time);
* a documented status code with a documented media type (problem+json for errors), whose body
  and headers conform to the documented schema;
* a 4xx for schema-invalid input (``negative_data_rejection``);
* never a 2xx without an API key;

and after each run the app must still be healthy and its audit chain must verify.

Failures are fixed in the app, never filtered here. The one check switched off is
``positive_data_acceptance`` (security.md §7.4 allows it, with a reason): a schema-valid request
may rightly be refused by state (a call id that does not exist is 404, a reused one 422
``idempotency_key_reused``) or by the strict ingress, which refuses what JSON Schema cannot
express (numbers beyond ±2**53-1, lone surrogates, U+0000: security.md §7.2).

``test_operations_on_an_existing_call`` fuzzes the call-id operations once more, as the agent,
against a call that exists (pinned ``call_id``), so reads with ``wait``/``claim``, claims and
outcome bodies get past the 404 of an unknown id. The stateful phase is off: the document has no
links, and a long-poll on a pending call would hold its full ``wait``.

How it is wired (Schemathesis 4.32.5 with pytest 9.2): the lazy ``schemathesis.pytest.from_fixture``
loader fails on pytest 9 (it sets ``request.node._nodeid``), so the schema is the app's own
``/openapi.json`` document (``app.openapi()``), loaded at import, and each test hands its own app
(fresh database, keys) to ``case.call_and_validate(app=...)``. Schemathesis runs that app's lifespan
on first use; the fixture shuts it down.

``test_every_reference_resolves`` and ``test_every_documented_error_is_a_problem`` check the
document itself. ``test_hostile_json_*`` send the malformed-input corpus of scenario 31 to ``POST
/v1/calls/{id}/outcome`` and ``POST /v1/usage`` (the ``/v1/calls`` corpus is in
``api/test_calls_api.py``): each case gets its documented 4xx problem code, never a 5xx, nothing is
written, and ``/healthz`` answers afterwards.

Reproducible: fixed seeds, derandomized Hypothesis, no example database. ``slow``: the three fuzz
runs take a few tens of seconds on a loaded 2-core machine.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck
from schemathesis.python import asgi as schemathesis_asgi
from sqlalchemy import Engine, func, select

from gateway.app import create_app
from gateway.audit import stream_rows, verify_rows
from gateway.config import Settings
from gateway.models import AuditEvent, LlmUsage, ToolCall
from tests.gateway.test_strict_json import CORPUS as JSON_CORPUS

SEED = 32  # scenario 32: a fixed seed (CI); run with another to explore
MAX_EXAMPLES = 12  # fuzzing-phase examples per operation and auth mode (coverage cases come on top)
#: A call every fuzz run of the agent key finds already there (an allowed call: claimed by its
#: submission, so claims are 409 and outcomes are recorded), so the call-id operations reach past
#: the 404 of an unknown id. The database is fresh per test: a constant id is fine.
KNOWN_CALL_ID = "0190a9f0-0000-7000-8000-00000000c0de"

HYPOTHESIS = hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,  # a request is a database round trip through the group commit: time varies a lot
    suppress_health_check=[
        # One app and database per operation and auth mode, shared by its examples on purpose.
        HealthCheck.function_scoped_fixture,
        # Database-backed requests on a loaded 2-core machine.
        HealthCheck.too_slow,
        # Negative generation discards candidates that turn out valid; JSON bodies can be large.
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)


def _config(**parameters: str) -> schemathesis.Config:
    return schemathesis.Config.from_dict({
        "seed": SEED,
        "generation": {"mode": "all", "max-examples": MAX_EXAMPLES},
        "phases": {"examples": {"enabled": True}, "coverage": {"enabled": True}, "fuzzing": {"enabled": True},
                   "stateful": {"enabled": False}},
        # See the module docstring: state and the strict ingress refuse some schema-valid requests.
        "checks": {"positive_data_acceptance": {"enabled": False}},
        **({"parameters": parameters} if parameters else {}),
    })


def _openapi() -> dict[str, Any]:
    """The document the app serves at /openapi.json (building the app starts nothing)."""
    placeholder = Settings(database_url="sqlite:///unused.db", policies=Path("unused.yaml"),
                           secret_key="openapi-only-" + "0" * 40, env="test")
    return create_app(placeholder).openapi()


OPENAPI = _openapi()
schema = schemathesis.openapi.from_dict(OPENAPI, config=_config())
known_call_schema = schemathesis.openapi.from_dict(
    OPENAPI, config=_config(call_id=KNOWN_CALL_ID)).include(path_regex=r"\{call_id\}")


# -- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture
def database_url(sqlite_database_url: str) -> str:
    """SQLite only: the fuzz gate is about the HTTP surface, and SQLite keeps it fast."""
    return sqlite_database_url


@pytest.fixture(params=["agent", "admin", "anonymous"])
def principal(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def auth_headers(request: pytest.FixtureRequest, principal: str) -> dict[str, str]:
    if principal == "anonymous":
        return {}
    key = request.getfixturevalue("agent_key" if principal == "agent" else "admin_key")
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def offline_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Webhook registration resolves the URL's host (SSRF guard). Hermetic: IP literals are
    themselves, every name is one public address; nothing ever connects."""

    def resolve(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        try:
            ip = ipaddress.ip_address(str(host).strip("[]"))
        except ValueError:
            ip = ipaddress.ip_address("93.184.216.34")
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 6, "", (str(ip), port))]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)


@pytest.fixture
def gateway_app(settings: Settings, engine: Engine, offline_dns: None) -> Iterator[FastAPI]:
    """The real app on a fresh database. Schemathesis runs its lifespan on first use; afterwards the
    app must still answer /healthz and /readyz, and the audit chain must verify."""
    app = create_app(settings)
    try:
        yield app
        with schemathesis_asgi.get_client(app) as client:
            assert client.get("/healthz").status_code == 200
            ready = client.get("/readyz")
            assert ready.status_code == 200, ready.text
    finally:
        schemathesis_asgi.shutdown_lifespans()
    with engine.connect() as conn:
        result = verify_rows(stream_rows(conn))
    assert result.ok, result


@pytest.fixture
def known_call(gateway_app: FastAPI, agent_key: str) -> str:
    with schemathesis_asgi.get_client(gateway_app) as client:
        body = {"id": KNOWN_CALL_ID, "tool": "send_email", "args": {"to": "a@example.com"}}
        r = client.post("/v1/calls", json=body, headers={"Authorization": f"Bearer {agent_key}"})
    assert r.status_code == 201 and r.json()["status"] == "allowed", r.text
    return KNOWN_CALL_ID


# -- checks beyond Schemathesis' own -----------------------------------------------------------------


def no_success_without_a_key(ctx: Any, response: schemathesis.Response, case: schemathesis.Case) -> None:
    """Without credentials nothing under /v1/ may succeed (the OpenAPI document declares no
    security scheme, so Schemathesis' ``ignored_auth`` cannot see this)."""
    if case.operation.path.startswith("/v1/") and "authorization" not in {
        k.lower() for k in response.request.headers
    }:
        assert not 200 <= response.status_code < 300, (
            f"{case.operation.label} answered {response.status_code} to a request without an API key")


def errors_are_problems(ctx: Any, response: schemathesis.Response, case: schemathesis.Case) -> None:
    """Every 4xx/5xx is RFC 9457 problem+json with a stable ``code`` (security.md §7.3), whatever
    the OpenAPI document says (FastAPI also lists application/json for each documented error)."""
    if response.status_code >= 400:
        content_type = response.headers.get("content-type", [""])[0]
        assert content_type == "application/problem+json", (
            f"{case.operation.label} answered {response.status_code} as {content_type!r}")
        body = json.loads(response.content)
        assert body["status"] == response.status_code and isinstance(body.get("code"), str), body


EXTRA_CHECKS = [no_success_without_a_key, errors_are_problems]


# -- the document itself --------------------------------------------------------------------------------


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_every_reference_resolves() -> None:
    """Every ``$ref`` points into the document: an unresolvable one (pydantic's ``#/$defs/...``
    pasted into a request body) leaves clients and Schemathesis without the body's schema."""
    unresolved = []
    for ref in set(_refs(OPENAPI)):
        node: Any = OPENAPI
        for token in ref.removeprefix("#/").split("/"):
            token = token.replace("~1", "/").replace("~0", "~")
            node = node.get(token) if isinstance(node, dict) else None
        if not ref.startswith("#/") or node is None:
            unresolved.append(ref)
    assert unresolved == []


def test_every_documented_error_is_a_problem() -> None:
    """Each error status an operation documents is documented as application/problem+json
    (``problem_responses``): the media type every error is actually sent with."""
    bare = [f"{method.upper()} {path} {status}"
            for path, operations in OPENAPI["paths"].items() for method, operation in operations.items()
            for status, response in operation["responses"].items()
            if status.startswith(("4", "5")) and "application/problem+json" not in response.get("content", {})
            # FastAPI adds a 422 (HTTPValidationError) to every operation with parameters; the
            # operations below cannot answer it (their only parameter is an unconstrained path string).
            and not (status == "422" and not any(p.get("in") == "query" for p in operation.get("parameters", []))
                     and "requestBody" not in operation)]
    assert bare == []


# -- the gate -----------------------------------------------------------------------------------------


@pytest.mark.slow
@schema.parametrize()
@HYPOTHESIS
def test_every_operation(case: schemathesis.Case, gateway_app: FastAPI, auth_headers: dict[str, str]) -> None:
    """Scenario 32: generated requests to every operation, per auth mode, never a server error
    and always the documented answer."""
    case.call_and_validate(app=gateway_app, headers=auth_headers, additional_checks=EXTRA_CHECKS)


@pytest.mark.slow
@pytest.mark.parametrize("principal", ["agent"])  # its agent only (also: pytest 9 names items by parameter)
@known_call_schema.parametrize()
@HYPOTHESIS
def test_operations_on_an_existing_call(case: schemathesis.Case, gateway_app: FastAPI, known_call: str,
                                        auth_headers: dict[str, str]) -> None:
    """The call-id operations on a call that exists, as its agent: reads (with ``wait`` and
    ``claim``), claims (409 ``already_claimed``) and fuzzed outcome bodies (recorded once, then
    200 for the same report and 409 for another)."""
    case.call_and_validate(app=gateway_app, headers=auth_headers, additional_checks=EXTRA_CHECKS)


# -- scenario 31 on the endpoints the /v1/calls corpus does not reach ----------------------------------

#: Beyond the JSON-level corpus: media types, wrong types, extra fields, a 1 MB string.
def _request_corpus(valid: dict[str, Any], wrong_type: dict[str, Any]) -> list[tuple[bytes, str, int, str]]:
    body = json.dumps(valid).encode()
    return [
        (body, "text/plain", 415, "unsupported_media_type"),
        (body, "multipart/form-data; boundary=x", 415, "unsupported_media_type"),
        (body, "application/json; charset=latin-1", 415, "unsupported_media_type"),
        (body, "", 415, "unsupported_media_type"),
        (json.dumps(wrong_type).encode(), "application/json", 422, "validation_error"),
        (json.dumps({**valid, "surprise": 1}).encode(), "application/json", 422, "validation_error"),
        (b"[]", "application/json", 422, "validation_error"),
        (b"null", "application/json", 422, "validation_error"),
        (json.dumps({**valid, "pad": "x" * 1_000_000}).encode(), "application/json", 413, "payload_too_large"),
    ]


OUTCOME = {"status": "succeeded", "duration_ms": 12}
USAGE = {"events": [{"id": "0190a9f0-0000-7000-8000-0000000000e1", "ts": "2025-01-01T00:00:00Z",
                     "model": "gpt-4o", "input_tokens": 10, "output_tokens": 5}]}

OUTCOME_CORPUS = [(raw, "application/json", 422, code) for raw, code, _ in JSON_CORPUS] + _request_corpus(
    OUTCOME, {"status": 1})
USAGE_CORPUS = [(raw, "application/json", 422, code) for raw, code, _ in JSON_CORPUS] + _request_corpus(
    USAGE, {"events": "none"})


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    # Server errors must come back as responses (a 500 is what this file looks for), not be re-raised.
    with TestClient(create_app(settings), base_url="https://testserver", raise_server_exceptions=False) as c:
        yield c


def _send(client: TestClient, path: str, key: str, raw: bytes, content_type: str) -> Any:
    headers = {"Authorization": f"Bearer {key}"}
    if content_type:
        headers["Content-Type"] = content_type
    return client.post(path, content=raw, headers=headers)


def _mismatches(client: TestClient, path: str, key: str, corpus: list[tuple[bytes, str, int, str]]) -> list[str]:
    """Every case whose answer is not its documented problem (all of them are sent, then reported)."""
    wrong = []
    for i, (raw, content_type, status, code) in enumerate(corpus):
        r = _send(client, path, key, raw, content_type)
        try:
            code_got = r.json().get("code")
        except ValueError:
            code_got = None
        got = (r.status_code, r.headers.get("content-type"), code_got)
        if got != (status, "application/problem+json", code):
            wrong.append(f"case {i} ({raw[:60]!r}, {content_type!r}): expected {status} {code}, got {got}")
    return wrong


def test_hostile_json_to_outcome(client: TestClient, agent_key: str, engine: Engine) -> None:
    """Every corpus case is its documented 4xx (never 5xx) and records nothing; the same call
    then takes a valid outcome, and /healthz answers."""
    call_id = str(uuid.uuid4())
    created = client.post("/v1/calls", json={"id": call_id, "tool": "send_email", "args": {}},
                          headers={"Authorization": f"Bearer {agent_key}"})
    assert created.status_code == 201, created.text
    path = f"/v1/calls/{call_id}/outcome"
    assert _mismatches(client, path, agent_key, OUTCOME_CORPUS) == []
    with engine.connect() as conn:
        assert conn.execute(select(ToolCall.outcome_status).where(ToolCall.id == call_id)).scalar_one() is None
        assert conn.execute(select(func.count()).select_from(AuditEvent)
                            .where(AuditEvent.event_type == "tool.outcome")).scalar_one() == 0
    recorded = _send(client, path, agent_key, json.dumps(OUTCOME).encode(), "application/json")
    assert recorded.status_code == 200 and recorded.json()["outcome"]["status"] == "succeeded", recorded.text
    assert client.get("/healthz").status_code == 200


def test_hostile_json_to_usage(client: TestClient, agent_key: str, engine: Engine) -> None:
    """Every corpus case is its documented 4xx (never 5xx) and stores nothing; a valid batch is
    then accepted, and /healthz answers."""
    assert _mismatches(client, "/v1/usage", agent_key, USAGE_CORPUS) == []
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(LlmUsage)).scalar_one() == 0
    accepted = _send(client, "/v1/usage", agent_key, json.dumps(USAGE).encode(), "application/json")
    assert accepted.status_code == 200, accepted.text
    assert client.get("/healthz").status_code == 200

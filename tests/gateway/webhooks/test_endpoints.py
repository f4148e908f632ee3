"""Registering and disabling endpoints: validation, audit events, secrets shown once and stored
sealed, https only unless allowed."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import Engine, select

from gateway.audit import Actor, stream_rows, verify_rows
from gateway.errors import Conflict, NotFound, Unprocessable
from gateway.models import AuditEvent, WebhookEndpoint
from gateway.webhooks.delivery import RunUnit
from gateway.webhooks.endpoints import (
    MAX_ENDPOINTS_PER_AGENT,
    check_url,
    disable_endpoint,
    get_endpoint,
    list_endpoints,
    register_endpoint,
)
from tests.gateway.webhooks.helpers import BOX, Calls, audit_events, outbox, register

OPS = Actor("operator", "ops")
pytestmark = pytest.mark.usefixtures("agent_key")  # agent billing-bot exists


def test_register_returns_the_secret_once_and_audits_without_it(run: RunUnit, engine: Engine) -> None:
    registered = register(run, "http://127.0.0.1:9/hook?token=abc123")
    endpoint = registered.endpoint
    assert endpoint["id"].startswith("ep_") and len(endpoint["id"]) == 19
    assert (endpoint["agent"], endpoint["url"], endpoint["enabled"], endpoint["event_types"]) == (
        "billing-bot", "http://127.0.0.1:9/hook?token=abc123", True, ["approval.decided"])
    assert registered.secret.startswith("whsec_")
    with engine.connect() as conn:
        assert list_endpoints(conn) == [endpoint]  # listings never carry the secret
        assert "secret" not in get_endpoint(conn, endpoint["id"])  # type: ignore[operator]
        stored = conn.execute(select(WebhookEndpoint.secret)).scalar_one()
        canonical = " ".join(conn.execute(select(AuditEvent.canonical)).scalars())
    assert stored.startswith("sealed:v1:") and "whsec_" not in stored  # sealed at rest...
    assert BOX.unseal(endpoint["id"], stored) == registered.secret  # ...yet retrievable: the gateway signs with it
    assert registered.secret not in canonical and "abc123" not in canonical  # nor the URL's query
    (event,) = audit_events(engine)
    assert event["event_type"] == "webhook.registered" and event["actor"] == {"type": "operator", "id": "ops"}
    assert event["data"] == {"endpoint_id": endpoint["id"], "agent": "billing-bot",
                             "url": "http://127.0.0.1:9/hook?[query redacted]", "event_types": ["approval.decided"],
                             "include_args": False}
    assert endpoint["include_args"] is False  # thin payloads unless asked for


def test_disable_ends_pending_messages_and_is_audited(calls: Calls, run: RunUnit, engine: Engine) -> None:
    endpoint = register(run, "http://127.0.0.1:9/hook").endpoint
    call_id = calls.pending()
    calls.decide(call_id)
    result = run(lambda conn, audit: disable_endpoint(conn, audit, endpoint_id=endpoint["id"], actor=OPS))
    assert result["enabled"] is False and result["disabled_at"] is not None
    assert result["disabled_reason"] == "disabled by an admin"
    (row,) = outbox(engine)
    assert (row["status"], row["last_error"]) == ("failed", "endpoint disabled: disabled by an admin")
    events = audit_events(engine)
    assert [e["event_type"] for e in events] == ["webhook.registered", "webhook.disabled", "webhook.failed"]
    assert events[2]["tool_call_id"] == call_id
    with pytest.raises(Conflict) as exc:
        run(lambda conn, audit: disable_endpoint(conn, audit, endpoint_id=endpoint["id"], actor=OPS))
    assert exc.value.code == "already_disabled"
    with pytest.raises(NotFound):
        run(lambda conn, audit: disable_endpoint(conn, audit, endpoint_id="ep_0000000000000000", actor=OPS))
    assert len(audit_events(engine)) == 3  # refusals write nothing
    with engine.connect() as conn:
        assert verify_rows(stream_rows(conn)).ok


def test_the_same_url_twice_is_a_conflict_until_disabled(run: RunUnit) -> None:
    first = register(run, "http://127.0.0.1:9/hook").endpoint
    with pytest.raises(Conflict) as exc:
        register(run, "http://127.0.0.1:9/hook")
    assert exc.value.code == "already_registered" and exc.value.extra["endpoint_id"] == first["id"]
    run(lambda conn, audit: disable_endpoint(conn, audit, endpoint_id=first["id"], actor=OPS))
    assert register(run, "http://127.0.0.1:9/hook").endpoint["id"] != first["id"]


def test_an_agent_has_at_most_ten_endpoints(run: RunUnit) -> None:
    for i in range(MAX_ENDPOINTS_PER_AGENT):
        register(run, f"http://127.0.0.1:9/hook{i}")
    with pytest.raises(Conflict) as exc:
        register(run, "http://127.0.0.1:9/one-too-many")
    assert exc.value.code == "too_many_endpoints"


def test_an_agent_nobody_made_a_key_for_is_refused(run: RunUnit, engine: Engine) -> None:
    with pytest.raises(Unprocessable) as exc:
        register(run, "http://127.0.0.1:9/hook", agent="bililng-bot")
    assert exc.value.code == "unknown_agent"
    assert exc.value.extra["errors"][0]["pointer"] == "/agent"
    with engine.connect() as conn:
        assert list_endpoints(conn) == []


@pytest.mark.parametrize("agent", ["", "has space", "x" * 129, "tab\there", 42])
def test_bad_agent_names_are_refused(agent: object, run: RunUnit) -> None:
    destination = check_url("http://127.0.0.1:9/hook", allow_private=True, allow_http=True)
    with pytest.raises(Unprocessable) as exc:
        run(lambda conn, audit: register_endpoint(
            conn, audit, agent=agent, destination=destination, actor=OPS, box=BOX))  # type: ignore[arg-type]
    assert exc.value.code == "invalid_agent"


@pytest.mark.parametrize(("event_types", "code"), [([], "invalid_event_types"), (["approval.requested"],
                                                                                  "unknown_event_type")])
def test_bad_event_types_are_refused(event_types: list[str], code: str, run: RunUnit) -> None:
    destination = check_url("http://127.0.0.1:9/hook", allow_private=True, allow_http=True)
    with pytest.raises(Unprocessable) as exc:
        run(lambda conn, audit: register_endpoint(conn, audit, agent="billing-bot", destination=destination,
                                                  actor=OPS, box=BOX, event_types=event_types))
    assert exc.value.code == code and exc.value.extra["errors"][0]["pointer"] == "/event_types"


def test_check_url_names_the_field() -> None:
    with pytest.raises(Unprocessable) as exc:
        check_url("https://169.254.169.254/latest", allow_private=False, allow_http=False)
    assert exc.value.code == "webhook_url_forbidden"
    assert exc.value.extra["errors"] == [{"pointer": "/url", "code": "webhook_url_forbidden",
                                          "message": exc.value.detail}]
    with pytest.raises(Unprocessable) as exc:
        check_url("http://127.0.0.1:9/", allow_private=False, allow_http=True)  # loopback needs the test-only flag
    assert "loopback" in exc.value.detail
    with pytest.raises(Unprocessable) as exc:
        check_url(["not", "a", "string"], allow_private=True, allow_http=True)
    assert exc.value.code == "invalid_url"


def test_http_is_refused_at_registration_unless_allowed() -> None:
    """Production is https only; the tests' loopback receivers opt in to http explicitly."""
    with pytest.raises(Unprocessable) as exc:
        check_url("http://127.0.0.1:9/hook", allow_private=True, allow_http=False)
    assert exc.value.code == "webhook_url_forbidden"
    assert "http is not allowed: use https" in exc.value.detail
    assert exc.value.extra["errors"][0]["pointer"] == "/url"
    assert check_url("http://127.0.0.1:9/hook", allow_private=True, allow_http=True).scheme == "http"


def test_include_args_is_kept_per_endpoint(run: RunUnit, engine: Engine) -> None:
    thin = register(run, "http://127.0.0.1:9/thin").endpoint
    full = register(run, "http://127.0.0.1:9/full", include_args=True).endpoint
    assert (thin["include_args"], full["include_args"]) == (False, True)
    with engine.connect() as conn:
        assert {e["id"]: e["include_args"] for e in list_endpoints(conn)} == {thin["id"]: False, full["id"]: True}
    assert [e["data"]["include_args"] for e in audit_events(engine)] == [False, True]


def test_listing_filters_by_agent(run: RunUnit, engine: Engine, other_agent_key: str) -> None:
    mine = register(run, "http://127.0.0.1:9/a").endpoint
    theirs = register(run, "http://127.0.0.1:9/b", agent="other-bot").endpoint
    with engine.connect() as conn:
        assert [e["id"] for e in list_endpoints(conn, agent="billing-bot")] == [mine["id"]]
        assert [e["id"] for e in list_endpoints(conn)] == [mine["id"], theirs["id"]]
        assert json.dumps(list_endpoints(conn))  # JSON-ready

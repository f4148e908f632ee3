"""The /v1/webhooks admin API in-process, on SQLite and PostgreSQL: admin keys only, strict JSON,
problem+json errors that name the field, https only unless allowed, audit events, secret
rotation, the delivery log and replays."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from gateway.app import create_app
from gateway.config import Settings
from gateway.models import AuditEvent, WebhookEndpoint
from gateway.webhooks.delivery import deliver_due, in_transaction
from tests.gateway.webhooks.helpers import BOX, Calls, delivery_config, dump, outbox
from tests.gateway.webhooks.receiver import Reply, running_receiver


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # A minute-long tick, and no decisions through the app: its own worker never races the
    # deliveries these tests drive. The SSRF guard is as in production here.
    return settings.model_copy(update={"webhook_poll_seconds": 60.0})


@pytest.fixture
def loopback_client(settings: Settings) -> Iterator[TestClient]:
    """An app with the test-only CALLGATE_WEBHOOK_ALLOW_PRIVATE and CALLGATE_WEBHOOK_ALLOW_HTTP:
    plain-http receivers on 127.0.0.1."""
    app = create_app(settings.model_copy(update={"webhook_allow_private": True, "webhook_allow_http": True}))
    with TestClient(app, base_url="https://testserver") as c:
        yield c


@pytest.fixture
def public_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """*.example.com resolves to a public address (registration resolves; nothing connects)."""
    real = socket.getaddrinfo

    def fake(host: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        if str(host).endswith("example.com"):
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port))]
        if str(host) == "internal.example.net":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.9.8.7", port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)


MESSAGE_ID = "msg_00000000-0000-7000-8000-000000000000"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def create(client: TestClient, key: str, body: Any, **kw: Any) -> Any:
    return client.post("/v1/webhooks", json=body, headers=auth(key), **kw)


def raw(client: TestClient, key: str, content: bytes, content_type: str = "application/json") -> Any:
    return client.post("/v1/webhooks", content=content, headers={**auth(key), "Content-Type": content_type})


def count_endpoints(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(WebhookEndpoint)).scalar_one())


def event_types(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(AuditEvent.event_type).order_by(AuditEvent.seq)).scalars())


def problem(r: Any, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = dict(r.json())
    assert body["code"] == code, body
    return body


class TestRegistration:
    def test_create_answers_201_with_the_secret_once(self, client: TestClient, admin_key: str, agent_key: str,
                                                     engine: Engine, public_dns: None) -> None:
        r = create(client, admin_key, {"agent": "billing-bot", "url": "https://hooks.example.com/callgate"})
        assert r.status_code == 201, r.text
        created = r.json()
        assert set(created) == {"id", "agent", "url", "event_types", "include_args", "enabled", "created_at",
                                "disabled_at", "disabled_reason", "rotated_at", "previous_secret_expires_at",
                                "last_success_at", "first_failure_at", "secret"}
        assert created["secret"].startswith("whsec_") and created["enabled"] is True
        assert created["event_types"] == ["approval.decided"] and created["include_args"] is False
        with engine.connect() as conn:
            stored = conn.execute(select(WebhookEndpoint.secret)).scalar_one()
        assert BOX.unseal(created["id"], stored) == created["secret"]  # sealed under CALLGATE_SECRET_KEY
        assert "whsec_" not in dump(engine)
        listed = client.get("/v1/webhooks", headers=auth(admin_key)).json()["webhooks"]
        assert listed == [{k: v for k, v in created.items() if k != "secret"}]
        assert created["secret"] not in client.get("/v1/webhooks", headers=auth(admin_key)).text
        types = event_types(engine)
        assert types[-1] == "webhook.registered"
        with engine.connect() as conn:
            actor = json.loads(conn.execute(select(AuditEvent.canonical).order_by(AuditEvent.seq.desc())).first()[0])
        assert actor["actor"]["type"] == "admin_key"

    def test_explicit_event_types(self, client: TestClient, admin_key: str, agent_key: str, public_dns: None) -> None:
        r = create(client, admin_key, {"agent": "billing-bot", "url": "https://a.example.com/",
                                       "event_types": ["approval.decided"]})
        assert r.status_code == 201 and r.json()["event_types"] == ["approval.decided"]

    def test_include_args_is_opt_in(self, client: TestClient, admin_key: str, agent_key: str,
                                    public_dns: None) -> None:
        r = create(client, admin_key, {"agent": "billing-bot", "url": "https://a.example.com/", "include_args": True})
        assert r.status_code == 201 and r.json()["include_args"] is True
        result = problem(create(client, admin_key, {"agent": "billing-bot", "url": "https://b.example.com/",
                                                    "include_args": "yes"}), 422, "validation_error")
        assert "/include_args" in [e.get("pointer") for e in result["errors"]]

    def test_loopback_needs_the_test_only_flag(self, client: TestClient, loopback_client: TestClient,
                                               admin_key: str, agent_key: str) -> None:
        body = {"agent": "billing-bot", "url": "https://127.0.0.1:9/x"}
        assert "loopback" in problem(create(client, admin_key, body), 422, "webhook_url_forbidden")["detail"]
        assert create(loopback_client, admin_key, body).status_code == 201
        body = {"agent": "billing-bot", "url": "http://169.254.169.254/"}  # never, even with the flag
        problem(create(loopback_client, admin_key, body), 422, "webhook_url_forbidden")

    def test_http_needs_its_own_flag(self, client: TestClient, settings: Settings, admin_key: str, agent_key: str,
                                     engine: Engine, public_dns: None) -> None:
        """https only in production; CALLGATE_WEBHOOK_ALLOW_HTTP (tests, local development) opts in."""
        body = {"agent": "billing-bot", "url": "http://hooks.example.com/callgate"}
        result = problem(create(client, admin_key, body), 422, "webhook_url_forbidden")
        assert "http is not allowed: use https" in result["detail"] and result["errors"][0]["pointer"] == "/url"
        assert count_endpoints(engine) == 0
        private_only = settings.model_copy(update={"webhook_allow_private": True})  # loopback alone is not enough
        with TestClient(create_app(private_only), base_url="https://testserver") as other:
            problem(create(other, admin_key, {"agent": "billing-bot", "url": "http://127.0.0.1:9/x"}), 422,
                    "webhook_url_forbidden")
        with TestClient(create_app(settings.model_copy(update={"webhook_allow_http": True})),
                        base_url="https://testserver") as allowed:
            assert create(allowed, admin_key, body).status_code == 201


class TestBadInput:
    @pytest.mark.parametrize(("url", "code"), [
        ("https://169.254.169.254/latest/meta-data/", "webhook_url_forbidden"),
        ("https://internal.example.net/hook", "webhook_url_forbidden"),  # a name resolving to 10.x
        ("https://[::ffff:169.254.169.254]/", "webhook_url_forbidden"),
        ("https://100.64.0.1/", "webhook_url_forbidden"),
        ("http://hooks.example.com/", "webhook_url_forbidden"),  # plain http
        ("ftp://hooks.example.com/", "webhook_url_forbidden"),
        ("https://user:pw@hooks.example.com/", "webhook_url_forbidden"),
        ("not a url", "webhook_url_forbidden"),
    ])
    def test_refused_urls_name_the_url_field(self, url: str, code: str, client: TestClient, admin_key: str,
                                             agent_key: str, engine: Engine, public_dns: None) -> None:
        body = problem(create(client, admin_key, {"agent": "billing-bot", "url": url}), 422, code)
        assert body["errors"][0]["pointer"] == "/url" and body["errors"][0]["code"] == code
        assert count_endpoints(engine) == 0

    @pytest.mark.parametrize(("body", "pointer"), [
        ({"agent": 7, "url": "https://hooks.example.com/"}, "/agent"),
        ({"agent": "billing-bot", "url": ["https://hooks.example.com/"]}, "/url"),
        ({"agent": "billing-bot"}, "/url"),
        ({"url": "https://hooks.example.com/"}, "/agent"),
        ({"agent": "has space", "url": "https://hooks.example.com/"}, "/agent"),
        ({"agent": "billing-bot", "url": ""}, "/url"),
        ({"agent": "billing-bot", "url": "https://hooks.example.com/", "secret": "mine"}, "/secret"),
        ({"agent": "billing-bot", "url": "https://hooks.example.com/", "event_types": ["tool_call.decided"]},
         "/event_types/0"),
        ({"agent": "billing-bot", "url": "https://hooks.example.com/", "event_types": []}, "/event_types"),
        ({"agent": "billing-bot", "url": "https://hooks.example.com/", "event_types": "approval.decided"},
         "/event_types"),
    ])
    def test_wrong_fields_name_the_field(self, body: dict[str, Any], pointer: str, client: TestClient,
                                         admin_key: str, agent_key: str, engine: Engine, public_dns: None) -> None:
        result = problem(create(client, admin_key, body), 422, "validation_error")
        assert pointer in [e.get("pointer") for e in result["errors"]], result
        assert count_endpoints(engine) == 0

    def test_an_array_body_is_refused(self, client: TestClient, admin_key: str) -> None:
        problem(create(client, admin_key, ["billing-bot"]), 422, "validation_error")

    def test_duplicate_keys_are_refused_naming_the_member(self, client: TestClient, admin_key: str, agent_key: str,
                                                          engine: Engine, public_dns: None) -> None:
        body = b'{"agent": "billing-bot", "url": "https://a.example.com/", "url": "http://169.254.169.254/"}'
        result = problem(raw(client, admin_key, body), 422, "duplicate_key")
        assert result["errors"][0]["pointer"] == "/url"
        assert count_endpoints(engine) == 0

    @pytest.mark.parametrize(("content", "code"), [
        (b'{"agent": "billing-bot", "url": "https://a.example.com/\\u0000"}', "nul_character"),
        (b'{"agent": "billing-bot", "url": NaN}', "non_finite_number"),
        (b'{"agent": "billing-bot", "url": "https://a.example.com/"} trailing', "malformed_json"),
        (b"", "malformed_json"),
        (b"\xff\xfe", "invalid_utf8"),
    ])
    def test_malformed_json_is_refused(self, content: bytes, code: str, client: TestClient, admin_key: str,
                                       engine: Engine) -> None:
        problem(raw(client, admin_key, content), 422, code)
        assert count_endpoints(engine) == 0

    def test_the_media_type_must_be_json(self, client: TestClient, admin_key: str) -> None:
        problem(raw(client, admin_key, b'{"agent": "billing-bot", "url": "https://a.example.com/"}', "text/plain"),
                415, "unsupported_media_type")

    def test_an_unknown_agent_is_refused(self, client: TestClient, admin_key: str, public_dns: None) -> None:
        body = problem(create(client, admin_key, {"agent": "nobody", "url": "https://a.example.com/"}), 422,
                       "unknown_agent")
        assert body["errors"][0]["pointer"] == "/agent"

    def test_a_duplicate_url_is_a_conflict(self, client: TestClient, admin_key: str, agent_key: str,
                                           public_dns: None) -> None:
        body = {"agent": "billing-bot", "url": "https://a.example.com/"}
        first = create(client, admin_key, body).json()
        assert problem(create(client, admin_key, body), 409, "already_registered")["endpoint_id"] == first["id"]


class TestAuthorization:
    def test_no_key_is_401(self, client: TestClient) -> None:
        problem(client.post("/v1/webhooks", json={"agent": "a", "url": "https://a.example.com/"}), 401,
                "invalid_api_key")
        problem(client.get("/v1/webhooks"), 401, "invalid_api_key")
        problem(client.delete("/v1/webhooks/ep_0000000000000000"), 401, "invalid_api_key")
        problem(client.get("/v1/webhooks/ep_0000000000000000/deliveries"), 401, "invalid_api_key")
        problem(client.post("/v1/webhooks/ep_0000000000000000/rotate"), 401, "invalid_api_key")
        problem(client.post(f"/v1/webhooks/messages/{MESSAGE_ID}/replay"), 401, "invalid_api_key")

    def test_an_agent_key_is_403_everywhere(self, client: TestClient, agent_key: str, engine: Engine) -> None:
        """An agent must not point its own decision events elsewhere (or read others')."""
        body = problem(create(client, agent_key, {"agent": "billing-bot", "url": "https://a.example.com/"}), 403,
                       "admin_key_required")
        assert "admin" in body["detail"]
        problem(client.get("/v1/webhooks", headers=auth(agent_key)), 403, "admin_key_required")
        problem(client.delete("/v1/webhooks/ep_0000000000000000", headers=auth(agent_key)), 403, "admin_key_required")
        problem(client.get("/v1/webhooks/ep_0000000000000000/deliveries", headers=auth(agent_key)), 403,
                "admin_key_required")
        problem(client.post("/v1/webhooks/ep_0000000000000000/rotate", headers=auth(agent_key)), 403,
                "admin_key_required")
        problem(client.post(f"/v1/webhooks/messages/{MESSAGE_ID}/replay", headers=auth(agent_key)), 403,
                "admin_key_required")
        assert count_endpoints(engine) == 0

    def test_bad_input_from_a_stranger_is_401_not_422(self, client: TestClient) -> None:
        r = client.post("/v1/webhooks", content=b"{", headers={"Authorization": "Bearer cg_admin_nope",
                                                               "Content-Type": "application/json"})
        problem(r, 401, "invalid_api_key")


class TestDisableAndDeliveries:
    def test_delete_disables_once(self, client: TestClient, admin_key: str, agent_key: str, engine: Engine,
                                  public_dns: None) -> None:
        created = create(client, admin_key, {"agent": "billing-bot", "url": "https://a.example.com/"}).json()
        r = client.delete(f"/v1/webhooks/{created['id']}", headers=auth(admin_key))
        assert r.status_code == 200, r.text
        assert r.json()["enabled"] is False and r.json()["disabled_at"] is not None
        problem(client.delete(f"/v1/webhooks/{created['id']}", headers=auth(admin_key)), 409, "already_disabled")
        problem(client.delete("/v1/webhooks/ep_0123456789abcdef", headers=auth(admin_key)), 404, "not_found")
        problem(client.delete("/v1/webhooks/../../etc", headers=auth(admin_key)), 404, "not_found")
        assert event_types(engine).count("webhook.disabled") == 1
        listed = client.get("/v1/webhooks?enabled=false", headers=auth(admin_key)).json()["webhooks"]
        assert [w["id"] for w in listed] == [created["id"]]
        assert client.get("/v1/webhooks?enabled=true", headers=auth(admin_key)).json()["webhooks"] == []

    def test_the_delivery_log(self, loopback_client: TestClient, admin_key: str, calls: Calls,
                              engine: Engine) -> None:
        client = loopback_client
        with running_receiver() as receiver:
            created = create(client, admin_key, {"agent": "billing-bot", "url": receiver.url}).json()
            receiver.answer_with([Reply(500, body=b"try later"), 200])
            call_id = calls.pending()
            calls.decide(call_id)  # decided outside the app: its worker is not kicked (and ticks once a minute)
            run = in_transaction(engine)
            config = delivery_config(schedule=(0.0,))
            deliver_due(run, config)
            deliver_due(run, config)
            assert len(receiver.requests) == 2
        r = client.get(f"/v1/webhooks/{created['id']}/deliveries", headers=auth(admin_key))
        assert r.status_code == 200, r.text
        (message,) = r.json()["deliveries"]
        assert (message["call_id"], message["status"], message["attempts"], message["event_type"]) == (
            call_id, "delivered", 2, "approval.decided")
        assert message["message_id"] == receiver.requests[0].webhook_id
        assert [(a["attempt"], a["status_code"], a["result"]) for a in message["log"]] == [
            (1, 500, "retry"), (2, 200, "delivered")]
        assert message["log"][0]["response_excerpt"] == "try later"
        only_failed = client.get(f"/v1/webhooks/{created['id']}/deliveries?status=failed", headers=auth(admin_key))
        assert only_failed.json() == {"deliveries": []}
        problem(client.get(f"/v1/webhooks/{created['id']}/deliveries?status=nope", headers=auth(admin_key)), 422,
                "validation_error")
        problem(client.get(f"/v1/webhooks/{created['id']}/deliveries?limit=0", headers=auth(admin_key)), 422,
                "validation_error")
        problem(client.get("/v1/webhooks/ep_0123456789abcdef/deliveries", headers=auth(admin_key)), 404, "not_found")

    def test_the_openapi_document_lists_the_routes(self, client: TestClient) -> None:
        paths = client.get("/openapi.json").json()["paths"]
        assert {"post", "get"} <= set(paths["/v1/webhooks"])
        assert "delete" in paths["/v1/webhooks/{endpoint_id}"]
        assert "get" in paths["/v1/webhooks/{endpoint_id}/deliveries"]
        assert "post" in paths["/v1/webhooks/{endpoint_id}/rotate"]
        assert "post" in paths["/v1/webhooks/messages/{message_id}/replay"]


class TestRotateAndReplay:
    def test_rotate_answers_the_new_secret_once_and_both_sign(self, loopback_client: TestClient, admin_key: str,
                                                              calls: Calls, engine: Engine) -> None:
        client = loopback_client
        with running_receiver() as receiver:
            created = create(client, admin_key, {"agent": "billing-bot", "url": receiver.url}).json()
            r = client.post(f"/v1/webhooks/{created['id']}/rotate", headers=auth(admin_key))
            assert r.status_code == 200, r.text
            rotated = r.json()
            assert rotated["secret"].startswith("whsec_") and rotated["secret"] != created["secret"]
            assert rotated["rotated_at"] is not None and rotated["previous_secret_expires_at"] is not None
            assert rotated["secret"] not in client.get("/v1/webhooks", headers=auth(admin_key)).text
            calls.decide(calls.pending())
            deliver_due(in_transaction(engine), delivery_config())
            (request,) = receiver.wait_for(1)
        assert len(request.headers["webhook-signature"].split(" ")) == 2
        request.verify(rotated["secret"])
        request.verify(created["secret"])
        assert event_types(engine).count("webhook.rotated") == 1
        with engine.connect() as conn:
            last = json.loads(conn.execute(select(AuditEvent.canonical)
                                           .where(AuditEvent.event_type == "webhook.rotated")).scalar_one())
        assert last["actor"]["type"] == "admin_key" and last["data"]["endpoint_id"] == created["id"]
        assert "whsec_" not in dump(engine)

    def test_rotate_refusals(self, client: TestClient, admin_key: str, agent_key: str, public_dns: None) -> None:
        problem(client.post("/v1/webhooks/ep_0123456789abcdef/rotate", headers=auth(admin_key)), 404, "not_found")
        problem(client.post("/v1/webhooks/nope/rotate", headers=auth(admin_key)), 404, "not_found")
        created = create(client, admin_key, {"agent": "billing-bot", "url": "https://a.example.com/"}).json()
        client.delete(f"/v1/webhooks/{created['id']}", headers=auth(admin_key))
        problem(client.post(f"/v1/webhooks/{created['id']}/rotate", headers=auth(admin_key)), 409,
                "endpoint_disabled")

    def test_replay_resends_with_the_same_webhook_id(self, loopback_client: TestClient, admin_key: str,
                                                     calls: Calls, engine: Engine) -> None:
        client = loopback_client
        with running_receiver() as receiver:
            create(client, admin_key, {"agent": "billing-bot", "url": receiver.url})
            calls.decide(calls.pending())
            (message_id,) = [row["id"] for row in outbox(engine)]
            problem(client.post(f"/v1/webhooks/messages/{message_id}/replay", headers=auth(admin_key)), 409,
                    "still_pending")
            run = in_transaction(engine)
            deliver_due(run, delivery_config())
            r = client.post(f"/v1/webhooks/messages/{message_id}/replay", headers=auth(admin_key))
            assert r.status_code == 202, r.text
            assert (r.json()["message_id"], r.json()["status"], r.json()["attempts"]) == (message_id, "pending", 1)
            assert r.json()["replayed_at"] is not None
            deliver_due(run, delivery_config())
            first, second = receiver.wait_for(2)
        assert first.webhook_id == second.webhook_id == message_id and first.body == second.body
        assert event_types(engine).count("webhook.replayed") == 1
        problem(client.post(f"/v1/webhooks/messages/{MESSAGE_ID}/replay", headers=auth(admin_key)), 404,
                "not_found")
        problem(client.post("/v1/webhooks/messages/msg_..%2F..%2Fetc/replay", headers=auth(admin_key)), 404,
                "not_found")


@pytest.fixture
def calls(engine: Engine, settings: Settings, agent_key: str) -> Calls:
    return Calls(engine, settings, in_transaction(engine), agent_key)



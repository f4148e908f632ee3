"""CSRF on the console's decision POSTs: fetch metadata, Origin and the synchronizer token."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from console.csrf import origin_of
from tests.console.conftest import signed_in, submit_pending


def approve(client: TestClient, call_id: str, **kw):  # type: ignore[no-untyped-def]
    return client.post(f"/calls/{call_id}/approve", follow_redirects=False, **kw)


class TestCsrf:
    @pytest.mark.parametrize(
        ("headers", "data"),
        [
            pytest.param({}, {"comment": "ok"}, id="no-token"),
            pytest.param({"X-CSRF-Token": "not-the-token"}, {"comment": "ok"}, id="wrong-header-token"),
            pytest.param({}, {"comment": "ok", "csrf_token": "not-the-token"}, id="wrong-form-token"),
        ],
    )
    def test_decision_without_the_right_token_is_refused(
        self, client: TestClient, users: dict, agent_key: str, headers: dict, data: dict
    ) -> None:
        """A logged-in reviewer's POST without the session's CSRF token is 403 and decides nothing."""
        signed_in(client, "rita")
        call_id = submit_pending(client, agent_key)
        r = approve(client, call_id, headers=headers, data=data)
        assert r.status_code == 403
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["code"] == "csrf_failed"
        assert client.get(f"/calls/{call_id}").text.count("status-pending") >= 1

    @pytest.mark.parametrize(
        "headers",
        [
            pytest.param({"Origin": "https://evil.example"}, id="foreign-origin"),
            pytest.param({"Origin": "null"}, id="opaque-origin"),
            pytest.param({"Origin": "http://testserver"}, id="downgraded-scheme"),
            pytest.param({"Sec-Fetch-Site": "cross-site"}, id="cross-site"),
            pytest.param({"Sec-Fetch-Site": "same-site"}, id="sibling-subdomain"),
        ],
    )
    def test_cross_origin_decision_is_refused_even_with_the_token(
        self, client: TestClient, users: dict, agent_key: str, headers: dict
    ) -> None:
        """Another origin cannot decide, even if it somehow knows the token."""
        reviewer = signed_in(client, "rita")
        call_id = submit_pending(client, agent_key)
        r = approve(client, call_id, headers={"X-CSRF-Token": reviewer.csrf, **headers}, data={"comment": "ok"})
        assert r.status_code == 403
        assert r.json()["code"] == "csrf_failed"

    @pytest.mark.parametrize(
        "headers",
        [
            pytest.param({}, id="no-fetch-metadata"),
            pytest.param({"Origin": "https://testserver", "Sec-Fetch-Site": "same-origin"}, id="same-origin"),
        ],
    )
    def test_right_token_from_our_origin_decides(
        self, client: TestClient, users: dict, agent_key: str, headers: dict
    ) -> None:
        """The session's token from the console's own origin approves the call."""
        reviewer = signed_in(client, "rita")
        call_id = submit_pending(client, agent_key)
        r = approve(client, call_id, headers={"X-CSRF-Token": reviewer.csrf, **headers}, data={"comment": "ok"})
        assert r.status_code == 303, r.text
        assert "status-approved" in client.get(f"/calls/{call_id}").text

    def test_token_of_another_session_is_refused(self, client: TestClient, users: dict, agent_key: str) -> None:
        """Tokens are per session: one from an earlier session does not work in the next."""
        old = signed_in(client, "rita").csrf
        signed_in(client, "rita")
        call_id = submit_pending(client, agent_key)
        assert approve(client, call_id, headers={"X-CSRF-Token": old}).status_code == 403


class TestOrigin:
    @pytest.mark.parametrize(
        ("url", "origin"),
        [
            ("https://Console.Example.com:443/x?y", "https://console.example.com"),
            ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
            ("http://[::1]:80/", "http://[::1]"),
            ("null", None),
        ],
    )
    def test_origin_is_normalized(self, url: str, origin: str | None) -> None:
        """Scheme and host are lower-cased and default ports dropped before comparing origins."""
        assert origin_of(url) == origin

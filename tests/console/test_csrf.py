"""CSRF on the console's decision POSTs: fetch metadata, Origin and the synchronizer token; and
the public origin (``CALLGATE_PUBLIC_URL``) the console is reached at behind a TLS-terminating proxy."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from httpx2 import Response
from pydantic import ValidationError

from console import auth
from console.csrf import origin_of
from gateway.app import create_app
from gateway.config import Settings
from tests.console.conftest import CSRF_META, LOGIN_TOKEN, PASSWORD, signed_in, submit_pending
from tests.gateway.conftest import TEST_SECRET

PUBLIC = "https://cg.example.com"  # what browsers see (the proxy's TLS origin)
INTERNAL = "http://internal:8080"  # what the gateway sees: plain http to its internal name


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


class BehindProxy:
    """A browser at ``PUBLIC`` whose requests reach the gateway through a TLS-terminating proxy.

    The gateway sees ``http://internal:8080``; the browser still keeps and sends its ``Secure``
    cookies (it speaks https to the proxy), which TestClient would not send over http, so this
    class keeps them itself. Its POSTs carry the ``Origin`` and fetch metadata a browser sends."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.cookies: dict[str, str] = {}

    def get(self, path: str) -> Response:
        return self._send("GET", path, {})

    def post(self, path: str, data: dict[str, str], origin: str = PUBLIC) -> Response:
        return self._send("POST", path, {"Origin": origin, "Sec-Fetch-Site": "same-origin"}, data=data)

    def login(self, username: str = "rita", origin: str = PUBLIC) -> Response:
        match = LOGIN_TOKEN.search(self.get("/login").text)
        assert match
        return self.post("/login", {"username": username, "password": PASSWORD, "csrf_token": match.group(1)},
                         origin=origin)

    def _send(self, method: str, path: str, headers: dict[str, str], **kw: object) -> Response:
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
        r = self.client.request(method, path, headers=headers, follow_redirects=False, **kw)  # type: ignore[arg-type]
        for header in r.headers.get_list("set-cookie"):
            name, _, rest = header.partition("=")
            if "Max-Age=0" in header:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = rest.split(";")[0]
        return r


@contextmanager
def behind_proxy(database_url: str, policy_file: Path, tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> Iterator[BehindProxy]:
    """The gateway configured with ``CALLGATE_PUBLIC_URL`` and reached only through the proxy
    (a context manager rather than a fixture, so test_auth.py can build the same)."""
    monkeypatch.setenv("CALLGATE_PUBLIC_URL", PUBLIC.upper() + ":443/")  # normalized by the setting
    settings = Settings(database_url=database_url, policies=policy_file, secret_key=TEST_SECRET, env="test",
                        data_dir=tmp_path)
    assert settings.public_url == PUBLIC
    with TestClient(create_app(settings), base_url=INTERNAL) as client:
        yield BehindProxy(client)


@pytest.fixture
def proxied(database_url: str, policy_file: Path, tmp_path: Path, users: dict,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[BehindProxy]:
    with behind_proxy(database_url, policy_file, tmp_path, monkeypatch) as browser:
        yield browser


FOREIGN_ORIGINS = (
    "https://evil.example",
    "http://cg.example.com",  # downgraded scheme
    "https://cg.example.com:8443",  # another port
    "https://callgate.cg.example.com",  # a subdomain
    INTERNAL,  # once the public origin is configured it is the only one, not the Host-derived one
    "https://cg.example.com:99999",  # malformed
    "null",  # opaque
)


class TestBehindTlsProxy:
    def test_decision_from_the_public_origin_is_accepted(self, proxied: BehindProxy, agent_key: str) -> None:
        """With CALLGATE_PUBLIC_URL set, a same-origin form post arriving as http://internal decides."""
        assert proxied.login().status_code == 303
        match = CSRF_META.search(proxied.get("/").text)
        assert match
        call_id = submit_pending(proxied.client, agent_key)
        r = proxied.post(f"/calls/{call_id}/approve", {"csrf_token": match.group(1), "comment": "ok"})
        assert r.status_code == 303, r.text
        assert "status-approved" in proxied.get(f"/calls/{call_id}").text

    def test_decision_from_any_other_origin_is_refused(self, proxied: BehindProxy, agent_key: str) -> None:
        """Anything but the configured origin is refused (403 csrf_failed), the right token notwithstanding."""
        assert proxied.login().status_code == 303
        match = CSRF_META.search(proxied.get("/").text)
        assert match
        call_id = submit_pending(proxied.client, agent_key)
        for origin in FOREIGN_ORIGINS:
            r = proxied.post(f"/calls/{call_id}/approve", {"csrf_token": match.group(1)}, origin=origin)
            assert r.status_code == 403 and r.json()["code"] == "csrf_failed", origin
        assert "status-pending" in proxied.get(f"/calls/{call_id}").text

    def test_without_the_setting_the_proxied_origin_is_refused(self, client: TestClient, users: dict) -> None:
        """The failure the setting fixes: unset, the public origin matches nothing the gateway sees."""
        reviewer = signed_in(client, "rita")
        r = client.post("/logout", headers={"X-CSRF-Token": reviewer.csrf, "Origin": "https://cg.example.com"},
                        follow_redirects=False)
        assert r.status_code == 403 and r.json()["code"] == "csrf_failed"
        assert client.get("/", follow_redirects=False).status_code == 200  # still signed in


class TestPublicUrlSetting:
    @pytest.mark.parametrize(
        ("value", "stored"),
        [
            ("", ""),
            ("https://CallGate.Example.com", "https://callgate.example.com"),
            ("https://callgate.example.com:443/", "https://callgate.example.com"),
            ("http://10.1.2.3:8080", "http://10.1.2.3:8080"),
            ("https://[2001:DB8::1]:8443", "https://[2001:db8::1]:8443"),
        ],
    )
    def test_is_normalized_to_the_origin_browsers_send(self, value: str, stored: str) -> None:
        """Stored as scheme://host[:port], lower case, default port dropped: what origin_of computes."""
        assert Settings(public_url=value).public_url == stored
        if value:
            assert origin_of(value) == stored

    @pytest.mark.parametrize(
        "value",
        [
            "callgate.example.com",
            "ftp://callgate.example.com",
            "https://callgate.example.com/console",
            "https://callgate.example.com/?next=/",
            "https://callgate.example.com#top",
            "https://admin:pw@callgate.example.com",
            "https://callgate.example.com:99999",
            "https://call gate.example.com",
            "https://[not-an-ip]",
            "https://",
        ],
    )
    def test_anything_but_an_origin_is_refused_at_startup(self, value: str) -> None:
        """A path, query, credentials, bad port or bad host is a configuration error, not a silent 403 later."""
        with pytest.raises(ValidationError, match="public_url"):
            Settings(public_url=value)

    def test_malformed_origin_header_is_a_403_not_a_500(self, client: TestClient, users: dict) -> None:
        """An unparsable Origin (bad port) is simply not ours."""
        reviewer = signed_in(client, "rita")
        for origin in ("https://testserver:99999", "https://testserver:abc", "http://[::1"):
            r = client.post("/logout", headers={"X-CSRF-Token": reviewer.csrf, "Origin": origin},
                            follow_redirects=False)
            assert r.status_code == 403, origin
        assert auth.SESSION_COOKIE in client.cookies

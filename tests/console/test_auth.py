"""Console login, session cookie, session lifetime and logout, in-process over HTTPS."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from console import auth
from console.ratelimit import LoginLimiter
from gateway.models import AuditEvent, ConsoleSession
from tests.console.conftest import PASSWORD, csrf_token, login, login_form_token, signed_in
from tests.console.test_csrf import INTERNAL, PUBLIC, BehindProxy, behind_proxy


def session_rows(engine: Engine) -> list[ConsoleSession]:
    with engine.connect() as conn:
        return list(conn.execute(select(ConsoleSession.token_sha256, ConsoleSession.user_id, ConsoleSession.csrf_token)))


def audit_types(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return [json.loads(c)["event_type"] for (c,) in conn.execute(select(AuditEvent.canonical).order_by(AuditEvent.seq))]


class TestLogin:
    def test_correct_password_starts_a_session(self, client: TestClient, users: dict, engine: Engine) -> None:
        """The right password answers 303 to the queue with a session whose token is stored only as a hash."""
        r = login(client, "rita")
        assert r.status_code == 303 and r.headers["location"] == "/"
        token = client.cookies.get(auth.SESSION_COOKIE)
        assert token and len(token) == 43
        rows = session_rows(engine)
        assert [bytes(row[0]) for row in rows] == [hashlib.sha256(token.encode()).digest()]
        assert "auth.login_succeeded" in audit_types(engine)
        assert client.get("/").status_code == 200

    def test_unknown_user_and_wrong_password_answer_identically(self, client: TestClient, users: dict) -> None:
        """An unknown username and a wrong password get the same status, headers and body."""
        wrong = login(client, "rita", "not the right password")
        unknown = login(client, "nobody-here", "not the right password")
        assert wrong.status_code == unknown.status_code == 401
        assert wrong.text == unknown.text
        assert "Invalid username or password." in wrong.text
        assert sorted(wrong.headers.keys()) == sorted(unknown.headers.keys())
        assert "set-cookie" not in wrong.headers
        assert auth.SESSION_COOKIE not in client.cookies

    def test_failed_login_is_audited_without_the_username(self, client: TestClient, users: dict, engine: Engine) -> None:
        """A failure writes auth.login_failed with a keyed hash of the name, never the name itself."""
        login(client, "rita", "not the right password")
        with engine.connect() as conn:
            events = [json.loads(c) for (c,) in conn.execute(select(AuditEvent.canonical))]
        failed = [e for e in events if e["event_type"] == "auth.login_failed"]
        assert len(failed) == 1
        assert "rita" not in json.dumps(failed[0])
        assert len(failed[0]["data"]["username_hmac"]) == 64

    def test_login_form_without_its_token_is_refused(self, client: TestClient, users: dict) -> None:
        """A login POST without the pre-login token (a forged form) is refused with 403 and no session."""
        login_form_token(client)
        r = client.post("/login", data={"username": "rita", "password": PASSWORD}, follow_redirects=False)
        assert r.status_code == 403
        assert auth.SESSION_COOKIE not in client.cookies

    def test_cross_site_login_is_refused(self, client: TestClient, users: dict) -> None:
        """Login CSRF: a cross-site POST /login is refused even with a valid form token."""
        token = login_form_token(client)
        r = client.post("/login", data={"username": "rita", "password": PASSWORD, "csrf_token": token},
                        headers={"Sec-Fetch-Site": "cross-site"}, follow_redirects=False)
        assert r.status_code == 403
        assert r.json()["code"] == "csrf_failed"

    def test_next_is_kept_but_only_on_this_site(self, client: TestClient, users: dict) -> None:
        """After login the reviewer lands on the page asked for; other hosts are never a target."""
        token = login_form_token(client)
        r = client.post("/login", data={"username": "rita", "password": PASSWORD, "csrf_token": token,
                                        "next": "//evil.example/x"}, follow_redirects=False)
        assert r.headers["location"] == "/"
        token = login_form_token(client)
        r = client.post("/login", data={"username": "rita", "password": PASSWORD, "csrf_token": token,
                                        "next": "/calls/abc"}, follow_redirects=False)
        assert r.headers["location"] == "/calls/abc"

    def test_pages_redirect_to_login_without_a_session(self, client: TestClient) -> None:
        """Without a session, pages redirect to /login (keeping the target) and htmx gets HX-Redirect."""
        r = client.get("/calls/0190c4b2-0000-7000-8000-000000000000", follow_redirects=False)
        assert r.status_code == 303
        assert r.headers["location"] == "/login?next=/calls/0190c4b2-0000-7000-8000-000000000000"
        r = client.get("/", headers={"HX-Request": "true", "HX-Target": "queue"}, follow_redirects=False)
        assert r.status_code == 401 and r.headers["hx-redirect"] == "/login"


class TestLoginRateLimit:
    def test_sixth_attempt_is_refused_even_with_the_right_password(self, client: TestClient, users: dict) -> None:
        """Five failures lock the account for 15 minutes: the sixth attempt is 429 with Retry-After."""
        for _ in range(5):
            assert login(client, "rita", "wrong password 123").status_code == 401
        r = login(client, "rita", PASSWORD)
        assert r.status_code == 429
        assert 0 < int(r.headers["retry-after"]) <= 15 * 60
        assert auth.SESSION_COOKIE not in client.cookies

    def test_lock_counts_the_normalized_name(self, client: TestClient, users: dict) -> None:
        """Case and width variants of a name share one failure counter."""
        for name in ("rita", "RITA", "Rita", "ｒｉｔａ", " rita"):
            login(client, name, "wrong password 123")
        assert login(client, "rita", PASSWORD).status_code == 429

    def test_other_accounts_are_unaffected(self, client: TestClient, users: dict) -> None:
        """A locked account does not lock anyone else out."""
        for _ in range(5):
            login(client, "rita", "wrong password 123")
        assert login(client, "rita", PASSWORD).status_code == 429
        assert login(client, "ada", PASSWORD).status_code == 303

    def test_unknown_names_are_limited_the_same_way(self, client: TestClient, users: dict) -> None:
        """A name that does not exist is locked after five failures too, with the same 429 answer."""
        for name in ("ghost", "rita"):
            for _ in range(5):
                assert login(client, name, "wrong password 123").status_code == 401
        ghost, rita = login(client, "ghost", "wrong password 123"), login(client, "rita", "wrong password 123")
        assert ghost.status_code == rita.status_code == 429
        assert ghost.text == rita.text and sorted(ghost.headers.keys()) == sorted(rita.headers.keys())

    def test_locked_attempts_are_not_audited_as_failures(self, client: TestClient, users: dict,
                                                         engine: Engine) -> None:
        """Only attempts whose password was checked write auth.login_failed; a 429 checks nothing."""
        for _ in range(7):
            login(client, "rita", "wrong password 123")
        assert audit_types(engine).count("auth.login_failed") == 5

    def test_lock_ends_when_the_window_passes(self, client: TestClient, users: dict, app) -> None:  # type: ignore[no-untyped-def]
        """After 15 minutes without failures the account can sign in again."""
        now = [1000.0]
        app.state.console.limiter = LoginLimiter(lambda: now[0])
        for _ in range(5):
            login(client, "rita", "wrong password 123")
        assert login(client, "rita", PASSWORD).status_code == 429
        now[0] += 15 * 60 + 1
        assert login(client, "rita", PASSWORD).status_code == 303


@pytest.fixture
def proxied(database_url: str, policy_file: Path, tmp_path: Path, users: dict,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[BehindProxy]:
    with behind_proxy(database_url, policy_file, tmp_path, monkeypatch) as browser:
        yield browser


class TestLoginBehindProxy:
    def test_login_from_the_public_origin_is_accepted(self, proxied: BehindProxy, engine: Engine) -> None:
        """CALLGATE_PUBLIC_URL set, request seen as http://internal: the browser's login form works."""
        r = proxied.login(origin=PUBLIC)
        assert r.status_code == 303 and r.headers["location"] == "/"
        assert auth.SESSION_COOKIE in proxied.cookies
        assert proxied.get("/").status_code == 200
        assert "auth.login_succeeded" in audit_types(engine)

    def test_login_from_another_origin_is_refused(self, proxied: BehindProxy) -> None:
        """Login CSRF behind the proxy: a foreign origin, or the internal one, gets 403 and no session."""
        for origin in ("https://evil.example", INTERNAL):
            r = proxied.login(origin=origin)
            assert r.status_code == 403 and r.json()["code"] == "csrf_failed", origin
        assert auth.SESSION_COOKIE not in proxied.cookies


class TestSessionCookie:
    def test_cookie_has_exactly_the_host_prefix_flags(self, client: TestClient, users: dict) -> None:
        """Set-Cookie is __Host-callgate_session=<43 chars>; Path=/; Secure; HttpOnly; SameSite=Lax, nothing else."""
        r = login(client, "rita")
        cookies = [v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith(auth.SESSION_COOKIE)]
        assert len(cookies) == 1
        name_value, *attributes = [part.strip() for part in cookies[0].split(";")]
        name, _, value = name_value.partition("=")
        assert name == "__Host-callgate_session" and len(value) == 43
        assert attributes == ["Path=/", "Secure", "HttpOnly", "SameSite=Lax"]

    def test_login_rotates_the_session(self, client: TestClient, users: dict, engine: Engine) -> None:
        """Signing in again mints a new token and kills the one the browser arrived with."""
        signed_in(client, "rita")
        first = client.cookies.get(auth.SESSION_COOKIE)
        assert login(client, "rita").status_code == 303
        second = client.cookies.get(auth.SESSION_COOKIE)
        assert first != second
        assert [bytes(r[0]) for r in session_rows(engine)] == [hashlib.sha256(second.encode()).digest()]
        client.cookies.clear()
        client.cookies.set(auth.SESSION_COOKIE, first)
        assert client.get("/", follow_redirects=False).status_code == 303

    def test_forged_session_token_is_ignored(self, client: TestClient, users: dict) -> None:
        """A cookie that matches no session is treated as no session."""
        client.cookies.set(auth.SESSION_COOKIE, "A" * 43)
        assert client.get("/", follow_redirects=False).status_code == 303


class TestSessionLifetime:
    def test_idle_session_expires_after_30_minutes(self, client: TestClient, users: dict, app) -> None:  # type: ignore[no-untyped-def]
        """31 idle minutes end the session; activity before that pushes the deadline."""
        state = app.state.console
        start = state.now()
        signed_in(client, "rita")
        state.now = lambda: start + timedelta(minutes=20)
        assert client.get("/").status_code == 200  # activity: idle deadline is now +50 min
        state.now = lambda: start + timedelta(minutes=45)
        assert client.get("/").status_code == 200
        state.now = lambda: start + timedelta(minutes=45 + 31)
        r = client.get("/", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/login"

    def test_background_polls_do_not_keep_a_session_alive(self, client: TestClient, users: dict, app) -> None:  # type: ignore[no-untyped-def]
        """The queue's every-second poll is not activity: an unattended tab still times out."""
        state = app.state.console
        start = state.now()
        signed_in(client, "rita")
        poll = {"HX-Request": "true", "HX-Trigger": "queue", "HX-Target": "queue"}
        for minute in (10, 20, 29):
            state.now = lambda m=minute: start + timedelta(minutes=m)
            assert client.get("/", headers=poll).status_code == 200
        state.now = lambda: start + timedelta(minutes=31)
        r = client.get("/", headers=poll, follow_redirects=False)
        assert r.status_code == 401 and r.headers["hx-redirect"] == "/login"

    def test_session_ends_after_12_hours_however_active(self, client: TestClient, users: dict, app) -> None:  # type: ignore[no-untyped-def]
        """The absolute lifetime is 12 h, even for a session used every few minutes."""
        state = app.state.console
        start = state.now()
        signed_in(client, "rita")
        for minutes in range(20, 12 * 60, 20):
            state.now = lambda m=minutes: start + timedelta(minutes=m)
            assert client.get("/", follow_redirects=False).status_code == 200, minutes
        state.now = lambda: start + timedelta(hours=12, seconds=1)
        assert client.get("/", follow_redirects=False).status_code == 303


class TestLogout:
    def test_logout_invalidates_the_session(self, client: TestClient, users: dict, engine: Engine) -> None:
        """Logout deletes the session row and clears the cookie; replaying the old token gets nothing."""
        signed_in(client, "rita")
        token = client.cookies.get(auth.SESSION_COOKIE)
        r = client.post("/logout", data={"csrf_token": csrf_token(client)}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/login"
        assert any(v.startswith(f"{auth.SESSION_COOKIE}=;") and "Max-Age=0" in v
                   for k, v in r.headers.multi_items() if k == "set-cookie")
        assert session_rows(engine) == []
        assert "auth.logout" in audit_types(engine)
        client.cookies.clear()
        client.cookies.set(auth.SESSION_COOKIE, token)
        assert client.get("/", follow_redirects=False).status_code == 303

    def test_logout_needs_the_csrf_token(self, client: TestClient, users: dict, engine: Engine) -> None:
        """A forged logout (no token) is refused and the session survives."""
        signed_in(client, "rita")
        assert client.post("/logout", follow_redirects=False).status_code == 403
        assert len(session_rows(engine)) == 1
        assert client.get("/").status_code == 200

"""The console's pages and decisions, in-process: queue, detail, approve/deny, roles, API keys."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from gateway.models import AuditEvent, ToolCall
from tests.console.conftest import signed_in, submit_pending

HTMX_POLL = {"HX-Request": "true", "HX-Trigger": "queue", "HX-Target": "queue"}


def decide(client: TestClient, call_id: str, verb: str, csrf: str, comment: str = "", **headers: str):  # type: ignore[no-untyped-def]
    return client.post(f"/calls/{call_id}/{verb}", data={"comment": comment, "csrf_token": csrf},
                       headers=headers, follow_redirects=False)


def stored(engine: Engine, call_id: str) -> dict:
    with engine.connect() as conn:
        row = conn.execute(select(ToolCall.__table__).where(ToolCall.id == call_id)).mappings().one()
    return dict(row)


class TestQueue:
    def test_queue_lists_pending_calls(self, client: TestClient, users: dict, agent_key: str) -> None:
        """The queue shows each pending call with its tool, agent, rule and a link to its detail."""
        signed_in(client, "vic")
        call_id = submit_pending(client, agent_key)
        page = client.get("/").text
        assert f'href="/calls/{call_id}"' in page
        assert "big-refunds-need-a-human" in page and "billing-bot" in page
        assert 'hx-trigger="every 1s"' in page

    def test_poll_answers_only_the_queue_fragment(self, client: TestClient, users: dict, agent_key: str) -> None:
        """htmx's poll gets the queue block alone (same URL, same template), including new calls."""
        signed_in(client, "vic")
        before = client.get("/", headers=HTMX_POLL)
        assert before.text.lstrip().startswith('<section id="queue"') and "<html" not in before.text
        assert "Nothing is waiting" in before.text
        call_id = submit_pending(client, agent_key)
        after = client.get("/", headers=HTMX_POLL).text
        assert f'data-call-id="{call_id}"' in after

    def test_decided_calls_leave_the_queue(self, client: TestClient, users: dict, agent_key: str) -> None:
        """Once approved, a call is no longer listed as waiting."""
        reviewer = signed_in(client, "rita")
        call_id = submit_pending(client, agent_key)
        assert decide(client, call_id, "approve", reviewer.csrf).status_code == 303
        assert call_id not in client.get("/", headers=HTMX_POLL).text

    def test_pages_carry_the_hardening_headers(self, client: TestClient, users: dict) -> None:
        """Console pages send CSP, frame-ancestors 'none', nosniff, same-origin referrer and no-store."""
        signed_in(client, "vic")
        headers = client.get("/").headers
        csp = headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "same-origin"
        assert headers["cache-control"] == "no-store"
        assert headers["strict-transport-security"].startswith("max-age=")

    def test_htmx_is_served_from_the_gateway(self, client: TestClient) -> None:
        """The page loads the vendored htmx from /static (never a CDN), and it is served with nosniff."""
        page = client.get("/login").text
        assert '<script src="/static/htmx-2.0.11.min.js" defer></script>' in page
        assert "//" not in page.split("<script", 1)[1].split(">", 1)[0].replace('src="/static/', "")
        js = client.get("/static/htmx-2.0.11.min.js")
        assert js.status_code == 200 and "htmx" in js.text[:2000]
        assert js.headers["x-content-type-options"] == "nosniff"
        assert "javascript" in js.headers["content-type"]

    def test_api_is_untouched_by_console_headers(self, client: TestClient) -> None:
        """/v1 and operational endpoints do not get the console's CSP or no-store."""
        r = client.get("/healthz")
        assert "content-security-policy" not in r.headers


class TestDetail:
    def test_detail_shows_what_a_reviewer_needs(self, client: TestClient, users: dict, agent_key: str) -> None:
        """Tool, redacted args pretty-printed, rule, reason, agent, policy version and time left are shown."""
        signed_in(client, "rita")
        call_id = submit_pending(client, agent_key, amount=750)
        page = client.get(f"/calls/{call_id}").text
        assert "<h1>stripe.refund</h1>" in page
        assert "&#34;amount&#34;: 750" in page  # pretty-printed and escaped
        assert "sk_live_" not in page and "[REDACTED" in page
        assert "big-refunds-need-a-human" in page and "billing-bot" in page
        assert "Policy version</dt><dd>1" in page
        assert "left</span>" in page and "14m" in page
        assert 'hx-post="/calls/' + call_id + '/approve"' in page

    def test_unknown_call_is_404(self, client: TestClient, users: dict) -> None:
        """A well-formed id that does not exist, or a malformed one, is a 404 page."""
        signed_in(client, "rita")
        assert client.get("/calls/0190c4b2-0000-7000-8000-000000000000").status_code == 404
        assert client.get("/calls/not-a-uuid").status_code == 404

    def test_arguments_cannot_inject_markup(self, client: TestClient, users: dict, agent_key: str) -> None:
        """Agent-supplied strings are escaped everywhere on the page."""
        import uuid

        call_id = str(uuid.uuid4())
        client.post("/v1/calls", json={"id": call_id, "tool": "stripe.refund",
                                       "args": {"amount": 999, "customer_id": "<script>alert(1)</script>"}},
                    headers={"Authorization": f"Bearer {agent_key}"})
        signed_in(client, "rita")
        assert "<script>alert(1)" not in client.get(f"/calls/{call_id}").text
        assert "<script>alert(1)" not in client.get("/").text

    def test_viewer_sees_no_decision_buttons(self, client: TestClient, users: dict, agent_key: str) -> None:
        """A viewer can open a call but gets no approve/deny form."""
        signed_in(client, "vic")
        call_id = submit_pending(client, agent_key)
        page = client.get(f"/calls/{call_id}").text
        assert "stripe.refund" in page and "/approve" not in page and "can view calls but not decide" in page


class TestDecisions:
    def test_approve_records_who_how_and_why(self, client: TestClient, users: dict, agent_key: str,
                                             engine: Engine) -> None:
        """Approving stores approved, the reviewer, channel console and the comment, and audits it."""
        reviewer = signed_in(client, "rita")
        call_id = submit_pending(client, agent_key)
        r = decide(client, call_id, "approve", reviewer.csrf, "checked with finance")
        assert r.status_code == 303 and r.headers["location"] == f"/calls/{call_id}"
        row = stored(engine, call_id)
        assert (row["status"], row["decided_by"], row["decided_channel"], row["comment"]) == (
            "approved", "rita", "console", "checked with finance")
        with engine.connect() as conn:
            events = [json.loads(c) for (c,) in conn.execute(
                select(AuditEvent.canonical).where(AuditEvent.tool_call_id == call_id).order_by(AuditEvent.seq))]
        decided = [e for e in events if e["event_type"] == "approval.decided"]
        assert decided and decided[0]["actor"] == {"type": "user", "id": "rita"}

    def test_deny_through_htmx_swaps_the_decision_block(self, client: TestClient, users: dict, agent_key: str,
                                                         engine: Engine) -> None:
        """An htmx deny answers the decision fragment plus an out-of-band status badge."""
        reviewer = signed_in(client, "ada")
        call_id = submit_pending(client, agent_key)
        r = decide(client, call_id, "deny", reviewer.csrf, "too large", **{"HX-Request": "true"})
        assert r.status_code == 200
        assert r.text.lstrip().startswith('<section id="decision"')
        assert "status-denied" in r.text and "too large" in r.text and 'hx-swap-oob="true"' in r.text
        assert stored(engine, call_id)["status"] == "denied"

    def test_second_decision_is_a_conflict(self, client: TestClient, users: dict, agent_key: str) -> None:
        """The loser of a double click gets 409 already_decided; htmx gets the message in place."""
        reviewer = signed_in(client, "rita")
        call_id = submit_pending(client, agent_key)
        assert decide(client, call_id, "approve", reviewer.csrf).status_code == 303
        again = decide(client, call_id, "deny", reviewer.csrf)
        assert again.status_code == 409 and again.json()["code"] == "already_decided"
        fragment = decide(client, call_id, "deny", reviewer.csrf, **{"HX-Request": "true"})
        assert fragment.status_code == 409 and "already approved" in fragment.text

    def test_overlong_comment_is_refused(self, client: TestClient, users: dict, agent_key: str,
                                         engine: Engine) -> None:
        """A comment over 2000 characters is 422 and decides nothing."""
        reviewer = signed_in(client, "rita")
        call_id = submit_pending(client, agent_key)
        assert decide(client, call_id, "approve", reviewer.csrf, "x" * 2001).status_code == 422
        assert stored(engine, call_id)["status"] == "pending"

    def test_viewer_cannot_decide(self, client: TestClient, users: dict, agent_key: str, engine: Engine) -> None:
        """A viewer's approve and deny are 403 even with a valid session and token."""
        viewer = signed_in(client, "vic")
        call_id = submit_pending(client, agent_key)
        for verb in ("approve", "deny"):
            r = decide(client, call_id, verb, viewer.csrf)
            assert r.status_code == 403 and r.json()["code"] == "role_forbidden"
        assert stored(engine, call_id)["status"] == "pending"

    @pytest.mark.parametrize("key_fixture", ["agent_key", "admin_key"])
    def test_api_keys_cannot_decide(self, client: TestClient, users: dict, agent_key: str, key_fixture: str,
                                    request: pytest.FixtureRequest, engine: Engine) -> None:
        """A bearer key of any scope is refused on decision routes, alone (403) or next to a session."""
        key = request.getfixturevalue(key_fixture)
        call_id = submit_pending(client, agent_key)
        alone = client.post(f"/calls/{call_id}/approve", headers={"Authorization": f"Bearer {key}"},
                            follow_redirects=False)
        assert alone.status_code == 403 and alone.json()["code"] == "api_keys_cannot_decide"
        reviewer = signed_in(client, "rita")
        with_session = decide(client, call_id, "approve", reviewer.csrf, Authorization=f"Bearer {key}")
        assert with_session.status_code == 403 and with_session.json()["code"] == "api_keys_cannot_decide"
        assert stored(engine, call_id)["status"] == "pending"

    def test_decision_without_a_session_is_401(self, client: TestClient, agent_key: str) -> None:
        """No session cookie: 401, nothing decided."""
        call_id = submit_pending(client, agent_key)
        r = client.post(f"/calls/{call_id}/approve", data={"comment": "x"}, follow_redirects=False)
        assert r.status_code == 401 and r.json()["code"] == "login_required"

    def test_decision_on_unknown_call_is_404(self, client: TestClient, users: dict) -> None:
        """Deciding a call that does not exist is a 404."""
        reviewer = signed_in(client, "rita")
        r = decide(client, "0190c4b2-0000-7000-8000-000000000000", "approve", reviewer.csrf)
        assert r.status_code == 404

    def test_non_form_bodies_are_refused(self, client: TestClient, users: dict, agent_key: str) -> None:
        """Only URL-encoded forms are accepted (no JSON, no multipart)."""
        reviewer = signed_in(client, "rita")
        call_id = submit_pending(client, agent_key)
        r = client.post(f"/calls/{call_id}/approve", json={"comment": "x"},
                        headers={"X-CSRF-Token": reviewer.csrf}, follow_redirects=False)
        assert r.status_code == 415


class TestLiveUpdates:
    def test_status_poll_replaces_the_form_once_decided_elsewhere(self, client: TestClient, users: dict,
                                                                 agent_key: str) -> None:
        """When another reviewer decides, the open detail page's status poll swaps the form for the outcome."""
        poll = {"HX-Request": "true", "HX-Trigger": "call-status", "HX-Target": "call-status"}
        reviewer = signed_in(client, "rita")
        call_id = submit_pending(client, agent_key)
        pending = client.get(f"/calls/{call_id}", headers=poll).text
        assert pending.lstrip().startswith('<div id="call-status"') and 'id="decision"' not in pending
        assert decide(client, call_id, "deny", reviewer.csrf, "no").status_code == 303
        decided = client.get(f"/calls/{call_id}", headers=poll).text
        assert "status-denied" in decided
        assert '<section id="decision" class="card" hx-swap-oob="true">' in decided
        assert "hx-trigger" not in decided  # polling stops once there is nothing left to wait for

    def test_htmx_decision_after_the_session_ended_goes_to_login(self, client: TestClient, users: dict,
                                                                  agent_key: str) -> None:
        """A click on Approve after the session expired sends the page to the login form."""
        call_id = submit_pending(client, agent_key)
        r = client.post(f"/calls/{call_id}/approve", follow_redirects=False, headers={
            "HX-Request": "true", "HX-Current-URL": f"https://testserver/calls/{call_id}"})
        assert r.status_code == 401 and r.headers["hx-redirect"] == f"/login?next=/calls/{call_id}"

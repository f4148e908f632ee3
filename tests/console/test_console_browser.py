"""The console in a real browser against a real ``callgate serve``: a reviewer watches the queue,
an agent's call appears without a reload, and the reviewer's click releases (or stops) the agent;
or nobody decides in time, the call expires in front of the reviewer, and a late click changes
nothing.

Drives Debian's Chromium (``/usr/bin/chromium``; ``scripts/test`` installs it) through Playwright's
sync API -- no browser download. With ``CALLGATE_SCREENSHOTS=1`` the approve test also writes
``docs/console-queue.png`` and ``docs/console-detail.png`` for the README.
"""

from __future__ import annotations

import json
import os
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import callgate
from tests.e2e.processes import Served, cli, serve

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DOCS = Path(__file__).resolve().parents[2] / "docs"
SCREENSHOTS = os.environ.get("CALLGATE_SCREENSHOTS") == "1"
PASSWORD = "reviewer password 42"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.xdist_group("console-browser"),
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason=f"{CHROMIUM} is missing (scripts/test installs Debian's chromium package)"),
]

POLICY = """
defaults: {action: allow, approval_timeout: 10m}
policies:
  - tool: wire_transfer
    rules:
      - name: large-transfers-need-a-human
        when: {arg: amount, gt: 1000}
        action: require_approval
        reason: Transfers over 1000 EUR need a second pair of eyes
  - tool: refund_card
    rules:
      - name: card-refunds-expire-fast
        when: {arg: amount, gt: 0}
        action: require_approval
        approval_timeout: 10s
        reason: Card refunds must be approved within seconds
  - tool: send_email
    rules:
      - name: outside-recipients-need-a-human
        when: {not: {arg: to, email_domain_in: [example.com]}}
        action: require_approval
        reason: Mail leaving example.com needs approval
"""


@dataclass
class Gateway:
    served: Served
    agent_key: str

    @property
    def url(self) -> str:
        return self.served.url


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """``callgate serve`` on SQLite with reviewer ``rita`` and an agent key for ``bot``."""
    workdir = tmp_path_factory.mktemp("console-browser")
    (workdir / "policy.yaml").write_text(POLICY)
    env = {
        "CALLGATE_DATA_DIR": str(workdir / "data"),
        "CALLGATE_DATABASE_URL": f"sqlite:///{workdir / 'data' / 'callgate.db'}",
        "CALLGATE_SECRET_KEY": "browser-secret-" + uuid.uuid4().hex,
        "CALLGATE_POLICIES": str(workdir / "policy.yaml"),
        "CALLGATE_ENV": "test",  # cheap argon2
    }
    cli(env, "migrate")
    cli(env, "users", "create", "rita", "--role", "reviewer", "--password-stdin", input=PASSWORD + "\n")
    key = cli(env, "keys", "create", "--agent", "bot").stdout.strip().splitlines()[-1]
    with serve(env, workdir) as served:
        yield Gateway(served, key)


@pytest.fixture(scope="module")
def browser(gateway: Gateway) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def reviewer_page(browser: Any, gateway: Gateway, errors: list[str], *, fake_clock: bool = False) -> Any:
    """A fresh browser context (no cookies), signed in as the reviewer, on the queue page. Script
    errors, CSP violations and answers >= 400 are appended to ``errors``. ``fake_clock`` installs
    Playwright's clock first (it runs normally until a test pauses it): the clock belongs to the
    whole context, so a page whose timers a test freezes needs a context of its own."""
    context = browser.new_context(viewport={"width": 1280, "height": 760})
    if fake_clock:
        context.clock.install()
    pg = context.new_page()
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    pg.goto(gateway.url + "/")
    assert pg.url.startswith(gateway.url + "/login")
    pg.fill("#username", "rita")
    pg.fill("#password", PASSWORD)
    pg.click("button[type=submit]")
    pg.wait_for_url(gateway.url + "/")
    cookies = {c["name"]: c for c in context.cookies()}
    session = cookies["__Host-callgate_session"]  # the __Host- cookie works on http://127.0.0.1
    assert (session["secure"], session["httpOnly"], session["sameSite"], session["path"]) == (True, True, "Lax", "/")
    return pg


@pytest.fixture
def page(browser: Any, gateway: Gateway) -> Iterator[Any]:
    """A fresh browser context (no cookies), signed in as the reviewer, on the queue page."""
    errors: list[str] = []
    pg = reviewer_page(browser, gateway, errors)
    yield pg
    assert errors == [], errors  # no CSP violations, no script errors
    pg.context.close()


@pytest.fixture
def sdk(gateway: Gateway) -> Iterator[None]:
    callgate.reset()
    callgate.configure(url=gateway.url, api_key=gateway.agent_key, agent="bot", approval_timeout=60)
    yield
    callgate.reset()


@dataclass
class Agent:
    """Runs a guarded tool in a background thread, as an agent framework would."""

    tool: str = "wire_transfer"
    ran: list[dict[str, Any]] = field(default_factory=list)
    result: Any = None
    error: BaseException | None = None
    thread: threading.Thread | None = None

    def start(self, **kwargs: Any) -> None:
        @callgate.guard(name=self.tool)
        def wire_transfer(iban: str, amount: int) -> str:
            self.ran.append({"iban": iban, "amount": amount})
            return f"sent {amount} to {iban}"

        def run() -> None:
            try:
                with callgate.session("support-chat-17"):
                    self.result = wire_transfer(**kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to the test thread
                self.error = exc

        self.thread = threading.Thread(target=run, name="agent", daemon=True)
        self.thread.start()

    def join(self, timeout: float = 30) -> None:
        assert self.thread is not None
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the agent is still waiting after the decision"


def watch_queue_until_the_call_arrives(page: Any, agent: Agent, **kwargs: Any) -> str:
    """Start the agent only after the queue is open, and wait for its row to be polled in."""
    page.evaluate("window.__queueMarker = 'no reload happened'")
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url) if frame == page.main_frame else None)
    assert page.locator("#queue tr[data-call-id]", has_text=agent.tool).count() == 0
    agent.start(**kwargs)
    row = page.locator("#queue tr[data-call-id]", has_text=agent.tool)
    row.wait_for(state="visible", timeout=15_000)
    assert page.evaluate("window.__queueMarker") == "no reload happened"
    assert navigations == []
    return str(row.get_attribute("data-call-id"))


def open_call(page: Any, call_id: str, amount: int, *, tool: str = "wire_transfer",
              rule: str = "large-transfers-need-a-human") -> None:
    """Click the call's row in the queue and check its detail page."""
    page.locator(f'#queue tr[data-call-id="{call_id}"] a.tool').click()
    page.wait_for_url(f"**/calls/{call_id}")
    assert page.locator("h1").inner_text() == tool
    assert rule in page.locator("dl.facts").inner_text()
    assert f'"amount": {amount}' in page.locator("pre.args").inner_text()


def open_and_decide(page: Any, call_id: str, amount: int, button: str, comment: str, *,
                    screenshot: bool = False) -> None:
    open_call(page, call_id, amount)
    page.fill("#comment", comment)
    if screenshot:
        page.screenshot(path=str(DOCS / "console-detail.png"), full_page=True)
    page.evaluate("window.__detailMarker = 1")
    page.get_by_role("button", name=button).click()
    status = "approved" if button == "Approve" else "denied"
    page.locator(f"#decision .badge.status-{status}").wait_for(timeout=10_000)
    page.locator(f"#call-status .badge.status-{status}").wait_for(timeout=10_000)
    assert page.evaluate("window.__detailMarker") == 1  # htmx swapped the block; no page load
    assert comment in page.locator("#decision").inner_text()


def submit_other_pending_call(gateway: Gateway) -> None:
    """A second waiting call, so the README screenshot shows a queue rather than one row."""
    body = {"id": str(uuid.uuid4()), "tool": "send_email", "session_id": "newsletter-run-3",
            "args": {"to": "press@competitor.test", "subject": "Q3 numbers", "attachment": "q3.xlsx"}}
    request = urllib.request.Request(gateway.url + "/v1/calls", data=json.dumps(body).encode(), method="POST",
                                     headers={"Authorization": f"Bearer {gateway.agent_key}",
                                              "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as r:
        assert json.loads(r.read())["status"] == "pending"


class TestConsoleInBrowser:
    def test_reviewer_approves_and_the_waiting_agent_runs_once(self, page: Any, gateway: Gateway, sdk: None) -> None:
        """A new call appears in the open queue without a reload; Approve releases the agent, which runs once."""
        if SCREENSHOTS:
            DOCS.mkdir(exist_ok=True)
            submit_other_pending_call(gateway)
        agent = Agent()
        call_id = watch_queue_until_the_call_arrives(page, agent, iban="DE89370400440532013000", amount=2500)
        if SCREENSHOTS:
            page.locator("#queue tr[data-call-id]").nth(1).wait_for()
            page.screenshot(path=str(DOCS / "console-queue.png"), full_page=True)
        assert agent.ran == [] and agent.thread is not None and agent.thread.is_alive()

        open_and_decide(page, call_id, 2500, "Approve", "Verified with the customer by phone", screenshot=SCREENSHOTS)
        agent.join()
        assert agent.error is None, repr(agent.error)
        assert agent.result == "sent 2500 to DE89370400440532013000"
        assert agent.ran == [{"iban": "DE89370400440532013000", "amount": 2500}]
        page.goto(gateway.url + "/")
        assert page.locator(f'#queue tr[data-call-id="{call_id}"]').count() == 0

    def test_reviewer_denies_and_the_agent_gets_the_comment(self, page: Any, gateway: Gateway, sdk: None) -> None:
        """Deny stops the agent: the tool never runs and ApprovalDenied carries the reviewer's comment."""
        agent = Agent()
        call_id = watch_queue_until_the_call_arrives(page, agent, iban="GB33BUKB20201555555555", amount=9000)
        open_and_decide(page, call_id, 9000, "Deny", "Unknown payee; escalate to finance")
        agent.join()
        assert isinstance(agent.error, callgate.ApprovalDenied), repr(agent.error)
        assert agent.error.comment == "Unknown payee; escalate to finance"
        assert agent.error.call_id == call_id
        assert agent.ran == []

    def test_nobody_decides_in_time_the_call_expires_and_a_late_click_changes_nothing(
            self, page: Any, browser: Any, gateway: Gateway, sdk: None) -> None:
        """refund_card waits at most 10 s (policy ``approval_timeout``). The reviewer sees it arrive,
        opens it, and watches it expire: the detail page says so without a reload and its Approve
        button goes away. A second window opened before the expiry, whose page had not refreshed yet
        (its timers paused, like a laptop lid closed at the wrong moment), still shows Approve: the
        click is refused with a clear message and changes nothing. The tool never runs and the
        caller gets ApprovalExpired."""
        agent = Agent(tool="refund_card")
        call_id = watch_queue_until_the_call_arrives(page, agent, iban="FR1420041010050500013M02606", amount=75)
        open_call(page, call_id, 75, tool="refund_card", rule="card-refunds-expire-fast")
        page.evaluate("window.__detailMarker = 1")
        assert page.locator("#call-status .badge.status-pending").count() == 1

        stale_errors: list[str] = []
        stale = reviewer_page(browser, gateway, stale_errors, fake_clock=True)  # the reviewer's other window
        stale.goto(f"{gateway.url}/calls/{call_id}")
        stale.get_by_role("button", name="Approve").wait_for()
        stale.clock.pause_at(datetime.now(UTC) + timedelta(milliseconds=100))  # its status poll stops here

        # The expiry, seen by the live page without a reload (its status poll, every 2 s).
        page.locator("#call-status .badge.status-expired").wait_for(timeout=20_000)
        page.locator("#decision .badge.status-expired").wait_for(timeout=5_000)
        assert page.get_by_role("button", name="Approve").count() == 0
        assert page.evaluate("window.__detailMarker") == 1
        agent.join()
        assert isinstance(agent.error, callgate.ApprovalExpired), repr(agent.error)
        assert agent.error.call_id == call_id
        assert agent.ran == []

        # The stale window still offers Approve; the click is refused and says why.
        assert stale.locator("#call-status .badge.status-pending").count() == 1
        stale.fill("#comment", "sorry, was away")
        stale.get_by_role("button", name="Approve").click()
        stale.clock.resume()
        refusal = stale.locator("#decision .error[role=alert]")
        refusal.wait_for(timeout=10_000)
        assert "expired" in refusal.inner_text() and "can no longer be decided" in refusal.inner_text()
        stale.locator("#call-status .badge.status-expired").wait_for(timeout=5_000)
        assert stale.get_by_role("button", name="Approve").count() == 0
        # The refusal (and Chromium's console line about it) is the only error that window saw.
        assert sorted(stale_errors) == [f"409 {gateway.url}/calls/{call_id}/approve",
                                        "Failed to load resource: the server responded with a status of 409 (Conflict)"]
        stale.context.close()

        # Nothing changed: still expired, never claimed, never run; gone from the queue.
        assert read_call(gateway, call_id)["status"] == "expired"
        assert read_call(gateway, call_id)["decided_by"] in (None, "system:expiry")
        assert agent.ran == []
        page.goto(gateway.url + "/")
        assert page.locator(f'#queue tr[data-call-id="{call_id}"]').count() == 0


def read_call(gateway: Gateway, call_id: str) -> dict[str, Any]:
    """The call as its agent sees it (``GET /v1/calls/{id}``)."""
    request = urllib.request.Request(f"{gateway.url}/v1/calls/{call_id}",
                                     headers={"Authorization": f"Bearer {gateway.agent_key}"})
    with urllib.request.urlopen(request, timeout=10) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]

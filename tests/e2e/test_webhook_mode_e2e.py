"""approval_mode="webhook" end to end: a real `callgate serve`, the SDK in webhook mode in this
process, a receiver web app (stdlib HTTP server) that does what the SDK's docs tell an
application to do (``verify`` then ``dispatch``), and decisions by the `callgate calls
approve|deny` CLI in its own process. The gateway's embedded webhook worker delivers the signed
event; the held call runs exactly once, in the receiver, through the claim."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import callgate
from callgate import webhooks
from callgate.webhooks import MemoryReplayGuard
from tests.e2e.processes import cli, free_port, serve

pytestmark = pytest.mark.slow

POLICY = """
defaults: {action: allow}
policies:
  - tool: refund
    rules:
      - name: big-refunds-need-a-human
        when: {arg: amount, gt: 200}
        action: require_approval
"""


@dataclass
class Receiver:
    """The application's webhook endpoint: verify, then dispatch to the held call."""

    secret: str = ""
    replays: MemoryReplayGuard = field(default_factory=MemoryReplayGuard)
    lock: threading.Lock = field(default_factory=threading.Lock)
    deliveries: list[tuple[bytes, dict[str, str], int, str]] = field(default_factory=list)

    def handle(self, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        try:
            event = webhooks.verify(body, headers, self.secret, replays=self.replays)
        except callgate.WebhookVerificationError as e:
            return (200 if e.code == "replayed" else 400), e.code
        try:
            if webhooks.dispatch(event):
                return 204, f"dispatched {event.status}"
            return 204, "no handle"
        except callgate.GatewayUnavailable:
            event.forget()
            return 503, "gateway unavailable"

    def record(self, body: bytes, headers: dict[str, str], status: int, note: str) -> None:
        with self.lock:
            self.deliveries.append((body, headers, status, note))

    def notes(self) -> list[str]:
        with self.lock:
            return [d[3] for d in self.deliveries]


def receiver_server(receiver: Receiver) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k: v for k, v in self.headers.items()}
            status, note = receiver.handle(body, headers)
            receiver.record(body, headers, status, note)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="webhook-receiver-server",
                     daemon=True).start()
    return server


@pytest.fixture(name="receiver")
def _receiver() -> Iterator[tuple[Receiver, str]]:
    receiver = Receiver()
    server = receiver_server(receiver)
    yield receiver, f"http://127.0.0.1:{server.server_address[1]}/callgate/webhook"
    server.shutdown()
    server.server_close()


def wait_for(predicate: Any, timeout: float = 30.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, f"{what} not met within {timeout}s"
        time.sleep(0.05)


def test_webhook_mode_runs_the_held_call_once(empty_database_url: str, tmp_path: Path, sdk_reset: None,
                                              receiver: tuple[Receiver, str]) -> None:
    app, url = receiver
    (tmp_path / "policy.yaml").write_text(POLICY)
    env = {
        "CALLGATE_DATABASE_URL": empty_database_url,
        "CALLGATE_DATA_DIR": str(tmp_path / "data"),
        "CALLGATE_SECRET_KEY": "e2e-secret-" + uuid.uuid4().hex,
        "CALLGATE_POLICIES": str(tmp_path / "policy.yaml"),
        "CALLGATE_ENV": "test",
        "CALLGATE_WEBHOOK_ALLOW_PRIVATE": "true",  # the receiver listens on loopback...
        "CALLGATE_WEBHOOK_ALLOW_HTTP": "true",  # ...over plain http
        "CALLGATE_WEBHOOK_POLL_SECONDS": "0.2",  # CLI decisions are committed by another process
    }
    cli(env, "migrate")
    for reviewer in ("alice", "bob"):  # `calls approve|deny --as` must name a reviewer account
        cli(env, "users", "create", reviewer, "--role", "reviewer")
    key = cli(env, "keys", "create", "--agent", "e2e-bot").stdout.strip().splitlines()[-1]
    app.secret = cli(env, "webhooks", "add", "--agent", "e2e-bot", "--url", url).stdout.strip().splitlines()[-1]
    assert app.secret.startswith("whsec_")

    runs: list[tuple[int, str]] = []

    @callgate.guard
    def refund(amount: int) -> str:
        runs.append((amount, threading.current_thread().name))
        return f"refunded {amount}"

    engine = sa.create_engine(empty_database_url)
    try:
        with serve(env, tmp_path) as gw:
            callgate.configure(url=gw.url, api_key=key, agent="e2e-bot", approval_mode="webhook",
                               approval_timeout=120, spool_dir=tmp_path / "spool")
            assert refund(50) == "refunded 50"  # allowed: runs at once, as in every mode

            approved = refund(500)
            assert isinstance(approved, callgate.PendingApproval) and approved.status == "pending"
            decided = threading.Event()
            approved.add_done_callback(lambda h: decided.set())
            cli(env, "calls", "approve", approved.call_id, "--as", "alice", "--comment", "known customer")
            assert decided.wait(30), "the approval webhook never resolved the handle"
            wait_for(lambda: len(runs) == 2, what="the approved call to run")
            assert approved.result(timeout=10) == "refunded 500"
            assert runs[1][0] == 500 and runs[1][1] != threading.current_thread().name  # ran in the receiver

            denied = refund(600)
            cli(env, "calls", "deny", denied.call_id, "--as", "bob", "--comment", "over the limit")
            with pytest.raises(callgate.ApprovalDenied) as exc:
                denied.result(timeout=30)  # resolved by the webhook (or, if it lags, by the long-poll)
            assert exc.value.comment == "over the limit"
            wait_for(lambda: "dispatched denied" in app.notes(), what="the denial webhook")

            # The sender's delivery replayed verbatim is refused, and nothing runs again.
            (body, headers, _, _) = next(d for d in app.deliveries if d[3] == "dispatched approved")
            assert app.handle(body, headers) == (200, "replayed")
            assert callgate.flush(timeout=10)
            deliveries = cli(env, "webhooks", "deliveries", "--status", "delivered", "--json").stdout.splitlines()
            assert len(deliveries) == 2

        assert [amount for amount, _ in runs] == [50, 500]
        with engine.connect() as conn:
            claims = conn.execute(sa.text("SELECT count(*) FROM audit_event WHERE tool_call_id = :id "
                                          "AND event_type = 'execution.claimed'"), {"id": approved.call_id}).scalar_one()
            status = conn.execute(sa.text("SELECT status FROM tool_call WHERE id = :id"),
                                  {"id": approved.call_id}).scalar_one()
        assert claims == 1 and status == "succeeded"
        assert [n for n in app.notes() if n.startswith("dispatched")] == ["dispatched approved", "dispatched denied"]
    finally:
        engine.dispose()

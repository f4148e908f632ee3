"""Webhooks end to end in embedded mode: a real `callgate serve` (SQLite, no Redis), endpoints
registered with the real `callgate webhooks` CLI, agents waiting in the real SDK, decisions made by
the `callgate calls` CLI (another process: the gateway's in-process worker finds them on its
1 s tick) and by expiry (the embedded sweeper). The receiver verifies every signature with the
standardwebhooks library."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import callgate
from tests.e2e.processes import cli, serve
from tests.e2e.test_approvals_e2e import Agent, Db, agent_key, make_env
from tests.gateway.webhooks.receiver import running_receiver

pytestmark = pytest.mark.slow


def test_decisions_reach_the_agents_webhook_signed(tmp_path: Path, sdk_reset: None) -> None:
    database_url = f"sqlite:///{tmp_path / 'data' / 'callgate.db'}"
    strict_env = make_env(database_url, tmp_path)
    # The receiver is plain http on 127.0.0.1: both test-only opt-ins.
    env = {**strict_env, "CALLGATE_WEBHOOK_ALLOW_PRIVATE": "true", "CALLGATE_WEBHOOK_ALLOW_HTTP": "true"}
    key = agent_key(env)
    db = Db(database_url)
    agent = Agent()
    with running_receiver() as receiver:
        refused = cli(strict_env, "webhooks", "add", "--agent", "e2e-bot", "--url", receiver.url, check=False)
        assert refused.returncode == 2 and "use https" in refused.stderr  # production: https only
        http_allowed = {**strict_env, "CALLGATE_WEBHOOK_ALLOW_HTTP": "true"}
        refused = cli(http_allowed, "webhooks", "add", "--agent", "e2e-bot", "--url", receiver.url, check=False)
        assert refused.returncode == 2 and "loopback" in refused.stderr  # production guard: refused
        refused = cli(env, "webhooks", "add", "--agent", "e2e-bot", "--url", "http://169.254.169.254/", check=False)
        assert refused.returncode == 2 and "link-local" in refused.stderr  # metadata: refused even in tests
        added = cli(env, "webhooks", "add", "--agent", "e2e-bot", "--url", receiver.url, "--include-args")
        secret = added.stdout.strip().splitlines()[-1]
        assert secret.startswith("whsec_") and "registered webhook ep_" in added.stderr
        (endpoint,) = [json.loads(line) for line in cli(env, "webhooks", "list", "--json").stdout.splitlines()]
        assert secret not in json.dumps(endpoint) and endpoint["url"] == receiver.url
        try:
            with serve(env, tmp_path) as gw:
                callgate.configure(url=gw.url, api_key=key, agent="e2e-bot", approval_timeout=60,
                                   spool_dir=tmp_path / "spool")
                t1, out1 = agent.start(agent.refund, 500)
                (approved,) = db.pending(1)
                cli(env, "calls", "approve", approved, "--as", "alice", "--comment", "ok")
                t1.join(15)
                assert out1 == {"result": "refunded 500"}
                first = receiver.wait_for(1, timeout=10)[0]
                latency = first.at - db.decided_at(approved)

                t2, out2 = agent.start(agent.refund, 600)
                denied = db.pending(1)[0]
                cli(env, "calls", "deny", denied, "--as", "bob", "--comment", "no")
                t2.join(15)
                assert isinstance(out2.get("error"), callgate.ApprovalDenied)

                t3, out3 = agent.start(agent.quick_refund, 7)  # a 2 s approval timeout
                expired = db.pending(1)[0]
                t3.join(15)
                assert isinstance(out3.get("error"), callgate.ApprovalExpired)
                requests = receiver.wait_for(3, timeout=20)  # the sweeper runs every 5 s in embedded mode
                assert callgate.flush(timeout=10)
        finally:
            db.close()
        events = {r.verify(secret)["data"]["call_id"]: r.verify(secret)["data"] for r in requests}
        assert {cid: (e["status"], e["decided_by"], e["channel"]) for cid, e in events.items()} == {
            approved: ("approved", "alice", "cli"), denied: ("denied", "bob", "cli"),
            expired: ("expired", "system:expiry", None)}
        assert events[approved]["args"] == {"amount": 500} and events[approved]["comment"] == "ok"
        assert len({r.webhook_id for r in requests}) == 3 == len(receiver.requests)

    deliveries = [json.loads(line) for line in cli(env, "webhooks", "deliveries", "--json").stdout.splitlines()]
    assert sorted(d["call_id"] for d in deliveries) == sorted([approved, denied, expired])
    assert {(d["status"], d["attempts"]) for d in deliveries} == {("delivered", 1)}
    assert all(d["log"][0]["status_code"] == 200 for d in deliveries)
    assert "delivered" in cli(env, "webhooks", "deliveries", "--endpoint", endpoint["id"]).stdout
    assert cli(env, "webhooks", "deliveries", "--status", "failed").stderr.strip() == "no webhook messages"
    cli(env, "webhooks", "disable", endpoint["id"])
    again = cli(env, "webhooks", "disable", endpoint["id"], check=False)
    assert again.returncode == 1 and "already disabled" in again.stderr
    assert cli(env, "webhooks", "disable", "ep_nope", check=False).returncode == 2
    assert "disabled" in cli(env, "webhooks", "list").stdout
    audit = json.loads(cli(env, "audit", "verify", "--json").stdout)
    assert audit["ok"] is True
    check = Db(database_url)
    types = check.event_types()
    check.close()
    assert types.count("webhook.delivered") == 3 and types.count("webhook.registered") == 1
    assert types.count("webhook.disabled") == 1
    print(f"\nCLI approval -> webhook received (embedded worker tick): {latency * 1000:.0f} ms")
    assert latency < 4.0  # the 1 s tick plus a loaded 2-core box's scheduling

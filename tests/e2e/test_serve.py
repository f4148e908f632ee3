"""`callgate serve` as a real process, driven by the real SDK and the real CLI, on both engines."""

from __future__ import annotations

import json
import urllib.request
import uuid

from pathlib import Path

import pytest
import sqlalchemy as sa

import callgate
from tests.e2e.processes import cli, serve

pytestmark = pytest.mark.slow

POLICY = """
defaults: {action: allow}
policies:
  - tool: send_email
    rules:
      - name: outside-domain-blocked
        when: {not: {arg: to, email_domain_in: [example.com]}}
        action: block
        reason: Only example.com recipients are allowed
  - tool: drop_table
    default: block
"""


@pytest.fixture
def env(empty_database_url: str, tmp_path: Path) -> dict[str, str]:
    (tmp_path / "policy.yaml").write_text(POLICY)
    return {
        "CALLGATE_DATABASE_URL": empty_database_url,
        "CALLGATE_DATA_DIR": str(tmp_path / "data"),
        "CALLGATE_SECRET_KEY": "e2e-secret-" + uuid.uuid4().hex,
        "CALLGATE_POLICIES": str(tmp_path / "policy.yaml"),
        "CALLGATE_ENV": "test",
    }



def _post(url: str, key: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url + "/v1/calls", data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_guarded_calls_through_a_served_gateway(env: dict[str, str], tmp_path: Path, sdk_reset: None) -> None:
    """Allowed calls run, blocked ones do not (with the reason), retries do not duplicate,
    outcomes are recorded, and the audit log verifies — then fails after tampering."""
    cli(env, "migrate")
    key = cli(env, "keys", "create", "--agent", "e2e-bot").stdout.strip().splitlines()[-1]
    assert key.startswith("cg_agent_")
    ran: list[str] = []

    with serve(env, tmp_path) as gw:
        callgate.configure(url=gw.url, api_key=key, agent="e2e-bot")

        @callgate.guard
        def send_email(to: str, subject: str) -> str:
            ran.append(to)
            return f"sent to {to}"

        @callgate.guard(name="drop_table")
        def drop(table: str) -> None:
            ran.append("DROP " + table)

        with callgate.session("e2e-session"):
            assert send_email("ann@example.com", subject="hi") == "sent to ann@example.com"
            with pytest.raises(callgate.CallBlocked) as blocked:
                send_email("eve@evil.test", subject="exfil")
            assert "Only example.com recipients are allowed" in str(blocked.value)
            with pytest.raises(callgate.CallBlocked):
                drop("users")
        assert ran == ["ann@example.com"]
        assert callgate.flush(timeout=10)

        # An SDK retry of the same logical call (same id, same body) changes nothing.
        body = {"id": str(uuid.uuid4()), "tool": "send_email", "args": {"to": "bob@example.com"}}
        first, again = _post(gw.url, key, body), _post(gw.url, key, body)
        assert (first[0], again[0]) == (201, 200)
        assert first[1] == again[1]
        assert _post(gw.url, key, {**body, "args": {"to": "x@example.com"}})[0] == 422

    engine = sa.create_engine(env["CALLGATE_DATABASE_URL"])
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT tool, status, outcome_status, session_id FROM tool_call ORDER BY created_at")).all()
        types = [r[0] for r in conn.execute(sa.text("SELECT event_type FROM audit_event ORDER BY seq"))]
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("send_email", "succeeded", "succeeded"),
        ("send_email", "blocked", None),
        ("drop_table", "blocked", None),
        ("send_email", "allowed", None),
    ]
    assert rows[0][3] == "e2e-session"
    assert types.count("tool_call.received") == 4
    assert types.count("tool.outcome") == 1

    verified = cli(env, "audit", "verify", "--json")
    assert json.loads(verified.stdout)["ok"] is True

    # Change one recorded decision behind the gateway's back (guards dropped, as an attacker with
    # owner rights could): verification must fail and name that row.
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("ALTER TABLE audit_event DISABLE TRIGGER ALL"))
        else:
            conn.execute(sa.text("DROP TRIGGER audit_event_no_update"))
        seq = conn.execute(sa.text("SELECT seq FROM audit_event WHERE event_type = 'policy.evaluated' "
                                   "AND canonical LIKE '%block%' ORDER BY seq LIMIT 1")).scalar_one()
        conn.execute(sa.text("UPDATE audit_event SET canonical = replace(canonical, '\"block\"', '\"allow\"') "
                             "WHERE seq = :s"), {"s": seq})
    engine.dispose()
    tampered = cli(env, "audit", "verify", check=False)
    assert tampered.returncode == 1, tampered.stdout + tampered.stderr
    assert f"seq {seq}" in tampered.stdout
    assert cli(env, "audit", "verify", "--file", "/nonexistent", check=False).returncode == 2


def test_first_run_prints_credentials_once(tmp_path: Path, env: dict[str, str]) -> None:
    """The first `serve` creates an admin user and an agent key and prints them; the next does not."""
    with serve(env, tmp_path) as gw:
        log = gw.log()
    assert "console login : admin / " in log
    key = log.split("agent API key : ")[1].split()[0]
    with serve(env, tmp_path) as gw:
        assert "First run" not in gw.log()
        status, body = _post(gw.url, key, {"id": str(uuid.uuid4()), "tool": "send_email", "args": {"to": "a@example.com"}})
    assert (status, body["decision"]) == (201, "allow")


def test_serve_refuses_an_invalid_policy(tmp_path: Path, env: dict[str, str]) -> None:
    """A policy mistake stops `serve` with the file, path and line, before anything starts."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("policies:\n  - tool: x\n    rules:\n      - when: {arg: a, gtt: 1}\n        action: allow\n")
    result = cli({**env, "CALLGATE_POLICIES": str(bad)}, "serve", "--port", "1", check=False)
    assert result.returncode == 2
    assert "bad.yaml" in result.stderr and "gtt" in result.stderr


def test_keys_cli_lifecycle(env: dict[str, str]) -> None:
    """keys create prints the key alone on the last line; list shows ids only; revoke works."""
    cli(env, "migrate")
    created = cli(env, "keys", "create", "--agent", "a1", "--name", "ci")
    key = created.stdout.strip().splitlines()[-1]
    key_id = key.split("_")[2]
    listing = cli(env, "keys", "list").stdout
    assert key_id in listing and key not in listing
    cli(env, "keys", "revoke", key_id)
    rows = [json.loads(line) for line in cli(env, "keys", "list", "--json").stdout.splitlines()]
    assert [r["revoked_at"] is not None for r in rows if r["key_id"] == key_id] == [True]
    assert cli(env, "keys", "revoke", key_id, check=False).returncode == 2
    assert cli(env, "keys", "create", "--scope", "agent", check=False).returncode == 2

"""docker-compose.yml's production commands, run natively (no Docker engine here) against the
local PostgreSQL and Redis: migrate + multi-worker gateway, Celery worker and beat."""

from __future__ import annotations

import json
import os
import random
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from tests.e2e.processes import free_port, serve

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]
ROOT = Path(__file__).resolve().parents[2]
POLICY = """
policies:
  - tool: wire_money
    rules:
      - when: {arg: amount, gt: 200}
        action: require_approval
        approval_timeout: 2s
"""


def compose_commands() -> dict[str, list[str]]:
    spec = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    commands = {}
    for name in ("gateway", "worker", "beat"):
        command = spec["services"][name]["command"]
        commands[name] = shlex.split(command) if isinstance(command, str) else list(command)
    return commands


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def test_compose_stack_natively(empty_pg_url: str, tmp_path: Path) -> None:
    """A call flows through the multi-worker gateway, and beat + worker expire an unanswered approval."""
    commands = compose_commands()
    (tmp_path / "policy.yaml").write_text(POLICY)
    env = {
        "CALLGATE_DATABASE_URL": empty_pg_url,
        "CALLGATE_REDIS_URL": f"redis://127.0.0.1:6379/{random.randint(1, 15)}",
        "CALLGATE_SECRET_KEY": "compose-" + uuid.uuid4().hex,
        "CALLGATE_POLICIES": str(tmp_path / "policy.yaml"),
        "CALLGATE_SWEEP_INTERVAL_S": "0.5",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    # gateway: `sh -c "callgate migrate && callgate serve --host 0.0.0.0 --port 8080 --workers 4"`
    assert commands["gateway"][:2] == ["sh", "-c"]
    gateway_steps = [shlex.split(step) for step in commands["gateway"][2].split("&&")]
    assert [s[:2] for s in gateway_steps] == [["callgate", "migrate"], ["callgate", "serve"]]
    subprocess.run(gateway_steps[0], env={**os.environ, **env}, check=True, timeout=120, capture_output=True)
    key = subprocess.run(["callgate", "keys", "create", "--agent", "payments"], env={**os.environ, **env},
                         check=True, timeout=60, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    serve_args = gateway_steps[1][2:]
    workers = serve_args[serve_args.index("--workers") + 1]
    assert int(workers) > 1

    port = free_port()
    procs = []
    try:
        for name in ("worker", "beat"):
            cmd = [c.replace("/tmp/celerybeat-schedule", str(tmp_path / "beat-schedule")) for c in commands[name]]
            procs.append(subprocess.Popen(cmd, env={**os.environ, **env}, cwd=ROOT, stdout=(tmp_path / f"{name}.log").open("w"),
                                          stderr=subprocess.STDOUT, start_new_session=True))
        with serve(env, tmp_path, "--workers", workers, port=port) as gw:
            def post(body: dict) -> dict:
                req = urllib.request.Request(gw.url + "/v1/calls", data=json.dumps(body).encode(), method="POST",
                                             headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=10) as r:
                    return json.loads(r.read())

            small = post({"id": str(uuid.uuid4()), "tool": "wire_money", "args": {"amount": 10}})
            big_id = str(uuid.uuid4())
            big = post({"id": big_id, "tool": "wire_money", "args": {"amount": 5000}})
            assert (small["decision"], big["status"]) == ("allow", "pending")

            engine = sa.create_engine(empty_pg_url)
            deadline = time.monotonic() + 30
            status = "pending"
            while time.monotonic() < deadline:
                with engine.connect() as conn:
                    status = conn.execute(sa.text("SELECT status FROM tool_call WHERE id = :i"), {"i": big_id}).scalar_one()
                if status == "expired":
                    break
                time.sleep(0.2)
            assert status == "expired", (tmp_path / "worker.log").read_text()[-3000:]
            with engine.connect() as conn:
                expired_events = conn.execute(sa.text("SELECT count(*) FROM audit_event WHERE event_type = 'approval.expired' "
                                                      "AND tool_call_id = :i"), {"i": big_id}).scalar_one()
            engine.dispose()
            assert expired_events == 1
            with urllib.request.urlopen(gw.url + "/metrics", timeout=10) as r:
                assert b"callgate_decisions_total" in r.read()
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)

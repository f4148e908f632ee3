"""A real gateway for the framework suites, which run in their own environments (tests/envs/<name>).

Those environments hold the SDK, one agent framework and pytest, not the server's dependencies,
so the gateway runs as a `callgate serve` process of the project's main environment
(``CALLGATE_GATEWAY_PYTHON``, default ``<repo>/.venv/bin/python``) on a fresh SQLite database.
Decisions are made the way an operator makes them, with the `callgate calls approve|deny` CLI;
the database is read with the stdlib ``sqlite3`` only to find calls and their recorded status.
Only the standard library and ``callgate`` are imported here.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
os.environ.setdefault("CALLGATE_GATEWAY_PYTHON", str(REPO / ".venv" / "bin" / "python"))

from tests.e2e.processes import cli, serve  # noqa: E402 - needs CALLGATE_GATEWAY_PYTHON first

__all__ = ["DEFAULT_POLICY", "Gateway", "running_gateway"]

#: The policy the framework suites share: one allowed, one blocked, one approval tool, plus the
#: MCP server's tools (tests/sdk/integrations/mcp_server.py).
DEFAULT_POLICY = """
defaults: {action: allow}
policies:
  - tool: delete_file
    rules:
      - {name: no-deletes, action: block, reason: deleting files is not allowed}
  - tool: rm_rf
    rules:
      - {name: no-rm-rf, action: block, reason: rm -rf is not allowed}
  - tool: send_money
    rules:
      - name: big-payments-need-a-human
        when: {arg: amount, gt: 200}
        action: require_approval
        approval_timeout: 2m
      - name: tiny-fuse
        when: {arg: amount, eq: 13}
        action: require_approval
        approval_timeout: 2s
  # The Agents SDK's local tools that are not function tools (openai_agents/test_local_tools.py).
  - tool: shell
    rules:
      - {name: no-shell-rm-rf, when: {arg: command_line, contains: rm -rf}, action: block,
         reason: rm -rf is not allowed}
      - name: shell-deploys-need-a-human
        when: {arg: command_line, startswith: deploy}
        action: require_approval
        approval_timeout: 2m
  - tool: local_shell
    rules:
      - {name: no-local-rm-rf, when: {arg: command_line, contains: rm -rf}, action: block,
         reason: rm -rf is not allowed}
  - tool: computer
    rules:
      - name: no-typing-passwords
        when: {all: [{arg: action, eq: type}, {arg: text, contains: password}]}
        action: block
        reason: typing passwords is not allowed
  - tool: apply_patch
    rules:
      - {name: no-system-files, when: {arg: path, startswith: /etc/}, action: block,
         reason: system files are off limits}
  - tool: run_sql
    rules:
      - {name: no-drops, when: {arg: input, matches: "(?i)drop +table"}, action: block,
         reason: dropping tables is not allowed}
"""


@dataclass
class Gateway:
    url: str
    agent_key: str
    agent: str
    env: dict[str, str]
    database: Path
    log: Any = field(repr=False)

    # -- SDK ---------------------------------------------------------------------------------
    def configure(self, **options: Any) -> None:
        """Point the SDK in this test process at this gateway (integrations installed)."""
        import callgate

        callgate.configure(url=self.url, api_key=self.agent_key, agent=self.agent, **options)

    # -- what the gateway recorded ---------------------------------------------------------
    def calls(self, session_id: str | None = None, tool: str | None = None) -> list[dict[str, Any]]:
        """Tool calls as stored, oldest first (args decoded)."""
        query = "SELECT * FROM tool_call WHERE 1=1"
        params: list[Any] = []
        if session_id is not None:
            query += " AND session_id = ?"
            params.append(session_id)
        if tool is not None:
            query += " AND tool = ?"
            params.append(tool)
        with closing(sqlite3.connect(self.database, timeout=30)) as db:
            db.row_factory = sqlite3.Row
            rows = [dict(r) for r in db.execute(query + " ORDER BY created_at, id", params)]
        for row in rows:
            row["args"] = json.loads(row["args"])
        return rows

    def wait_for_call(self, *, status: str = "pending", tool: str | None = None, session_id: str | None = None,
                      timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            found = [c for c in self.calls(session_id, tool) if c["status"] == status]
            if found:
                return found[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"no {status} call for tool={tool} session={session_id} after {timeout}s")
            time.sleep(0.05)

    def session(self, session_id: str, *, timeout: float = 10) -> dict[str, Any]:
        """``GET /v1/sessions/{id}``: the session's calls, tokens and cost, as the agent's key sees them."""
        request = urllib.request.Request(f"{self.url}/v1/sessions/{session_id}",
                                         headers={"authorization": f"Bearer {self.agent_key}"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())

    # -- a human decides -------------------------------------------------------------------
    def approve(self, call_id: str, *, comment: str | None = None, who: str = "riley") -> None:
        extra = ("--comment", comment) if comment else ()
        cli(self.env, "calls", "approve", call_id, "--as", who, *extra)

    def deny(self, call_id: str, *, comment: str | None = None, who: str = "riley") -> None:
        extra = ("--comment", comment) if comment else ()
        cli(self.env, "calls", "deny", call_id, "--as", who, *extra)


@contextmanager
def running_gateway(workdir: Path, policy: str = DEFAULT_POLICY, agent: str = "framework-bot") -> Iterator[Gateway]:
    """Start `callgate serve` on a fresh SQLite database with ``policy``; yield a :class:`Gateway`."""
    workdir.mkdir(parents=True, exist_ok=True)
    policy_file = workdir / "policy.yaml"
    policy_file.write_text(policy)
    database = workdir / "callgate.db"
    env = {
        "CALLGATE_DATABASE_URL": f"sqlite:///{database}",
        "CALLGATE_DATA_DIR": str(workdir / "data"),
        "CALLGATE_SECRET_KEY": "framework-suite-" + uuid.uuid4().hex,
        "CALLGATE_POLICIES": str(policy_file),
        "CALLGATE_ENV": "test",
    }
    cli(env, "migrate")
    # The reviewer the suites decide as (Gateway.approve/deny's default): `calls approve|deny --as`
    # must name a real, active reviewer account.
    cli(env, "users", "create", "riley", "--role", "reviewer")
    key = cli(env, "keys", "create", "--agent", agent).stdout.strip().splitlines()[-1]
    with serve(env, workdir) as served:
        yield Gateway(served.url, key, agent, env, database, served.log)


def new_session() -> str:
    return "s-" + uuid.uuid4().hex[:12]


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except (OSError, urllib.error.URLError):
        return False

"""`callgate webhooks add --include-args | rotate | replay` on the real command (CliRunner), both
engines: secrets only on stdout's last line, stored sealed, exit codes as documented."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine

from gateway.cli import main
from gateway.config import Settings
from gateway.webhooks.delivery import DeliveryConfig, RunUnit, deliver_due
from tests.gateway.conftest import TEST_SECRET
from tests.gateway.webhooks.helpers import BOX, Calls, audit_events, dump, endpoint_row, outbox
from tests.gateway.webhooks.receiver import Receiver

pytestmark = pytest.mark.usefixtures("agent_key")  # agent billing-bot exists


@pytest.fixture
def env(settings: Settings) -> dict[str, str]:
    """The command's environment: this test's database and key, the loopback http receivers."""
    return {"CALLGATE_DATABASE_URL": settings.resolved_database_url(), "CALLGATE_SECRET_KEY": TEST_SECRET,
            "CALLGATE_ENV": "test", "CALLGATE_REDIS_URL": "", "CALLGATE_WEBHOOK_ALLOW_PRIVATE": "true",
            "CALLGATE_WEBHOOK_ALLOW_HTTP": "true"}


def cli(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, ["webhooks", *args], env=env)


def add(env: dict[str, str], url: str, *extra: str) -> tuple[dict[str, Any], str]:
    result = cli(env, "add", "--agent", "billing-bot", "--url", url, *extra)
    assert result.exit_code == 0, result.output
    secret = result.stdout.strip().splitlines()[-1]
    (endpoint,) = [e for e in map(json.loads, cli(env, "list", "--json").stdout.splitlines()) if e["url"] == url]
    return endpoint, secret


def test_add_with_and_without_include_args(env: dict[str, str], engine: Engine) -> None:
    thin, thin_secret = add(env, "http://127.0.0.1:9/thin")
    full, _ = add(env, "http://127.0.0.1:9/full", "--include-args")
    assert (thin["include_args"], full["include_args"]) == (False, True)
    assert thin_secret.startswith("whsec_") and thin_secret not in json.dumps(thin)
    assert BOX.unseal(thin["id"], endpoint_row(engine, thin["id"])["secret"]) == thin_secret
    assert "whsec_" not in dump(engine)


def test_add_refuses_http_unless_allowed(env: dict[str, str], engine: Engine) -> None:
    result = cli({**env, "CALLGATE_WEBHOOK_ALLOW_HTTP": "false"}, "add", "--agent", "billing-bot",
                 "--url", "http://127.0.0.1:9/hook")
    assert result.exit_code == 2 and "http is not allowed: use https" in result.stderr
    assert result.stdout == ""
    assert cli(env, "list", "--json").stdout == ""


def test_rotate_prints_the_new_secret_once(env: dict[str, str], engine: Engine) -> None:
    endpoint, original = add(env, "http://127.0.0.1:9/hook")
    result = cli(env, "rotate", endpoint["id"])
    assert result.exit_code == 0, result.output
    new = result.stdout.strip().splitlines()[-1]
    assert new.startswith("whsec_") and new != original and result.stdout.count("whsec_") == 1
    assert "the previous one also signs until" in result.stderr
    row = endpoint_row(engine, endpoint["id"])
    assert BOX.unseal(endpoint["id"], row["secret"]) == new
    assert BOX.unseal(endpoint["id"], row["previous_secret"]) == original
    rotated = [e for e in audit_events(engine) if e["event_type"] == "webhook.rotated"]
    assert len(rotated) == 1 and rotated[0]["actor"]["type"] == "operator"

    no_overlap = cli({**env, "CALLGATE_WEBHOOK_ROTATION_OVERLAP_SECONDS": "0"}, "rotate", endpoint["id"])
    assert no_overlap.exit_code == 0 and "the previous one no longer signs" in no_overlap.stderr
    assert endpoint_row(engine, endpoint["id"])["previous_secret"] is None

    assert cli(env, "rotate", "ep_0000000000000000").exit_code == 2
    assert cli(env, "disable", endpoint["id"]).exit_code == 0
    disabled = cli(env, "rotate", endpoint["id"])
    assert disabled.exit_code == 1 and "disabled" in disabled.stderr and disabled.stdout == ""


def test_replay(env: dict[str, str], engine: Engine, calls: Calls, run: RunUnit, receiver: Receiver,
                config: DeliveryConfig) -> None:
    endpoint, secret = add(env, receiver.url)
    calls.decide(calls.pending())
    (message_id,) = [r["id"] for r in outbox(engine)]
    pending = cli(env, "replay", message_id)
    assert pending.exit_code == 1 and "still being delivered" in pending.stderr
    deliver_due(run, config)
    result = cli(env, "replay", message_id)
    assert result.exit_code == 0, result.output
    assert f"replaying {message_id} to endpoint {endpoint['id']}" in result.stderr
    deliver_due(run, config)
    first, second = receiver.wait_for(2)
    assert first.webhook_id == second.webhook_id == message_id
    second.verify(secret)
    assert [e["event_type"] for e in audit_events(engine)].count("webhook.replayed") == 1
    assert cli(env, "replay", "msg_nope").exit_code == 2

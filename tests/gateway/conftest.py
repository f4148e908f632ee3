"""Fixtures for gateway tests: settings, an in-process app client and API keys."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from gateway.app import create_app
from gateway.audit import SYSTEM
from gateway.config import Settings
from gateway.db import make_engine
from gateway.key_admin import create_key

TEST_SECRET = "test-secret-key-for-callgate-tests-only-000000"
POLICY = """
defaults: {action: allow, approval_timeout: 15m}
policies:
  - tool: stripe.refund
    rules:
      - name: test-customers-never
        when: {arg: customer_id, startswith: cus_test_}
        action: block
        reason: Test customers cannot be refunded
      - name: big-refunds-need-a-human
        when: {arg: amount, gt: 200}
        action: require_approval
  - tool: delete_database
    default: block
"""


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return path


@pytest.fixture
def settings(database_url: str, policy_file: Path, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url, policies=policy_file, secret_key=TEST_SECRET, env="test", data_dir=tmp_path
    )


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    eng = make_engine(settings.resolved_database_url(), writer=True)
    yield eng
    eng.dispose()


def _make_key(engine: Engine, kind: str, agent: str | None) -> str:
    with engine.begin() as conn:
        return create_key(conn, kind=kind, agent=agent, name="test", pepper=TEST_SECRET.encode(), actor=SYSTEM).key  # type: ignore[arg-type]


@pytest.fixture
def agent_key(engine: Engine) -> str:
    return _make_key(engine, "agent", "billing-bot")


@pytest.fixture
def other_agent_key(engine: Engine) -> str:
    return _make_key(engine, "agent", "other-bot")


@pytest.fixture
def admin_key(engine: Engine) -> str:
    return _make_key(engine, "admin", None)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), base_url="https://testserver") as c:
        yield c

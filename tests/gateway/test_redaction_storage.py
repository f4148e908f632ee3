"""Secrets in tool arguments never reach the database, while policies still see the raw values."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.config import Settings

from tests.gateway.conftest import TEST_SECRET

POLICY = """
policies:
  - tool: login
    rules:
      - name: short-passwords-blocked
        when: {arg: password, matches: "^.{0,20}$"}
        action: block
        reason: password too short
"""

SENTINEL_ARGS = {
    "password": "SENTINELpw1234567890123456789",
    "auth": {"token": "SENTINEL-nested-token"},
    "headers": {"Authorization": "Bearer SENTINELbearer123456"},
    "card": "4111 1111 1111 1111",
    "aws": "AKIASENTINEL00000000",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJTRU5USU5FTCJ9.SENTINELsignature123",
    "pem": "-----BEGIN PRIVATE KEY-----\nSENTINELpem\n-----END PRIVATE KEY-----",
    "url": "https://user:SENTINELPW@example.com/path",
}


@pytest.fixture
def redaction_client(database_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    (tmp_path / "p.yaml").write_text(POLICY)
    settings = Settings(database_url=database_url, policies=tmp_path / "p.yaml", secret_key=TEST_SECRET, env="test",
                        data_dir=tmp_path)
    with TestClient(create_app(settings), base_url="https://testserver") as c:
        yield c


def test_no_secret_is_stored_and_policy_sees_raw_values(redaction_client: TestClient, agent_key: str, database_url: str) -> None:
    """8 kinds of secret are redacted everywhere stored; a rule on the raw password still fires."""
    h = {"Authorization": f"Bearer {agent_key}"}
    long_pw = redaction_client.post("/v1/calls", json={"id": str(uuid.uuid4()), "tool": "login", "args": SENTINEL_ARGS},
                                    headers=h)
    short_pw = redaction_client.post("/v1/calls", json={"id": str(uuid.uuid4()), "tool": "login",
                                                        "args": {**SENTINEL_ARGS, "password": "SENTINELshort"}}, headers=h)
    assert long_pw.json()["decision"] == "allow"
    assert short_pw.json()["decision"] == "block"  # evaluated on the raw value, not "[REDACTED:...]"
    detail = redaction_client.get(f"/v1/calls/{long_pw.json()['call_id']}", headers=h).json()
    assert len(detail["redactions"]) == 8

    engine = sa.create_engine(database_url)
    with engine.connect() as conn:
        dump = json.dumps([[str(v) for v in row] for table in ("tool_call", "audit_event")
                           for row in conn.execute(sa.text(f"SELECT * FROM {table}"))])
    engine.dispose()
    assert "SENTINEL" not in dump
    # the card in any spelling (a bare "4111" can occur by chance in hashes and ids)
    assert "4111 1111 1111 1111" not in dump and "4111111111111111" not in dump
    assert "login" in dump

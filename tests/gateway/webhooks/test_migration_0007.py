"""Migration 0007 on a database that has endpoints from before it: their plain secrets are sealed
with the key the app uses, the endpoints keep their payload shape and still deliver (verifying
with the secret the receiver always had), and no ``whsec_`` is left anywhere."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from gateway.audit import SYSTEM
from gateway.config import Settings
from gateway.db import make_engine
from gateway.key_admin import create_key
from gateway.migrate import alembic_config
from gateway.webhooks.delivery import deliver_due, in_transaction
from gateway.webhooks.secrets import SecretBox, is_sealed
from gateway.webhooks.signing import new_secret
from tests.gateway.conftest import TEST_SECRET
from tests.gateway.webhooks.helpers import BOX, Calls, delivery_config, dump, outbox, sqlite_files
from tests.gateway.webhooks.receiver import running_receiver
from tests.pg import PG_URL_PREFIX, throwaway_database

SETTINGS_ENV = ("CALLGATE_SECRET_KEY", "CALLGATE_DATA_DIR", "CALLGATE_ENV", "CALLGATE_DATABASE_URL")


@contextmanager
def at_0006(engine: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An empty database migrated to 0006 (the schema before this work), with a clean
    ``CALLGATE_*`` environment and working directory: each test says where the key comes from."""
    for name in SETTINGS_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    if engine == "sqlite":
        url = f"sqlite:///{tmp_path / 'db' / 'callgate.db'}"
        (tmp_path / "db").mkdir()
        command.upgrade(alembic_config(url), "0006")
        yield url
    else:
        with throwaway_database("cg_m7") as name:
            url = PG_URL_PREFIX + name
            command.upgrade(alembic_config(url), "0006")
            yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url_at_0006(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with at_0006(request.param, tmp_path, monkeypatch) as url:
        yield url


@pytest.fixture
def sqlite_at_0006(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with at_0006("sqlite", tmp_path, monkeypatch) as url:
        yield url


@pytest.fixture
def postgres_at_0006(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with at_0006("postgres", tmp_path, monkeypatch) as url:
        yield url


def insert_plain_endpoint(url: str, endpoint_id: str, secret: str, receiver_url: str) -> None:
    """A row as 0004's code wrote it: the secret in the clear."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO webhook_endpoint (id, agent, url, secret, event_types, enabled, created_at) "
            "VALUES (:id, 'billing-bot', :url, :secret, :types, :enabled, :now)"),
            {"id": endpoint_id, "url": receiver_url, "secret": secret, "types": json.dumps(["approval.decided"]),
             "enabled": True, "now": datetime.now(UTC)})
    engine.dispose()


def endpoints(url: str) -> dict[str, dict[str, object]]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = {r["id"]: dict(r) for r in conn.execute(sa.text("SELECT * FROM webhook_endpoint")).mappings()}
    engine.dispose()
    return rows


def test_plain_secrets_are_sealed_and_still_deliver(url_at_0006: str, tmp_path: Path, policy_file: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    url = url_at_0006
    monkeypatch.setenv("CALLGATE_SECRET_KEY", TEST_SECRET)  # the key the app runs with
    with running_receiver() as receiver:
        secrets = {"ep_00000000000000a1": new_secret(), "ep_00000000000000b2": new_secret()}
        for endpoint_id, secret in secrets.items():
            insert_plain_endpoint(url, endpoint_id, secret, f"{receiver.url}-{endpoint_id[-2:]}")
        assert "whsec_" in json.dumps(endpoints(url), default=str)  # the state before: in the clear

        command.upgrade(alembic_config(url), "head")

        rows = endpoints(url)
        for endpoint_id, secret in secrets.items():
            stored = str(rows[endpoint_id]["secret"])
            assert is_sealed(stored) and BOX.unseal(endpoint_id, stored) == secret  # sealed for its own row
            assert bool(rows[endpoint_id]["include_args"]) is True  # they keep the payload they were made with
            assert rows[endpoint_id]["previous_secret"] is None and rows[endpoint_id]["first_failure_at"] is None

        settings = Settings(database_url=url, policies=policy_file, secret_key=TEST_SECRET, env="test",
                            data_dir=tmp_path, webhook_allow_private=True, webhook_allow_http=True)
        engine = make_engine(url, writer=True)
        try:
            with engine.begin() as conn:
                key = create_key(conn, kind="agent", agent="billing-bot", name="t", pepper=TEST_SECRET.encode(),
                                 actor=SYSTEM).key
            run = in_transaction(engine)
            calls = Calls(engine, settings, run, key)
            call_id = calls.pending()
            calls.decide(call_id)
            assert sorted(a.result for a in deliver_due(run, delivery_config())) == ["delivered", "delivered"]
            received = {r.path[-2:]: r for r in receiver.wait_for(2)}
            for endpoint_id, secret in secrets.items():
                payload = received[endpoint_id[-2:]].verify(secret)  # the secret the receiver always had
                assert payload["data"]["call_id"] == call_id and payload["data"]["args"]["amount"] == 850
            assert {r["status"] for r in outbox(engine)} == {"delivered"}
            everything = dump(engine)
            assert "whsec_" not in everything and "sealed:v1:" in everything
            if url.startswith("sqlite"):
                assert b"whsec_" not in sqlite_files(engine)  # no plaintext left in freed pages either
        finally:
            engine.dispose()


def test_an_empty_database_needs_no_key(url_at_0006: str, tmp_path: Path) -> None:
    """Fresh installs (and the test templates) migrate without any secret key, and nothing is
    generated: the key is only read when there is something to seal."""
    command.upgrade(alembic_config(url_at_0006), "head")
    assert not (tmp_path / "callgate-data").exists()
    assert endpoints(url_at_0006) == {}


def test_embedded_mode_seals_with_the_generated_key_the_app_will_use(sqlite_at_0006: str, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    url_at_0006 = sqlite_at_0006
    monkeypatch.setenv("CALLGATE_DATA_DIR", str(tmp_path / "data"))
    secret = new_secret()
    insert_plain_endpoint(url_at_0006, "ep_00000000000000c3", secret, "https://hooks.example.com/x")
    command.upgrade(alembic_config(url_at_0006), "head")
    app_key = Settings(database_url=url_at_0006).resolved_secret_key()  # as `callgate serve` will resolve it
    assert (tmp_path / "data" / "secret_key").exists()
    stored = str(endpoints(url_at_0006)["ep_00000000000000c3"]["secret"])
    assert SecretBox(app_key).unseal("ep_00000000000000c3", stored) == secret


@pytest.mark.postgres
def test_production_postgres_without_a_key_refuses_to_migrate(postgres_at_0006: str) -> None:
    """Rather than leave secrets in the clear (or seal them under a key the app will not have)."""
    url_at_0006 = postgres_at_0006
    secret = new_secret()
    insert_plain_endpoint(url_at_0006, "ep_00000000000000d4", secret, "https://hooks.example.com/x")
    with pytest.raises(RuntimeError, match="CALLGATE_SECRET_KEY must be set"):
        command.upgrade(alembic_config(url_at_0006), "head")
    assert endpoints(url_at_0006)["ep_00000000000000d4"]["secret"] == secret  # rolled back whole
    assert "include_args" not in endpoints(url_at_0006)["ep_00000000000000d4"]


def test_downgrade_opens_the_secrets_again(url_at_0006: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLGATE_SECRET_KEY", TEST_SECRET)
    secret = new_secret()
    insert_plain_endpoint(url_at_0006, "ep_00000000000000e5", secret, "https://hooks.example.com/x")
    command.upgrade(alembic_config(url_at_0006), "head")
    assert is_sealed(str(endpoints(url_at_0006)["ep_00000000000000e5"]["secret"]))
    command.downgrade(alembic_config(url_at_0006), "0006")
    row = endpoints(url_at_0006)["ep_00000000000000e5"]
    assert row["secret"] == secret and "include_args" not in row and "previous_secret" not in row
    command.upgrade(alembic_config(url_at_0006), "head")  # and up again
    assert BOX.unseal("ep_00000000000000e5", str(endpoints(url_at_0006)["ep_00000000000000e5"]["secret"])) == secret

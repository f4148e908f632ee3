"""Who delivers: the in-process worker in embedded mode (woken by a decision in this process,
ticking for decisions made by others, e.g. the CLI), and Celery kicks when Redis is configured."""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from gateway.app import create_app
from gateway.audit import SYSTEM
from gateway.cli import main
from gateway.config import Settings
from gateway.users import create_user
from gateway.webhooks.delivery import RunUnit
from gateway.webhooks.dispatch import CeleryKicker, EmbeddedWorker, send_delivery_task
from tests.console.conftest import signed_in, submit_pending
from tests.gateway.webhooks.helpers import Calls, delivery_config, outbox, register
from tests.gateway.webhooks.receiver import Receiver


def wait_until(predicate: Any, timeout: float, what: str) -> float:
    """Seconds it took for ``predicate()`` to hold (fails after ``timeout``)."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what} did not happen within {timeout}s")
        time.sleep(0.02)
    return time.monotonic() - started


def admin_register(client: TestClient, admin_key: str, url: str) -> dict[str, Any]:
    r = client.post("/v1/webhooks", json={"agent": "billing-bot", "url": url},
                    headers={"Authorization": f"Bearer {admin_key}"})
    assert r.status_code == 201, r.text
    return dict(r.json())


class TestEmbeddedMode:
    """A real app (TestClient) without Redis: its lifespan runs the in-process worker."""

    @pytest.fixture
    def app_settings(self, settings: Settings) -> Settings:
        # A one-minute tick: anything delivered within seconds was delivered by the kick.
        return settings.model_copy(update={"webhook_poll_seconds": 60.0})

    def test_a_console_approval_is_delivered_at_once(self, app_settings: Settings, engine: Engine, agent_key: str,
                                                     admin_key: str, receiver: Receiver) -> None:
        with engine.begin() as conn:
            create_user(conn, username="rita", password="correct horse battery staple", role="reviewer",
                        env="test", actor=SYSTEM)
        with TestClient(create_app(app_settings), base_url="https://testserver") as client:
            endpoint = admin_register(client, admin_key, receiver.url)
            call_id = submit_pending(client, agent_key)
            reviewer = signed_in(client, "rita")
            r = client.post(f"/calls/{call_id}/approve", data={"comment": "fine", "csrf_token": reviewer.csrf},
                            follow_redirects=False)
            assert r.status_code == 303, r.text
            took = wait_until(lambda: len(receiver.requests) >= 1, 10, "the console approval's webhook")
            payload = receiver.requests[0].verify(endpoint["secret"])
            assert (payload["data"]["call_id"], payload["data"]["status"], payload["data"]["decided_by"],
                    payload["data"]["channel"]) == (call_id, "approved", "rita", "console")
            wait_until(lambda: outbox(engine)[0]["status"] == "delivered", 5, "the delivered state")
            metrics = client.get("/metrics").text
        print(f"\nconsole approval -> webhook received: {took * 1000:.0f} ms")
        assert took < 5.0  # the kick, not the 60 s tick
        assert 'callgate_webhook_deliveries_total{result="delivered"} 1.0' in metrics
        assert "callgate_webhook_outbox_pending" in metrics

    def test_a_cli_decision_is_picked_up_by_the_periodic_tick(self, settings: Settings, engine: Engine,
                                                              agent_key: str, admin_key: str,
                                                              receiver: Receiver) -> None:
        """The CLI is another process: it cannot wake the gateway; the worker's 1 s tick finds it."""
        assert settings.webhook_poll_seconds == 1.0  # the default
        env = {"CALLGATE_DATABASE_URL": settings.resolved_database_url(), "CALLGATE_SECRET_KEY": settings.secret_key,
               "CALLGATE_ENV": "test", "CALLGATE_REDIS_URL": ""}
        with TestClient(create_app(settings), base_url="https://testserver") as client:
            endpoint = admin_register(client, admin_key, receiver.url)
            call_id = submit_pending(client, agent_key)
            time.sleep(0.3)  # let a tick pass with nothing due
            with engine.begin() as conn:  # --as must name a real reviewer account
                create_user(conn, username="bob", password="bob-reviewer-pw", role="reviewer", env="test", actor=SYSTEM)
            result = CliRunner().invoke(main, ["calls", "deny", call_id, "--as", "bob", "--comment", "no"], env=env)
            assert result.exit_code == 0, result.output
            took = wait_until(lambda: len(receiver.requests) >= 1, 10, "the CLI decision's webhook")
        payload = receiver.requests[0].verify(endpoint["secret"])
        assert (payload["data"]["status"], payload["data"]["decided_by"], payload["data"]["channel"]) == (
            "denied", "bob", "cli")
        print(f"\nCLI deny -> webhook received: {took * 1000:.0f} ms")
        assert took < 4.0  # one 1 s tick plus a loaded 2-core box's scheduling


class TestEmbeddedWorker:
    @pytest.fixture
    def worker(self, engine: Engine, run: RunUnit) -> Iterator[EmbeddedWorker]:
        flaky = {"failures": 1}

        def sometimes_down(work: Any) -> Any:
            if flaky["failures"]:
                flaky["failures"] -= 1
                raise ConnectionError("database briefly unreachable")
            return run(work)

        w = EmbeddedWorker(sometimes_down, engine, delivery_config(),
                           poll_seconds=0.2)
        w.start()
        yield w
        w.stop()

    def test_it_survives_a_failed_round_and_delivers_on_the_next(self, worker: EmbeddedWorker, calls: Calls,
                                                                 run: RunUnit, engine: Engine,
                                                                 receiver: Receiver) -> None:
        register(run, receiver.url)
        calls.decide(calls.pending())
        worker.kick()
        wait_until(lambda: len(receiver.requests) == 1, 10, "delivery after the failed round")
        wait_until(lambda: outbox(engine)[0]["status"] == "delivered", 5, "the delivered state")
        assert worker.ticks >= 2

    def test_stop_is_prompt_when_idle(self, engine: Engine, run: RunUnit) -> None:
        w = EmbeddedWorker(run, engine, delivery_config(timeout=10.0, lease=60.0), poll_seconds=30.0)
        w.start()
        started = time.monotonic()
        w.stop()
        assert time.monotonic() - started < 2.0


def test_an_unreachable_broker_never_blocks_for_long() -> None:
    """A dead Redis: the kick gives up within its short timeout (beat delivers later)."""
    started = time.monotonic()
    assert send_delivery_task("redis://127.0.0.1:1/0", "callgate-test") is False
    assert time.monotonic() - started < 5.0


@pytest.mark.redis
class TestCeleryKicks:
    @pytest.fixture
    def queue(self) -> Iterator[tuple[Any, str, str]]:
        import redis

        url = f"redis://127.0.0.1:6379/{random.randint(1, 15)}"
        name = f"callgate-test-{uuid.uuid4().hex[:8]}"
        client = redis.Redis.from_url(url)
        yield client, url, name
        client.delete(name)
        client.close()

    def test_a_kick_queues_one_delivery_task(self, queue: tuple[Any, str, str]) -> None:
        client, url, name = queue
        assert send_delivery_task(url, name) is True
        (raw,) = client.lrange(name, 0, -1)
        message = json.loads(raw)
        assert message["headers"]["task"] == "callgate.deliver_webhooks"
        assert message["headers"]["expires"] is not None  # a stale kick is dropped, not run late

    def test_a_decision_in_a_redis_configured_gateway_kicks_celery(
        self, settings: Settings, engine: Engine, agent_key: str, admin_key: str, queue: tuple[Any, str, str]
    ) -> None:
        client, url, name = queue
        redis_settings = settings.model_copy(update={"redis_url": url, "celery_queue": name})
        with engine.begin() as conn:
            create_user(conn, username="rita", password="correct horse battery staple", role="reviewer",
                        env="test", actor=SYSTEM)
        with TestClient(create_app(redis_settings), base_url="https://testserver") as app_client:
            assert isinstance(app_client.app.state.runtime.webhooks, CeleryKicker)  # type: ignore[attr-defined]
            admin_register(app_client, admin_key, "http://127.0.0.1:9/hook")
            call_id = submit_pending(app_client, agent_key)
            reviewer = signed_in(app_client, "rita")
            r = app_client.post(f"/calls/{call_id}/approve", data={"csrf_token": reviewer.csrf},
                                follow_redirects=False)
            assert r.status_code == 303
            wait_until(lambda: client.llen(name) >= 1, 10, "the delivery task on the queue")
        assert outbox(engine)[0]["status"] == "pending"  # nobody consumes this test queue: the row waits

"""Webhook test fixtures: a real receiver on 127.0.0.1 (plain http), settings that allow it, and
helpers that make pending calls and decide them through the real domain functions (no app, so no
background worker races the delivery rounds a test drives by hand)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from gateway.config import Settings
from gateway.webhooks.delivery import DeliveryConfig, RunUnit, in_transaction
from tests.gateway.webhooks.helpers import Calls, delivery_config
from tests.gateway.webhooks.receiver import Receiver, running_receiver


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The gateway test settings, with loopback http receivers allowed and a quick timeout."""
    return settings.model_copy(update={"webhook_allow_private": True, "webhook_allow_http": True,
                                       "webhook_timeout_seconds": 2.0, "webhook_lease_seconds": 5.0})


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as r:
        yield r


@pytest.fixture
def run(engine: Engine) -> RunUnit:
    return in_transaction(engine)


@pytest.fixture
def config() -> DeliveryConfig:
    return delivery_config(schedule=(5.0, 30.0, 120.0))


@pytest.fixture
def calls(engine: Engine, settings: Settings, run: RunUnit, agent_key: str) -> Calls:
    return Calls(engine, settings, run, agent_key)


"""Fixtures for the framework suites (run each in its own environment: tests/envs/<name>).

``gateway`` is one real `callgate serve` per test module (starting one costs seconds); tests keep
apart by running each in its own ``callgate.session`` (``session_id`` fixture) and by resetting
the SDK after every test. A module may set ``POLICY = "..."`` to use its own policy.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import callgate
from tests.sdk.integrations.harness import DEFAULT_POLICY, Gateway, new_session, running_gateway


@pytest.fixture(scope="module")
def gateway(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    policy = getattr(request.module, "POLICY", DEFAULT_POLICY)
    with running_gateway(Path(tmp_path_factory.mktemp("gateway")), policy) as gw:
        yield gw


@pytest.fixture
def configured(gateway: Gateway, tmp_path: Path) -> Iterator[Gateway]:
    """The SDK configured against ``gateway`` (integrations on); reset (patches removed) afterwards."""
    callgate.reset()
    gateway.configure(spool_dir=tmp_path / "spool")
    try:
        yield gateway
    finally:
        callgate.flush(5)
        callgate.reset()


@pytest.fixture
def session_id(configured: Gateway) -> Iterator[str]:
    sid = new_session()
    with callgate.session(sid):
        yield sid

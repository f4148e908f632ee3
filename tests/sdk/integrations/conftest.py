"""Fixtures for the framework suites (run each in its own environment: tests/envs/<name>).

``gateway`` is one real `callgate serve` shared by every module on ``DEFAULT_POLICY`` (a module
that sets ``POLICY = "..."`` gets its own); tests keep apart by running each in its own
``callgate.session`` (``session_id`` fixture) and by resetting the SDK after every test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import callgate
from tests.sdk.integrations.harness import DEFAULT_POLICY, Gateway, new_session, running_gateway


@pytest.fixture(scope="session")
def shared_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """One gateway on ``DEFAULT_POLICY`` for every module that does not set its own ``POLICY``:
    starting one costs seconds (tens of seconds on a loaded machine), and tests keep apart by
    ``callgate.session`` anyway."""
    with running_gateway(Path(tmp_path_factory.mktemp("gateway")), DEFAULT_POLICY) as gw:
        yield gw


@pytest.fixture(scope="module")
def gateway(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The shared gateway, or a module's own one when the module sets ``POLICY``."""
    policy = getattr(request.module, "POLICY", None)
    if policy is None:
        yield request.getfixturevalue("shared_gateway")
        return
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

"""Fixtures of the CrewAI suite (``configured``/``session_id`` come from ../conftest.py).

CrewAI phones home unless told not to (telemetry, tracing, a version check); the suite must make
no network call, so those switches are set here, before any test module imports ``crewai``.
"""

from __future__ import annotations

import os

for _name, _value in {
    "CREWAI_DISABLE_TELEMETRY": "true",
    "CREWAI_DISABLE_TRACKING": "true",
    "OTEL_SDK_DISABLED": "true",
    "CREWAI_TRACING_ENABLED": "false",
    "CREWAI_DISABLE_VERSION_CHECK": "true",
}.items():
    os.environ[_name] = _value

from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from tests.sdk.integrations.crewai.tools import RAN  # noqa: E402 - imports crewai: after the switches
from tests.sdk.integrations.harness import DEFAULT_POLICY, Gateway, running_gateway  # noqa: E402


@pytest.fixture(autouse=True)
def ran() -> Iterator[list[tuple[str, dict[str, object]]]]:
    """The tool-body journal (tool name, arguments), empty at the start of every test."""
    RAN.clear()
    yield RAN
    RAN.clear()


@pytest.fixture(scope="session")
def shared_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """One gateway on ``DEFAULT_POLICY`` for every module of this suite that does not set its own
    ``POLICY``: starting one costs seconds, and tests keep apart by ``callgate.session`` anyway."""
    with running_gateway(Path(tmp_path_factory.mktemp("gateway")), DEFAULT_POLICY) as gw:
        yield gw


@pytest.fixture(scope="module")
def gateway(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """Overrides ../conftest.py's: the shared gateway, unless the module sets ``POLICY``."""
    policy = getattr(request.module, "POLICY", None)
    if policy is None:
        yield request.getfixturevalue("shared_gateway")
        return
    with running_gateway(Path(tmp_path_factory.mktemp("gateway")), policy) as gw:
        yield gw

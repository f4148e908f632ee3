"""Fixtures of the CrewAI suite (``gateway``/``configured``/``session_id`` come from ../conftest.py).

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

import pytest  # noqa: E402

from tests.sdk.integrations.crewai.tools import RAN  # noqa: E402 - imports crewai: after the switches


@pytest.fixture(autouse=True)
def ran() -> Iterator[list[tuple[str, dict[str, object]]]]:
    """The tool-body journal (tool name, arguments), empty at the start of every test."""
    RAN.clear()
    yield RAN
    RAN.clear()

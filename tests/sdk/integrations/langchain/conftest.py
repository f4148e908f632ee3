"""Fixtures of the LangChain/LangGraph suite (``configured``/``session_id`` come from ../conftest.py).

One gateway serves the whole package instead of one per module: starting `callgate serve` costs
seconds (tens on a loaded machine), and the tests never share state through it -- each one runs in
its own ``callgate.session`` and reads back only that session's rows. Every module here uses the
default policy.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.sdk.integrations.harness import DEFAULT_POLICY, Gateway, running_gateway
from tests.sdk.integrations.langchain.tools import RAN


@pytest.fixture(scope="package")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with running_gateway(Path(tmp_path_factory.mktemp("gateway")), DEFAULT_POLICY) as gw:
        yield gw


@pytest.fixture(autouse=True)
def journal() -> Iterator[Any]:
    """The tool-execution journal, empty at the start of every test."""
    RAN.clear()
    yield RAN
    RAN.clear()

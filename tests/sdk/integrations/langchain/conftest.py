"""Fixtures of the LangChain/LangGraph suite (``gateway``/``configured``/``session_id`` come from
../conftest.py: one gateway for every module on the default policy)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.sdk.integrations.langchain.tools import RAN


@pytest.fixture(autouse=True)
def journal() -> Iterator[Any]:
    """The tool-execution journal, empty at the start of every test."""
    RAN.clear()
    yield RAN
    RAN.clear()

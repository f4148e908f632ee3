"""The Agents SDK suite: tracing off before ``agents`` is imported (its default exporter would try
to upload spans to OpenAI), and one gateway for the whole suite.

Every module here uses the shared ``DEFAULT_POLICY`` and keeps to its own ``callgate.session``
ids, so they can share one ``callgate serve``: starting one costs seconds, tens of seconds on a
loaded machine, and five of them were most of the suite's run time. This overrides the shared
module-scoped ``gateway`` fixture for this package only; a module-level ``POLICY`` is therefore
not supported here (the fixture refuses one rather than ignoring it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sdk.integrations.harness import DEFAULT_POLICY, Gateway, running_gateway

os.environ["OPENAI_AGENTS_DISABLE_TRACING"] = "1"


@pytest.fixture(scope="package")
def gateway(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    here = Path(__file__).parent
    for item in request.session.items:
        module = getattr(item, "module", None)
        if module is not None and Path(module.__file__).parent == here and hasattr(module, "POLICY"):
            raise pytest.UsageError(f"{module.__name__} sets POLICY; this package shares one DEFAULT_POLICY gateway")
    with running_gateway(Path(tmp_path_factory.mktemp("gateway")), DEFAULT_POLICY) as gw:
        yield gw

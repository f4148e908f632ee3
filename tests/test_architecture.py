"""Import direction and weight: `policies` and `callgate` stay light and independent."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("fastapi", "starlette", "sqlalchemy", "celery", "pydantic", "httpx", "alembic", "psycopg", "redis")
FRAMEWORKS = ("langchain", "langchain_core", "langgraph", "crewai", "agents", "openai")


def loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; import json; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return {m.split(".")[0] for m in json.loads(out)}


@pytest.mark.parametrize("statement", ["import callgate", "import callgate; callgate.configure(url='http://127.0.0.1:9', api_key='k')"])
def test_sdk_loads_no_server_or_framework_module(statement: str) -> None:
    """The SDK imports no web framework, ORM, HTTP library or agent framework."""
    loaded = loaded_after(statement)
    assert not loaded & set(HEAVY), loaded & set(HEAVY)
    assert not loaded & set(FRAMEWORKS)
    assert not loaded & {"gateway", "console", "policies"}


def test_policies_import_nothing_of_ours_or_heavy() -> None:
    """The policy language is pure: no gateway, console, SDK or server libraries."""
    loaded = loaded_after("import policies")
    assert not loaded & {"gateway", "console", "callgate", *HEAVY}

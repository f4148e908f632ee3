"""The integration's life cycle: lazy install, idempotent configure, a reset that undoes everything.

No gateway needed: ``configure()`` does no network I/O, and these tests only look at what is patched.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import wrapt
from langchain_core.callbacks import CallbackManager
from langchain_core.tools import BaseTool
from langchain_core.tools import base as tools_base
from langchain_core.tracers import context as tracer_context

import callgate
from callgate.integrations import installed

URL = "http://127.0.0.1:9"  # nothing listens there; nothing here calls it
FRAMEWORKS = (
    "langchain",
    "langchain_core",
    "langgraph",
    "langsmith",
    "agents",
    "crewai",
    "openai",
    "anthropic",
    "mcp",
    "fastmcp",
)


@pytest.fixture
def off() -> Iterator[None]:
    """Callgate not configured before and after the test."""
    callgate.reset()
    yield
    callgate.reset()


def patched_attributes() -> dict[str, Any]:
    """Everything the integration replaces, as currently installed."""
    return {
        "BaseTool.run": vars(BaseTool)["run"],
        "BaseTool.arun": vars(BaseTool)["arun"],
        "_handle_tool_error": vars(tools_base)["_handle_tool_error"],
        "_handle_validation_error": vars(tools_base)["_handle_validation_error"],
    }


def our_hooks() -> list[Any]:
    """callgate's entries in LangChain's configure-hook list (the global usage handler)."""

    def value(var: Any) -> Any:
        try:
            return var.get()  # the handler is the variable's default: .get(None) would hide it
        except LookupError:
            return None

    return [
        entry
        for entry in tracer_context._configure_hooks
        if type(value(entry[0])).__name__ == "CallgateUsageHandler"
    ]


def handlers_of_a_new_callback_manager() -> list[str]:
    return [type(h).__name__ for h in CallbackManager.configure().handlers]


def test_configure_imports_no_framework_and_patches_on_import(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import json, sys
        import callgate
        callgate.configure(url={URL!r}, spool_dir={str(tmp_path / "spool")!r})
        frameworks = {FRAMEWORKS!r}
        loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set(frameworks))
        from callgate.integrations import installed
        report = {{"after_configure": loaded, "installed": installed()}}

        from langchain_core.tools import BaseTool  # the user imports the framework afterwards
        import wrapt
        report["run_wrapped"] = isinstance(vars(BaseTool)["run"], wrapt.FunctionWrapper)
        report["arun_wrapped"] = isinstance(vars(BaseTool)["arun"], wrapt.FunctionWrapper)
        from langchain_core.callbacks import CallbackManager
        report["handlers"] = [type(h).__name__ for h in CallbackManager.configure().handlers]
        print(json.dumps(report))
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])

    assert report["after_configure"] == []
    assert "langchain" in report["installed"]
    assert report["run_wrapped"] and report["arun_wrapped"]
    assert report["handlers"] == ["CallgateUsageHandler"]


def test_configure_is_idempotent(off: None, tmp_path: Path) -> None:
    original_run = vars(BaseTool)["run"]
    callgate.configure(url=URL, spool_dir=tmp_path / "a")
    once = patched_attributes()
    callgate.configure(url=URL, spool_dir=tmp_path / "a")  # the same options: a no-op
    callgate.configure(url=URL, spool_dir=tmp_path / "b", timeout=3)  # new options: a new runtime

    assert patched_attributes() == once and all(
        a is b for a, b in zip(patched_attributes().values(), once.values(), strict=True)
    )
    assert vars(BaseTool)["run"].__wrapped__ is original_run  # one layer of wrapping, not three
    assert len(our_hooks()) == 1
    assert handlers_of_a_new_callback_manager().count("CallgateUsageHandler") == 1
    assert installed().count("langchain") == 1


def test_reset_removes_every_patch(off: None, tmp_path: Path) -> None:
    originals = patched_attributes()
    hooks_before = list(tracer_context._configure_hooks)
    assert "CallgateUsageHandler" not in handlers_of_a_new_callback_manager()

    for _ in range(2):  # and a second configure after the reset patches the loaded modules again
        callgate.configure(url=URL, spool_dir=tmp_path / "spool")
        assert all(isinstance(value, wrapt.FunctionWrapper) for value in patched_attributes().values())
        [(var, inheritable, _cls, _env)] = our_hooks()
        handler = var.get()
        assert inheritable is True and handler.active
        assert handlers_of_a_new_callback_manager().count("CallgateUsageHandler") == 1

        callgate.reset()

        assert all(patched_attributes()[name] is original for name, original in originals.items())
        assert tracer_context._configure_hooks == hooks_before
        assert "CallgateUsageHandler" not in handlers_of_a_new_callback_manager()
        # Callback managers made before the reset still hold the handler: it must do nothing now.
        assert handler.active is False
        assert installed() == []


def test_configure_without_integrations_patches_nothing(off: None, tmp_path: Path) -> None:
    originals = patched_attributes()
    callgate.configure(url=URL, spool_dir=tmp_path / "spool", integrations=False)

    assert patched_attributes() == originals
    assert our_hooks() == []

"""configure() arms the integration without importing any framework; importing ``agents`` later
patches it; configure() is idempotent; reset() removes every patch.

The first test runs in a fresh interpreter (this one imported ``agents`` long ago).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import callgate
import pytest
import wrapt
from agents import Agent, OpenAIChatCompletionsModel, OpenAIResponsesModel
from agents.models.interface import Model
from agents.tool import FunctionTool
from agents.tool_context import ToolContext

from tests.sdk.integrations.harness import REPO, Gateway, new_session

from . import tools
from .drive import run
from .scripted_model import ScriptedModel, user

#: The model methods as the SDK defined them, taken before this suite configured anything.
MODEL_CLASSES = (OpenAIResponsesModel, OpenAIChatCompletionsModel, ScriptedModel)
ORIGINAL_METHODS = {(cls, name): cls.__dict__[name] for cls in MODEL_CLASSES
                    for name in ("get_response", "stream_response")}
ORIGINAL_INIT_SUBCLASS = Model.__dict__.get("__init_subclass__")


@pytest.fixture(autouse=True)
def _clean_ran() -> Iterator[None]:
    tools.RAN.clear()
    yield
    tools.RAN.clear()


def tool_context() -> ToolContext[Any]:
    return ToolContext(context=None, tool_name="delete_file", tool_call_id="held-1", tool_arguments="{}")


def assert_unpatched() -> None:
    assert "on_invoke_tool" not in FunctionTool.__dict__
    assert Model.__dict__.get("__init_subclass__") is ORIGINAL_INIT_SUBCLASS
    for (cls, name), original in ORIGINAL_METHODS.items():
        assert cls.__dict__[name] is original, f"{cls.__name__}.{name} still patched"
    assert tools.delete_file.on_invoke_tool is tools.delete_file.__dict__["on_invoke_tool"]


def assert_patched_once() -> None:
    assert type(FunctionTool.__dict__["on_invoke_tool"]).__name__ == "_InvokerDescriptor"
    for (cls, name), original in ORIGINAL_METHODS.items():
        method = cls.__dict__[name]
        assert isinstance(method, wrapt.FunctionWrapper) and method.__wrapped__ is original, f"{cls.__name__}.{name}"


FRESH_PROCESS = textwrap.dedent("""
    import asyncio, json, sys
    import callgate
    FRAMEWORKS = ("agents", "openai", "mcp", "langchain", "langchain_core", "langgraph", "crewai")
    def loaded():
        return sorted(m for m in sys.modules if m.split(".")[0] in FRAMEWORKS)
    out = {}
    callgate.configure(url=sys.argv[1], api_key=sys.argv[2])
    callgate.configure(url=sys.argv[1], api_key=sys.argv[2])  # idempotent
    out["after_configure"] = loaded()
    out["installed"] = callgate.integrations.installed()

    import agents                               # imported after configure(): patched as it loads
    from agents.tool import FunctionTool
    from agents.models.interface import Model
    import wrapt
    out["descriptor"] = type(FunctionTool.__dict__.get("on_invoke_tool")).__name__
    out["responses_patched"] = isinstance(agents.OpenAIResponsesModel.__dict__["get_response"], wrapt.FunctionWrapper)
    out["chat_patched"] = isinstance(agents.OpenAIChatCompletionsModel.__dict__["stream_response"],
                                     wrapt.FunctionWrapper)

    from tests.sdk.integrations.openai_agents.scripted_model import ScriptedModel, user

    @agents.function_tool
    def delete_file(path: str) -> str:
        '''Delete a file.'''
        return "DELETED (the body ran)"

    agent = agents.Agent(name="a", tools=[delete_file], model=ScriptedModel())
    config = agents.RunConfig(tracing_disabled=True)
    with callgate.session(sys.argv[3]):
        out["final_output"] = agents.Runner.run_sync(agent, user("delete_file", path="/x"), run_config=config).final_output

    callgate.reset()
    out["after_reset_descriptor"] = "on_invoke_tool" in FunctionTool.__dict__
    out["after_reset_responses_patched"] = isinstance(agents.OpenAIResponsesModel.__dict__["get_response"],
                                                      wrapt.FunctionWrapper)
    out["after_reset_output"] = agents.Runner.run_sync(agent, user("delete_file", path="/y"),
                                                       run_config=config).final_output
    print(json.dumps(out))
""")


def test_configure_imports_no_framework_and_importing_one_later_patches_it(gateway: Gateway, tmp_path: Path) -> None:
    session = new_session()
    env = {**os.environ, "PYTHONPATH": str(REPO), "OPENAI_AGENTS_DISABLE_TRACING": "1",
           "CALLGATE_SPOOL_DIR": str(tmp_path / "spool")}
    done = subprocess.run([sys.executable, "-c", FRESH_PROCESS, gateway.url, gateway.agent_key, session],
                          capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])

    assert out["after_configure"] == []
    assert "openai_agents" in out["installed"]
    assert out["descriptor"] == "_InvokerDescriptor"
    assert out["responses_patched"] and out["chat_patched"]
    assert out["final_output"] == "final: Tool call blocked by policy: deleting files is not allowed"
    assert [(c["tool"], c["status"]) for c in gateway.calls(session)] == [("delete_file", "blocked")]
    # After reset() the SDK is as it was: no descriptor, no wrappers, nothing checked any more.
    assert not out["after_reset_descriptor"] and not out["after_reset_responses_patched"]
    assert out["after_reset_output"] == "final: DELETED (the body ran)"


def test_configure_twice_patches_once(configured: Gateway, session_id: str) -> None:
    assert_patched_once()
    configured.configure(spool_dir=Path(callgate._config.runtime().config.spool_dir))  # the same configuration
    configured.configure(spool_dir=Path(callgate._config.runtime().config.spool_dir) / "other")  # a new one
    assert_patched_once()

    result = run(Agent(name="a", tools=[tools.delete_file], model=ScriptedModel()), user("delete_file", path="/"),
                 "run")
    assert result.final_output.startswith("final: Tool call blocked by policy")
    assert len(configured.calls(session_id)) == 1


def test_reset_removes_every_patch_and_configure_brings_them_back(configured: Gateway, session_id: str,
                                                                  tmp_path: Path) -> None:
    held = tools.delete_file.on_invoke_tool  # a proxy the SDK (or a user) may still hold after reset
    callgate.reset()
    assert_unpatched()

    class MadeAfterReset(ScriptedModel):
        async def get_response(self, *args: Any, **kwargs: Any) -> Any:
            return await super().get_response(*args, **kwargs)

    assert not isinstance(MadeAfterReset.__dict__["get_response"], wrapt.FunctionWrapper)
    output = asyncio.run(held(tool_context(), '{"path": "/held"}'))
    assert output == "deleted /held"  # straight through: nothing to check against any more
    assert tools.RAN == [("delete_file", {"path": "/held"})]
    assert configured.calls(session_id) == []

    configured.configure(spool_dir=tmp_path / "spool-again")
    assert_patched_once()
    assert isinstance(MadeAfterReset.__dict__["get_response"], wrapt.FunctionWrapper)  # found by the walk
    assert asyncio.run(held(tool_context(), '{"path": "/held"}')).startswith("Tool call blocked")

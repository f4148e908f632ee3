"""Installing and removing the CrewAI integration: ``configure()`` imports no framework, importing
CrewAI afterwards patches it, ``configure()`` is idempotent, ``callgate.reset()`` removes every
patch. And the token-capture wrappers' own rules (Bedrock's keys, one record per response)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import wrapt
from crewai.llms.base_llm import BaseLLM
from crewai.tools.base_tool import BaseTool, Tool
from crewai.tools.structured_tool import CrewStructuredTool

import callgate
from callgate.integrations import crewai as integration
from tests.sdk.integrations.crewai.tools import read_file

#: Every method the integration wraps (class, attribute).
PATCHED = [(BaseTool, "run"), (BaseTool, "arun"), (Tool, "run"), (Tool, "arun"), (CrewStructuredTool, "invoke"),
           (CrewStructuredTool, "ainvoke"), (BaseLLM, "_track_token_usage_internal")]

_IN_A_FRESH_PROCESS = r"""
import json, sys
import callgate

options = dict(spool_dir=sys.argv[1])  # the gateway comes from CALLGATE_URL / CALLGATE_API_KEY
callgate.configure(**options)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in
               {"crewai", "openai", "mcp", "litellm", "langchain", "langchain_core", "langgraph", "agents"})

import wrapt
from crewai.llms.base_llm import BaseLLM
from crewai.tools.base_tool import BaseTool, Tool
from crewai.tools.structured_tool import CrewStructuredTool

methods = [(BaseTool, "run"), (BaseTool, "arun"), (Tool, "run"), (Tool, "arun"), (CrewStructuredTool, "invoke"),
           (CrewStructuredTool, "ainvoke"), (BaseLLM, "_track_token_usage_internal")]
def current():
    return [vars(cls)[name] for cls, name in methods]
def once_wrapped(items):
    return [isinstance(m, wrapt.FunctionWrapper) and not isinstance(m.__wrapped__, wrapt.FunctionWrapper)
            for m in items]

patched = current()
callgate.configure(**options)  # the same again
same_again = [a is b for a, b in zip(patched, current())]
callgate.configure(**options, raise_on_block=True)  # another configuration
after_reconfigure = once_wrapped(current())
installed = callgate.integrations.installed()
originals = [m.__wrapped__ for m in current()]
callgate.reset()
print(json.dumps({
    "heavy_after_configure": heavy,
    "patched_on_import": once_wrapped(patched),
    "same_after_configure_again": same_again,
    "once_after_reconfigure": after_reconfigure,
    "installed": installed,
    "restored_by_reset": [a is b for a, b in zip(current(), originals)],
    "installed_after_reset": callgate.integrations.installed(),
}))
"""


def test_configure_imports_no_framework_and_patches_crewai_when_it_is_imported(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "CALLGATE_URL": "http://127.0.0.1:9",
           "CALLGATE_API_KEY": "cg_test", "CALLGATE_AGENT": "install-check"}
    done = subprocess.run([sys.executable, "-c", _IN_A_FRESH_PROCESS, str(tmp_path / "spool")], env=env,
                          capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    every = [True] * len(PATCHED)
    assert report == {
        "heavy_after_configure": [],
        "patched_on_import": every,
        "same_after_configure_again": every,
        "once_after_reconfigure": every,
        "installed": report["installed"],
        "restored_by_reset": every,
        "installed_after_reset": [],
    }
    assert "crewai" in report["installed"]


def test_already_imported_crewai_is_patched_by_configure_and_restored_by_reset(
        tmp_path: Path, ran: list[Any]) -> None:
    """This process imported CrewAI (and created its tools) long before ``configure()``."""
    callgate.reset()
    originals = [vars(cls)[name] for cls, name in PATCHED]
    assert not any(isinstance(m, wrapt.FunctionWrapper) for m in originals)
    unreachable = {"url": "http://127.0.0.1:9", "api_key": "cg_test", "spool_dir": tmp_path, "timeout": 1.0,
                   "connect_timeout": 0.5}
    try:
        callgate.configure(**unreachable)
        patched = [vars(cls)[name] for cls, name in PATCHED]
        assert [m.__wrapped__ for m in patched] == originals
        callgate.configure(**unreachable, raise_on_block=False)
        assert [vars(cls)[name] for cls, name in PATCHED] == patched  # no second layer
        # No gateway, no decision: the tool does not run (fail closed), and says why.
        refused = read_file.run(path="/x")
        assert (refused.code, refused.retryable) == ("gateway_unavailable", True)
        assert ran == []
    finally:
        callgate.reset()
    assert [vars(cls)[name] for cls, name in PATCHED] == originals
    assert read_file.run(path="/x") == "contents of /x"  # CrewAI alone again


# -- the token-capture wrappers ------------------------------------------------------------------
@pytest.fixture
def usage(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """What the wrappers hand to ``record_usage`` (the gateway side is covered by test_tokens.py)."""
    seen: list[tuple[Any, ...]] = []
    monkeypatch.setattr(integration, "record_usage", lambda *a, **kw: seen.append((*a, kw)))
    return seen


class _Reporting(BaseLLM):
    """A custom LLM, as the Bedrock provider is shaped: its own ``_track_token_usage_internal``."""

    def call(self, *args: Any, **kwargs: Any) -> str:
        return ""

    def _track_token_usage_internal(self, usage: dict[str, Any]) -> None:  # type: ignore[override]
        self._token_usage["prompt_tokens"] += usage.get("inputTokens", 0)


class _Delegating(_Reporting):
    def _track_token_usage_internal(self, usage: dict[str, Any]) -> None:  # type: ignore[override]
        super()._track_token_usage_internal(usage)
        BaseLLM._track_token_usage_internal(self, {"prompt_tokens": usage.get("inputTokens", 0)})


def test_bedrock_usage_counts_cache_tokens_as_input(usage: list[tuple[Any, ...]]) -> None:
    """Bedrock's ``inputTokens`` excludes cache reads and writes (``totalTokens`` adds them)."""
    crewai_integration = integration.CrewAIIntegration()
    crewai_integration.module_loaded(integration.BEDROCK_MODULE, types.SimpleNamespace(BedrockCompletion=_Reporting))
    try:
        _Reporting(model="anthropic.claude-3-5-sonnet-20240620-v1:0")._track_token_usage_internal(
            {"inputTokens": 4, "outputTokens": 25, "totalTokens": 1066, "cacheReadInputTokens": 0,
             "cacheWriteInputTokens": 1037})
    finally:
        crewai_integration.uninstall()
    assert usage == [("anthropic.claude-3-5-sonnet-20240620-v1:0", 1041, 25,
                      {"cache_read_tokens": 0, "cache_write_tokens": 1037, "reasoning_tokens": 0, "provider": None,
                       "framework": "crewai"})]
    assert not isinstance(vars(_Reporting)["_track_token_usage_internal"], wrapt.FunctionWrapper)


def test_an_override_calling_the_base_method_is_one_response(usage: list[tuple[Any, ...]]) -> None:
    crewai_integration = integration.CrewAIIntegration()
    crewai_integration.module_loaded(integration.BEDROCK_MODULE, types.SimpleNamespace(BedrockCompletion=_Delegating))
    crewai_integration.module_loaded(integration.LLM_MODULE, types.SimpleNamespace(BaseLLM=BaseLLM))
    try:
        llm = _Delegating(model="m")
        llm._track_token_usage_internal({"inputTokens": 7, "outputTokens": 2})
        BaseLLM._track_token_usage_internal(llm, {"prompt_tokens": 3, "completion_tokens": 1})  # the base alone
        llm._track_token_usage_internal({"totalTokens": 0})  # a response without usage: nothing to record
    finally:
        crewai_integration.uninstall()
    assert [entry[:3] for entry in usage] == [("m", 7, 2), ("m", 3, 1)]


def test_a_pydantic_usage_object_is_read_like_a_dict(usage: list[tuple[Any, ...]]) -> None:
    """The LiteLLM ``LLM`` hands over LiteLLM's ``Usage`` (an ``openai`` ``CompletionUsage``), with
    cached and reasoning tokens nested in their ``*_details``."""
    from openai.types import CompletionUsage
    from openai.types.completion_usage import CompletionTokensDetails, PromptTokensDetails

    track = integration._usage_recorder("crewai", integration._crewai_counts)
    handed_on: list[Any] = []
    litellm_usage = CompletionUsage(prompt_tokens=100, completion_tokens=20, total_tokens=120,
                                    prompt_tokens_details=PromptTokensDetails(cached_tokens=30),
                                    completion_tokens_details=CompletionTokensDetails(reasoning_tokens=5))

    track(handed_on.append, _Reporting(model="openai/gpt-4o"), (litellm_usage,), {})

    assert handed_on == [litellm_usage]  # CrewAI's own accounting gets it unchanged
    assert usage == [("openai/gpt-4o", 100, 20, {"cache_read_tokens": 30, "cache_write_tokens": 0,
                                                 "reasoning_tokens": 5, "provider": None, "framework": "crewai"})]

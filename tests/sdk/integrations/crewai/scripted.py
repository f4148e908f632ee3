"""Offline models that drive CrewAI's real agent loops (adapted from framework-proofs/crewai_drivers.py).

A task's description carries directives, ``TOOL=<name> ARGS=<json>``, that the scripted model
obeys in order, one tool call per turn; once they are used up it answers
``FINAL: <every tool result it read>``. ``<name>`` is the tool's name as the model sees it, or
the ``_<name>`` suffix of one (MCP tools are prefixed with their server), or ``~<words>``: the
tool whose description contains those words (how a model picks an MCP tool whose alias CrewAI
shortened to a hash).

* :func:`openai_llm` -- CrewAI's **real** OpenAI provider (``LLM(model="gpt-4o")`` is an
  ``OpenAICompletion``) whose ``openai`` clients talk to :meth:`Script.handle` through
  ``httpx.MockTransport``: native function calling, JSON or SSE (``stream=True``), with real
  usage blocks.
* :class:`ScriptedReActLLM` -- a custom ``BaseLLM`` without function calling, so CrewAI falls
  back to its text ReAct loop (``Action:`` / ``Action Input:`` / ``Observation:``). It reports
  usage the way CrewAI's own providers do: ``_track_token_usage_internal`` and the completed event.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from typing import Any

import httpx
from crewai.events.types.llm_events import LLMCallType
from crewai.llms.base_llm import BaseLLM, llm_call_context
from pydantic import Field

__all__ = ["OPENAI_USAGE", "REACT_USAGE", "Script", "ScriptedReActLLM", "Usage", "openai_llm"]

DIRECTIVE = re.compile(r"TOOL=(\S+) ARGS=(\{.*?\})")
#: "Tool Name: x\nTool Arguments: {...}\nTool Description: y" blocks of CrewAI's ReAct prompt.
REACT_TOOL = re.compile(r"Tool Name: (\S+)\nTool Arguments: .*?\nTool Description: (.*?)(?:\n|$)", re.DOTALL)


@dataclass(frozen=True)
class Usage:
    """What the scripted model reports for every response (OpenAI semantics: prompt includes
    cached, completion includes reasoning)."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    reasoning_tokens: int = 0

    def openai(self) -> dict[str, Any]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens,
                "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
                "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens}}

    def crewai(self) -> dict[str, Any]:
        """The normalized dict CrewAI's providers hand to ``_track_token_usage_internal``."""
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens,
                "cached_prompt_tokens": self.cached_tokens, "reasoning_tokens": self.reasoning_tokens}


OPENAI_USAGE = Usage(prompt_tokens=1200, completion_tokens=40, cached_tokens=640, reasoning_tokens=8)
REACT_USAGE = Usage(prompt_tokens=800, completion_tokens=30, cached_tokens=160)


class Script:
    """One scripted model's behaviour and what it observed (thread-safe: CrewAI calls from workers)."""

    def __init__(self, usage: Usage = OPENAI_USAGE) -> None:
        self.usage = usage
        self.responses = 0
        #: The tool results the model read, in order (the latest request's view).
        self.seen: list[str] = []
        #: The tool names the model called, in order.
        self.called: list[str] = []
        self._lock = threading.Lock()

    # -- the decision, shared by both drivers ------------------------------------------------
    def answer(self, prompt: str, results: list[str], tools: dict[str, str]) -> tuple[str, dict[str, Any]] | str:
        """The next tool call ``(name, args)``, or the final answer text."""
        with self._lock:
            self.responses += 1
            self.seen = list(results)
        directives = [(name, json.loads(args)) for name, args in DIRECTIVE.findall(prompt)]
        if len(results) < len(directives):
            name, args = directives[len(results)]
            name = _resolve(name, tools)
            with self._lock:
                self.called.append(name)
            return name, args
        return "FINAL: " + " | ".join(results)

    # -- native function calling over a mocked OpenAI API ------------------------------------
    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/responses/input_tokens"):  # CrewAI's context-window check
            return httpx.Response(200, json={"object": "response.input_tokens", "input_tokens": 100})
        if not request.url.path.endswith("/chat/completions"):
            return httpx.Response(404, json={"error": {"message": f"not scripted: {request.url.path}"}})
        body = json.loads(request.content)
        messages = body["messages"]
        results = [_text(m.get("content")) for m in messages if m.get("role") == "tool"]
        prompt = "\n".join(_text(m.get("content")) for m in messages if m.get("role") in ("system", "user"))
        tools = {t["function"]["name"]: t["function"].get("description", "") for t in body.get("tools") or []}
        decision = self.answer(prompt, results, tools)
        if isinstance(decision, str):
            message: dict[str, Any] = {"role": "assistant", "content": decision}
            finish = "stop"
        else:
            call = {"id": f"call_{len(results)}", "type": "function",
                    "function": {"name": decision[0], "arguments": json.dumps(decision[1])}}
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
            finish = "tool_calls"
        if body.get("stream"):
            return _sse(message, finish, self.usage.openai())
        return httpx.Response(200, json={
            "id": "chatcmpl-scripted", "object": "chat.completion", "created": 0, "model": "gpt-4o-2024-08-06",
            "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": self.usage.openai()})


def openai_llm(script: Script, *, stream: bool = False, model: str = "gpt-4o") -> Any:
    """CrewAI's real OpenAI provider, its clients swapped for ones on a mocked transport (test
    scaffolding on private attributes: ``client_params`` would build the async client too)."""
    from crewai import LLM
    from openai import AsyncOpenAI, OpenAI

    llm = LLM(model=model, api_key="sk-fake", stream=stream)
    llm._client = OpenAI(api_key="sk-fake", max_retries=0,
                         http_client=httpx.Client(transport=httpx.MockTransport(script.handle)))
    llm._async_client = AsyncOpenAI(api_key="sk-fake", max_retries=0,
                                    http_client=httpx.AsyncClient(transport=httpx.MockTransport(script.handle)))
    return llm


class ScriptedReActLLM(BaseLLM):
    """No ``supports_function_calling()``: CrewAI drives it with its text ReAct loop."""

    model: str = "scripted-react"
    script: Any = Field(default=None, exclude=True)

    def call(self, messages: Any, tools: Any = None, callbacks: Any = None, available_functions: Any = None,
             from_task: Any = None, from_agent: Any = None, response_model: Any = None) -> str:
        with llm_call_context():
            self._emit_call_started_event(messages=messages, from_task=from_task, from_agent=from_agent)
            msgs = [{"role": "user", "content": messages}] if isinstance(messages, str) else list(messages)
            prompt = "\n".join(_text(m.get("content")) for m in msgs if m.get("role") in ("system", "user"))
            results = [_observation(_text(m.get("content"))) for m in msgs
                       if m.get("role") == "assistant" and "Observation:" in _text(m.get("content"))]
            tools_seen = {name: description for name, description in REACT_TOOL.findall(prompt)}
            decision = self.script.answer(prompt, results, tools_seen)
            if isinstance(decision, str):
                text = f"Thought: I now know the final answer\nFinal Answer: {decision}"
            else:
                text = f"Thought: I should use a tool\nAction: {decision[0]}\nAction Input: {json.dumps(decision[1])}"
            usage = self.script.usage.crewai()
            self._track_token_usage_internal(usage)
            self._emit_call_completed_event(response=text, call_type=LLMCallType.LLM_CALL, from_task=from_task,
                                            from_agent=from_agent, messages=messages, usage=usage)
            return text

    async def acall(self, *args: Any, **kwargs: Any) -> str:
        return self.call(*args, **kwargs)

    def get_context_window_size(self) -> int:
        return 128_000


def _resolve(name: str, tools: dict[str, str]) -> str:
    if name in tools:
        return name
    if name.startswith("~"):
        words = name[1:].replace("_", " ").lower()
        return next((t for t, description in tools.items() if words in description.lower()), name)
    return next((t for t in tools if t.endswith("_" + name)), name)


def _observation(step: str) -> str:
    """The tool result in a ReAct step CrewAI appended: ``Thought/Action/Action Input/Observation:
    <result>``, to which it adds a reminder of the tools every few steps (after three newlines)."""
    return step.split("Observation:", 1)[1].split("\n\n\n", 1)[0].strip()


def _text(content: Any) -> str:
    if content is None:
        return ""
    return content if isinstance(content, str) else json.dumps(content)


def _sse(message: dict[str, Any], finish: str, usage: dict[str, Any]) -> httpx.Response:
    delta: dict[str, Any] = {"role": "assistant"}
    if message.get("tool_calls"):
        call = message["tool_calls"][0]
        delta["tool_calls"] = [{"index": 0, "id": call["id"], "type": "function", "function": call["function"]}]
    else:
        delta["content"] = message["content"]
    base = {"id": "chatcmpl-scripted", "object": "chat.completion.chunk", "created": 0, "model": "gpt-4o-2024-08-06"}
    chunks = [{**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]},
              {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]},
              {**base, "choices": [], "usage": usage}]
    sse = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
    return httpx.Response(200, text=sse, headers={"content-type": "text/event-stream"})

"""Offline, deterministic LangChain models that drive real agent loops (no key, no network).

Adapted from shared/reference/framework-proofs/lc_scripted_model.py. A human turn holding JSON
``{"calls": [{"tool": ..., "args": {...}}, ...]}`` (or one ``{"tool": ..., "args": ...}``) makes the
chat model call those tools; the turn after the tool results answers ``final: [status] content``
and records each ``ToolMessage`` it was shown in :attr:`ScriptedChatModel.seen` -- what the model
saw, which is how a test proves the model was told why a call was refused.

Every reply carries its own usage (:attr:`ScriptedChatModel.reported` keeps them in order), so
token tests compare what the gateway stored with exactly what the model reported. Both ``_generate``
and ``_stream`` are implemented: LangGraph's ``stream_mode="messages"`` makes the model stream.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

from langchain_core.callbacks import CallbackManager
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.language_models.llms import BaseLLM
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult, Generation, LLMResult
from pydantic import Field, PrivateAttr

__all__ = [
    "DelegatingChatModel",
    "ScriptedChatModel",
    "ScriptedCompletionModel",
    "ask",
    "final_text",
    "usage_for",
]


def usage_for(n: int, *, cache_write: int = 64) -> dict[str, Any]:
    """The usage the n-th reply (1-based) reports: distinct per call, every detail field set.
    ``input_tokens`` includes the cache reads/writes and ``output_tokens`` the reasoning, as
    LangChain's ``UsageMetadata`` defines them."""
    return {
        "input_tokens": 1000 + 17 * n,
        "output_tokens": 40 + 3 * n,
        "total_tokens": 1040 + 20 * n,
        "input_token_details": {"cache_read": 256, "cache_creation": cache_write},
        "output_token_details": {"reasoning": 8},
    }


def ask(*calls: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    """Agent input whose human turn makes the scripted model call ``calls`` (name, args) in one turn."""
    script = {"calls": [{"tool": name, "args": args} for name, args in calls]}
    return {"messages": [HumanMessage(json.dumps(script))]}


def final_text(state: dict[str, Any]) -> str:
    return str(state["messages"][-1].content)


class ScriptedChatModel(BaseChatModel):
    """A chat model with a script instead of weights; see the module docstring."""

    served_model: str = "gpt-4o-2024-08-06"  #: response_metadata["model_name"] (the dated snapshot)
    requested_model: str = "gpt-4o"  #: ls_model_name (what the caller asked for)
    provider: str = "openai"
    report_served_model: bool = True  #: False: the response does not name the model (fallback test)
    cache_write: int = 64
    choices: int = 1  #: n > 1: every choice carries the call's usage, as OpenAI's n does
    seen: list[tuple[str, str, str]] = Field(default_factory=list)  #: (tool, status, content) shown to it
    reported: list[dict[str, Any]] = Field(default_factory=list)  #: the usage of every reply, in order
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _calls: int = PrivateAttr(default=0)

    @property
    def _llm_type(self) -> str:
        return "scripted-chat"

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        return {"ls_provider": self.provider, "ls_model_name": self.requested_model, "ls_model_type": "chat"}

    def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedChatModel:  # create_agent binds its tools
        return self

    # -- the script ------------------------------------------------------------------------
    def _reply(self, messages: list[BaseMessage]) -> AIMessage:
        with self._lock:
            self._calls += 1
            n = self._calls
        usage = usage_for(n, cache_write=self.cache_write)
        self.reported.append(usage)
        metadata = {"model_provider": self.provider}
        if self.report_served_model:
            metadata["model_name"] = self.served_model
        last = messages[-1]
        if isinstance(last, ToolMessage):
            results = []
            for message in reversed(messages):
                if not isinstance(message, ToolMessage):
                    break
                results.append(message)
            results.reverse()
            for message in results:
                self.seen.append((str(message.name), str(message.status), str(message.content)))
            text = " | ".join(f"[{m.status}] {m.content}" for m in results)
            return AIMessage(content=f"final: {text}", usage_metadata=usage, response_metadata=metadata)
        if isinstance(last, HumanMessage):
            try:
                script = json.loads(str(last.content))
            except ValueError:
                script = None
            if isinstance(script, dict):
                calls = script.get("calls") or [script]
                tool_calls = [
                    {"name": c["tool"], "args": c.get("args", {}), "id": f"call_{n}_{i}"}
                    for i, c in enumerate(calls)
                ]
                return AIMessage(
                    content="", tool_calls=tool_calls, usage_metadata=usage, response_metadata=metadata
                )
            return AIMessage(
                content=f"echo: {last.content}", usage_metadata=usage, response_metadata=metadata
            )
        return AIMessage(content="?", usage_metadata=usage, response_metadata=metadata)

    # -- BaseChatModel ---------------------------------------------------------------------
    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        reply = self._reply(messages)
        return ChatResult(generations=[ChatGeneration(message=reply) for _ in range(self.choices)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        reply = self._reply(messages)
        text = str(reply.content)
        half = len(text) // 2
        # Two content chunks without usage, then the tool calls and the usage in the last chunk
        # (as providers stream it): the aggregated message must carry the usage exactly once.
        for piece in (text[:half], text[half:]):
            if piece:
                yield ChatGenerationChunk(message=AIMessageChunk(content=piece))
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                tool_call_chunks=[
                    {
                        "name": tc["name"],
                        "args": json.dumps(tc["args"]),
                        "id": tc["id"],
                        "index": i,
                        "type": "tool_call_chunk",
                    }
                    for i, tc in enumerate(reply.tool_calls)
                ],
                usage_metadata=reply.usage_metadata,
                response_metadata=reply.response_metadata,
                chunk_position="last",
            )
        )


class DelegatingChatModel(BaseChatModel):
    """A chat model that answers by calling another one (a router or wrapper model) and returns its
    message, usage included: one real LLM call, two LLM runs. ``as_child``: the inner run is made
    a child of this one (callbacks handed down); otherwise it is started without them."""

    inner: ScriptedChatModel
    as_child: bool = True

    @property
    def _llm_type(self) -> str:
        return "delegating-chat"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        config = None
        if self.as_child and run_manager is not None:
            children = CallbackManager(
                handlers=run_manager.handlers,
                inheritable_handlers=run_manager.inheritable_handlers,
                parent_run_id=run_manager.run_id,
            )
            config = {"callbacks": children}
        return ChatResult(generations=[ChatGeneration(message=self.inner.invoke(messages, config=config))])


class ScriptedCompletionModel(BaseLLM):
    """A legacy completion model (``BaseLLM``): its usage is only in ``llm_output["token_usage"]``,
    OpenAI-shaped, aggregated over the prompts of one ``generate`` call."""

    model_name: str = "gpt-3.5-turbo-instruct"
    reported: list[dict[str, Any]] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted-completion"

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        return {"ls_provider": "openai", "ls_model_name": self.model_name, "ls_model_type": "llm"}

    def _generate(
        self, prompts: list[str], stop: list[str] | None = None, run_manager: Any = None, **kwargs: Any
    ) -> LLMResult:
        usage = {
            "prompt_tokens": 300 * len(prompts) + len(self.reported),
            "completion_tokens": 25 * len(prompts),
            "total_tokens": 325 * len(prompts) + len(self.reported),
            "prompt_tokens_details": {"cached_tokens": 100},
        }
        self.reported.append(usage)
        return LLMResult(
            generations=[[Generation(text=f"completed: {p}")] for p in prompts],
            llm_output={"token_usage": usage, "model_name": self.model_name},
        )

"""The turn loop both providers share: call the model, answer its tool calls, repeat.

A provider module supplies a :class:`Conversation` (how to build the request, read a response and
append tool results in its own message format); this module owns the control flow, once for sync
clients and once for async ones. A turn is one model call. When the model calls tools on the last
turn those calls are still answered (checked, and run if permitted) before stopping, as the
OpenAI Agents SDK does, so the returned transcript is always valid to send again.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

from .._config import runtime
from ._execute import ParsedCall, ToolErrors, aexecute, execute
from ._result import LoopResult, ToolCallRecord
from ._tools import Tool

__all__ = ["Conversation", "adrive", "check_options", "drive"]


class Conversation:
    """One provider's message format (``openai_chat`` / ``anthropic_messages`` subclass it).

    The state every format keeps is here: the transcript, the tool definitions, the responses,
    whether the model has answered; a subclass says how a tool is declared (:meth:`definition`),
    how to read a response (:meth:`absorb`), how to append tool results (:meth:`answer`) and what
    the final answer's text is (:meth:`final_text`)."""

    framework: ClassVar[str]

    def __init__(self, model: str, messages: Iterable[Mapping[str, Any]], tools: Mapping[str, Tool],
                 provider: str, create_kwargs: Mapping[str, Any], **required: Any) -> None:
        self.model = model
        self.messages: list[Any] = list(messages)
        self.definitions = [self.definition(tool) for tool in tools.values()]
        self.provider = provider
        self.create_kwargs = dict(create_kwargs)
        self.required = required  # arguments the provider requires on every call (Anthropic's max_tokens)
        self.finished = False
        self.final: dict[str, Any] | None = None
        self.responses: list[Any] = []

    @staticmethod
    def definition(tool: Tool) -> dict[str, Any]:
        """The tool as this provider declares it."""
        raise NotImplementedError

    def request(self) -> dict[str, Any]:
        """The keyword arguments of the next ``create(...)`` call."""
        request = {**self.create_kwargs, "model": self.model, **self.required, "messages": list(self.messages)}
        if self.definitions:
            request["tools"] = self.definitions
        return request

    def absorb(self, response: Any) -> list[ParsedCall]:
        """Record the response (usage, assistant message); return the tool calls to answer."""
        raise NotImplementedError

    def answer(self, records: list[ToolCallRecord]) -> None:
        """Append the tool results the model will read next turn."""
        raise NotImplementedError

    def render(self, value: Any) -> Any:
        """A tool's return value as this provider's tool-result content."""
        raise NotImplementedError

    def final_text(self, final: dict[str, Any]) -> str | None:
        """The text of the model's final message."""
        raise NotImplementedError

    def result(self, records: list[ToolCallRecord]) -> LoopResult:
        """The loop's outcome so far."""
        final = self.final
        return LoopResult(
            messages=self.messages,
            stop_reason="final" if self.finished else "max_turns",
            final_message=final,
            text=self.final_text(final) if final is not None else None,
            tool_calls=records,
            responses=self.responses,
        )


def check_options(max_turns: int, tool_errors: str, create_kwargs: Mapping[str, Any]) -> None:
    """Refuse options the loop cannot honour before anything is sent (and require ``configure()``:
    a loop that would refuse every tool call should not spend a model call finding that out)."""
    if not isinstance(max_turns, int) or isinstance(max_turns, bool) or max_turns < 1:
        raise ValueError(f"max_turns must be an int >= 1, not {max_turns!r}")
    if tool_errors not in ("return", "raise"):
        raise ValueError(f"tool_errors must be 'return' or 'raise', not {tool_errors!r}")
    if create_kwargs.get("stream"):
        raise ValueError("stream=True is not supported: the loop needs each complete response")
    runtime()  # raises ConfigurationError when callgate is not configured


def drive(
    conversation: Conversation,
    create: Callable[..., Any],
    tools: Mapping[str, Tool],
    *,
    max_turns: int,
    tool_errors: ToolErrors,
    async_twin: str,
) -> LoopResult:
    records: list[ToolCallRecord] = []
    for _ in range(max_turns):
        response = create(**conversation.request())
        if inspect.isawaitable(response):
            _close(response)
            raise TypeError(f"the client is asynchronous: use {async_twin}")
        calls = conversation.absorb(response)
        answered = [
            execute(
                call,
                tools,
                framework=conversation.framework,
                tool_errors=tool_errors,
                render=conversation.render,
            )
            for call in calls
        ]
        records.extend(answered)
        if answered:
            conversation.answer(answered)
        if conversation.finished:
            break
    return conversation.result(records)


async def adrive(
    conversation: Conversation,
    create: Callable[..., Any],
    tools: Mapping[str, Tool],
    *,
    max_turns: int,
    tool_errors: ToolErrors,
    sync_twin: str,
) -> LoopResult:
    records: list[ToolCallRecord] = []
    for _ in range(max_turns):
        pending = create(**conversation.request())
        if not inspect.isawaitable(pending):
            raise TypeError(f"the client is synchronous: use {sync_twin}")
        calls = conversation.absorb(await pending)
        # One call at a time, in the model's order: tools may depend on each other's side effects,
        # and a call waiting for a human must not let the next one overtake it.
        answered = [
            await aexecute(
                call,
                tools,
                framework=conversation.framework,
                tool_errors=tool_errors,
                render=conversation.render,
            )
            for call in calls
        ]
        records.extend(answered)
        if answered:
            conversation.answer(answered)
        if conversation.finished:
            break
    return conversation.result(records)


def _close(awaitable: Any) -> None:
    close = getattr(awaitable, "close", None)
    if callable(close):
        close()  # a never-awaited coroutine would warn

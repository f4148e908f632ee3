"""The OpenAI Chat Completions tool-call loop, with every tool call checked by the gateway.

For agents written without a framework: the model proposes tool calls, callgate decides, and
only permitted calls run::

    import callgate
    from callgate.loops import openai_chat
    from openai import OpenAI

    callgate.configure()

    def get_weather(city: str) -> str:
        \"\"\"Current weather in a city.\"\"\"
        return "sunny"

    result = openai_chat.run_tools(
        OpenAI(), model="gpt-4o",
        messages=[{"role": "user", "content": "Weather in Oslo?"}],
        tools={"get_weather": get_weather},
    )
    print(result.text)

Each turn calls ``client.chat.completions.create(model=..., messages=..., tools=..., **create_kwargs)``.
For every entry of the reply's ``tool_calls`` the JSON arguments are parsed (malformed arguments,
or an unknown tool name, are answered to the model as an error it can correct), the call is checked
at the gateway (an approval waits for the human, blocking this thread), the function runs only if
permitted, and a ``{"role": "tool", "tool_call_id": ..., "content": ...}`` message carries its
result -- or the refusal's reason, so the model knows the tool did not run. The loop stops when the
model answers without calling a tool, or after ``max_turns`` model calls.

Every response's token usage is recorded (``callgate.log_usage``: ``prompt_tokens`` as the input,
``cached_tokens`` as cache reads, ``reasoning_tokens`` within the output), so the gateway prices
each call; the session is the current ``callgate.session``. Streaming is not supported.

``arun_tools`` is the same for ``AsyncOpenAI``: checks and approval waits never block the event
loop; ``async def`` tools are awaited and plain functions run in a worker thread.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from .._usage import record_usage
from ._access import field, to_dict, token_count
from ._driver import Conversation, adrive, check_options, drive
from ._execute import ParsedCall, ToolErrors, render_text
from ._result import LoopError, LoopResult, ToolCallRecord
from ._tools import Tool, ToolSpec, build_tools

__all__ = ["FRAMEWORK", "arun_tools", "run_tools"]

log = logging.getLogger("callgate")

#: The ``framework`` label of the tool calls and usage this loop reports.
FRAMEWORK = "openai-chat"


def run_tools(
    client: Any,
    *,
    model: str,
    messages: Iterable[Mapping[str, Any]],
    tools: Mapping[str, ToolSpec],
    max_turns: int = 10,
    tool_errors: ToolErrors = "return",
    provider: str = "openai",
    **create_kwargs: Any,
) -> LoopResult:
    """Run the tool-call loop with an ``openai.OpenAI`` client until the model answers.

    ``tools`` maps each tool name to its function, or to ``(schema, function)`` where ``schema``
    is the parameters' JSON Schema or a complete ``{"type": "function", ...}`` definition; a bare
    function's schema comes from its signature, its docstring is the description. ``max_turns``
    bounds the model calls. ``tool_errors``: a tool's own exception is returned to the model as an
    error result (``"return"``, the call is recorded as failed) or raised (``"raise"``).
    ``provider`` labels the usage for pricing (set it when ``client`` points at another
    OpenAI-compatible service). Everything else (``temperature``, ``tool_choice``,
    ``parallel_tool_calls``, ...) goes to ``create`` as given.

    Raises :class:`~callgate.ConfigurationError` before calling the model when callgate is not
    configured; a block or denial raises only with ``configure(raise_on_block=True)``.
    """
    registry = _prepare(tools, max_turns, tool_errors, create_kwargs)
    for tool in registry.values():
        if tool.is_async:
            raise TypeError(f"tool {tool.name!r} is a coroutine function: use openai_chat.arun_tools")
    create = _create(client)
    return drive(
        _ChatConversation(model, messages, registry, provider, create_kwargs),
        create,
        registry,
        max_turns=max_turns,
        tool_errors=tool_errors,
        async_twin="openai_chat.arun_tools",
    )


async def arun_tools(
    client: Any,
    *,
    model: str,
    messages: Iterable[Mapping[str, Any]],
    tools: Mapping[str, ToolSpec],
    max_turns: int = 10,
    tool_errors: ToolErrors = "return",
    provider: str = "openai",
    **create_kwargs: Any,
) -> LoopResult:
    """:func:`run_tools` with an ``openai.AsyncOpenAI`` client; tools may be ``async def``."""
    registry = _prepare(tools, max_turns, tool_errors, create_kwargs)
    create = _create(client)
    return await adrive(
        _ChatConversation(model, messages, registry, provider, create_kwargs),
        create,
        registry,
        max_turns=max_turns,
        tool_errors=tool_errors,
        sync_twin="openai_chat.run_tools",
    )


def _prepare(
    tools: Mapping[str, Any], max_turns: int, tool_errors: str, create_kwargs: Mapping[str, Any]
) -> dict[str, Tool]:
    check_options(max_turns, tool_errors, create_kwargs)
    if create_kwargs.get("n") not in (None, 1):
        raise ValueError("n > 1 is not supported: the loop continues one conversation")
    return build_tools(tools)


def _create(client: Any) -> Any:
    try:
        return client.chat.completions.create
    except AttributeError:
        raise TypeError(
            f"expected an openai.OpenAI or AsyncOpenAI client (with chat.completions.create), "
            f"got {type(client).__name__}"
        ) from None


def definition(tool: Tool) -> dict[str, Any]:
    """The tool as Chat Completions declares it."""
    function: dict[str, Any] = {"name": tool.name, "parameters": tool.parameters}
    if tool.description:
        function["description"] = tool.description
    return {"type": "function", "function": function}


class _ChatConversation(Conversation):
    """The Chat Completions message format: ``tool_calls`` in, ``role: "tool"`` messages out."""

    framework = FRAMEWORK
    definition = staticmethod(definition)

    def absorb(self, response: Any) -> list[ParsedCall]:
        self.responses.append(response)
        _record_usage(response, self.provider)
        choices = field(response, "choices")
        if not choices:
            raise LoopError(f"the model returned no choices (response {field(response, 'id')!r})")
        message = field(choices[0], "message")
        if message is None:
            raise LoopError(f"the model's choice has no message (response {field(response, 'id')!r})")
        assistant = _assistant_message(message)
        self.messages.append(assistant)
        calls = [_parse(call) for call in field(message, "tool_calls", ())]
        if not calls:
            self.finished = True
            self.final = assistant
        return calls

    def answer(self, records: list[ToolCallRecord]) -> None:
        for record in records:
            self.messages.append({"role": "tool", "tool_call_id": record.id, "content": record.content})

    def render(self, value: Any) -> str:
        return render_text(value)

    def final_text(self, final: dict[str, Any]) -> str | None:
        return _text(final["content"])


def _assistant_message(message: Any) -> dict[str, Any]:
    """The assistant turn as a request message: only what Chat Completions accepts back
    (``annotations`` and other response-only fields are left out)."""
    out: dict[str, Any] = {"role": "assistant", "content": field(message, "content")}
    refusal = field(message, "refusal")
    if refusal:
        out["refusal"] = refusal
    audio_id = field(field(message, "audio"), "id")
    if audio_id:
        out["audio"] = {"id": audio_id}
    tool_calls = field(message, "tool_calls")
    if tool_calls:
        out["tool_calls"] = [to_dict(call) for call in tool_calls]
    return out


def _parse(call: Any) -> ParsedCall:
    call_id = field(call, "id", "")
    kind = field(call, "type", "function")
    if kind != "function":
        name = field(field(call, kind), "name", kind)
        return ParsedCall(call_id, name, None, f"{kind!r} tool calls are not supported, only function tools")
    function = field(call, "function")
    return ParsedCall.from_json(call_id, field(function, "name", ""), field(function, "arguments"))


def _text(content: Any) -> str | None:
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts (some compatible servers)
        return "".join(str(field(part, "text", "")) for part in content if field(part, "type") == "text")
    return str(content)


def _record_usage(response: Any, provider: str) -> None:
    """``callgate.log_usage`` for one completion: an in-memory append, never raises."""
    usage = field(response, "usage")
    model = field(response, "model")
    prompt = token_count(field(usage, "prompt_tokens"))
    completion = token_count(field(usage, "completion_tokens"))
    if usage is None or not isinstance(model, str) or prompt is None or completion is None:
        log.debug("callgate: response %r reports no usable token usage; not recorded", field(response, "id"))
        return
    prompt_details = field(usage, "prompt_tokens_details")
    completion_details = field(usage, "completion_tokens_details")
    record_usage(
        model,
        prompt,
        completion,
        cache_read_tokens=token_count(field(prompt_details, "cached_tokens")) or 0,
        # part of prompt_tokens, as genai-prices' own OpenAI chat extractor reads it
        cache_write_tokens=token_count(field(prompt_details, "cache_write_tokens")) or 0,
        reasoning_tokens=token_count(field(completion_details, "reasoning_tokens")) or 0,
        provider=provider,
        framework=FRAMEWORK,
    )

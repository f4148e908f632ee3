"""The Anthropic Messages tool-call loop, with every tool call checked by the gateway.

For agents written without a framework::

    import callgate
    from anthropic import Anthropic
    from callgate.loops import anthropic_messages

    callgate.configure()

    def get_weather(city: str) -> str:
        \"\"\"Current weather in a city.\"\"\"
        return "sunny"

    result = anthropic_messages.run_tools(
        Anthropic(), model="claude-sonnet-4-6", max_tokens=1024,
        messages=[{"role": "user", "content": "Weather in Oslo?"}],
        tools={"get_weather": get_weather},
    )
    print(result.text)

Each turn calls ``client.messages.create(model=..., max_tokens=..., messages=..., tools=...,
**create_kwargs)`` (``system``, ``temperature``, ``tool_choice``, ``thinking`` ... pass through).
Every ``tool_use`` block of the reply is checked at the gateway and run only if permitted; one user
message then carries a ``tool_result`` block per call -- the function's result, or the refusal's
reason with ``is_error: true`` so the model knows the tool did not run. The assistant's content
blocks are sent back unchanged (thinking blocks keep their signatures). ``pause_turn`` replies
(long server-tool turns) are continued. The loop stops when the model answers without a tool
call, or after ``max_turns`` model calls.

Token usage of every response is recorded. Anthropic reports ``input_tokens`` *excluding* cache
reads and cache writes; callgate's ``input_tokens`` is the total prompt, so the loop records
``input_tokens + cache_read_input_tokens + cache_creation_input_tokens`` with the two cache parts
given separately (and ``thinking_tokens`` as the reasoning part of the output when reported).

``arun_tools`` is the same for ``AsyncAnthropic``. A tool may return a list of content blocks
(``[{"type": "image", ...}, {"type": "text", ...}]``): they are sent as the result as they are.
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
FRAMEWORK = "anthropic-messages"


def run_tools(
    client: Any,
    *,
    model: str,
    messages: Iterable[Mapping[str, Any]],
    tools: Mapping[str, ToolSpec],
    max_tokens: int,
    max_turns: int = 10,
    tool_errors: ToolErrors = "return",
    provider: str = "anthropic",
    **create_kwargs: Any,
) -> LoopResult:
    """Run the tool-call loop with an ``anthropic.Anthropic`` client until the model answers.

    ``tools`` maps each tool name to its function, or to ``(schema, function)`` where ``schema``
    is the input JSON Schema or a complete ``{"name", "description", "input_schema"}`` definition;
    a bare function's schema comes from its signature, its docstring is the description.
    ``max_tokens`` is each model call's output limit (Anthropic requires it), ``max_turns`` bounds
    the model calls. ``tool_errors``: a tool's own exception is returned to the model as an error
    result (``"return"``, the call is recorded as failed) or raised (``"raise"``). ``provider``
    labels the usage for pricing (e.g. ``"bedrock"`` for ``AnthropicBedrock``).

    Raises :class:`~callgate.ConfigurationError` before calling the model when callgate is not
    configured; a block or denial raises only with ``configure(raise_on_block=True)``.
    """
    registry = _prepare(tools, max_turns, tool_errors, create_kwargs)
    for tool in registry.values():
        if tool.is_async:
            raise TypeError(f"tool {tool.name!r} is a coroutine function: use anthropic_messages.arun_tools")
    conversation = _MessagesConversation(model, messages, registry, provider, create_kwargs, max_tokens=max_tokens)
    return drive(
        conversation,
        _create(client),
        registry,
        max_turns=max_turns,
        tool_errors=tool_errors,
        async_twin="anthropic_messages.arun_tools",
    )


async def arun_tools(
    client: Any,
    *,
    model: str,
    messages: Iterable[Mapping[str, Any]],
    tools: Mapping[str, ToolSpec],
    max_tokens: int,
    max_turns: int = 10,
    tool_errors: ToolErrors = "return",
    provider: str = "anthropic",
    **create_kwargs: Any,
) -> LoopResult:
    """:func:`run_tools` with an ``anthropic.AsyncAnthropic`` client; tools may be ``async def``."""
    registry = _prepare(tools, max_turns, tool_errors, create_kwargs)
    conversation = _MessagesConversation(model, messages, registry, provider, create_kwargs, max_tokens=max_tokens)
    return await adrive(
        conversation,
        _create(client),
        registry,
        max_turns=max_turns,
        tool_errors=tool_errors,
        sync_twin="anthropic_messages.run_tools",
    )


def _prepare(
    tools: Mapping[str, Any], max_turns: int, tool_errors: str, create_kwargs: Mapping[str, Any]
) -> dict[str, Tool]:
    check_options(max_turns, tool_errors, create_kwargs)
    return build_tools(tools)


def _create(client: Any) -> Any:
    try:
        return client.messages.create
    except AttributeError:
        raise TypeError(
            f"expected an anthropic.Anthropic or AsyncAnthropic client (with messages.create), "
            f"got {type(client).__name__}"
        ) from None


def definition(tool: Tool) -> dict[str, Any]:
    """The tool as the Messages API declares it."""
    out: dict[str, Any] = {"name": tool.name, "input_schema": tool.parameters}
    if tool.description:
        out["description"] = tool.description
    return out


class _MessagesConversation(Conversation):
    """The Messages format: ``tool_use`` blocks in, one user message of ``tool_result`` blocks out."""

    framework = FRAMEWORK
    definition = staticmethod(definition)

    def absorb(self, response: Any) -> list[ParsedCall]:
        self.responses.append(response)
        _record_usage(response, self.provider)
        content = field(response, "content")
        if content is None:
            raise LoopError(f"the model's reply has no content (message {field(response, 'id')!r})")
        blocks = [to_dict(block) for block in content]
        assistant = {"role": "assistant", "content": blocks}
        self.messages.append(assistant)
        calls = [
            ParsedCall.from_object(str(block.get("id", "")), str(block.get("name", "")), block.get("input"))
            for block in blocks
            if block.get("type") == "tool_use"
        ]
        if not calls and field(response, "stop_reason") != "pause_turn":
            self.finished = True
            self.final = assistant
        return calls

    def answer(self, records: list[ToolCallRecord]) -> None:
        results = []
        for record in records:
            block: dict[str, Any] = {
                "type": "tool_result",
                "tool_use_id": record.id,
                "content": record.content,
            }
            if record.is_error:
                block["is_error"] = True
            results.append(block)
        self.messages.append({"role": "user", "content": results})

    def render(self, value: Any) -> Any:
        if isinstance(value, list) and value and all(isinstance(b, Mapping) and "type" in b for b in value):
            return [dict(b) for b in value]  # content blocks (text, image, ...) as the tool made them
        return render_text(value)

    def final_text(self, final: dict[str, Any]) -> str | None:
        return "".join(str(b.get("text", "")) for b in final["content"] if b.get("type") == "text")


def _record_usage(response: Any, provider: str) -> None:
    """``callgate.log_usage`` for one message, converted to callgate's inclusive input count."""
    usage = field(response, "usage")
    model = field(response, "model")
    uncached = token_count(field(usage, "input_tokens"))
    output = token_count(field(usage, "output_tokens"))
    if usage is None or not isinstance(model, str) or uncached is None or output is None:
        log.debug("callgate: message %r reports no usable token usage; not recorded", field(response, "id"))
        return
    cache_read = token_count(field(usage, "cache_read_input_tokens")) or 0
    cache_write = token_count(field(usage, "cache_creation_input_tokens")) or 0
    record_usage(
        model,
        uncached + cache_read + cache_write,
        output,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        reasoning_tokens=token_count(field(field(usage, "output_tokens_details"), "thinking_tokens")) or 0,
        provider=provider,
        framework=FRAMEWORK,
    )

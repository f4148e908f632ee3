"""One tool call the model asked for: validate it, ask the gateway, run it only if permitted.

Provider-neutral: the provider modules parse their response into :class:`ParsedCall` and turn the
resulting :class:`~callgate.loops.ToolCallRecord` into their tool-result message. Everything the
model did wrong (arguments that are not JSON or do not fit, a tool it was not given) becomes an
error result it can correct, never an exception: a loop must survive its model. The gateway check,
the re-entrancy pass to an inner ``@callgate.guard`` of the same function and the outcome report
are the shared enforcement helpers every framework integration uses (``integrations._enforce``).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any, Literal

from ..errors import ApprovalDenied, ApprovalExpired, CallBlocked, GatewayUnavailable
from ..integrations._enforce import Refused, acheck_tool, arun_permitted, check_tool, run_permitted
from ._result import ToolCallRecord, ToolCallStatus
from ._tools import Tool

__all__ = ["ParsedCall", "ToolErrors", "aexecute", "execute"]

log = logging.getLogger("callgate")

#: What a tool's own exception does: ``"return"`` it to the model as an error result (the run
#: continues, the gateway records the call as failed) or ``"raise"`` it out of the loop.
ToolErrors = Literal["return", "raise"]


class ParsedCall:
    """A tool call as the provider sent it: ``arguments`` parsed, or ``problem`` saying why not."""

    __slots__ = ("id", "name", "arguments", "problem")

    def __init__(
        self, id: str, name: str, arguments: dict[str, Any] | None, problem: str | None = None
    ) -> None:
        self.id = id
        self.name = name
        self.arguments = arguments
        self.problem = problem

    @classmethod
    def from_json(cls, id: str, name: str, raw: Any) -> ParsedCall:
        """Arguments sent as a JSON text (OpenAI): anything but a JSON object is a ``problem``."""
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            return cls(id, name, {})  # a call without arguments
        if not isinstance(raw, (str, bytes, bytearray)):
            return cls.from_object(id, name, raw)
        try:
            value = json.loads(raw)
        except ValueError as e:
            return cls(id, name, None, f"the arguments are not valid JSON ({e})")
        return cls.from_object(id, name, value)

    @classmethod
    def from_object(cls, id: str, name: str, value: Any) -> ParsedCall:
        """Arguments sent already parsed (Anthropic's ``input``)."""
        if not isinstance(value, Mapping):
            return cls(id, name, None, f"the arguments must be a JSON object, not {_json_type(value)}")
        return cls(id, name, dict(value))


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "an array"
    return "null" if value is None else type(value).__name__


def _invalid(call: ParsedCall, tools: Mapping[str, Tool]) -> ToolCallRecord | None:
    """The answer to a call that must not reach the gateway, or None when it may."""
    tool = tools.get(call.name)
    if tool is None:
        available = ", ".join(sorted(tools)) or "none"
        return _error_record(
            call,
            "unknown_tool",
            f"Error: there is no tool named {call.name!r} (available tools: {available}). Nothing was run.",
        )
    problem = call.problem
    if problem is None and call.arguments is not None:
        why = tool.bind_error(call.arguments)
        if why is not None:
            problem = f"the arguments do not fit the tool ({why})"
    if problem is not None:
        return _error_record(
            call,
            "invalid_arguments",
            f"Error: invalid call of {call.name}: {problem}. "
            "The tool did not run; call it again with a JSON object of its parameters.",
        )
    return None


def _error_record(
    call: ParsedCall, status: ToolCallStatus, message: str, error: BaseException | None = None
) -> ToolCallRecord:
    return ToolCallRecord(call.id, call.name, call.arguments, status, message, True, error=error)


def _refused_record(call: ParsedCall, refused: Refused) -> ToolCallRecord:
    error = refused.error
    status: ToolCallStatus
    if isinstance(error, CallBlocked):
        status = "blocked"
    elif isinstance(error, ApprovalDenied):
        status = "denied"
    elif isinstance(error, ApprovalExpired):
        status = "expired"
    elif isinstance(error, GatewayUnavailable):
        status = "unavailable"
    else:
        status = "refused"
    record = _error_record(call, status, refused.message, error)
    record.call_id = getattr(error, "call_id", None)
    return record


def _ran_record(
    call: ParsedCall, permit: Any, content: Any, *, failed: BaseException | None = None
) -> ToolCallRecord:
    record = ToolCallRecord(
        call.id,
        call.name,
        call.arguments,
        "failed" if failed is not None else "succeeded",
        content,
        failed is not None,
        error=failed,
    )
    record.call_id = getattr(permit, "call_id", None)  # None when an outer enforcer checked this call
    record.permit_status = getattr(permit, "status", None)
    return record


def _failure_text(name: str, error: BaseException) -> str:
    return f"Error: the tool {name} failed: {type(error).__name__}: {error}"


def execute(
    call: ParsedCall,
    tools: Mapping[str, Tool],
    *,
    framework: str,
    tool_errors: ToolErrors,
    render: Callable[[Any], Any],
) -> ToolCallRecord:
    """Answer one call on a sync path (an approval wait blocks this thread, as the caller expects)."""
    invalid = _invalid(call, tools)
    if invalid is not None:
        return invalid
    tool = tools[call.name]
    arguments = call.arguments or {}
    outcome = check_tool(call.name, arguments, framework=framework, target=tool.fn)
    if isinstance(outcome, Refused):
        return _refused_record(call, outcome)

    def invoke() -> Any:
        value = tool.fn(**arguments)
        if inspect.isawaitable(value):  # a plain function that returns a coroutine
            close = getattr(value, "close", None)
            if callable(close):
                close()
            raise TypeError(f"tool {call.name} returned an awaitable: run it with arun_tools")
        return value

    try:
        value = run_permitted(outcome, call.name, tool.fn, invoke)
    except Exception as e:
        if tool_errors == "raise":
            raise
        log.info(
            "callgate: tool %s raised %s; returned to the model as an error", call.name, type(e).__name__
        )
        return _ran_record(call, outcome, _failure_text(call.name, e), failed=e)
    return _ran_record(call, outcome, render(value))


async def aexecute(
    call: ParsedCall,
    tools: Mapping[str, Tool],
    *,
    framework: str,
    tool_errors: ToolErrors,
    render: Callable[[Any], Any],
) -> ToolCallRecord:
    """:func:`execute` on an event loop: the check never blocks the loop, ``async def`` tools are
    awaited and plain functions run in a worker thread (with this context, so an inner
    ``@callgate.guard`` still sees the pass)."""
    invalid = _invalid(call, tools)
    if invalid is not None:
        return invalid
    tool = tools[call.name]
    arguments = call.arguments or {}
    outcome = await acheck_tool(call.name, arguments, framework=framework, target=tool.fn)
    if isinstance(outcome, Refused):
        return _refused_record(call, outcome)

    async def invoke() -> Any:
        if tool.is_async:
            return await tool.fn(**arguments)
        value = await asyncio.to_thread(tool.fn, **arguments)
        return await value if inspect.isawaitable(value) else value  # a function returning a coroutine

    try:
        value = await arun_permitted(outcome, call.name, tool.fn, invoke)
    except Exception as e:
        if tool_errors == "raise":
            raise
        log.info(
            "callgate: tool %s raised %s; returned to the model as an error", call.name, type(e).__name__
        )
        return _ran_record(call, outcome, _failure_text(call.name, e), failed=e)
    return _ran_record(call, outcome, render(value))


def render_text(value: Any) -> str:
    """A tool's return value as the text a model reads: strings as they are, anything else as JSON
    (``default=str`` for what JSON cannot hold)."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):  # e.g. circular structures
        return str(value)

"""What every integration does around one framework tool call: check it, then run it or refuse it.

The frameworks differ only in how a refusal must look to the model (a LangChain ``ToolMessage``
with status error, an Agents SDK failure string, a CrewAI ``ToolFailure``); the decision, the
message, the re-entrancy pass and the outcome report are the same everywhere, so they live here.

A refusal is *returned*, never raised, unless ``configure(raise_on_block=True)``: raising from a
tool crashes LangChain's ``create_agent`` and the Agents SDK's runner, and makes CrewAI's ReAct
loop retry the call six times (frameworks.md).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from .._config import runtime
from .._guard import Permit, acheck_call, check_call, permitted, take_pass
from ..errors import (
    AlreadyClaimed,
    ApprovalDenied,
    ApprovalExpired,
    CallBlocked,
    CallgateError,
    GatewayRejected,
    GatewayUnavailable,
)

__all__ = ["ALREADY_CHECKED", "Refused", "acheck_tool", "arun_permitted", "check_tool", "refusal_message",
           "run_permitted"]

T = TypeVar("T")
log = logging.getLogger("callgate")


class _AlreadyChecked:
    """An outer enforcer (another framework's adapter, a ``@callgate.guard``) checked this very call."""

    def __repr__(self) -> str:
        return "ALREADY_CHECKED"


ALREADY_CHECKED = _AlreadyChecked()


class Refused:
    """The tool must not run. ``message`` is what the model is told; ``error`` says why."""

    __slots__ = ("error", "message")

    def __init__(self, error: CallgateError | None, message: str) -> None:
        self.error = error
        self.message = message

    def __repr__(self) -> str:
        return f"Refused({self.message!r})"


def refusal_message(error: BaseException) -> str:
    """The sentence the model reads instead of the tool's result: the reason, and that it did not run."""
    if isinstance(error, CallBlocked):
        reason = error.reason or (f"rule {error.rule}" if error.rule else "not allowed")
        return f"Tool call blocked by policy: {reason}"
    if isinstance(error, ApprovalDenied):
        comment = f": {error.comment}" if error.comment else ""
        return f"Tool call denied by a human reviewer{comment}. The tool did not run."
    if isinstance(error, ApprovalExpired):
        return "Tool call not approved in time (the approval request expired). The tool did not run."
    if isinstance(error, AlreadyClaimed):
        return "Tool call not run: this approved call has already been run once."
    if isinstance(error, GatewayUnavailable):
        return "Tool call not run: the policy gateway could not be reached. Try again later."
    if isinstance(error, GatewayRejected):
        return f"Tool call not run: the policy gateway rejected it ({error.code or error.status})."
    return f"Tool call not run: {error}"


def _refuse(error: CallgateError) -> Refused:
    if runtime().config.raise_on_block is True:
        raise error
    return Refused(error, refusal_message(error))


#: A framework's tool call always waits for the human (without blocking an event loop on async
#: paths), whatever ``configure(approval_mode=...)`` says: the agent loop needs the tool's result
#: now, and a pending handle handed back to the model would leave an approved call that nothing
#: runs. ``async``/``webhook`` modes are for ``@callgate.guard`` and ``check_call`` in user code.
_FRAMEWORK_MODE = "wait"


def _interpret(outcome: Any) -> Permit:
    if not isinstance(outcome, Permit):  # only a pending handle could come back, and "wait" never returns one
        raise TypeError(f"expected a Permit in approval mode 'wait', got {type(outcome).__name__}")
    return outcome


def check_tool(tool: str, args: Mapping[str, Any], *, framework: str, target: Any = None,
               metadata: Mapping[str, Any] | None = None) -> Permit | Refused | _AlreadyChecked:
    """Sync check of one framework tool call. Blocks while a human decides (approval mode
    ``wait``); call it only where blocking is allowed (a sync tool path or a worker thread).
    ``metadata`` is stored with the call for the audit trail (e.g. which MCP server a tool is from)."""
    if take_pass(target, tool=tool):
        return ALREADY_CHECKED
    try:
        return _interpret(check_call(tool, args, framework=framework, metadata=metadata,
                                     approval_mode=_FRAMEWORK_MODE))
    except CallgateError as e:
        return _refuse(e)


async def acheck_tool(tool: str, args: Mapping[str, Any], *, framework: str, target: Any = None,
                      metadata: Mapping[str, Any] | None = None) -> Permit | Refused | _AlreadyChecked:
    """:func:`check_tool` for async paths: never blocks the event loop, even while waiting for a human."""
    if take_pass(target, tool=tool):
        return ALREADY_CHECKED
    try:
        return _interpret(await acheck_call(tool, args, framework=framework, metadata=metadata,
                                            approval_mode=_FRAMEWORK_MODE))
    except CallgateError as e:
        return _refuse(e)


#: What a ``failed`` callback answers: falsy (succeeded), ``True`` or the error (failed).
Failure = bool | str | BaseException | None


def _report_result(permit: Permit, failed: Callable[[T], Failure] | None, result: T) -> None:
    try:
        verdict = failed(result) if failed is not None else None
    except Exception:  # noqa: BLE001 - judging the result must not break the agent
        log.exception("callgate: could not judge the result of %s", permit.tool)
        verdict = None
    if verdict is None or verdict is False:
        permit.report("succeeded")
    else:
        permit.report("failed", error=verdict if isinstance(verdict, (str, BaseException)) else None)


def run_permitted(permit: Permit | _AlreadyChecked, tool: str, target: Any, call: Callable[[], T],
                  failed: Callable[[T], Failure] | None = None, *, pass_on: bool = True) -> T:
    """Run the tool once under ``permit``; enforcers entered inside (a ``@guard``-ed function, another
    framework's adapter of the same tool) skip their check. The outcome is reported in the background:
    ``failed(result)`` marks a result that is the framework's own handled tool error: ``True``, or
    the error itself (an exception or its text) to report with it; ``False``/``None``: it succeeded.
    ``pass_on=False`` hands no pass: for a tool whose body is a whole nested agent run, where every
    call is a new one, even one of a tool with the same name."""
    if not isinstance(permit, Permit):
        return call()
    permit.start()
    try:
        with permitted(target, tool=tool) if pass_on else contextlib.nullcontext():
            result = call()
    except BaseException as e:
        permit.report("failed", error=e)
        raise
    _report_result(permit, failed, result)
    return result


async def arun_permitted(permit: Permit | _AlreadyChecked, tool: str, target: Any,
                         call: Callable[[], Awaitable[T]], failed: Callable[[T], Failure] | None = None, *,
                         pass_on: bool = True) -> T:
    """:func:`run_permitted` for coroutines."""
    if not isinstance(permit, Permit):
        return await call()
    permit.start()
    try:
        with permitted(target, tool=tool) if pass_on else contextlib.nullcontext():
            result = await call()
    except BaseException as e:
        permit.report("failed", error=e)
        raise
    _report_result(permit, failed, result)
    return result

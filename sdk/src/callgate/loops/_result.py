"""What a loop returns: the transcript, the final answer, and what happened to every tool call."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["LoopError", "LoopResult", "ToolCallRecord", "ToolCallStatus"]

#: What became of one tool call the model made:
#:
#: * ``succeeded`` / ``failed``: the gateway permitted it and the function ran (and returned /
#:   raised; a raised error is reported to the gateway and, by default, shown to the model);
#: * ``blocked``, ``denied``, ``expired``: the policy blocked it, a reviewer denied it, nobody
#:   approved it in time (a call that needs a human waits for the decision, whatever
#:   ``approval_mode`` says: the model needs the result now); ``unavailable``: no decision could be
#:   had (fail closed); ``refused``: any other refusal (already claimed, gateway rejected the
#:   request). In all these the function did not run;
#: * ``invalid_arguments``: the arguments were not JSON, not an object, or do not fit the function;
#:   ``unknown_tool``: the model named a tool it was not given. The gateway is not asked about either.
ToolCallStatus = Literal[
    "succeeded",
    "failed",
    "blocked",
    "denied",
    "expired",
    "unavailable",
    "refused",
    "invalid_arguments",
    "unknown_tool",
]


class LoopError(Exception):
    """The provider answered something the loop cannot continue from (no choices, no content)."""


@dataclass(slots=True)
class ToolCallRecord:
    """One tool call the model made, and its fate."""

    #: the provider's id of this tool call (``tool_call_id`` / ``tool_use_id``)
    id: str
    #: the tool name the model used
    name: str
    #: the parsed arguments (None when they could not be parsed)
    arguments: dict[str, Any] | None
    status: ToolCallStatus
    #: what the model was sent as this call's result
    content: Any
    #: True when ``content`` reports an error or a refusal rather than the tool's result
    is_error: bool
    #: the gateway's id for this call (None when the gateway was not asked)
    call_id: str | None = None
    #: how the gateway permitted it: ``allowed``, ``approved`` or ``fail_open`` (None otherwise)
    permit_status: str | None = None
    #: the refusal (a :class:`callgate.CallgateError`) or the tool's own exception
    error: BaseException | None = field(default=None, repr=False)

    @property
    def ran(self) -> bool:
        """Whether the tool function was run."""
        return self.status in ("succeeded", "failed")


@dataclass(slots=True)
class LoopResult:
    """The outcome of one ``run_tools``/``arun_tools`` call."""

    #: the whole conversation: the messages passed in (as given), then every assistant turn and
    #: tool result as plain dicts in the provider's request format (pass it back to continue)
    messages: list[dict[str, Any]]
    #: ``final``: the model answered without calling a tool; ``max_turns``: the turn budget ran
    #: out (the last turn's tool calls were still answered, so ``messages`` can be continued)
    stop_reason: Literal["final", "max_turns"]
    #: the last assistant message when ``stop_reason == "final"``, else None
    final_message: dict[str, Any] | None
    #: the text of ``final_message`` (None when there is none)
    text: str | None
    #: every tool call the model made, in order, with its fate
    tool_calls: list[ToolCallRecord]
    #: the provider's response objects, one per model call
    responses: list[Any] = field(repr=False)

    @property
    def turns(self) -> int:
        """How many times the model was called."""
        return len(self.responses)

"""Tool-call loops for agents with no framework: every tool call the model makes is checked first.

Two small executors, one per provider API, with the same shape:

* :mod:`callgate.loops.openai_chat` -- ``client.chat.completions.create`` (``openai.OpenAI`` /
  ``AsyncOpenAI``): ``tool_calls`` in, ``role: "tool"`` messages out;
* :mod:`callgate.loops.anthropic_messages` -- ``client.messages.create`` (``anthropic.Anthropic`` /
  ``AsyncAnthropic``): ``tool_use`` blocks in, ``tool_result`` blocks out.

``run_tools(client, model=..., messages=..., tools={name: function}, max_turns=10, **create_kwargs)``
calls the model, asks the gateway about each tool call, runs the function only if permitted, hands
the model the result or the refusal's reason (so the run continues, and the model knows the tool
did not run), and repeats until the model answers without calling a tool. ``arun_tools`` is its
async twin. Both return a :class:`LoopResult`: the final answer, the full transcript and a
:class:`ToolCallRecord` per tool call (what the gateway decided, whether the function ran).

Every model response's token usage is recorded with ``callgate.log_usage``, so the gateway can
price the session. Neither module imports a provider SDK: clients and responses are duck-typed.
"""

from __future__ import annotations

from ._result import LoopError, LoopResult, ToolCallRecord, ToolCallStatus
from ._tools import ToolSpec

__all__ = ["LoopError", "LoopResult", "ToolCallRecord", "ToolCallStatus", "ToolSpec"]

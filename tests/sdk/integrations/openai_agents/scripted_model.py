"""A scripted Agents SDK ``Model``: real agent loops, offline, with a record of what the model saw.

Adapted from shared/reference/framework-proofs/agents_scripted_model.py. The conversation rule:

* the last input item is a user message whose text is JSON -- ``{"tool": name, "args": {...}}`` or a
  list of those: the model calls those tools, all in one turn;
* the input ends with tool outputs (``function_call_output`` items): the model records them in
  ``seen`` (what it was told) and answers ``"final: <output> | <output> ..."``.

Both ``get_response`` (``Runner.run`` / ``run_sync``) and ``stream_response`` (``Runner.run_streamed``)
are implemented. Every turn reports a different, known usage (``reported``), so token tests can
compare what the gateway recorded with exactly what the model said. The streamed terminal response
names the *served* snapshot (``<model>-2025-04-14``), as OpenAI's Responses API does.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from agents import ModelResponse, Usage
from agents.models.interface import Model
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseFunctionToolCall,
    ResponseOutputItemDoneEvent,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseUsage,
)
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails

SERVED_SUFFIX = "-2025-04-14"


@dataclass(frozen=True)
class Reported:
    """The usage one model call reported (OpenAI semantics: input includes cached tokens)."""

    model: str
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int


def user(tool: str, **args: Any) -> str:
    """A user message that makes the scripted model call ``tool`` with ``args``."""
    return json.dumps({"tool": tool, "args": args})


def users(*calls: tuple[str, dict[str, Any]]) -> str:
    """A user message that makes the model call several tools in one turn (run concurrently)."""
    return json.dumps([{"tool": tool, "args": args} for tool, args in calls])


def output_text(output: Any) -> str:
    """A tool output as the model reads it: text, or the text parts of structured content (MCP)."""
    if isinstance(output, list):
        return " ".join(str(part.get("text", part)) if isinstance(part, dict) else str(part) for part in output)
    return str(output)


def _item(item: Any) -> dict[str, Any]:
    return item if isinstance(item, dict) else item.model_dump(exclude_unset=True)


class ScriptedModel(Model):
    def __init__(self, model: str = "gpt-4.1") -> None:
        self.model = model  # the attribute the SDK's own Model classes use
        self.turns = 0
        self.seen: list[str] = []  # every tool output the model was given, in order
        self.reported: list[Reported] = []
        self.streamed_model = model + SERVED_SUFFIX

    # -- the script ------------------------------------------------------------------------
    def _output(self, input: str | list[Any]) -> list[Any]:
        self.turns += 1
        items = [{"role": "user", "content": input}] if isinstance(input, str) else [_item(i) for i in input]
        outputs = []
        for item in reversed(items):
            if item.get("type") != "function_call_output":
                break
            outputs.append(output_text(item.get("output")))
        if outputs:
            outputs.reverse()
            self.seen.extend(outputs)
            text = "final: " + " | ".join(outputs)
            return [ResponseOutputMessage(
                id=f"msg_{self.turns}", type="message", role="assistant", status="completed",
                content=[ResponseOutputText(text=text, type="output_text", annotations=[], logprobs=[])])]
        content = items[-1].get("content")
        if isinstance(content, list):
            content = content[0].get("text")
        spec = json.loads(content)
        calls = spec if isinstance(spec, list) else [spec]
        return [ResponseFunctionToolCall(id=f"fc_{self.turns}_{i}", call_id=f"call_{self.turns}_{i}",
                                         type="function_call", name=call["tool"], arguments=json.dumps(call["args"]))
                for i, call in enumerate(calls)]

    def _usage(self, model: str) -> Reported:
        n = self.turns
        reported = Reported(model, input_tokens=300 + 17 * n, output_tokens=40 + n, cached_tokens=128,
                            cache_write_tokens=16, reasoning_tokens=8)
        self.reported.append(reported)
        return reported

    # -- the Model interface ------------------------------------------------------------------
    async def get_response(self, system_instructions: Any, input: Any, model_settings: Any, tools: Any,
                           output_schema: Any, handoffs: Any, tracing: Any, *, previous_response_id: Any = None,
                           conversation_id: Any = None, prompt: Any = None) -> ModelResponse:
        out = self._output(input)
        u = self._usage(self.model)
        usage = Usage(requests=1, input_tokens=u.input_tokens, output_tokens=u.output_tokens,
                      total_tokens=u.input_tokens + u.output_tokens,
                      input_tokens_details=InputTokensDetails(cached_tokens=u.cached_tokens,
                                                              cache_write_tokens=u.cache_write_tokens),
                      output_tokens_details=OutputTokensDetails(reasoning_tokens=u.reasoning_tokens))
        return ModelResponse(output=out, usage=usage, response_id=f"resp_{self.turns}")

    async def stream_response(self, system_instructions: Any, input: Any, model_settings: Any, tools: Any,
                              output_schema: Any, handoffs: Any, tracing: Any, *, previous_response_id: Any = None,
                              conversation_id: Any = None, prompt: Any = None) -> AsyncIterator[Any]:
        out = self._output(input)
        u = self._usage(self.streamed_model)
        for seq, item in enumerate(out):
            yield ResponseOutputItemDoneEvent(type="response.output_item.done", item=item, output_index=seq,
                                              sequence_number=seq)
        response = Response(
            id=f"resp_{self.turns}", created_at=0, model=self.streamed_model, object="response", output=out,
            tool_choice="auto", tools=[], top_p=None, parallel_tool_calls=True, status="completed",
            usage=ResponseUsage(input_tokens=u.input_tokens, output_tokens=u.output_tokens,
                                total_tokens=u.input_tokens + u.output_tokens,
                                input_tokens_details=InputTokensDetails(cached_tokens=u.cached_tokens,
                                                                        cache_write_tokens=u.cache_write_tokens),
                                output_tokens_details=OutputTokensDetails(reasoning_tokens=u.reasoning_tokens)),
        )
        yield ResponseCompletedEvent(type="response.completed", response=response, sequence_number=len(out))

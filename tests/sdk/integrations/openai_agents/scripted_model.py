"""A scripted Agents SDK ``Model``: real agent loops, offline, with a record of what the model saw.

Adapted from shared/reference/framework-proofs/agents_scripted_model.py. The conversation rule:

* the last input item is a user message whose text is JSON -- ``{"tool": name, "args": {...}}`` or a
  list of those: the model calls those tools, all in one turn; a ``"kind"`` (:data:`NATIVE_KINDS`,
  see :func:`native`) makes it a call of a tool that is not a function tool (shell, local shell,
  computer, apply_patch, custom), whose ``args`` are that call's own fields;
* the input ends with tool outputs (``function_call_output`` items, or the other tools'
  ``*_output`` items): the model records them in ``seen`` (what it was told, as text) and
  ``seen_items`` (the items themselves) and answers ``"final: <output> | <output> ..."``.

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
    ResponseApplyPatchToolCall,
    ResponseCompletedEvent,
    ResponseComputerToolCall,
    ResponseCustomToolCall,
    ResponseFunctionShellToolCall,
    ResponseFunctionToolCall,
    ResponseOutputItemDoneEvent,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseUsage,
)
from openai.types.responses.response_output_item import LocalShellCall
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


#: Calls of tools that are not function tools, by the ``kind`` a call spec names.
NATIVE_KINDS = ("shell", "local_shell", "computer", "apply_patch", "custom")

#: The output item types the model reads back (one per kind of call).
OUTPUT_TYPES = frozenset({"function_call_output", "shell_call_output", "local_shell_call_output",
                          "computer_call_output", "apply_patch_call_output", "custom_tool_call_output"})


def native(kind: str, name: str | None = None, **fields: Any) -> dict[str, Any]:
    """One call spec of a non-function tool: ``native("shell", commands=["ls"])``,
    ``native("local_shell", command=[...])``, ``native("computer", actions=[{...}])``,
    ``native("apply_patch", operation={...})``, ``native("custom", "run_sql", input="...")``."""
    if kind not in NATIVE_KINDS:
        raise ValueError(f"unknown kind {kind!r}")
    return {"kind": kind, "tool": name or kind, "args": fields}


def ask(*specs: dict[str, Any]) -> str:
    """A user message that makes the model make these calls (specs from :func:`native`), in one turn."""
    return json.dumps(list(specs))


def output_text(output: Any) -> str:
    """A tool output as the model reads it: text, or the text parts of structured content (MCP)."""
    if isinstance(output, list):
        return " ".join(str(part.get("text", part)) if isinstance(part, dict) else str(part) for part in output)
    return str(output)


def _item(item: Any) -> dict[str, Any]:
    return item if isinstance(item, dict) else item.model_dump(exclude_unset=True)


def _item_text(item: dict[str, Any]) -> str:
    """An output item as text: a shell call's stdout/stderr, a computer call's screenshot URL."""
    output = item.get("output")
    if item["type"] == "shell_call_output":
        return " ".join(part for entry in output or [] for part in (entry.get("stdout"), entry.get("stderr")) if part)
    if item["type"] == "computer_call_output":
        return output["image_url"]
    return output_text(output if output is not None else "")


def _call_item(call: dict[str, Any], n: str) -> Any:
    kind, args = call.get("kind"), call["args"]
    if kind is None:
        return ResponseFunctionToolCall(id=f"fc_{n}", call_id=f"call_{n}", type="function_call", name=call["tool"],
                                        arguments=json.dumps(args))
    if kind == "shell":
        return ResponseFunctionShellToolCall(id=f"sh_{n}", call_id=f"call_{n}", type="shell_call", status="completed",
                                             action=args)
    if kind == "local_shell":
        return LocalShellCall(id=f"ls_{n}", call_id=f"call_{n}", type="local_shell_call", status="completed",
                              action={"type": "exec", "env": {}, **args})
    if kind == "computer":
        return ResponseComputerToolCall(id=f"cu_{n}", call_id=f"call_{n}", type="computer_call", status="completed",
                                        pending_safety_checks=[], **args)
    if kind == "apply_patch":
        return ResponseApplyPatchToolCall(id=f"ap_{n}", call_id=f"call_{n}", type="apply_patch_call",
                                          status="completed", **args)
    return ResponseCustomToolCall(id=f"ct_{n}", call_id=f"call_{n}", type="custom_tool_call", name=call["tool"],
                                  input=args["input"])


class ScriptedModel(Model):
    def __init__(self, model: str = "gpt-4.1") -> None:
        self.model = model  # the attribute the SDK's own Model classes use
        self.turns = 0
        self.seen: list[str] = []  # every tool output the model was given, in order
        self.seen_items: list[dict[str, Any]] = []  # the same outputs, as the items themselves
        self.reported: list[Reported] = []
        self.streamed_model = model + SERVED_SUFFIX

    # -- the script ------------------------------------------------------------------------
    def _output(self, input: str | list[Any]) -> list[Any]:
        self.turns += 1
        items = [{"role": "user", "content": input}] if isinstance(input, str) else [_item(i) for i in input]
        outputs = []
        for item in reversed(items):
            if item.get("type") not in OUTPUT_TYPES:
                break
            outputs.append(item)
        if outputs:
            outputs.reverse()
            self.seen_items.extend(outputs)
            outputs = [_item_text(item) for item in outputs]
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
        return [_call_item(call, f"{self.turns}_{i}") for i, call in enumerate(calls)]

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

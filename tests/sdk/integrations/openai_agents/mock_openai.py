"""The OpenAI API, offline: an ``AsyncOpenAI`` client on an ``httpx2.MockTransport``, so the SDK's
*real* model classes (``OpenAIChatCompletionsModel``, ``OpenAIResponsesModel``) run unchanged,
streamed (SSE) and not. Adapted from shared/reference/framework-proofs/agents_real_models_proof.py.

The conversation: the first request gets one tool call (``tool`` with ``args``); a request that
carries the tool's output gets a final answer ``"final: <output>"``. Each response reports a
different, known usage, kept in :attr:`MockOpenAI.reported` in request order; what the model was
told (the tool output in the next request) is kept in :attr:`MockOpenAI.seen`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx2 as httpx  # openai 3.x transports over httpx2 (the successor of httpx, same API)
from openai import AsyncOpenAI
from openai.types.responses import (
    Response,
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseUsage,
)
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails

#: The snapshot the API says it served; the Responses *stream* reports it, everything else reports
#: the requested model name.
SERVED = "gpt-4o-2024-08-06"
#: Where the client believes it talks to (the transport answers; nothing leaves the process).
BASE_URL = "https://api.openai.com/v1"


@dataclass(frozen=True)
class ApiUsage:
    """One response's usage as the API reported it (input includes the cached tokens)."""

    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int


@dataclass
class MockOpenAI:
    tool: str
    args: dict[str, Any]
    requests: list[dict[str, Any]] = field(default_factory=list)
    reported: list[ApiUsage] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)

    def client(self) -> AsyncOpenAI:
        return AsyncOpenAI(api_key="sk-test", base_url=BASE_URL, max_retries=0,
                           http_client=httpx.AsyncClient(transport=httpx.MockTransport(self.handle)))

    # -- transport ---------------------------------------------------------------------------
    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.requests.append(body)
        stream = bool(body.get("stream"))
        sse = {"content-type": "text/event-stream"}
        if request.url.path.endswith("/chat/completions"):
            chat = self._chat(body)
            return httpx.Response(200, text=_chat_sse(chat), headers=sse) if stream else httpx.Response(200, json=chat)
        if request.url.path.endswith("/responses"):
            response = self._response(body)
            if stream:
                return httpx.Response(200, text=_responses_sse(response), headers=sse)
            return httpx.Response(200, content=response.model_dump_json(),
                                  headers={"content-type": "application/json"})
        return httpx.Response(404, json={"error": {"message": f"no such endpoint {request.url}"}})

    # -- the conversation -----------------------------------------------------------------------
    def _tool_output(self, body: dict[str, Any]) -> str | None:
        if "messages" in body:
            outputs = [m["content"] for m in body["messages"] if m.get("role") == "tool"]
        else:
            outputs = [i["output"] for i in body.get("input", [])
                       if isinstance(i, dict) and i.get("type") == "function_call_output"]
        if not outputs:
            return None
        text = outputs[-1] if isinstance(outputs[-1], str) else json.dumps(outputs[-1])
        self.seen.append(text)
        return text

    def _usage(self, *, base_input: int, cached: int, cache_write: int, reasoning: int) -> ApiUsage:
        n = len(self.reported)
        usage = ApiUsage(input_tokens=base_input + 40 * n, output_tokens=5 + 3 * n, cached_tokens=cached,
                         cache_write_tokens=cache_write, reasoning_tokens=reasoning)
        self.reported.append(usage)
        return usage

    def _chat(self, body: dict[str, Any]) -> dict[str, Any]:
        output = self._tool_output(body)
        if output is not None:
            message: dict[str, Any] = {"role": "assistant", "content": f"final: {output}"}
            finish = "stop"
        else:
            message = {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": self.tool, "arguments": json.dumps(self.args)}}]}
            finish = "tool_calls"
        u = self._usage(base_input=50, cached=32, cache_write=0, reasoning=2)
        return {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": SERVED,
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": {"prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens,
                          "total_tokens": u.input_tokens + u.output_tokens,
                          "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
                          "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens}}}

    def _response(self, body: dict[str, Any]) -> Response:
        output = self._tool_output(body)
        items: list[Any]
        if output is not None:
            items = [ResponseOutputMessage(id="msg_1", type="message", role="assistant", status="completed",
                                           content=[ResponseOutputText(type="output_text", text=f"final: {output}",
                                                                       annotations=[], logprobs=[])])]
        else:
            items = [ResponseFunctionToolCall(id="fc_1", call_id="call_1", type="function_call", name=self.tool,
                                              arguments=json.dumps(self.args), status="completed")]
        u = self._usage(base_input=70, cached=48, cache_write=8, reasoning=3)
        return Response(id="resp_1", created_at=0, model=SERVED, object="response", output=items, tool_choice="auto",
                        tools=[], top_p=None, parallel_tool_calls=False, status="completed",
                        usage=ResponseUsage(input_tokens=u.input_tokens, output_tokens=u.output_tokens,
                                            total_tokens=u.input_tokens + u.output_tokens,
                                            input_tokens_details=InputTokensDetails(
                                                cached_tokens=u.cached_tokens, cache_write_tokens=u.cache_write_tokens),
                                            output_tokens_details=OutputTokensDetails(
                                                reasoning_tokens=u.reasoning_tokens)))


def _chat_sse(full: dict[str, Any]) -> str:
    message = full["choices"][0]["message"]
    delta: dict[str, Any] = {"role": "assistant"}
    if message.get("tool_calls"):
        call = message["tool_calls"][0]
        delta["tool_calls"] = [{"index": 0, "id": call["id"], "type": "function", "function": call["function"]}]
    else:
        delta["content"] = message["content"]
    head = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": SERVED}
    chunks = [
        {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]},
        {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": full["choices"][0]["finish_reason"]}]},
        {**head, "choices": [], "usage": full["usage"]},  # stream_options.include_usage: the last chunk
    ]
    return "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"


def _responses_sse(response: Response) -> str:
    created = response.model_copy(update={"output": [], "status": "in_progress", "usage": None})
    events = [("response.created", {"type": "response.created", "response": created.model_dump(mode="json"),
                                    "sequence_number": 0})]
    for i, item in enumerate(response.output):
        events.append(("response.output_item.done", {"type": "response.output_item.done",
                                                     "item": item.model_dump(mode="json"), "output_index": i,
                                                     "sequence_number": i + 1}))
    events.append(("response.completed", {"type": "response.completed", "response": response.model_dump(mode="json"),
                                          "sequence_number": len(events)}))
    return "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events)

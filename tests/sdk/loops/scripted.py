"""Scripted provider servers behind the *real* openai / anthropic clients (no key, no network).

:class:`ScriptedAPI` is an ``httpx2.MockTransport`` handler (openai 3.x and anthropic 2.x are built
on httpx2, the maintained httpx fork): it answers the i-th request with the i-th scripted JSON
reply and keeps every request body, so a test reads exactly what the model was sent -- which is how
it proves the model was shown a tool's result or a refusal's reason. Every reply carries distinct
usage numbers, so token tests compare the gateway's totals with what the provider reported.

Tools are plain functions recording their invocations in :class:`Tools`.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import anthropic
import httpx2
import openai

__all__ = [
    "ANTHROPIC_MODEL",
    "OPENAI_MODEL",
    "ScriptedAPI",
    "Tools",
    "chat_call",
    "chat_reply",
    "chat_usage",
    "message_reply",
    "messages_usage",
    "text_block",
    "tool_use",
]

OPENAI_MODEL = "gpt-4o-2024-08-06"  #: the served snapshot, as a real response names it
ANTHROPIC_MODEL = "claude-sonnet-4-6"


class ScriptedAPI:
    """Answers request i with ``replies[i]`` (a JSON body, or ``(status, body)``); records requests."""

    def __init__(self, *replies: Any) -> None:
        self.replies = list(replies)
        self.requests: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        with self._lock:
            self.paths.append(request.url.path)
            self.requests.append(json.loads(request.content))
            if not self.replies:
                return httpx2.Response(500, json={"error": {"message": "the script has no more replies"}})
            reply = self.replies.pop(0)
        status, body = reply if isinstance(reply, tuple) else (200, reply)
        return httpx2.Response(status, json=body)

    # -- the real clients, talking to this script ----------------------------------------------
    def openai(self) -> openai.OpenAI:
        return openai.OpenAI(
            api_key="sk-test",
            base_url="http://openai.test/v1",
            max_retries=0,
            http_client=httpx2.Client(transport=httpx2.MockTransport(self)),
        )

    def async_openai(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            api_key="sk-test",
            base_url="http://openai.test/v1",
            max_retries=0,
            http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(self)),
        )

    def anthropic(self) -> anthropic.Anthropic:
        return anthropic.Anthropic(
            api_key="sk-ant-test",
            base_url="http://anthropic.test",
            max_retries=0,
            http_client=httpx2.Client(transport=httpx2.MockTransport(self)),
        )

    def async_anthropic(self) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(
            api_key="sk-ant-test",
            base_url="http://anthropic.test",
            max_retries=0,
            http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(self)),
        )

    # -- what the model saw --------------------------------------------------------------------
    def sent(self, i: int) -> list[dict[str, Any]]:
        """The messages of request ``i``."""
        return self.requests[i]["messages"]

    def tool_messages(self, i: int) -> dict[str, str]:
        """Chat Completions: tool_call_id -> content of the ``role: "tool"`` messages in request ``i``."""
        return {m["tool_call_id"]: m["content"] for m in self.sent(i) if m.get("role") == "tool"}

    def tool_results(self, i: int) -> dict[str, dict[str, Any]]:
        """Messages API: tool_use_id -> ``tool_result`` block, in the last user message of request ``i``."""
        last = self.sent(i)[-1]
        assert last["role"] == "user", last
        return {b["tool_use_id"]: b for b in last["content"] if b.get("type") == "tool_result"}


# -- OpenAI Chat Completions replies ---------------------------------------------------------------
def chat_usage(n: int) -> dict[str, Any]:
    """The usage reply n reports: distinct per reply, every detail set (prompt includes cached)."""
    return {
        "prompt_tokens": 1200 + 10 * n,
        "completion_tokens": 60 + n,
        "total_tokens": 1260 + 11 * n,
        "prompt_tokens_details": {"cached_tokens": 256 * n, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 16 + n, "audio_tokens": 0},
    }


def chat_call(call_id: str, name: str, arguments: dict[str, Any] | str) -> dict[str, Any]:
    args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}


def chat_reply(
    n: int, *calls: dict[str, Any], content: str | None = None, model: str = OPENAI_MODEL
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None, "annotations": []}
    if calls:
        message["tool_calls"] = list(calls)
    return {
        "id": f"chatcmpl-{n}",
        "object": "chat.completion",
        "created": 1_760_000_000 + n,
        "model": model,
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls" if calls else "stop",
                "logprobs": None,
                "message": message,
            }
        ],
        "usage": chat_usage(n),
    }


# -- Anthropic Messages replies --------------------------------------------------------------------
def messages_usage(n: int) -> dict[str, Any]:
    """Anthropic's convention: ``input_tokens`` EXCLUDES the cache reads and cache writes."""
    return {
        "input_tokens": 300 + 7 * n,
        "output_tokens": 80 + n,
        "cache_read_input_tokens": 1024 * n,
        "cache_creation_input_tokens": 128 + n,
        "output_tokens_details": {"thinking_tokens": 20 + n},
    }


def tool_use(block_id: str, name: str, arguments: Any) -> dict[str, Any]:
    return {"type": "tool_use", "id": block_id, "name": name, "input": arguments}


def text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def message_reply(
    n: int, *blocks: dict[str, Any], stop_reason: str | None = None, model: str = ANTHROPIC_MODEL
) -> dict[str, Any]:
    if stop_reason is None:
        stop_reason = "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"
    return {
        "id": f"msg_{n}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": list(blocks),
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": messages_usage(n),
    }


# -- tools -------------------------------------------------------------------------------------------
class Tools:
    """The tools the suites offer, recording every run (so "not run" is provable)."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, dict[str, Any]]] = []

    def ran(self, name: str) -> list[dict[str, Any]]:
        return [args for tool, args in self.runs if tool == name]

    def mapping(self) -> dict[str, Any]:
        return {
            "get_weather": self.get_weather,
            "delete_file": self.delete_file,
            "send_money": self.send_money,
        }

    def get_weather(self, city: str) -> str:
        """Current weather in a city."""
        self.runs.append(("get_weather", {"city": city}))
        return f"sunny in {city}"

    def delete_file(self, path: str) -> str:
        """Delete a file."""
        self.runs.append(("delete_file", {"path": path}))
        return f"deleted {path}"

    def send_money(self, amount: int, to: str) -> dict[str, Any]:
        """Send money to someone."""
        self.runs.append(("send_money", {"amount": amount, "to": to}))
        return {"sent": amount, "to": to}

"""The LangChain tools the suite drives, created at import time -- before ``callgate.configure()``
runs in any test, which is the common real-world order (tools at module level, configure in main).

Every tool body appends to :data:`RAN`, so a test proves that a refused tool never ran and that an
allowed one ran exactly once. Tool names match ``harness.DEFAULT_POLICY``: ``delete_file`` is
blocked, ``send_money`` needs a human above 200 (``amount == 13``: a 2 s approval timeout),
everything else is allowed.
"""

from __future__ import annotations

import threading
from typing import Any

from langchain.tools import ToolRuntime
from langchain_core.tools import BaseTool, StructuredTool, ToolException, tool

import callgate

__all__ = [
    "RAN",
    "Calculator",
    "asend_money",
    "delete_file",
    "flaky",
    "get_weather",
    "guarded_lookup",
    "ran",
    "send_money",
    "whoami",
]


class _Journal:
    """Thread-safe record of tool executions: (tool, arguments, thread name)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: list[tuple[str, dict[str, Any], str]] = []

    def add(self, tool: str, **args: Any) -> None:
        with self._lock:
            self._runs.append((tool, args, threading.current_thread().name))

    def clear(self) -> None:
        with self._lock:
            self._runs.clear()

    def of(self, tool: str) -> list[dict[str, Any]]:
        with self._lock:
            return [args for name, args, _ in self._runs if name == tool]

    def threads(self, tool: str) -> list[str]:
        with self._lock:
            return [thread for name, _, thread in self._runs if name == tool]

    def __len__(self) -> int:
        with self._lock:
            return len(self._runs)


RAN = _Journal()

#: The suite imports this module at collection, before any test configures callgate.
CREATED_BEFORE_CONFIGURE = not callgate.is_configured()


def ran(tool: str) -> list[dict[str, Any]]:
    return RAN.of(tool)


@tool
def get_weather(city: str) -> str:
    """Get the weather for a city."""
    RAN.add("get_weather", city=city)
    return f"Sunny in {city}"


def _delete(path: str) -> str:
    RAN.add("delete_file", path=path)
    return f"deleted {path}"


async def _adelete(path: str) -> str:
    RAN.add("delete_file", path=path)
    return f"deleted {path}"


#: A StructuredTool with both a sync and an async body (so the async path reaches ``arun``).
delete_file = StructuredTool.from_function(
    func=_delete, coroutine=_adelete, name="delete_file", description="Delete a file."
)


@tool
def send_money(to: str, amount: int) -> str:
    """Send money (sync-only: on an async path LangChain runs it on a worker thread)."""
    RAN.add("send_money", to=to, amount=amount)
    return f"sent {amount} to {to}"


async def _asend(to: str, amount: int) -> str:
    RAN.add("send_money", to=to, amount=amount)
    return f"sent {amount} to {to}"


#: The same tool with an async body only: awaited through ``arun`` on the event loop.
asend_money = StructuredTool.from_function(coroutine=_asend, name="send_money", description="Send money.")


class Calculator(BaseTool):
    """A ``BaseTool`` subclass overriding ``_run``/``_arun`` (the class-based way to write a tool)."""

    name: str = "calculator"
    description: str = "Add two integers."

    def _run(self, a: int, b: int) -> str:
        RAN.add("calculator", a=a, b=b)
        return str(a + b)

    async def _arun(self, a: int, b: int) -> str:
        RAN.add("calculator", a=a, b=b)
        return str(a + b)


@tool
def whoami(runtime: ToolRuntime) -> str:
    """Say which tool call this is (the ToolRuntime is injected by ToolNode, never sent by the model)."""
    RAN.add("whoami", tool_call_id=runtime.tool_call_id)
    return f"call={runtime.tool_call_id}"


@tool
def greet(name: str, runtime: ToolRuntime) -> str:
    """Greet someone (the model sends ``name``; ``runtime`` is injected)."""
    RAN.add("greet", name=name, state_keys=sorted(runtime.state))
    return f"hello {name}"


@callgate.guard
def lookup(term: str) -> str:
    """Look a term up (a function guarded by @callgate.guard, then handed to LangChain as a tool)."""
    RAN.add("lookup", term=term)
    return f"{term}: found"


guarded_lookup = tool(lookup)


@tool
def flaky(path: str) -> str:
    """Read a file that is never there: the tool fails and LangChain turns the error into a result."""
    RAN.add("flaky", path=path)
    raise ToolException(f"no such file: {path}")


flaky.handle_tool_error = True

"""The suite's CrewAI tools, created at import time -- before any ``callgate.configure()``.

Both kinds CrewAI has, allowed and blocked (``harness.DEFAULT_POLICY``), so every path shows
that the patches reach tools that already existed:

=================  ==================  ===============  ========================================
model calls        defined as          policy           what runs
=================  ==================  ===============  ========================================
``delete_file``    ``BaseTool`` named  blocked          ``BaseTool.run`` (native) /
                   ``"Delete File"``                    ``CrewStructuredTool.invoke`` (ReAct)
``read_file``      ``BaseTool`` named  allowed          the same
                   ``"Read File"``
``rm_rf``          ``@tool``           blocked          ``Tool.run`` / ``CrewStructuredTool.invoke``
``get_weather``    ``@tool``           allowed          the same
``send_money``     ``@tool``           approval > 200   the same
``fetch_url``      ``@tool`` (async)   allowed          ``Tool.arun``
=================  ==================  ===============  ========================================

Every tool body appends ``(model name, arguments)`` to :data:`RAN`: a blocked tool's absence
there is the proof that it did not run.
"""

from __future__ import annotations

import threading
from typing import Any

from crewai.tools import BaseTool, tool

__all__ = ["ALL_TOOLS", "RAN", "DeleteFileTool", "ReadFileTool", "delete_file", "fetch_url", "get_weather",
           "read_file", "record", "rm_rf", "send_money"]

#: (tool, arguments) of every tool body that ran, in order.
RAN: list[tuple[str, dict[str, Any]]] = []
_lock = threading.Lock()


def record(tool_name: str, **arguments: Any) -> None:
    with _lock:
        RAN.append((tool_name, arguments))


class DeleteFileTool(BaseTool):
    name: str = "Delete File"  # raw CrewAI name; the model (and the policy) say "delete_file"
    description: str = "Delete the file at a path."

    def _run(self, path: str) -> str:
        record("delete_file", path=path)
        return f"deleted {path}"


class ReadFileTool(BaseTool):
    name: str = "Read File"
    description: str = "Read the file at a path."

    def _run(self, path: str) -> str:
        record("read_file", path=path)
        return f"contents of {path}"


@tool("rm_rf")
def rm_rf(path: str) -> str:
    """Recursively delete a path."""
    record("rm_rf", path=path)
    return f"removed {path}"


@tool("get_weather")
def get_weather(city: str) -> str:
    """Get the weather for a city."""
    record("get_weather", city=city)
    return f"Sunny in {city}"


@tool("send_money")
def send_money(to: str, amount: int) -> str:
    """Send an amount of money to someone."""
    record("send_money", to=to, amount=amount)
    return f"sent {amount} to {to}"


@tool("fetch_url")
async def fetch_url(url: str) -> str:
    """Fetch a web page."""
    record("fetch_url", url=url)
    return f"<html>{url}</html>"


delete_file = DeleteFileTool()
read_file = ReadFileTool()

ALL_TOOLS = [delete_file, read_file, rm_rf, get_weather, send_money]

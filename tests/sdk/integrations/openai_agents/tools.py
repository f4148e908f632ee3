"""Tools made the ways users make them, all at import time -- long before any ``configure()``.

Every tool body appends to :data:`RAN`, so a test can tell a tool that ran from one that did not.
The names match the shared policy (``harness.DEFAULT_POLICY``): ``delete_file`` is blocked,
``send_money`` needs a human above 200, everything else is allowed.
"""

from __future__ import annotations

from typing import Any

import callgate
from agents import FunctionTool, RunContextWrapper, function_tool
from pydantic import BaseModel

#: (tool, arguments) of every tool body that actually ran, in order.
RAN: list[tuple[str, dict[str, Any]]] = []

#: True: the tools below exist before callgate is configured (the suite checks this).
MADE_BEFORE_CONFIGURE = not callgate.is_configured()


@function_tool
def get_weather(city: str) -> str:
    """Get the weather for a city."""
    RAN.append(("get_weather", {"city": city}))
    return f"Sunny in {city}"


@function_tool
async def delete_file(path: str) -> str:
    """Delete a file."""
    RAN.append(("delete_file", {"path": path}))
    return f"deleted {path}"


@function_tool
async def send_money(to: str, amount: int) -> str:
    """Send money to someone."""
    RAN.append(("send_money", {"to": to, "amount": amount}))
    return f"sent {amount} to {to}"


@function_tool
def flaky(x: int) -> str:
    """A tool whose body fails: the SDK's failure handler turns that into an error for the model."""
    RAN.append(("flaky", {"x": x}))
    raise RuntimeError(f"flaky failed on {x}")


class DeleteReport(BaseModel):
    path: str
    bytes_freed: int


@function_tool(name_override="delete_file", output_type=DeleteReport)
def delete_file_typed(path: str) -> DeleteReport:
    """Delete a file; a typed result (the tool declares an output schema)."""
    RAN.append(("delete_file", {"path": path}))
    return DeleteReport(path=path, bytes_freed=1)


async def _never_needs_approval(ctx: RunContextWrapper[Any], params: dict[str, Any], call_id: str) -> bool:
    return False


@function_tool(needs_approval=_never_needs_approval)
def audited(x: int) -> str:
    """A tool with a callable needs_approval (the SDK checks the invoker's identity around it)."""
    RAN.append(("audited", {"x": x}))
    return f"audited {x}"


@function_tool(needs_approval=True)
def wire_transfer(to: str, amount: int) -> str:
    """Wire money; always asks the SDK's own human-in-the-loop first (RunState.approve)."""
    RAN.append(("wire_transfer", {"to": to, "amount": amount}))
    return f"wired {amount} to {to}"


async def _raw_delete(ctx: Any, arguments: str) -> str:
    RAN.append(("raw_delete", {"arguments": arguments}))
    return f"raw deleted with {arguments}"


async def _raw_lookup(ctx: Any, arguments: str) -> str:
    RAN.append(("lookup", {"arguments": arguments}))
    return f"looked up {arguments}"


_SCHEMA = {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"],
           "additionalProperties": False}

#: Built directly, without ``@function_tool`` (no SDK failure handler around the invoker).
raw_delete_file = FunctionTool(name="delete_file", description="Delete a file.", params_json_schema=_SCHEMA,
                               on_invoke_tool=_raw_delete)
raw_lookup = FunctionTool(name="lookup", description="Look a path up.", params_json_schema=_SCHEMA,
                          on_invoke_tool=_raw_lookup)


@callgate.guard(name="guarded_lookup")
def _guarded_lookup(path: str) -> str:
    """Look a path up (guarded by callgate itself)."""
    RAN.append(("guarded_lookup", {"path": path}))
    return f"found {path}"


#: A ``@callgate.guard``-ed function exposed as a tool: two enforcers, one check.
guarded_lookup = function_tool(_guarded_lookup, name_override="guarded_lookup")

"""What the gateway recorded, in the shape the assertions compare."""

from __future__ import annotations

from typing import Any

import callgate
from tests.sdk.integrations.harness import Gateway

__all__ = ["blocked", "recorded"]


def blocked(reason: str) -> str:
    """The text the model reads for a policy block (``ToolFailure.as_agent_message()``)."""
    return f"Tool call blocked by policy: {reason} (code: policy_blocked)"


def recorded(gateway: Gateway, session_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    """``(tool, status, args)`` of every call the gateway stored for the session, oldest first,
    once the background outcome reports are delivered."""
    assert callgate.flush(15), "outcome reports were not delivered"
    calls = gateway.calls(session_id)
    assert {c["framework"] for c in calls} <= {"crewai"}, calls
    return [(c["tool"], c["status"], c["args"]) for c in calls]


"""Reading what the gateway recorded, for assertions."""

from __future__ import annotations

from typing import Any

import callgate
from tests.sdk.integrations.harness import Gateway

__all__ = ["only_row", "rows"]


def rows(gateway: Gateway, session_id: str, tool: str | None = None) -> list[dict[str, Any]]:
    """The gateway's tool-call rows of this session, once the SDK delivered its outcome reports."""
    assert callgate.flush(10), "the SDK could not deliver its reports"
    return gateway.calls(session_id, tool)


def only_row(gateway: Gateway, session_id: str, tool: str) -> dict[str, Any]:
    """The one row of ``tool`` in this session: a tool call is checked exactly once."""
    found = rows(gateway, session_id, tool)
    assert len(found) == 1, f"{tool} checked {len(found)} times: {[(r['status'], r['args']) for r in found]}"
    return found[0]

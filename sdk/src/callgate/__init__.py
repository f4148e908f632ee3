"""callgate: check every AI-agent tool call against your gateway's policies.

::

    import callgate
    callgate.configure()            # CALLGATE_URL, CALLGATE_API_KEY, CALLGATE_AGENT

    @callgate.guard(name="stripe.refund")
    def refund(customer_id: str, amount: int) -> str: ...

    with callgate.session("conversation-42"):
        refund("cus_1", 300)        # allowed, blocked (CallBlocked) or held for a human

Fail closed by default: without a decision from the gateway the tool does not run.
Import cost is kept minimal (no asyncio, no ssl, no wrapt until first needed;
``callgate.webhooks`` is loaded on first access).
"""

from __future__ import annotations

from ._config import configure, flush, is_configured, reset
from ._context import current_session, session
from ._guard import Permit, acheck_call, aresume, check_call, guard, resume
from ._pending import AsyncPendingApproval, PendingApproval
from ._usage import log_usage
from .errors import (
    AlreadyClaimed,
    ApprovalDenied,
    ApprovalExpired,
    CallBlocked,
    CallgateError,
    ConfigurationError,
    GatewayRejected,
    GatewayUnavailable,
    WebhookVerificationError,
)

__version__ = "0.1.0"

__all__ = [
    "AlreadyClaimed",
    "ApprovalDenied",
    "ApprovalExpired",
    "AsyncPendingApproval",
    "CallBlocked",
    "CallgateError",
    "ConfigurationError",
    "GatewayRejected",
    "GatewayUnavailable",
    "PendingApproval",
    "Permit",
    "WebhookVerificationError",
    "acheck_call",
    "aresume",
    "check_call",
    "configure",
    "current_session",
    "flush",
    "guard",
    "is_configured",
    "log_usage",
    "reset",
    "resume",
    "session",
]


def __getattr__(name: str) -> object:
    """``callgate.webhooks`` without an explicit import, loaded only when first used."""
    if name == "webhooks":
        import importlib

        return importlib.import_module(".webhooks", __name__)  # binds callgate.webhooks as it loads
    raise AttributeError(f"module 'callgate' has no attribute {name!r}")

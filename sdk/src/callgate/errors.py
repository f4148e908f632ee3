"""Exceptions raised by the callgate SDK.

::

    CallgateError
    ├── CallBlocked          the policy said block; the tool did not run
    ├── ApprovalDenied       a reviewer denied the call; the tool did not run
    ├── ApprovalExpired      nobody decided in time (gateway expiry or approval_timeout)
    ├── AlreadyClaimed       the call's one-shot execution claim was already used: it must not run again
    ├── GatewayUnavailable   transport failure, 5xx/429 after retries, circuit open, deadline
    ├── GatewayRejected      401/403/409/422...: misconfiguration or a protocol error; never retried
    ├── ConfigurationError   not configured, bad URL, bad option
    └── WebhookVerificationError  a webhook delivery failed verification (callgate.webhooks)

Every one of them means "the tool did not run" (fail closed). The tool's *own*
exceptions are never wrapped: they propagate unchanged.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AlreadyClaimed",
    "ApprovalDenied",
    "ApprovalExpired",
    "CallBlocked",
    "CallgateError",
    "ConfigurationError",
    "GatewayRejected",
    "GatewayUnavailable",
    "WebhookVerificationError",
]


class CallgateError(Exception):
    """Root of every SDK error. Carries the call id and tool name when known."""

    def __init__(self, message: str, *, call_id: str | None = None, tool: str | None = None,
                 reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.call_id = call_id
        self.tool = tool
        self.reason = reason

    def __str__(self) -> str:
        where = []
        if self.tool:
            where.append(f"tool={self.tool}")
        if self.call_id:
            where.append(f"call_id={self.call_id}")
        return f"{self.message} ({', '.join(where)})" if where else self.message


class CallBlocked(CallgateError):
    """The gateway's policy blocked the call."""

    def __init__(self, reason: str | None, rule: str | None = None, call_id: str | None = None,
                 tool: str | None = None, *, policy_version: int | None = None) -> None:
        self.rule = rule
        self.policy_version = policy_version
        msg = f"callgate blocked {tool or 'the call'}: {reason or 'blocked by policy'}"
        if rule:
            msg += f" [rule {rule}]"
        super().__init__(msg, call_id=call_id, tool=tool, reason=reason)


class ApprovalDenied(CallgateError):
    """A human reviewer denied the call. ``comment`` is the reviewer's reason."""

    def __init__(self, comment: str | None = None, *, call_id: str | None = None, tool: str | None = None,
                 decided_by: str | None = None) -> None:
        self.comment = comment
        self.decided_by = decided_by
        msg = f"callgate: approval denied for {tool or 'the call'}"
        if comment:
            msg += f": {comment}"
        super().__init__(msg, call_id=call_id, tool=tool, reason=comment)


class ApprovalExpired(CallgateError):
    """The approval expired, or the SDK's ``approval_timeout`` elapsed first (= deny)."""

    def __init__(self, reason: str | None = None, *, call_id: str | None = None, tool: str | None = None) -> None:
        msg = f"callgate: approval expired for {tool or 'the call'}"
        if reason:
            msg += f": {reason}"
        super().__init__(msg, call_id=call_id, tool=tool, reason=reason)


class AlreadyClaimed(CallgateError):
    """The call was already claimed for execution (by this process before a crash, or by another
    process sharing the call id), or has already run: running it again could repeat its side
    effects, so it does not run (at-most-once, security.md §5.3). ``status`` is the call's status
    on the gateway when known (``running``, ``succeeded``, ``failed``, ``allowed``)."""

    def __init__(self, detail: str | None = None, *, call_id: str | None = None, tool: str | None = None,
                 status: str | None = None) -> None:
        self.status = status
        msg = f"callgate: {tool or 'the call'} was already claimed for execution; it will not run again"
        if detail:
            msg += f": {detail}"
        super().__init__(msg, call_id=call_id, tool=tool, reason=detail)


class GatewayUnavailable(CallgateError):
    """No decision could be obtained: the tool did not run (unless it opted into fail-open).

    ``status`` is the last HTTP status seen (None for transport errors);
    ``allows_fail_open`` is False for 429 (rate limits are never bypassed).
    """

    def __init__(self, reason: str, *, call_id: str | None = None, tool: str | None = None,
                 status: int | None = None, attempts: int = 0, allows_fail_open: bool = True) -> None:
        self.status = status
        self.attempts = attempts
        self.allows_fail_open = allows_fail_open
        super().__init__(f"callgate gateway unavailable: {reason}", call_id=call_id, tool=tool, reason=reason)


class GatewayRejected(CallgateError):
    """The gateway refused the request (RFC 9457 problem): fix the configuration or the call."""

    def __init__(self, status: int, code: str | None, detail: str | None = None, *,
                 call_id: str | None = None, tool: str | None = None,
                 errors: list[dict[str, Any]] | None = None) -> None:
        self.status = status
        self.code = code
        self.detail = detail
        self.errors = errors or []
        msg = f"callgate gateway rejected the request: HTTP {status}"
        if code:
            msg += f" {code}"
        if detail:
            msg += f": {detail}"
        for err in self.errors[:3]:
            msg += f"; {err.get('pointer', '')} {err.get('code', '')} {err.get('message', '')}".rstrip()
        super().__init__(msg, call_id=call_id, tool=tool, reason=detail)


class ConfigurationError(CallgateError):
    """callgate is not configured, or an option is invalid."""


class WebhookVerificationError(CallgateError):
    """A webhook delivery was refused by :func:`callgate.webhooks.verify`; nothing ran. ``code``:

    * ``bad_signature``: no ``v1`` signature matches the body under the secret (forged, tampered
      with, or signed with another secret);
    * ``stale_timestamp``: ``webhook-timestamp`` is further from now than the tolerance (an old
      delivery replayed, or a badly skewed clock);
    * ``replayed``: this ``webhook-id`` was accepted before: a duplicate delivery. Answer it with a
      2xx (it was handled) so the sender stops retrying;
    * ``malformed``: a header is missing or unparsable, or the body is not an approval event.
    """

    CODES = ("bad_signature", "stale_timestamp", "replayed", "malformed")

    def __init__(self, code: str, detail: str, *, webhook_id: str | None = None) -> None:
        if code not in self.CODES:
            raise ValueError(f"unknown webhook verification code {code!r}")
        self.code = code
        self.webhook_id = webhook_id
        super().__init__(f"callgate: webhook rejected ({code}): {detail}", reason=detail)

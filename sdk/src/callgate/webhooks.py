"""Receive the gateway's approval webhooks: verify each delivery, then run the approved call once.

In ``approval_mode="webhook"`` a call that needs a human returns a pending handle at once;
when a reviewer decides, the gateway POSTs a Standard-Webhooks-signed ``approval.decided``
event to the URL registered for the agent (``callgate webhooks add --agent NAME --url URL`` on
the gateway host prints the endpoint's ``whsec_`` secret once). The receiving web app does::

    import callgate
    from callgate import webhooks

    callgate.configure(...)   # the agent's own key: the claim that runs the call is made as the agent

    def receive(body: bytes, headers) -> int:                 # any web framework: raw body + headers
        try:
            event = webhooks.verify(body, headers, WEBHOOK_SECRET)
        except callgate.WebhookVerificationError as e:
            return 200 if e.code == "replayed" else 400       # a duplicate was handled already
        try:
            webhooks.dispatch(event) or event.run(refund, **event.args)
        except (callgate.ApprovalDenied, callgate.ApprovalExpired, callgate.AlreadyClaimed):
            pass                                              # not to run, or ran already
        except callgate.GatewayUnavailable:
            event.forget()                                    # nothing ran: accept the retry
            return 503
        return 204

* :func:`verify` checks the signature (``v1``, HMAC-SHA256, constant-time, several
  space-separated signatures allowed for secret rotation), the timestamp (within
  ``tolerance`` seconds either way) and that the ``webhook-id`` was not accepted before
  (:mod:`replay guard <callgate._replay>`), and parses the event. Nothing about an unverified
  body is trusted or even parsed.
* :func:`dispatch` hands the event to the pending handle of this process that made the call:
  it claims and runs the tool with its real arguments, and fires the handle's callbacks.
* :meth:`ApprovalEvent.run` runs the call here when no handle exists (the agent process
  restarted, or the receiver is another process). ``event.args`` are the arguments as the
  gateway stored them, i.e. **redacted**: pass the real ones if the tool needs a redacted value.

Either way the gateway's one-shot claim is the authority, never the event's ``status``: a
validly signed "approved" for a call that is not approved does not run (the claim is refused
and the call's real state is raised), and a call runs at most once however many times its
event is delivered.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, Literal

from . import _pending
from ._guard import (
    _aclaim_now,
    _check_id,
    _claim_now,
    arun_permitted,
    existing_call,
    permitted,
    run_permitted,
)
from ._replay import MemoryReplayGuard, ReplayGuard, SqliteReplayGuard
from .errors import ApprovalDenied, ApprovalExpired, ConfigurationError, WebhookVerificationError

__all__ = ["ApprovalEvent", "MemoryReplayGuard", "ReplayGuard", "SqliteReplayGuard",
           "WebhookVerificationError", "dispatch", "verify"]

EVENT_TYPE = "approval.decided"
Status = Literal["approved", "denied", "expired"]
_STATUSES = ("approved", "denied", "expired")
_ID = re.compile(r"[\x21-\x7e]{1,256}")  # visible ASCII: it becomes part of the signed content and a DB key
_MAX_SIGNATURE_HEADER = 8192

_default_guard: ReplayGuard | None = None
_default_guard_lock = threading.Lock()


def _replay_guard(replays: ReplayGuard | None) -> ReplayGuard:
    """``replays``, or the process-wide in-memory guard (made once, even under concurrent first use)."""
    global _default_guard
    if replays is not None:
        return replays
    with _default_guard_lock:
        if _default_guard is None:
            _default_guard = MemoryReplayGuard()
        return _default_guard


class ApprovalEvent:
    """A verified ``approval.decided`` delivery. Fields are typed and validated; ``data`` is the
    raw ``data`` object for anything newer than this SDK."""

    __slots__ = ("webhook_id", "type", "timestamp", "call_id", "tool", "agent", "session_id", "status",
                 "decided_by", "channel", "comment", "decided_at", "args", "rule", "reason", "data",
                 "_replays")

    def __init__(self, webhook_id: str, document: Mapping[str, Any],
                 replays: ReplayGuard | None = None) -> None:
        data = document.get("data")
        if not isinstance(data, dict):
            raise _malformed("'data' must be an object", webhook_id)
        self.webhook_id = webhook_id
        self.type: str = EVENT_TYPE
        self.timestamp: datetime = _time(document, "timestamp", webhook_id, required=True)  # type: ignore[assignment]
        try:
            self.call_id: str = _check_id(data.get("call_id"))  # type: ignore[arg-type]
        except ValueError:
            raise _malformed("data.call_id must be a UUID", webhook_id) from None
        status = data.get("status")
        if status not in _STATUSES:
            raise _malformed(f"data.status must be one of {', '.join(_STATUSES)}, not {status!r}", webhook_id)
        self.status: Status = status
        tool = data.get("tool")
        if not isinstance(tool, str) or not tool:
            raise _malformed("data.tool must be a non-empty string", webhook_id)
        self.tool = tool
        self.agent = _text(data, "agent", webhook_id)
        self.session_id = _text(data, "session_id", webhook_id)
        self.decided_by = _text(data, "decided_by", webhook_id)
        #: where the decision was made: "console", "cli", "slack" (None: e.g. an expiry)
        self.channel = _text(data, "channel", webhook_id)
        #: the reviewer's comment (for a denial: the reason the agent is told)
        self.comment = _text(data, "comment", webhook_id)
        self.decided_at = _time(data, "decided_at", webhook_id, required=False)
        args = data.get("args", {})
        if args is None:
            args = {}
        if not isinstance(args, dict):
            raise _malformed("data.args must be an object", webhook_id)
        #: the call's arguments as the gateway stored them (redacted)
        self.args: dict[str, Any] = args
        self.rule = _text(data, "rule", webhook_id)
        self.reason = _text(data, "reason", webhook_id)
        self.data: dict[str, Any] = data
        self._replays = replays

    @property
    def approved(self) -> bool:
        return self.status == "approved"

    def run(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run the decided call here, through the gateway's claim: approved -> claim it (once,
        ever: :class:`~callgate.AlreadyClaimed` if it was claimed already), run ``fn(*args,
        **kwargs)`` once, report the outcome, return its value. Denied ->
        :class:`~callgate.ApprovalDenied` with the comment; expired ->
        :class:`~callgate.ApprovalExpired`. ``fn`` may be a ``@callgate.guard``-ed function: it is
        not checked a second time. Needs ``callgate.configure()`` with the agent's key."""
        if _is_coroutine_function(fn):
            raise TypeError(f"{fn!r} is a coroutine function: use `await event.arun(...)`")
        self._refuse_unless_approved()
        permit = _claim_now(existing_call(self.call_id, self.tool))
        with permitted(fn, tool=self.tool):
            return run_permitted(permit, fn, args, kwargs)

    async def arun(self, fn: Callable[..., Awaitable[Any]], /, *args: Any, **kwargs: Any) -> Any:
        """:meth:`run` for coroutine functions (awaits ``fn``; never blocks the event loop)."""
        self._refuse_unless_approved()
        permit = await _aclaim_now(existing_call(self.call_id, self.tool))
        with permitted(fn, tool=self.tool):
            return await arun_permitted(permit, fn, args, kwargs)

    def forget(self) -> None:
        """Forget that this delivery was accepted, so the sender's retry of it is accepted again:
        for when processing failed before anything ran (e.g. the gateway was unreachable for the
        claim). Safe: even a repeated approved event runs the call at most once (the claim)."""
        if self._replays is not None:
            self._replays.forget(self.webhook_id)

    def _refuse_unless_approved(self) -> None:
        if self.status == "denied":
            raise ApprovalDenied(self.comment, call_id=self.call_id, tool=self.tool,
                                 decided_by=self.decided_by)
        if self.status == "expired":
            raise ApprovalExpired(self.reason or "the approval expired", call_id=self.call_id, tool=self.tool)

    def __repr__(self) -> str:
        return f"<ApprovalEvent {self.webhook_id} {self.tool} {self.call_id} {self.status}>"


def verify(body: bytes | bytearray | memoryview | str, headers: Mapping[str, str], secret: str, *,
           tolerance: float = 300, replays: ReplayGuard | None = None) -> ApprovalEvent:
    """Verify one delivery and return its event, or raise
    :class:`~callgate.WebhookVerificationError` (``code``: ``bad_signature``,
    ``stale_timestamp``, ``replayed``, ``malformed``).

    ``body`` must be the raw request body, byte for byte. ``headers`` is any mapping (names are
    matched case-insensitively). ``secret`` is the endpoint's ``whsec_...`` secret.
    ``tolerance`` is how far (seconds) ``webhook-timestamp`` may be from now, either way.
    ``replays`` remembers accepted ids (default: one in-memory guard per process; pass a
    :class:`SqliteReplayGuard` when several processes receive the same endpoint). The id is
    remembered only once everything else verified."""
    if not tolerance > 0:
        raise ValueError("tolerance must be > 0")
    key = _secret_key(secret)
    raw = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    lowered = {str(k).lower(): v for k, v in headers.items()}
    webhook_id = lowered.get("webhook-id")
    stamp = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    missing = [n for n, v in (("webhook-id", webhook_id), ("webhook-timestamp", stamp),
                              ("webhook-signature", signatures)) if not isinstance(v, str) or not v]
    if missing:
        raise _malformed(f"missing header(s): {', '.join(missing)}", None)
    assert isinstance(webhook_id, str) and isinstance(stamp, str) and isinstance(signatures, str)
    if not _ID.fullmatch(webhook_id):
        raise _malformed("webhook-id must be 1-256 visible ASCII characters", None)
    if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12):
        raise _malformed("webhook-timestamp must be integer Unix seconds", webhook_id)
    if len(signatures) > _MAX_SIGNATURE_HEADER:
        raise _malformed("webhook-signature is too long", webhook_id)
    expected = hmac.new(key, f"{webhook_id}.{stamp}.".encode() + raw, hashlib.sha256).digest()
    if not _signed(signatures, expected):
        raise WebhookVerificationError("bad_signature", "no v1 signature matches the body under this secret",
                                       webhook_id=webhook_id)
    sent = int(stamp)
    skew = time.time() - sent
    if abs(skew) > tolerance:
        when = f"{skew:.0f}s old" if skew > 0 else f"{-skew:.0f}s in the future"
        raise WebhookVerificationError("stale_timestamp",
                                       f"webhook-timestamp is {when} (tolerance {tolerance:g}s)",
                                       webhook_id=webhook_id)
    document = _document(raw, webhook_id)
    guard = _replay_guard(replays)
    event = ApprovalEvent(webhook_id, document, guard)
    if not guard.remember(webhook_id, sent + tolerance):
        raise WebhookVerificationError("replayed", f"delivery {webhook_id} was accepted before",
                                       webhook_id=webhook_id)
    return event


def dispatch(event: ApprovalEvent) -> bool:
    """Resolve this process's pending handle for ``event.call_id``, if there is one: approved ->
    claim and run its tool with the arguments it was called with (a sync handle here, before
    returning; an async handle on its own event loop), then its callbacks fire (a
    ``check_call`` handle has no tool: it is marked approved, and its ``result()`` claims and
    returns the Permit); denied/expired -> the handle is resolved (``result()`` raises). True
    if a handle took it; False if none did (run it with :meth:`ApprovalEvent.run`, or ignore
    it). Raises
    :class:`~callgate.GatewayUnavailable` if the claim could not be made (nothing ran; the
    handle stays pending) and :class:`~callgate.GatewayRejected` if the gateway says the call
    is still pending (the event was wrong)."""
    return _pending.dispatch_decision(event.call_id, event.status, event.comment, event.decided_by)


# -- parsing helpers --------------------------------------------------------------------------
def _secret_key(secret: str) -> bytes:
    if not isinstance(secret, str):
        raise ConfigurationError("the webhook secret must be a string (whsec_ + base64)")
    encoded = secret.removeprefix("whsec_")
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigurationError("the webhook secret is not whsec_ followed by base64") from None
    if not key:
        raise ConfigurationError("the webhook secret is empty")
    return key


def _signed(header: str, expected: bytes) -> bool:
    """True if any ``v1,<base64>`` entry matches. Other versions and unparsable entries are
    skipped, never an exception (``standardwebhooks`` raises ValueError on an entry without a comma)."""
    matched = False
    for entry in header.split():
        version, comma, signature = entry.partition(",")
        if version != "v1" or not comma:
            continue
        try:
            candidate = base64.b64decode(signature, validate=True)
        except (binascii.Error, ValueError):
            continue
        if hmac.compare_digest(candidate, expected):
            matched = True
    return matched


def _document(raw: bytes, webhook_id: str) -> dict[str, Any]:
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise _malformed("the body is not JSON", webhook_id) from None
    if not isinstance(document, dict):
        raise _malformed("the body is not a JSON object", webhook_id)
    if document.get("type") != EVENT_TYPE:
        raise _malformed(f"unsupported event type {document.get('type')!r} (expected {EVENT_TYPE!r})",
                         webhook_id)
    return document


def _text(data: Mapping[str, Any], name: str, webhook_id: str) -> str | None:
    value = data.get(name)
    if value is not None and not isinstance(value, str):
        raise _malformed(f"data.{name} must be a string or null", webhook_id)
    return value


def _time(data: Mapping[str, Any], name: str, webhook_id: str, *, required: bool) -> datetime | None:
    value = data.get(name)
    if value is None and not required:
        return None
    try:
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise _malformed(f"{name} must be an RFC 3339 timestamp with a time zone", webhook_id)
    return parsed


def _malformed(detail: str, webhook_id: str | None) -> WebhookVerificationError:
    return WebhookVerificationError("malformed", detail, webhook_id=webhook_id)


def _is_coroutine_function(fn: Any) -> bool:
    import inspect

    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)

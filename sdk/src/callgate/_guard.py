"""The single enforcement path: ``check_call`` / ``acheck_call``, and ``guard``.

Every guard (and, later, every framework integration) goes through :func:`check_call`:

1. make the call id (UUIDv7) once; every retry and the long-poll reuse it;
2. make the arguments JSON-safe and redact them (``callgate.redaction``) before they
   leave the process;
3. ``POST /v1/calls``: allow -> :class:`Permit`; block -> :class:`CallBlocked`;
   require_approval -> long-poll ``GET /v1/calls/{id}?wait=25`` until approved, then claim it
   once (``POST /v1/calls/{id}/claim``: Permit, or :class:`AlreadyClaimed` and it never runs),
   denied (:class:`ApprovalDenied`), expired or ``approval_timeout`` (:class:`ApprovalExpired`).
   In ``approval_mode="async"``/``"webhook"`` a pending call instead returns a handle at once
   (``callgate._pending``) that waits, claims and runs later, through the same functions;
4. no decision (gateway unreachable) -> :class:`GatewayUnavailable`, unless the caller
   opted into fail-open for a read-only tool: then the run is spooled durably first.

Re-entrancy: an enforcer that has a permit and is about to invoke a callable that may
itself be enforced (an integration calling a ``@guard``-ed tool function) wraps the
invocation in :func:`permitted`; the inner enforcer calls :func:`take_pass` and skips a
second check. The pass is consumed by the first enforcer entered, so anything the tool
body calls (including itself, recursively) is checked again.
"""

from __future__ import annotations

import contextvars
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from ._args import bind_arguments, to_jsonable
from ._client import raise_for_problem
from ._config import ApprovalMode, Runtime, check_approval_mode, runtime
from ._context import current_session
from .ids import uuid7
from .errors import (
    AlreadyClaimed,
    ApprovalDenied,
    ApprovalExpired,
    CallBlocked,
    CallgateError,
    GatewayRejected,
    GatewayUnavailable,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from ._http import Response
    from ._pending import AsyncPendingApproval, PendingApproval

__all__ = ["Permit", "acheck_call", "already_checking", "aresume", "check_call", "guard", "permitted", "resume",
           "take_pass"]

log = logging.getLogger("callgate")
F = TypeVar("F", bound=Callable[..., Any])

_MAX_ERROR = 4000
_NO_REDACTOR: Any = object()
_redactor: Any = None


# -- re-entrancy ------------------------------------------------------------------------
# The pass an outer enforcer hands to the next enforcer entered: (code identity, tool name key).
_PASS: contextvars.ContextVar[tuple[object | None, str | None] | None] = contextvars.ContextVar(
    "callgate_pass", default=None)


def _target_key(target: Any) -> object:
    """Identity of the code a callable runs: through wrapt proxies, __wrapped__, bound methods."""
    seen = 0
    while seen < 16:
        seen += 1
        func = getattr(target, "__func__", None)
        if func is not None:
            target = func
            continue
        inner = getattr(target, "__wrapped__", None)
        if inner is not None:
            target = inner
            continue
        break
    return target


def tool_key(name: str) -> str:
    """A tool name as every framework spells it: CrewAI's "Delete File" is its adapters' "delete_file"."""
    out = []
    sep = False
    for ch in name.strip().lower():
        if ch.isalnum():
            if sep and out:
                out.append("_")
            out.append(ch)
            sep = False
        else:
            sep = True
    return "".join(out)


@contextmanager
def permitted(target: Any = None, *, tool: str | None = None) -> Iterator[None]:
    """Mark the invocation made inside this block as already checked: of ``target`` (the code it
    runs) or of a tool named ``tool`` (a framework adapter that re-wraps the same tool under
    another framework's class, e.g. CrewAI tools handed to LangGraph)."""
    token = _PASS.set((_target_key(target) if target is not None else None,
                       tool_key(tool) if tool else None))
    try:
        yield
    finally:
        _PASS.reset(token)


def take_pass(target: Any = None, *, tool: str | None = None) -> bool:
    """Called by an enforcer on entry: True (skip the check) if an outer enforcer already
    checked exactly this invocation (same code, or same tool name). Always consumes the pass,
    so whatever the tool body calls next is checked again."""
    current = _PASS.get()
    if current is None:
        return False
    _PASS.set(None)
    return _matches(current, target, tool)


def already_checking(target: Any = None, *, tool: str | None = None) -> bool:
    """True while an outer enforcer's pass is pending (for ``target``/``tool``, if given)."""
    current = _PASS.get()
    if current is None:
        return False
    if target is None and tool is None:
        return True
    return _matches(current, target, tool)


def _matches(current: tuple[object | None, str | None], target: Any, tool: str | None) -> bool:
    """Whether the held pass covers this enforcer. When both sides name their tool, the names
    decide: a function guarded as ``stripe.refund`` but handed to a framework as
    ``refund_customer`` was only checked under the framework's name, so its own policy must
    still be consulted (same code, different policy). Code identity decides only when a name
    is missing."""
    held_target, held_tool = current
    if tool is not None and held_tool is not None:
        return held_tool == tool_key(tool)
    return target is not None and held_target is not None and held_target is _target_key(target)


# -- permits ----------------------------------------------------------------------------
class Permit:
    """Permission to run one call. Report how it went with :meth:`report` (or use it as a
    context manager around the tool run); reports go out in the background."""

    __slots__ = ("call_id", "tool", "decision", "status", "reason", "rule", "policy_version", "fail_open",
                 "_runtime", "_started", "_reported")

    def __init__(self, rt: Runtime, call_id: str, tool: str, data: Mapping[str, Any], *, fail_open: bool = False):
        self._runtime = rt
        self.call_id = call_id
        self.tool = tool
        self.decision: str = data.get("decision") or "allow"
        self.status: str = data.get("status") or ("fail_open" if fail_open else "allowed")
        self.reason: str | None = data.get("reason")
        self.rule: str | None = data.get("rule")
        self.policy_version: int | None = data.get("policy_version")
        self.fail_open = fail_open
        self._started = time.perf_counter()
        self._reported = False

    @property
    def allowed(self) -> bool:
        return True

    def start(self) -> None:
        """Restart the duration clock (call right before the tool runs)."""
        self._started = time.perf_counter()

    def report(self, status: str = "succeeded", *, error: BaseException | str | None = None,
               duration_ms: int | None = None) -> None:
        """Queue the outcome (``succeeded``/``failed``). Never blocks, never raises; once only."""
        if self._reported:
            return
        self._reported = True
        try:
            if duration_ms is None:
                duration_ms = int((time.perf_counter() - self._started) * 1000)
            payload = {"status": status, "error": _error_text(error, self._runtime), "duration_ms": duration_ms}
            if self.fail_open:
                self._runtime.reporter.spool_outcome(self.call_id, payload)
            else:
                self._runtime.reporter.submit_outcome(self.call_id, payload)
        except Exception:  # noqa: BLE001 - reporting must never break the agent
            log.exception("callgate: could not queue the outcome of %s", self.call_id)

    def __enter__(self) -> Permit:
        self.start()
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self.report("failed" if exc is not None else "succeeded", error=exc)

    def __repr__(self) -> str:
        return f"<Permit {self.tool} {self.call_id} {self.status}{' fail_open' if self.fail_open else ''}>"


def _error_text(error: BaseException | str | None, rt: Runtime) -> str | None:
    if error is None:
        return None
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    if len(text) > _MAX_ERROR:
        text = text[:_MAX_ERROR] + "...[truncated]"
    if rt.config.redact:
        r = _get_redactor()
        if r is not None:
            try:
                text = str(r(text).value)
            except Exception:  # noqa: BLE001
                text = type(error).__name__ if isinstance(error, BaseException) else "[unredactable error]"
    return text


def _get_redactor() -> Any:
    global _redactor
    if _redactor is None:
        try:
            from .redaction import redact
        except ImportError:
            log.warning("callgate: callgate.redaction is not available; arguments are sent unredacted")
            _redactor = _NO_REDACTOR
        else:
            _redactor = redact
    return None if _redactor is _NO_REDACTOR else _redactor


# -- the enforcement path -----------------------------------------------------------------
class _Call:
    __slots__ = ("rt", "call_id", "tool", "body", "fail_open", "resuming")

    def __init__(self, rt: Runtime, tool: str, args: Any, framework: str | None, metadata: Mapping[str, Any] | None,
                 session_id: str | None, fail_open: bool | None, call_id: str | None = None) -> None:
        if not isinstance(tool, str) or not tool:
            raise ValueError("tool name must be a non-empty string")
        self.rt = rt
        self.tool = tool
        self.call_id = _check_id(call_id) if call_id is not None else uuid7()
        self.resuming = False
        cfg = rt.config
        safe = to_jsonable(args if args is not None else {})
        if not isinstance(safe, dict):
            safe = {"args": safe}
        if cfg.redact:
            redact = _get_redactor()
            if redact is not None:
                safe = redact(safe).value
        body: dict[str, Any] = {"id": self.call_id, "tool": tool, "args": safe}
        if cfg.agent:
            body["agent"] = cfg.agent
        sid = session_id if session_id is not None else current_session()
        if sid is not None:
            body["session_id"] = sid
        if framework:
            body["framework"] = framework
        if metadata:
            body["metadata"] = to_jsonable(dict(metadata))
        body["fail_open"] = False
        self.body = body
        wants_open = fail_open if fail_open is not None else cfg.fail_mode == "open"
        self.fail_open = wants_open and os.environ.get("CALLGATE_SDK_FORCE_FAIL_CLOSED", "") not in ("1", "true", "yes")

    @classmethod
    def existing(cls, rt: Runtime, call_id: str) -> _Call:
        """A call made earlier (perhaps by a previous process), picked up again by its id."""
        self = cls.__new__(cls)
        self.rt = rt
        self.call_id = _check_id(call_id)
        self.tool = ""
        self.body = {}
        self.fail_open = False
        self.resuming = True
        return self

    # interpretation shared by both drivers -----------------------------------------
    def created(self, resp: Response) -> Permit | None:
        """Interpret the POST answer: Permit, None (pending) or raise."""
        raise_for_problem(resp, call_id=self.call_id, tool=self.tool)
        if self.rt.reporter.spool_dirty:
            self.rt.reporter.wake()  # the gateway answers again: upload the spool
        return self.interpret(resp)

    def interpret(self, resp: Response) -> Permit | None:
        """A Permit (allowed, or approved: then it still needs :meth:`claimed`), None (pending) or raise."""
        data = resp.json()
        if not isinstance(data, dict) or not isinstance(data.get("status"), str):
            raise GatewayUnavailable(f"malformed gateway answer (HTTP {resp.status})", call_id=self.call_id,
                                     tool=self.tool)
        if not self.tool and isinstance(data.get("tool"), str):
            self.tool = data["tool"]
        status = data["status"]
        if status == "allowed" and self.resuming:
            # An allowed call was claimed by the answer to its submission: whoever submitted it may
            # have run it already, so picking it up again by id must not run it a second time.
            raise AlreadyClaimed("an allowed call is claimed by its submission", call_id=self.call_id,
                                 tool=self.tool, status=status)
        if status in ("allowed", "approved"):
            return Permit(self.rt, self.call_id, self.tool, data)
        if status == "pending":
            return None
        if status == "blocked" or data.get("decision") == "block":
            raise CallBlocked(data.get("reason"), data.get("rule"), self.call_id, self.tool,
                              policy_version=data.get("policy_version"))
        if status == "denied":
            raise ApprovalDenied(data.get("comment") or data.get("reason"), call_id=self.call_id, tool=self.tool,
                                 decided_by=data.get("decided_by"))
        if status in ("expired", "cancelled"):
            raise ApprovalExpired(data.get("reason") or status, call_id=self.call_id, tool=self.tool)
        if status in ("succeeded", "failed", "running", "fail_open"):
            raise AlreadyClaimed(f"call {self.call_id} already ran or is running (status {status})",
                                 call_id=self.call_id, tool=self.tool, status=status)
        raise GatewayRejected(resp.status, "unknown_status", f"unknown call status {status!r}",
                              call_id=self.call_id, tool=self.tool)

    def claim_request(self) -> tuple[str, str, dict[str, Any], float]:
        return "POST", f"/v1/calls/{self.call_id}/claim", {}, time.monotonic() + self.rt.config.timeout

    def claimed(self, resp: Response) -> Permit:
        """Interpret the claim answer: the Permit to run now, or raise (never run)."""
        if resp.status == 409:
            problem = resp.json() if isinstance(resp.json(), dict) else {}
            if problem.get("code") == "already_claimed":
                raise AlreadyClaimed(problem.get("detail"), call_id=self.call_id, tool=self.tool,
                                     status=problem.get("call_status"))
        raise_for_problem(resp, call_id=self.call_id, tool=self.tool)
        data = resp.json()
        if not isinstance(data, dict) or data.get("claimed") is not True:
            raise GatewayUnavailable(f"malformed claim answer (HTTP {resp.status})", call_id=self.call_id,
                                     tool=self.tool)
        # The gateway now says "running"; the permit keeps saying how it was granted.
        return Permit(self.rt, self.call_id, self.tool, {**data, "status": "approved"})

    def fail_open_or_raise(self, exc: GatewayUnavailable) -> Permit:
        if not (self.fail_open and exc.allows_fail_open):
            raise exc
        rec = {
            "kind": "fail_open", "id": self.call_id, "tool": self.tool, "args": self.body["args"],
            "agent": self.body.get("agent"), "session_id": self.body.get("session_id"),
            "framework": self.body.get("framework"), "metadata": self.body.get("metadata"),
            "started_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "reason": exc.reason,
        }
        try:
            self.rt.spool.append(rec)  # durable BEFORE the tool runs: no unaudited execution
        except OSError as e:
            log.error("callgate: fail-open spool write failed (%s); failing closed", e)
            raise exc from e
        self.rt.reporter.mark_spooled()
        log.warning("callgate: gateway unavailable (%s); running read-only tool %s fail-open as %s",
                    exc.reason, self.tool, self.call_id)
        return Permit(self.rt, self.call_id, self.tool, {"decision": "allow", "status": "fail_open"}, fail_open=True)

    def wait_params(self, end: float) -> tuple[str, float, float]:
        remaining = end - time.monotonic()
        if remaining <= 0:
            raise ApprovalExpired(f"no decision within approval_timeout={self.rt.config.approval_timeout:g}s",
                                  call_id=self.call_id, tool=self.tool)
        # Never ask the gateway to hold longer than we will wait (floor), at least 1 s.
        wait = max(1, min(self.rt.config.poll_wait, math.floor(remaining)))
        # The long-poll read may legitimately take `wait` seconds: give it wait+5 (a little
        # past `end` so the gateway's answer to the last poll can still arrive).
        return f"/v1/calls/{self.call_id}?wait={wait}", wait + 5.0, min(end + 2.0, time.monotonic() + wait + 5.0)


def _check_id(call_id: str) -> str:
    import re

    if not isinstance(call_id, str) or not re.fullmatch(
            r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", call_id):
        raise ValueError(f"call id must be a UUID string, got {call_id!r}")
    return call_id.lower()


def _lost_backoff(failures: int) -> float:
    import random

    return random.uniform(0.0, min(2.0, 0.25 * 2**failures))


def _needs_claim(permit: Permit) -> bool:
    return permit.status == "approved"


def _settle(call: _Call, permit: Permit) -> Permit:
    """Sync: an approved call is claimed (once, ever) before it may run."""
    if not _needs_claim(permit):
        return permit
    method, path, body, deadline = call.claim_request()
    resp = call.rt.client.request(method, path, body, deadline=deadline, call_id=call.call_id, tool=call.tool)
    return call.claimed(resp)


async def _asettle(call: _Call, permit: Permit) -> Permit:
    if not _needs_claim(permit):
        return permit
    method, path, body, deadline = call.claim_request()
    resp = await call.rt.client.arequest(method, path, body, deadline=deadline, call_id=call.call_id,
                                         tool=call.tool)
    return call.claimed(resp)


def _wait(call: _Call, timeout: float, *, claim: bool = True) -> Permit:
    """Long-poll until a human decides (the gateway holds each request up to ``poll_wait``); a lost
    gateway is retried with backoff until ``timeout``, not bounded by the circuit breaker.

    ``claim=False`` (pending-approval handles) returns as soon as the call is approved, without
    claiming it: a handle claims only when it is about to run the tool (:func:`_claim_now`), so
    such a long-poll must never ask the gateway to claim (``GET ...?claim=1``) on its behalf."""
    rt = call.rt
    end = time.monotonic() + timeout
    failures = 0
    while True:
        path, read_timeout, deadline = call.wait_params(end)
        if claim:  # the gateway claims an approved call in the answer that reports it: no second round trip
            path += "&claim=1"
        try:
            resp = rt.client.request("GET", path, deadline=deadline, read_timeout=read_timeout, attempts=1,
                                     call_id=call.call_id, tool=call.tool or None, use_breaker=False)
        except GatewayUnavailable:
            failures += 1  # gateway lost while waiting: keep trying until approval_timeout
            time.sleep(min(max(0.0, end - time.monotonic()), _lost_backoff(failures)))
            continue
        failures = 0
        # A claim answer: won ({"claimed": true}) or lost (409 already_claimed). A gateway without
        # claim=1 answers "approved" instead, and _settle claims with a second request.
        if claim and (resp.status == 409 or (isinstance(data := resp.json(), dict) and data.get("claimed") is True)):
            return call.claimed(resp)
        raise_for_problem(resp, call_id=call.call_id, tool=call.tool or None)
        permit = call.interpret(resp)
        if permit is not None:
            return _settle(call, permit) if claim else permit


async def _await(call: _Call, timeout: float, *, claim: bool = True) -> Permit:
    """:func:`_wait` for coroutines (also what the shared waiter of ``async``-mode handles runs)."""
    import asyncio

    rt = call.rt
    end = time.monotonic() + timeout
    failures = 0
    while True:
        path, read_timeout, deadline = call.wait_params(end)
        if claim:  # see _wait
            path += "&claim=1"
        try:
            resp = await rt.client.arequest("GET", path, deadline=deadline, read_timeout=read_timeout, attempts=1,
                                            call_id=call.call_id, tool=call.tool or None, use_breaker=False)
        except GatewayUnavailable:
            failures += 1
            await asyncio.sleep(min(max(0.0, end - time.monotonic()), _lost_backoff(failures)))
            continue
        failures = 0
        if claim and (resp.status == 409 or (isinstance(data := resp.json(), dict) and data.get("claimed") is True)):
            return call.claimed(resp)
        raise_for_problem(resp, call_id=call.call_id, tool=call.tool or None)
        permit = call.interpret(resp)
        if permit is not None:
            return await _asettle(call, permit) if claim else permit


def _claim_now(call: _Call) -> Permit:
    """Claim a call believed approved (a handle's decision, a webhook event) and return the Permit
    to run it once.

    The claim is the authority, never what the caller believes: when the gateway refuses it for
    any reason other than "already claimed" (:class:`AlreadyClaimed`), the call's own state says
    why (denied -> :class:`ApprovalDenied` with the reviewer's comment, expired ->
    :class:`ApprovalExpired`), and a call that is not approved never runs, whatever a forged or
    stale "approved" said. Otherwise the refusal itself is raised (:class:`GatewayRejected`)."""
    method, path, body, deadline = call.claim_request()
    resp = call.rt.client.request(method, path, body, deadline=deadline, call_id=call.call_id,
                                  tool=call.tool or None)
    try:
        return call.claimed(resp)
    except GatewayRejected as refused:
        if refused.status != 409:
            raise
        state = call.rt.client.request("GET", f"/v1/calls/{call.call_id}",
                                       deadline=time.monotonic() + call.rt.config.timeout,
                                       call_id=call.call_id, tool=call.tool or None)
        _explain_refusal(call, state)
        raise


async def _aclaim_now(call: _Call) -> Permit:
    """:func:`_claim_now` for coroutines."""
    method, path, body, deadline = call.claim_request()
    resp = await call.rt.client.arequest(method, path, body, deadline=deadline, call_id=call.call_id,
                                         tool=call.tool or None)
    try:
        return call.claimed(resp)
    except GatewayRejected as refused:
        if refused.status != 409:
            raise
        state = await call.rt.client.arequest("GET", f"/v1/calls/{call.call_id}",
                                              deadline=time.monotonic() + call.rt.config.timeout,
                                              call_id=call.call_id, tool=call.tool or None)
        _explain_refusal(call, state)
        raise


def _explain_refusal(call: _Call, state: Response) -> None:
    """Raise what the call's state says about a refused claim (denied, expired, already run);
    return when it says nothing more (still pending): the caller re-raises the refusal."""
    raise_for_problem(state, call_id=call.call_id, tool=call.tool or None)
    call.interpret(state)


def existing_call(call_id: str, tool: str | None = None) -> _Call:
    """A call made earlier (by this process or another), to wait on or claim by its id."""
    call = _Call.existing(runtime(), call_id)
    if tool:
        call.tool = tool
    return call


def run_permitted(permit: Permit, fn: Callable[..., Any], args: tuple[Any, ...],
                  kwargs: Mapping[str, Any]) -> Any:
    """Run ``fn`` once under ``permit`` and report how it went; the tool's own exceptions propagate."""
    permit.start()
    try:
        result = fn(*args, **kwargs)
    except BaseException as e:
        permit.report("failed", error=e)
        raise
    permit.report("succeeded")
    return result


async def arun_permitted(permit: Permit, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...],
                         kwargs: Mapping[str, Any]) -> Any:
    """:func:`run_permitted` for coroutine functions."""
    permit.start()
    try:
        result = await fn(*args, **kwargs)
    except BaseException as e:
        permit.report("failed", error=e)
        raise
    permit.report("succeeded")
    return result


def _submit(tool: str, args: Mapping[str, Any] | None, *, framework: str | None, fail_open: bool | None,
            metadata: Mapping[str, Any] | None, session_id: str | None, call_id: str | None,
            approval_mode: ApprovalMode | None, runner: Callable[[Permit], Any] | None) -> Any:
    """The sync enforcement path shared by :func:`check_call` and sync guards: a Permit, a
    pending handle (whose ``result()`` is ``runner(claimed_permit)``; without a runner, the
    claimed Permit itself) or an exception."""
    rt = runtime()
    mode = rt.config.approval_mode if approval_mode is None else check_approval_mode(approval_mode)
    call = _Call(rt, tool, args, framework, metadata, session_id, fail_open, call_id)
    try:
        resp = rt.client.request("POST", "/v1/calls", call.body, deadline=time.monotonic() + rt.config.timeout,
                                 call_id=call.call_id, tool=tool)
    except GatewayUnavailable as e:
        return call.fail_open_or_raise(e)
    permit = call.created(resp)
    if permit is not None:
        return _settle(call, permit)
    if mode == "wait":
        return _wait(call, rt.config.approval_timeout)
    from ._pending import PendingApproval

    return PendingApproval(call, resp.json(), runner, mode)


async def _asubmit(tool: str, args: Mapping[str, Any] | None, *, framework: str | None,
                   fail_open: bool | None, metadata: Mapping[str, Any] | None, session_id: str | None,
                   call_id: str | None, approval_mode: ApprovalMode | None,
                   runner: Callable[[Permit], Awaitable[Any]] | None) -> Any:
    """:func:`_submit` for coroutines: never blocks the event loop; pending -> an async handle."""
    import asyncio

    rt = runtime()
    mode = rt.config.approval_mode if approval_mode is None else check_approval_mode(approval_mode)
    call = _Call(rt, tool, args, framework, metadata, session_id, fail_open, call_id)
    try:
        resp = await rt.client.arequest("POST", "/v1/calls", call.body,
                                        deadline=time.monotonic() + rt.config.timeout, call_id=call.call_id, tool=tool)
    except GatewayUnavailable as e:
        if call.fail_open and e.allows_fail_open:
            return await asyncio.to_thread(call.fail_open_or_raise, e)  # fsync off the loop
        raise
    permit = call.created(resp)
    if permit is not None:
        return await _asettle(call, permit)
    if mode == "wait":
        return await _await(call, rt.config.approval_timeout)
    from ._pending import AsyncPendingApproval

    return AsyncPendingApproval(call, resp.json(), runner, mode)


@overload
def check_call(tool: str, args: Mapping[str, Any] | None = ..., *, framework: str | None = ...,
               fail_open: bool | None = ..., metadata: Mapping[str, Any] | None = ...,
               session_id: str | None = ..., call_id: str | None = ...,
               approval_mode: Literal["wait"]) -> Permit: ...
@overload
def check_call(tool: str, args: Mapping[str, Any] | None = ..., *, framework: str | None = ...,
               fail_open: bool | None = ..., metadata: Mapping[str, Any] | None = ...,
               session_id: str | None = ..., call_id: str | None = ...,
               approval_mode: ApprovalMode | None = ...) -> Permit | PendingApproval[Permit]: ...


def check_call(tool: str, args: Mapping[str, Any] | None = None, *, framework: str | None = None,
               fail_open: bool | None = None, metadata: Mapping[str, Any] | None = None,
               session_id: str | None = None, call_id: str | None = None,
               approval_mode: ApprovalMode | None = None) -> Permit | PendingApproval[Permit]:
    """Ask the gateway whether ``tool`` may run with ``args``; block until it may.

    Returns a :class:`Permit` (allowed / approved / fail-open) or raises a
    :class:`~callgate.errors.CallgateError`: the tool must then not run. An approved call is
    claimed first (once, ever): if it was already claimed, :class:`~callgate.errors.AlreadyClaimed`.

    ``call_id`` (a UUID) lets the caller choose and persist the id before asking, so a process
    that dies while waiting can continue with :func:`resume`; by default a UUIDv7 is made.

    ``approval_mode`` (default: ``configure()``'s) decides what a call needing a human does:
    ``"wait"`` blocks as above; ``"async"`` and ``"webhook"`` return a
    :class:`~callgate.PendingApproval` at once, whose ``result()`` returns the claimed Permit
    once approved (run the tool, then report with it). Allowed and blocked calls are unaffected.
    """
    return _submit(tool, args, framework=framework, fail_open=fail_open, metadata=metadata,
                   session_id=session_id, call_id=call_id, approval_mode=approval_mode, runner=None)


@overload
async def acheck_call(tool: str, args: Mapping[str, Any] | None = ..., *, framework: str | None = ...,
                      fail_open: bool | None = ..., metadata: Mapping[str, Any] | None = ...,
                      session_id: str | None = ..., call_id: str | None = ...,
                      approval_mode: Literal["wait"]) -> Permit: ...
@overload
async def acheck_call(tool: str, args: Mapping[str, Any] | None = ..., *, framework: str | None = ...,
                      fail_open: bool | None = ..., metadata: Mapping[str, Any] | None = ...,
                      session_id: str | None = ..., call_id: str | None = ...,
                      approval_mode: ApprovalMode | None = ...) -> Permit | AsyncPendingApproval[Permit]: ...


async def acheck_call(tool: str, args: Mapping[str, Any] | None = None, *, framework: str | None = None,
                      fail_open: bool | None = None, metadata: Mapping[str, Any] | None = None,
                      session_id: str | None = None, call_id: str | None = None,
                      approval_mode: ApprovalMode | None = None) -> Permit | AsyncPendingApproval[Permit]:
    """:func:`check_call` for coroutines: same semantics, never blocks the event loop. In
    ``async``/``webhook`` mode a call needing a human returns an
    :class:`~callgate.AsyncPendingApproval` (``await handle.result()`` -> the claimed Permit)."""
    return await _asubmit(tool, args, framework=framework, fail_open=fail_open, metadata=metadata,
                          session_id=session_id, call_id=call_id, approval_mode=approval_mode,
                          runner=None)


def resume(call_id: str, *, timeout: float | None = None) -> Permit:
    """Pick up a call submitted earlier (e.g. before this process restarted) by its id: wait
    while it is pending, then return the :class:`Permit` to run it once (approved calls are
    claimed), or raise exactly as :func:`check_call` would (``ApprovalDenied``,
    ``ApprovalExpired``, ``CallBlocked``). A call that was allowed, or already claimed or run,
    raises :class:`~callgate.errors.AlreadyClaimed`: it must not run again.

    ``timeout`` defaults to ``approval_timeout``. Run the tool, then report with the Permit
    (``with permit: ...`` or ``permit.report(...)``).
    """
    rt = runtime()
    call = _Call.existing(rt, call_id)
    return _wait(call, rt.config.approval_timeout if timeout is None else timeout)


async def aresume(call_id: str, *, timeout: float | None = None) -> Permit:
    """:func:`resume` for coroutines."""
    rt = runtime()
    call = _Call.existing(rt, call_id)
    return await _await(call, rt.config.approval_timeout if timeout is None else timeout)


# -- guard --------------------------------------------------------------------------------
_DENIALS = (CallBlocked, ApprovalDenied, ApprovalExpired)


@overload
def guard(fn: F, /, *, name: str | None = ..., fail_open: bool | None = ..., raise_on_block: bool | None = ...,
          framework: str = ..., metadata: Mapping[str, Any] | None = ...,
          approval_mode: ApprovalMode | None = ...) -> F: ...
@overload
def guard(fn: None = ..., /, *, name: str | None = ..., fail_open: bool | None = ...,
          raise_on_block: bool | None = ..., framework: str = ...,
          metadata: Mapping[str, Any] | None = ...,
          approval_mode: ApprovalMode | None = ...) -> Callable[[F], F]: ...


def guard(fn: Any = None, /, *, name: str | None = None, fail_open: bool | None = None,
          raise_on_block: bool | None = None, framework: str = "guard",
          metadata: Mapping[str, Any] | None = None, approval_mode: ApprovalMode | None = None) -> Any:
    """Enforce policy on every call of a function (sync or async, function or method).

    ``@callgate.guard``, ``@callgate.guard(name="stripe.refund")`` or
    ``callgate.guard(fn, name=...)``. The tool name defaults to ``fn.__name__`` -- the name
    agent frameworks give a tool -- so pass ``name=`` for namespaced tools. Arguments are
    sent bound to parameter names (``self``/``cls`` dropped). The signature,
    ``__name__``, ``__doc__`` and ``__wrapped__`` are preserved (wrapt), so frameworks that
    build tool schemas by introspection see the original function.

    ``fail_open=True`` lets the tool run while the gateway is unreachable -- for read-only
    tools only; the run is spooled and uploaded later. ``raise_on_block=False`` returns
    the block/deny reason as a string instead of raising (default: ``configure()``'s).
    The tool's own exceptions propagate unchanged; its outcome is reported in the background.

    ``approval_mode`` (default: ``configure()``'s, read at each call): with ``"async"`` or
    ``"webhook"`` a call that needs a human returns a :class:`~callgate.PendingApproval` (an
    :class:`~callgate.AsyncPendingApproval` for ``async def`` functions) instead of the
    function's value, before anything ran; ``handle.result()`` runs the function once approved
    and returns its value. Allowed calls still run at once and return the value; blocked calls
    behave as in ``"wait"`` mode.
    """
    if approval_mode is not None:
        check_approval_mode(approval_mode)
    if fn is None:
        return lambda f: guard(f, name=name, fail_open=fail_open, raise_on_block=raise_on_block,
                               framework=framework, metadata=metadata, approval_mode=approval_mode)
    import inspect

    import wrapt

    tool = name or getattr(fn, "__name__", None) or type(fn).__name__
    try:
        sig: inspect.Signature | None = inspect.signature(fn)
    except (TypeError, ValueError):
        sig = None
    params = list(sig.parameters.values()) if sig is not None else []
    fn_is_bound = inspect.ismethod(fn)
    first_is_self = bool(params) and params[0].name in ("self", "cls") and not fn_is_bound
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    takes_instance = bool(params) and params[0].kind in positional and not fn_is_bound
    sig_tail = sig.replace(parameters=params[1:]) if sig is not None and takes_instance else sig

    def call_arguments(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        if fn_is_bound:
            return bind_arguments(sig, args, kwargs)
        if inspect.ismethod(wrapped):  # wrapt bound a classmethod / method for us
            return bind_arguments(sig_tail, args, kwargs)
        if instance is not None and takes_instance:
            return bind_arguments(sig, (instance, *args), kwargs, drop_first=True)
        return bind_arguments(sig, args, kwargs, drop_first=first_is_self)

    def denied(exc: CallgateError) -> Any:
        rob = raise_on_block if raise_on_block is not None else runtime().config.raise_on_block
        if rob is None or rob:  # configure()'s default (None) raises for guarded functions
            raise exc
        return str(exc)

    if inspect.iscoroutinefunction(fn):

        async def _arun(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            if take_pass(wrapped, tool=tool):
                return await wrapped(*args, **kwargs)

            async def run(permit: Permit) -> Any:  # now, or later by the handle's result()
                return await arun_permitted(permit, wrapped, args, kwargs)

            try:
                got = await _asubmit(tool, call_arguments(wrapped, instance, args, kwargs),
                                     framework=framework, fail_open=fail_open, metadata=metadata,
                                     session_id=None, call_id=None, approval_mode=approval_mode, runner=run)
            except _DENIALS as e:
                return denied(e)
            if not isinstance(got, Permit):
                return got  # a pending-approval handle: nothing ran yet
            return await run(got)

        @wrapt.decorator
        def _awrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            return _arun(wrapped, instance, args, kwargs)

        return _awrapper(fn)

    @wrapt.decorator
    def _wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        if take_pass(wrapped, tool=tool):
            return wrapped(*args, **kwargs)

        def run(permit: Permit) -> Any:  # now, or later by the handle's result()
            return run_permitted(permit, wrapped, args, kwargs)

        try:
            got = _submit(tool, call_arguments(wrapped, instance, args, kwargs), framework=framework,
                          fail_open=fail_open, metadata=metadata, session_id=None, call_id=None,
                          approval_mode=approval_mode, runner=run)
        except _DENIALS as e:
            return denied(e)
        if not isinstance(got, Permit):
            return got  # a pending-approval handle: nothing ran yet
        return run(got)

    return _wrapper(fn)

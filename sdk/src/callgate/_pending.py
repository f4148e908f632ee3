"""Pending-approval handles: what a call returns in ``approval_mode="async"`` or ``"webhook"``
when a human must decide.

::

    @callgate.guard(approval_mode="async")
    def refund(customer_id: str, amount: int) -> str: ...

    handle = refund("cus_1", 900)       # needs a human: returns at once, nothing ran
    handle.add_done_callback(notify)    # notify(handle) once the decision is known
    value = handle.result(timeout=60)   # waits if needed, claims, runs refund once, returns its value

Two classes, because blocking and awaiting do not mix: :class:`PendingApproval` (from a sync
guard or :func:`~callgate.check_call`) has a blocking ``result()``;
:class:`AsyncPendingApproval` (from an ``async def`` guard or :func:`~callgate.acheck_call`)
has ``async def result()``, which never blocks the event loop. Everything else is shared.

**The decision.** ``status`` is ``"pending"`` until the decision is known, then
``"approved"``, ``"denied"``, ``"expired"`` or ``"failed"`` (no decision could be had: the
gateway refused to answer, or callgate was reset or reconfigured meanwhile). Where it comes from:

* ``async`` mode: a background long-poll, the same wait path as ``approval_mode="wait"``. For
  :class:`PendingApproval` it runs on the one shared waiter thread (``callgate._waiter``), so
  any number of pending handles costs one thread; for :class:`AsyncPendingApproval` it is a
  task on the event loop that made the handle (no thread at all);
* ``webhook`` mode: nothing polls. :func:`callgate.webhooks.dispatch` resolves the handle when
  the application hands it the gateway's signed event; calling ``result()`` before that starts
  the same background long-poll as ``async`` mode (so ``result()`` always ends);
* every mode: ``approval_timeout`` after the submission an undecided handle expires
  (:class:`~callgate.ApprovalExpired`), exactly as a waiting call would.

**The run.** A decision alone runs nothing: ``result()`` (called by the application, perhaps
from a callback) or ``webhooks.dispatch`` of an approved event claims the call at the gateway
-- the one-shot claim is the authority, never a callback or a webhook's word -- and only then
runs the tool with the arguments it was called with. At most once, whatever the
number of concurrent ``result()`` calls: the first runs it, the others wait for it and share
its outcome (the value, or the exception). A handle from ``check_call`` has no tool to run:
its ``result()`` returns the claimed :class:`~callgate.Permit` (run the tool, report with it).
``result(timeout=)`` bounds only the waiting; it raises :class:`TimeoutError` and the handle
stays usable. Denied: :class:`~callgate.ApprovalDenied` with the reviewer's ``comment``.

**Callbacks** (``add_done_callback(fn)``) are called once, with the handle, when the decision
is known (at once if it already is). For :class:`PendingApproval` they run one at a time on a
background thread (calling ``handle.result()`` there is fine and runs the tool there); for
:class:`AsyncPendingApproval` on the handle's event loop, like ``asyncio.Future`` callbacks.
An exception in a callback is logged, never propagated.

Handles of this process are findable by :func:`callgate.webhooks.dispatch` by call id until
:data:`RETAIN_SECONDS` after their ``approval_timeout``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ._guard import Permit, _aclaim_now, _await, _claim_now
from ._latch import Latch
from .errors import (
    AlreadyClaimed,
    ApprovalDenied,
    ApprovalExpired,
    CallgateError,
    GatewayRejected,
    GatewayUnavailable,
)

if TYPE_CHECKING:
    import asyncio
    from typing import Self

    from ._config import Runtime
    from ._guard import _Call

__all__ = ["RETAIN_SECONDS", "AsyncPendingApproval", "PendingApproval", "dispatch_decision", "runtime_closed"]

log = logging.getLogger("callgate")
T = TypeVar("T")

#: How long after its ``approval_timeout`` a handle stays findable by ``webhooks.dispatch``: a
#: late delivery for a call this process already gave up on is recognised (and does not run)
#: rather than falling through to the application's ``event.run`` fallback.
RETAIN_SECONDS = 300.0


def _status_of(error: BaseException) -> str:
    if isinstance(error, ApprovalDenied):
        return "denied"
    if isinstance(error, ApprovalExpired):
        return "expired"
    if isinstance(error, AlreadyClaimed):
        return "approved"  # approved, and claimed by someone else: it will not run here
    return "failed"


def _left(end: float | None) -> float | None:
    return None if end is None else max(0.0, end - time.monotonic())


class _Handle(Generic[T]):
    """Everything the two handle types share: identity, decision, callbacks, the once-only run."""

    __slots__ = ("call_id", "tool", "args", "reason", "rule", "expires_at", "approval_mode", "_call",
                 "_runner", "_runs_tool", "_deadline", "_lock", "_status", "_error", "_decided",
                 "_attempt", "_running", "_outcome", "_callbacks", "_polling", "__weakref__")

    def __init__(self, call: _Call, answer: Any, runner: Callable[[Permit], Any] | None, mode: str) -> None:
        answer = answer if isinstance(answer, dict) else {}
        #: the call's id at the gateway (``callgate.resume(call_id)`` picks it up from another process)
        self.call_id: str = call.call_id
        self.tool: str = call.tool
        #: the arguments as the gateway and the reviewer see them (JSON-safe, redacted)
        self.args: dict[str, Any] = call.body.get("args", {})
        #: why the policy wants a human (the gateway's answer to the submission)
        self.reason: str | None = answer.get("reason")
        self.rule: str | None = answer.get("rule")
        #: when the gateway expires the approval (RFC 3339), if it said
        self.expires_at: str | None = answer.get("expires_at")
        self.approval_mode: str = mode
        self._call = call
        #: False for a check_call handle: its result() hands the claimed Permit to the caller
        self._runs_tool = runner is not None
        self._runner: Callable[[Permit], Any] | None = runner or self._permit_itself
        self._deadline = time.monotonic() + call.rt.config.approval_timeout
        self._lock = threading.Lock()
        self._status = "pending"
        self._error: CallgateError | None = None  # the decision, when it is "the tool must not run"
        self._decided = Latch()
        self._attempt: Latch | None = None  # set when the current claim-and-run attempt ends, either way
        self._running = False
        self._outcome: tuple[bool, Any] | None = None  # (ok, value or exception) of the one run
        self._callbacks: list[Callable[[Any], object]] = []
        self._polling: object = None
        _register(self)
        self._watch(poll=mode == "async")

    # -- the public, non-blocking part --------------------------------------------------
    @property
    def status(self) -> str:
        """``pending``, then ``approved``, ``denied``, ``expired`` or ``failed``."""
        return self._status

    def done(self) -> bool:
        """True once the decision is known (the tool may or may not have run yet)."""
        return self._decided.is_set()

    def add_done_callback(self, fn: Callable[[Self], object]) -> None:
        """Call ``fn(handle)`` once when the decision is known; at once (in this thread) if it is."""
        with self._lock:
            if not self._decided.is_set():
                self._callbacks.append(fn)
                return
        self._invoke(fn)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.tool} {self.call_id} {self._status}>"

    # -- resolution (from any thread) ---------------------------------------------------
    def _decide(self, status: str, error: CallgateError | None, *, claim: bool = False) -> bool:
        """Record the decision once; later calls change nothing, except the claim's verdict
        (``claim=True``), which is the authority: a refusal overrules an "approved", and a
        successful claim overrules whatever a (wrong) event said meanwhile."""
        with self._lock:
            if self._decided.is_set():
                if claim and (error is None or self._status == "approved"):
                    self._status, self._error = status, error
                return False
            self._status = status
            self._error = error
            if error is not None and not self._running:
                self._runner = None  # it will never run: let go of the arguments
            callbacks, self._callbacks = self._callbacks, []
        self._decided.set()
        for fn in callbacks:
            self._schedule(fn)
        return True

    def _expire_if_overdue(self) -> None:
        if not self._decided.is_set() and self._remaining() <= 0:
            timeout = self._call.rt.config.approval_timeout
            self._decide("expired", ApprovalExpired(f"no decision within approval_timeout={timeout:g}s",
                                                    call_id=self.call_id, tool=self.tool))

    def _abandon(self, error: CallgateError) -> None:
        """The runtime this handle talks through is gone: it can neither be decided nor claimed."""
        self._decide("failed", error)
        with self._lock:
            if self._outcome is not None or self._running or self._status != "approved":
                return
            self._outcome = (False, error)
            self._runner = None

    def _remaining(self) -> float:
        return self._deadline - time.monotonic()

    def _retained(self, now: float) -> bool:
        return now < self._deadline + RETAIN_SECONDS

    def _invoke(self, fn: Callable[[Any], object]) -> None:
        try:
            fn(self)
        except Exception:  # noqa: BLE001 - a callback's failure is the application's, never the SDK's
            log.exception("callgate: done callback %r of %s raised", fn, self.call_id)

    # -- the once-only run ---------------------------------------------------------------
    def _begin(self) -> Callable[[Permit], Any] | None:
        """Take the right to claim and run: the runner, or None if another thread or task has it
        (or had it), or if the decision already forbids running."""
        with self._lock:
            if self._running or self._outcome is not None or self._error is not None or self._runner is None:
                return None
            self._running = True
            self._attempt = Latch()
            return self._runner

    def _release(self) -> None:
        """The claim did not happen (or may not have): a later ``result()`` may try again. Safe:
        a claim that did go through answers 409 already_claimed to the retry, and nothing runs."""
        with self._lock:
            self._running = False
            if self._error is not None:
                self._runner = None
            attempt = self._attempt
        if attempt is not None:
            attempt.set()  # whoever waited for this attempt looks again (and may claim itself)

    def _finish(self, ok: bool, value: Any) -> None:
        with self._lock:
            self._outcome = (ok, value)
            self._running = False
            self._runner = None
            attempt = self._attempt
        if attempt is not None:
            attempt.set()

    def _refused(self, error: CallgateError) -> bool:
        """The claim was refused. True: final (recorded); False: the call is still pending at the
        gateway (whoever said "approved" was wrong), so the handle stays pending."""
        if isinstance(error, GatewayRejected) and error.code == "not_approved":
            self._release()
            return False
        self._decide(_status_of(error), error, claim=True)
        self._finish(False, error)
        return True

    def _interrupted(self, error: BaseException) -> None:
        """The run was interrupted after its claim (cancelled, KeyboardInterrupt): it must not
        run again, and every other waiter is told so."""
        self._finish(False, AlreadyClaimed(
            f"the run was interrupted after its claim ({type(error).__name__})",
            call_id=self.call_id, tool=self.tool, status="running"))

    def _state(self) -> tuple[tuple[bool, Any] | CallgateError | None, Latch | None]:
        """(the outcome of the run, else the decision if it forbids running, else None;
        the latch of an attempt in progress elsewhere, if any)."""
        with self._lock:
            settled = self._outcome if self._outcome is not None else self._error
            return settled, self._attempt if self._running else None

    @staticmethod
    def _unwrap(settled: tuple[bool, Any] | CallgateError) -> Any:
        if isinstance(settled, BaseException):
            raise settled
        ok, value = settled
        if not ok:
            raise value
        return value

    def _timed_out(self, timeout: float | None, what: str) -> TimeoutError:
        return TimeoutError(f"callgate: {what} for {self.tool} ({self.call_id}) within {timeout:g}s; "
                            "the handle is still usable")

    # -- per-type hooks -----------------------------------------------------------------
    @staticmethod
    def _permit_itself(permit: Permit) -> Any:
        raise NotImplementedError

    def _watch(self, *, poll: bool) -> None:
        raise NotImplementedError

    def _schedule(self, fn: Callable[[Any], object]) -> None:
        raise NotImplementedError

    def _dispatch_approved(self) -> bool:
        raise NotImplementedError

    def _dispatch(self, status: str, comment: str | None, decided_by: str | None) -> bool:
        """A verified webhook event for this call arrived (see :func:`dispatch_decision`)."""
        self._expire_if_overdue()
        if status == "approved":
            with self._lock:
                forbidden = self._error is not None
            if forbidden:
                return True
            if not self._runs_tool:
                # No tool to run here: record the news; result() claims (and the claim decides)
                # and hands the Permit to the caller, who runs the tool and reports with it.
                self._decide("approved", None)
                return True
            return self._dispatch_approved()
        if status == "denied":
            error: CallgateError = ApprovalDenied(comment, call_id=self.call_id, tool=self.tool,
                                                  decided_by=decided_by)
        else:
            error = ApprovalExpired("the approval expired", call_id=self.call_id, tool=self.tool)
        self._decide(status, error)
        return True


class PendingApproval(_Handle[T]):
    """A call waiting for a human, from a sync guard or :func:`~callgate.check_call` in
    ``async``/``webhook`` approval mode. See the module documentation for the full contract."""

    __slots__ = ()

    @staticmethod
    def _permit_itself(permit: Permit) -> Any:
        return permit

    def result(self, timeout: float | None = None) -> T:
        """Wait for the decision (up to ``timeout`` seconds, else :class:`TimeoutError`), claim the
        call, run the tool once and return its value (a ``check_call`` handle: the claimed
        Permit). Raises :class:`~callgate.ApprovalDenied`, :class:`~callgate.ApprovalExpired`,
        :class:`~callgate.AlreadyClaimed`, or the tool's own exception. In ``webhook`` mode a
        first call starts the background long-poll (the webhook may still arrive first)."""
        end = None if timeout is None else time.monotonic() + max(0.0, timeout)
        if not self._decided.is_set():
            self._expire_if_overdue()
            self._watch(poll=True)
            if not self._decided.wait(_left(end)):
                raise self._timed_out(timeout, "no decision")
        while True:
            settled, running = self._state()
            if settled is not None:
                return self._unwrap(settled)  # type: ignore[no-any-return]
            if running is None:
                self._execute()  # claims and runs here (or lost the race to another thread: look again)
            elif not running.wait(_left(end)):
                raise self._timed_out(timeout, "the run (started elsewhere) did not finish")

    def _execute(self) -> bool:
        """Claim and run here, unless another thread has it. GatewayUnavailable (the claim's fate
        unknown) propagates and leaves the handle runnable."""
        runner = self._begin()
        if runner is None:
            return False
        try:
            permit = _claim_now(self._call)
        except GatewayUnavailable:
            self._release()
            raise
        except CallgateError as e:
            if not self._refused(e):
                raise
            return True
        except BaseException:
            self._release()
            raise
        self._decide("approved", None, claim=True)
        try:
            value = runner(permit)
        except Exception as e:  # noqa: BLE001 - the tool's own failure is its outcome
            self._finish(False, e)
        except BaseException as e:
            self._interrupted(e)
            raise
        else:
            self._finish(True, value)
        return True

    def _watch(self, *, poll: bool) -> None:
        with self._lock:
            if self._polling or self._decided.is_set():
                return
            if poll:
                self._polling = True
        from . import _waiter

        _waiter.spawn(lambda: _watch(self, poll))

    def _schedule(self, fn: Callable[[Any], object]) -> None:
        from . import _waiter

        _waiter.call_back(self._invoke, fn)

    def _dispatch_approved(self) -> bool:
        self._execute()  # runs the tool here, in the receiver's thread (or waits for nobody: ran already)
        return True


class AsyncPendingApproval(_Handle[T]):
    """A call waiting for a human, from an ``async def`` guard or :func:`~callgate.acheck_call`
    in ``async``/``webhook`` approval mode: ``await handle.result()``. Made inside a running
    event loop; its background wait and its callbacks run on that loop."""

    __slots__ = ("_loop",)

    @staticmethod
    async def _permit_itself(permit: Permit) -> Any:
        return permit

    def __init__(self, call: _Call, answer: Any, runner: Callable[[Permit], Awaitable[Any]] | None,
                 mode: str) -> None:
        import asyncio

        self._loop: asyncio.AbstractEventLoop = asyncio.get_running_loop()
        super().__init__(call, answer, runner, mode)

    async def result(self, timeout: float | None = None) -> T:
        """:meth:`PendingApproval.result` for coroutines: every wait is awaited, never blocking."""
        import asyncio

        self._loop = asyncio.get_running_loop()  # the loop it is used from now (callbacks, dispatch)
        end = None if timeout is None else time.monotonic() + max(0.0, timeout)
        if not self._decided.is_set():
            self._expire_if_overdue()
            self._watch(poll=True)
            if not await self._decided.wait_async(_left(end)):
                raise self._timed_out(timeout, "no decision")
        while True:
            settled, running = self._state()
            if settled is not None:
                return self._unwrap(settled)  # type: ignore[no-any-return]
            if running is None:
                await self._execute()
            elif not await running.wait_async(_left(end)):
                raise self._timed_out(timeout, "the run (started elsewhere) did not finish")

    async def _execute(self) -> bool:
        runner = self._begin()
        if runner is None:
            return False
        try:
            permit = await _aclaim_now(self._call)
        except GatewayUnavailable:
            self._release()
            raise
        except CallgateError as e:
            if not self._refused(e):
                raise
            return True
        except BaseException:  # cancelled during the claim: a later result() claims again
            self._release()
            raise
        self._decide("approved", None, claim=True)
        try:
            value = await runner(permit)
        except Exception as e:  # noqa: BLE001 - the tool's own failure is its outcome
            self._finish(False, e)
        except BaseException as e:  # cancelled mid-run: claimed, so it never runs again
            self._interrupted(e)
            raise
        else:
            self._finish(True, value)
        return True

    def _watch(self, *, poll: bool) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        with self._lock:
            if self._decided.is_set():
                return
            if poll:
                if self._polling is loop and not loop.is_closed():
                    return
                self._polling = loop
        _keep(loop.create_task(_watch(self, poll)))

    def _schedule(self, fn: Callable[[Any], object]) -> None:
        try:
            self._loop.call_soon_threadsafe(self._invoke, fn)
        except RuntimeError:  # its loop is closed: nobody there to call it on
            self._invoke(fn)

    def _dispatch_approved(self) -> bool:
        import asyncio

        loop = self._loop
        if loop.is_closed() or not loop.is_running():
            return False  # the application that awaited it is gone: let the caller fall back
        asyncio.run_coroutine_threadsafe(self._run_dispatched(), loop)
        return True

    async def _run_dispatched(self) -> None:
        try:
            await self._execute()
        except GatewayUnavailable as e:
            log.warning("callgate: could not claim %s after its approval arrived (%s); "
                        "result() will try again", self.call_id, e.reason)
        except CallgateError as e:
            log.warning("callgate: the approval event for %s was refused by the gateway: %s", self.call_id, e)


# -- background waiting (a coroutine; on the shared waiter loop or the handle's own) ----------
_tasks: set[asyncio.Task[Any]] = set()


def _keep(task: asyncio.Task[Any]) -> None:
    """Hold a strong reference until the task ends (the event loop keeps only a weak one)."""
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


async def _watch(handle: _Handle[Any], poll: bool) -> None:
    """Until the handle is decided by anyone: long-poll for the decision (``poll``) or just
    expire it at its deadline (webhook mode, where the decision arrives by webhook)."""
    import asyncio

    decided = asyncio.ensure_future(handle._decided.wait_async())
    work = asyncio.ensure_future(_poll(handle) if poll else _expire_at_deadline(handle))
    try:
        await asyncio.wait((decided, work), return_when=asyncio.FIRST_COMPLETED)
    finally:
        decided.cancel()
        work.cancel()


async def _poll(handle: _Handle[Any]) -> None:
    try:
        await _await(handle._call, handle._remaining(), claim=False)
    except CallgateError as e:
        handle._decide(_status_of(e), e)
    except Exception as e:  # noqa: BLE001 - an SDK bug must not leave the handle pending forever
        log.exception("callgate: unexpected error while waiting for the decision on %s", handle.call_id)
        handle._decide("failed", GatewayUnavailable(f"unexpected error while waiting for the decision: {e!r}",
                                                    call_id=handle.call_id, tool=handle.tool))
    else:
        handle._decide("approved", None)


async def _expire_at_deadline(handle: _Handle[Any]) -> None:
    import asyncio

    await asyncio.sleep(max(0.0, handle._remaining()))
    handle._expire_if_overdue()


# -- this process's handles, by call id (for webhooks.dispatch) -------------------------------
_registry_lock = threading.Lock()
_registry: OrderedDict[str, _Handle[Any]] = OrderedDict()


def _register(handle: _Handle[Any]) -> None:
    now = time.monotonic()
    with _registry_lock:
        while _registry:  # oldest first: drop what is past its retention (amortized O(1))
            oldest = next(iter(_registry.values()))
            if oldest._retained(now):
                break
            _registry.popitem(last=False)
        _registry[handle.call_id] = handle
        _registry.move_to_end(handle.call_id)


def lookup(call_id: str) -> _Handle[Any] | None:
    """The live handle of this process for ``call_id``, if any."""
    key = call_id.lower()
    with _registry_lock:
        handle = _registry.get(key)
        if handle is not None and not handle._retained(time.monotonic()):
            del _registry[key]
            return None
        return handle


def dispatch_decision(call_id: str, status: str, comment: str | None, decided_by: str | None) -> bool:
    """Hand a verified decision to this process's handle for ``call_id``: approved -> claim and
    run it (a sync handle in this thread, an async one on its event loop; a handle without a
    tool is only marked approved); denied/expired -> resolve it. False when no live handle has
    that id (the caller falls back to running the call itself through the claim)."""
    handle = lookup(call_id)
    if handle is None:
        return False
    if not handle._dispatch(status, comment, decided_by):
        with _registry_lock:
            if _registry.get(handle.call_id) is handle:
                del _registry[handle.call_id]
        return False
    return True


def runtime_closed(rt: Runtime) -> None:
    """``callgate.reset()`` or a reconfigure closed ``rt``: its handles can never resolve now."""
    with _registry_lock:
        gone = [h for h in _registry.values() if h._call.rt is rt]
        for handle in gone:
            del _registry[handle.call_id]
    for handle in gone:
        handle._abandon(GatewayUnavailable(
            "callgate was reset or reconfigured while the call waited for its approval; pick it up again "
            "with callgate.resume(call_id)",
            call_id=handle.call_id, tool=handle.tool, allows_fail_open=False))

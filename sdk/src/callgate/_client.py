"""Gateway client: retry policy, circuit breaker, problem+json -> exceptions.

The policy (security.md §5.4) is written once, as :class:`_Attempts`, and driven by two
thin loops: :meth:`GatewayClient.request` (blocking socket pool) and
:meth:`GatewayClient.arequest` (per-loop asyncio pool).

* at most ``attempts`` (3) tries, full-jitter backoff ``uniform(0, min(2, 0.25 * 2**n))``,
  all inside the caller's deadline; the body (and so the call id) is identical each time;
* 5xx and transport errors are retried and count towards the breaker;
* 429 is retried after ``Retry-After`` if that fits in the deadline, and never allows
  fail-open; other 4xx are returned to the caller (misconfiguration: never retried);
* an open breaker fails instantly with zero network attempts.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

from ._circuit import CircuitBreaker
from ._http import Response
from ._transport import Origin, SyncPool, TransportError
from .errors import GatewayRejected, GatewayUnavailable

__all__ = ["GatewayClient", "encode_json", "raise_for_problem"]


def encode_json(obj: Any) -> bytes:
    """Compact UTF-8 JSON. Lone surrogates (un-encodable) are replaced, not sent."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace")


def raise_for_problem(resp: Response, *, call_id: str | None = None, tool: str | None = None) -> None:
    """Raise :class:`GatewayRejected` for any non-2xx answer (RFC 9457 body if present)."""
    if 200 <= resp.status < 300:
        return
    problem = resp.json()
    if not isinstance(problem, dict):
        problem = {}
    errors = problem.get("errors")
    raise GatewayRejected(
        resp.status,
        problem.get("code") if isinstance(problem.get("code"), str) else None,
        problem.get("detail") if isinstance(problem.get("detail"), str) else (problem.get("title") or resp.reason or None),
        call_id=call_id,
        tool=tool,
        errors=errors if isinstance(errors, list) else None,
    )


def _retry_after(resp: Response) -> float | None:
    raw = resp.headers.get("retry-after")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None  # HTTP-date form: fall back to our own backoff


class _Attempts:
    """One logical request's retry state; shared by the sync and async drivers."""

    __slots__ = ("breaker", "deadline", "max_attempts", "made", "call_id", "tool", "last", "rate_limited")

    def __init__(self, breaker: CircuitBreaker, deadline: float, max_attempts: int,
                 call_id: str | None, tool: str | None) -> None:
        self.breaker = breaker
        self.deadline = deadline
        self.max_attempts = max_attempts
        self.made = 0
        self.call_id = call_id
        self.tool = tool
        self.last = ""
        self.rate_limited = False

    def before(self) -> None:
        """Gate one network attempt: circuit and deadline."""
        if time.monotonic() >= self.deadline:
            self._give_up("decision deadline reached")
        if not self.breaker.allow():
            self._give_up("circuit open (gateway failed repeatedly; failing closed without a network call)")
        self.made += 1

    def after(self, result: Response | TransportError) -> Response | float:
        """Classify the attempt: a Response to hand back, or seconds to sleep before retrying."""
        delay: float | None = None
        if isinstance(result, TransportError):
            self.breaker.failure()
            self.last = str(result)
            self.rate_limited = False
        elif result.status >= 500 or result.status == 408:
            if result.status >= 500:
                self.breaker.failure()
            else:
                self.breaker.success()
            self.last = f"HTTP {result.status}"
            self.rate_limited = False
        elif result.status == 429:
            self.breaker.success()
            self.last = "HTTP 429 rate limited"
            self.rate_limited = True
            delay = _retry_after(result)
        else:
            self.breaker.success()
            return result
        if self.made >= self.max_attempts:
            self._give_up(f"{self.last} after {self.made} attempt(s)")
        if delay is None:
            delay = random.uniform(0.0, min(2.0, 0.25 * 2**self.made))
        if time.monotonic() + delay >= self.deadline:
            self._give_up(f"{self.last}; next retry would pass the decision deadline")
        return delay

    def interrupted(self) -> None:
        """The attempt ended by an exception we do not classify (e.g. cancellation)."""
        self.breaker.release_probe()

    def _give_up(self, reason: str) -> None:
        raise GatewayUnavailable(
            reason, call_id=self.call_id, tool=self.tool, attempts=self.made,
            status=429 if self.rate_limited else None, allows_fail_open=not self.rate_limited,
        )


class _NoBreaker:
    """For long-polls on an approval: they keep trying until approval_timeout (security.md §5.4,
    "gateway lost while waiting"), so they neither consult nor trip the circuit breaker."""

    def allow(self) -> bool:
        return True

    def success(self) -> None:
        pass

    def failure(self) -> None:
        pass

    def release_probe(self) -> None:
        pass


_NO_BREAKER: Any = _NoBreaker()


class GatewayClient:
    """Talks to one gateway origin. Thread-safe; one per configure()."""

    def __init__(self, origin: Origin, breaker: CircuitBreaker, *, connect_timeout: float = 2.0,
                 read_timeout: float = 10.0, max_connections: int = 32) -> None:
        self.origin = origin
        self.breaker = breaker
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.pool = SyncPool(origin, max_connections=max_connections, connect_timeout=connect_timeout)

    def request(self, method: str, path: str, payload: Any = None, *, deadline: float,
                read_timeout: float | None = None, attempts: int = 3, call_id: str | None = None,
                tool: str | None = None, use_breaker: bool = True) -> Response:
        """Blocking request with the retry policy. Returns any 2xx/4xx (not 408/429)."""
        body = None if payload is None else encode_json(payload)
        state = _Attempts(self.breaker if use_breaker else _NO_BREAKER, deadline, attempts, call_id, tool)
        rt = read_timeout or self.read_timeout
        while True:
            state.before()
            try:
                result: Response | TransportError = self.pool.request(
                    method, path, body, read_timeout=rt, deadline=deadline)
            except TransportError as e:
                result = e
            except BaseException:
                state.interrupted()
                raise
            outcome = state.after(result)
            if isinstance(outcome, Response):
                return outcome
            time.sleep(outcome)

    async def arequest(self, method: str, path: str, payload: Any = None, *, deadline: float,
                       read_timeout: float | None = None, attempts: int = 3, call_id: str | None = None,
                       tool: str | None = None, use_breaker: bool = True) -> Response:
        """Same as :meth:`request`, on the running event loop's pool; never blocks the loop."""
        import asyncio

        from ._aio import pool_for_loop

        pool = pool_for_loop(self.origin, self.connect_timeout)
        body = None if payload is None else encode_json(payload)
        state = _Attempts(self.breaker if use_breaker else _NO_BREAKER, deadline, attempts, call_id, tool)
        rt = read_timeout or self.read_timeout
        while True:
            state.before()
            try:
                result: Response | TransportError = await pool.request(
                    method, path, body, read_timeout=rt, deadline=deadline)
            except TransportError as e:
                result = e
            except BaseException:
                state.interrupted()
                raise
            outcome = state.after(result)
            if isinstance(outcome, Response):
                return outcome
            await asyncio.sleep(outcome)

    def close(self) -> None:
        self.pool.close()

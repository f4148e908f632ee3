"""Per-gateway-URL circuit breaker (security.md §5.4), ~40 lines instead of a dependency.

closed --5 consecutive transport failures--> open (30 s: every call fails closed with 0
network attempts) --> half-open (exactly one probe goes out) --success--> closed,
--failure--> open again. Shared by the sync and async drivers and by every thread.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

__all__ = ["CircuitBreaker", "breaker_for", "reset_breakers"]


class CircuitBreaker:
    def __init__(self, threshold: int = 5, reset_after: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = threshold
        self.reset_after = reset_after
        self.clock = clock
        self._lock = threading.Lock()
        self.failures = 0
        self.opened_at: float | None = None
        self._probe_out = False

    @property
    def state(self) -> str:
        with self._lock:
            if self.opened_at is None:
                return "closed"
            return "half_open" if self.clock() - self.opened_at >= self.reset_after else "open"

    def allow(self) -> bool:
        """May a request go out now? In half-open, only the first caller (the probe) may."""
        with self._lock:
            if self.opened_at is None:
                return True
            if self.clock() - self.opened_at < self.reset_after or self._probe_out:
                return False
            self._probe_out = True
            return True

    def success(self) -> None:
        with self._lock:
            self.failures = 0
            self.opened_at = None
            self._probe_out = False

    def failure(self) -> None:
        with self._lock:
            self.failures += 1
            if self._probe_out or self.failures >= self.threshold:
                self.opened_at = self.clock()
                self._probe_out = False

    def release_probe(self) -> None:
        """The probe ended without a verdict on the gateway's health (e.g. cancelled)."""
        with self._lock:
            self._probe_out = False


_lock = threading.Lock()
_breakers: dict[str, CircuitBreaker] = {}


def breaker_for(url: str, threshold: int = 5, reset_after: float = 30.0) -> CircuitBreaker:
    with _lock:
        b = _breakers.get(url)
        if b is None or (b.threshold, b.reset_after) != (threshold, reset_after):
            b = _breakers[url] = CircuitBreaker(threshold, reset_after)
        return b


def reset_breakers() -> None:
    with _lock:
        _breakers.clear()


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()
    for b in _breakers.values():
        b._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

"""Login rate limiting (security.md §3.8), in process.

Two limits guard ``POST /login``:

* per normalized username: 5 **failures** in a moving 15-minute window. Once reached, every login
  for that name -- even with the right password -- answers 429 with ``Retry-After`` until the
  oldest failure leaves the window. Unknown names are counted the same way, so the limiter never
  reveals which accounts exist.
* per client IP: 30 **attempts** a minute, whatever the username (slows spraying one password over
  many names).

This store lives in the worker's memory: it is exact for one worker (the embedded default) and
per-worker with ``--workers N`` (an attacker then gets at most N x 5 tries per window). Production
with several workers will move the counters to Redis (a sorted set per key, same moving window);
that must fail *closed* -- a limiter that cannot count refuses logins rather than allowing them.
"""

from __future__ import annotations

import math
import threading
import time
import unicodedata
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

USERNAME_FAILURES, USERNAME_WINDOW_S = 5, 15 * 60
IP_ATTEMPTS, IP_WINDOW_S = 30, 60
MAX_KEYS = 100_000  # memory bound: beyond it, idle keys are pruned first


def normalize_username(username: str) -> str:
    return unicodedata.normalize("NFKC", username).strip().casefold()


@dataclass
class MovingWindow:
    """At most ``limit`` events per ``window_s`` seconds per key."""

    limit: int
    window_s: float
    clock: Callable[[], float] = time.monotonic
    _events: dict[str, deque[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def retry_after(self, key: str) -> int:
        """0 if ``key`` may proceed, else the whole seconds until it may."""
        with self._lock:
            events = self._trimmed(key)
            if events is None or len(events) < self.limit:
                return 0
            return max(1, math.ceil(events[-self.limit] + self.window_s - self.clock()))

    def hit(self, key: str) -> None:
        with self._lock:
            if len(self._events) >= MAX_KEYS:
                self._prune()
            events = self._trimmed(key)
            if events is None:
                events = self._events[key] = deque()
            events.append(self.clock())
            while len(events) > self.limit:  # only the newest `limit` events matter
                events.popleft()

    def reset(self, key: str) -> None:
        with self._lock:
            self._events.pop(key, None)

    def _trimmed(self, key: str) -> deque[float] | None:
        events = self._events.get(key)
        if events is None:
            return None
        horizon = self.clock() - self.window_s
        while events and events[0] <= horizon:
            events.popleft()
        if not events:
            del self._events[key]
            return None
        return events

    def _prune(self) -> None:
        horizon = self.clock() - self.window_s
        for key in [k for k, v in self._events.items() if not v or v[-1] <= horizon]:
            del self._events[key]
        # Still full of live keys: drop the oldest half. Those keys lose their history, which is
        # the price of bounded memory; the per-IP limit still applies to whoever floods us.
        if len(self._events) >= MAX_KEYS:
            by_age = sorted(self._events, key=lambda k: self._events[k][-1])
            for key in by_age[: len(by_age) // 2]:
                del self._events[key]


@dataclass
class LoginLimiter:
    """The two login limits together; ``check`` before verifying, ``failed``/``succeeded`` after."""

    clock: Callable[[], float] = time.monotonic
    by_username: MovingWindow = field(init=False)
    by_ip: MovingWindow = field(init=False)

    def __post_init__(self) -> None:
        self.by_username = MovingWindow(USERNAME_FAILURES, USERNAME_WINDOW_S, self.clock)
        self.by_ip = MovingWindow(IP_ATTEMPTS, IP_WINDOW_S, self.clock)

    def check(self, username: str, ip: str) -> int:
        """Seconds to wait (the ``Retry-After``), or 0. Counts the attempt against the IP."""
        wait = max(self.by_username.retry_after(normalize_username(username)), self.by_ip.retry_after(ip))
        if wait == 0:
            self.by_ip.hit(ip)
        return wait

    def failed(self, username: str) -> None:
        self.by_username.hit(normalize_username(username))

    def succeeded(self, username: str) -> None:
        self.by_username.reset(normalize_username(username))

"""Login rate limiting (security.md §3.8): reserve a slot *before* the password is verified.

Two limits guard ``POST /login``:

* per normalized username: 5 **failures** in a moving 15-minute window. Once reached, every login
  for that name -- even with the right password -- answers 429 with ``Retry-After`` until the
  oldest failure leaves the window. Unknown names are counted the same way, so the limiter never
  reveals which accounts exist.
* per client IP: 30 **attempts** a minute, whatever the username (slows spraying one password over
  many names).

Why reservations: argon2 takes ~260 ms, so counting failures only after the verify lets a burst of
simultaneous guesses all pass the check first. ``LoginLimiter.reserve`` therefore records a
*provisional failure* for the name and an attempt for the IP, atomically with the check, before any
password is looked at. The provisional failure simply stands when the password is wrong; a success
clears the name's failures (``succeeded``); ``release`` withdraws an attempt that never reached the
verify. So at most 5 verifications per name and 30 per IP happen per window, whatever the burst.

Where the counts live: always in this process (``LocalWindows``), and also in Redis when the gateway
has one (``console.ratelimit_redis``), so that several workers or hosts share one count. Both are
consulted and a login needs room in both, which keeps the promise "never fail open": while Redis is
unreachable the in-process count -- fed all along -- still limits every worker on its own.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import secrets
import threading
import time
import unicodedata
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

log = logging.getLogger("callgate.console")

MAX_KEYS = 100_000  # memory bound of the in-process store: beyond it, idle keys are pruned first
SHARED_RETRY_S = 5.0  # after a shared-store error, use the in-process store alone this long


@dataclass(frozen=True, slots=True)
class Limit:
    """At most ``count`` events per key in any ``window_s`` seconds."""

    count: int
    window_s: float


USERNAME_LIMIT = Limit(5, 15 * 60)  # failures per name
IP_LIMIT = Limit(30, 60)  # attempts per address
USERNAME_FAILURES, USERNAME_WINDOW_S = USERNAME_LIMIT.count, USERNAME_LIMIT.window_s
IP_ATTEMPTS, IP_WINDOW_S = IP_LIMIT.count, IP_LIMIT.window_s

#: (key, limit) pairs reserved together: all of them or none
Hits = Sequence[tuple[str, Limit]]


class StoreUnavailable(Exception):
    """A shared store could not answer (network, timeout, server error)."""


class WindowStore(Protocol):
    """Moving-window counters that can reserve a slot under several keys in one atomic step."""

    def reserve(self, hits: Hits, token: str) -> float:
        """If every key has room, record ``token`` under each and return 0; otherwise record
        nothing and return the seconds until the fullest key has room again (> 0)."""

    def release(self, keys: Sequence[str], token: str) -> None:
        """Withdraw ``token``'s events (no-op for keys that no longer hold it)."""

    def reset(self, key: str) -> None:
        """Forget every event of ``key``."""


def normalize_username(username: str) -> str:
    return unicodedata.normalize("NFKC", username).strip().casefold()


class LocalWindows:
    """The in-process ``WindowStore``: exact for one process, thread-safe, bounded in memory."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_keys: int = MAX_KEYS) -> None:
        self.clock = clock
        self.max_keys = max_keys
        # key -> (its window, its events oldest first as (time, token)); at most `limit` live events
        self._series: dict[str, tuple[float, deque[tuple[float, str]]]] = {}
        self._lock = threading.Lock()

    def reserve(self, hits: Hits, token: str) -> float:
        with self._lock:
            now = self.clock()
            wait = 0.0
            for key, limit in hits:
                events = self._live(key, now)
                if len(events) >= limit.count:
                    # room again when the event `limit.count` places from the newest leaves the window
                    wait = max(wait, events[len(events) - limit.count][0] + limit.window_s - now)
            if wait > 0:
                return wait
            if len(self._series) + len(hits) > self.max_keys:
                self._prune(now)
            for key, limit in hits:
                self._series.setdefault(key, (limit.window_s, deque()))[1].append((now, token))
            return 0.0

    def release(self, keys: Sequence[str], token: str) -> None:
        with self._lock:
            for key in keys:
                series = self._series.get(key)
                if series is None:
                    continue
                events = series[1]
                for event in [e for e in events if e[1] == token]:
                    events.remove(event)
                if not events:
                    del self._series[key]

    def reset(self, key: str) -> None:
        with self._lock:
            self._series.pop(key, None)

    def __len__(self) -> int:
        return len(self._series)

    def _live(self, key: str, now: float) -> deque[tuple[float, str]]:
        series = self._series.get(key)
        if series is None:
            return deque()
        window_s, events = series
        while events and events[0][0] <= now - window_s:
            events.popleft()
        if not events:
            del self._series[key]
        return events

    def _prune(self, now: float) -> None:
        for key in [k for k, (w, ev) in self._series.items() if not ev or ev[-1][0] <= now - w]:
            del self._series[key]
        # Still full of live keys: drop the least recently used half. Those keys lose their history,
        # the price of bounded memory; the per-IP limit still applies to whoever floods us.
        if len(self._series) >= self.max_keys:
            by_age = sorted(self._series, key=lambda k: self._series[k][1][-1][0])
            for key in by_age[: len(by_age) // 2]:
                del self._series[key]


class LoginThrottled(Exception):
    """Too many attempts: answer 429 with ``Retry-After: retry_after``."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"retry after {retry_after} s")
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Attempt:
    """An admitted login attempt: a provisional failure under its name, an attempt under its IP."""

    user_key: str
    ip_key: str
    token: str


T = TypeVar("T")


class LoginLimiter:
    """The two login limits over the in-process store and, optionally, a shared one.

    ``reserve`` before verifying (raises ``LoginThrottled``), then ``succeeded`` on the right
    password, nothing on a wrong one, or ``release`` when no password was verified at all.
    Counter keys are keyed hashes (``secret``): neither store ever holds a raw username or IP.
    Processes sharing a store must share the secret (the gateway's ``CALLGATE_SECRET_KEY``).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, *, shared: WindowStore | None = None,
                 secret: bytes | None = None, retry_shared_after_s: float = SHARED_RETRY_S) -> None:
        self.local = LocalWindows(clock)
        self.shared = shared
        self._secret = secret or secrets.token_bytes(32)
        self._retry_shared_after_s = retry_shared_after_s
        self._shared_lock = threading.Lock()
        self._shared_down = False  # in an outage (logged once when it starts, once when it ends)
        self._skip_shared_until = 0.0  # time.monotonic(): don't even try before this

    def key(self, kind: str, value: str) -> str:
        """``kind:`` + 128 bits of HMAC-SHA256: stable across processes, meaningless without the secret."""
        digest = hmac.new(self._secret, f"callgate-login-limit\0{kind}\0{value}".encode(), hashlib.sha256)
        return f"{kind}:{digest.hexdigest()[:32]}"

    def reserve(self, username: str, ip: str) -> Attempt:
        """Admit one attempt (recording it) or raise ``LoginThrottled``; atomic per store."""
        attempt = Attempt(self.key("user", normalize_username(username)), self.key("ip", ip), secrets.token_hex(8))
        hits = ((attempt.user_key, USERNAME_LIMIT), (attempt.ip_key, IP_LIMIT))
        wait = self.local.reserve(hits, attempt.token)
        if wait == 0 and self.shared is not None:
            # None: the shared store is unavailable, and the in-process reservation alone decides.
            shared_wait = self._on_shared(lambda store: store.reserve(hits, attempt.token))
            if shared_wait:
                self.local.release((attempt.user_key, attempt.ip_key), attempt.token)
                wait = shared_wait
        if wait > 0:
            raise LoginThrottled(max(1, math.ceil(wait)))
        return attempt

    def succeeded(self, attempt: Attempt) -> None:
        """The right password: the name's failures (this provisional one included) are forgiven,
        here and in the shared store. Other workers' in-process counts keep theirs until they expire;
        those only ever make a worker stricter. The IP keeps the attempt: it counts attempts."""
        self.local.reset(attempt.user_key)
        self._on_shared(lambda store: store.reset(attempt.user_key))

    def release(self, attempt: Attempt) -> None:
        """No password was verified (a database error, a client that left while queued): the
        attempt counts against neither limit."""
        keys = (attempt.user_key, attempt.ip_key)
        self.local.release(keys, attempt.token)
        self._on_shared(lambda store: store.release(keys, attempt.token))

    def _on_shared(self, operation: Callable[[WindowStore], T]) -> T | None:
        """Run one shared-store operation; None when there is no shared store or it is down.

        After an error the store is left alone for ``retry_shared_after_s``, so an outage costs
        logins one timeout per interval instead of one per request."""
        if self.shared is None:
            return None
        with self._shared_lock:
            if time.monotonic() < self._skip_shared_until:
                return None
        try:
            result = operation(self.shared)
        except StoreUnavailable as exc:
            with self._shared_lock:
                self._skip_shared_until = time.monotonic() + self._retry_shared_after_s
                first = not self._shared_down
                self._shared_down = True
            if first:
                log.warning("login rate limiter: shared store unavailable (%s); each worker now limits logins "
                            "on its own counts until it is back", exc)
            return None
        with self._shared_lock:
            recovered, self._shared_down = self._shared_down, False
        if recovered:
            log.info("login rate limiter: shared store is back; logins are limited across workers again")
        return result

"""Per-app console state: templates, the login limiter, the argon2 slots, the clock and the public origin."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from gateway.config import Settings

from console.ratelimit import LoginLimiter
from console.ratelimit_redis import RedisWindows
from console.templating import Templates

log = logging.getLogger("callgate.console")

def utc_now() -> datetime:
    return datetime.now(UTC)


def hash_concurrency() -> int:
    """argon2 verifies at once: each takes ~64 MiB and a core for ~260 ms (security.md §3.5)."""
    return max(1, (os.cpu_count() or 1) // 2)


def login_limiter(settings: Settings) -> LoginLimiter:
    """In-process counts alone (embedded: one worker), or shared through Redis when the gateway has
    one, so ``--workers N`` and several hosts do not multiply the allowed attempts (security.md §3.8).
    The counter keys are hashed with the gateway's secret, which every worker shares."""
    if not settings.redis_url:
        if settings.workers > 1:
            log.warning("CALLGATE_REDIS_URL is not set: each of the %d workers limits console logins on its own "
                        "counts, so a name gets up to %d x 5 failures per 15 minutes", settings.workers,
                        settings.workers)
        return LoginLimiter()
    return LoginLimiter(shared=RedisWindows(settings.redis_url), secret=settings.resolved_secret_key())


@dataclass
class ConsoleState:
    settings: Settings
    templates: Templates = field(default_factory=Templates)
    limiter: LoginLimiter = field(init=False)  # from the settings; tests may swap it
    #: the session clock; tests move it to cross the idle and absolute deadlines
    now: Callable[[], datetime] = utc_now
    _slots: asyncio.Semaphore | None = None
    _slots_loop: asyncio.AbstractEventLoop | None = None

    def __post_init__(self) -> None:
        self.limiter = login_limiter(self.settings)

    @property
    def public_url(self) -> str | None:
        """``CALLGATE_PUBLIC_URL`` (an origin: scheme://host[:port]), the only origin console POSTs
        may come from when set; None: the origin each request was addressed to (console.csrf)."""
        return self.settings.public_url or None

    @property
    def hash_slots(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots_loop is not loop:
            self._slots, self._slots_loop = asyncio.Semaphore(hash_concurrency()), loop
        return self._slots

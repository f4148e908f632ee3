"""Per-app console state: templates, the login limiter, the argon2 slots and the clock."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from gateway.config import Settings

from console.ratelimit import LoginLimiter
from console.templating import Templates


def utc_now() -> datetime:
    return datetime.now(UTC)


def hash_concurrency() -> int:
    """argon2 verifies at once: each takes ~64 MiB and a core for ~260 ms (security.md §3.5)."""
    return max(1, (os.cpu_count() or 1) // 2)


@dataclass
class ConsoleState:
    settings: Settings
    templates: Templates = field(default_factory=Templates)
    limiter: LoginLimiter = field(default_factory=LoginLimiter)
    #: the session clock; tests move it to cross the idle and absolute deadlines
    now: Callable[[], datetime] = utc_now
    _slots: asyncio.Semaphore | None = None
    _slots_loop: asyncio.AbstractEventLoop | None = None

    @property
    def public_url(self) -> str | None:
        """The externally visible URL, when the gateway's settings know it (Origin checks)."""
        return getattr(self.settings, "public_url", None) or None

    @property
    def hash_slots(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots_loop is not loop:
            self._slots, self._slots_loop = asyncio.Semaphore(hash_concurrency()), loop
        return self._slots

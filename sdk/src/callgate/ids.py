"""RFC 9562 UUIDv7 in the stdlib (``uuid.uuid7`` only arrives in Python 3.14); public because the gateway
makes its audit event ids with the same function.

Layout: 48-bit Unix milliseconds | ver=7 | 12-bit rand_a | var=0b10 | 62-bit rand_b.
rand_a is used as a counter within one millisecond (RFC 9562 §6.2 method 1), seeded
randomly, so ids made by one process sort in creation order; on counter overflow the
timestamp is advanced by one millisecond, as the RFC allows.
"""

from __future__ import annotations

import os
import threading
import time

__all__ = ["uuid7"]

_lock = threading.Lock()
_last_ms = 0
_counter = 0


def uuid7() -> str:
    """A new UUIDv7 as the canonical lower-case 36-character string."""
    global _last_ms, _counter
    rand = int.from_bytes(os.urandom(10), "big")
    ms = time.time_ns() // 1_000_000
    with _lock:
        if ms > _last_ms:
            _last_ms = ms
            _counter = (rand >> 68) & 0x7FF  # top bit clear: room to count up
        else:
            _counter += 1
            if _counter > 0xFFF:
                _last_ms += 1
                _counter = 0
            ms = _last_ms
        counter = _counter
    value = ((ms & 0xFFFFFFFFFFFF) << 80) | (0x7 << 76) | (counter << 64) | (0b10 << 62) | (rand & ((1 << 62) - 1))
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _reset_after_fork() -> None:
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)

"""Approval timeouts written as ``30s``, ``15m``, ``2h``, ``1d`` or integer seconds.

Timeouts are bounded (1 s .. 24 h) because an approval that never expires is a call that
hangs an agent forever, and a zero timeout would expire before any human could look.
"""

from __future__ import annotations

import re

from .errors import InvalidValueError

__all__ = ["MAX_SECONDS", "MIN_SECONDS", "parse_duration"]

MIN_SECONDS = 1
MAX_SECONDS = 24 * 3600

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PATTERN = re.compile(r"([0-9]+)([smhd])")


def parse_duration(value: object) -> int:
    """Return the duration in whole seconds, or raise InvalidValueError with a user-facing message."""
    if isinstance(value, bool):
        raise InvalidValueError(f"duration must be like 30s, 15m, 2h, 1d or integer seconds, got {value!r}")
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, str) and (match := _PATTERN.fullmatch(value.strip())):
        seconds = int(match.group(1)) * _UNITS[match.group(2)]
    else:
        raise InvalidValueError(f"duration must be like 30s, 15m, 2h, 1d or integer seconds, got {value!r}")
    if seconds < MIN_SECONDS:
        raise InvalidValueError(f"duration must be at least 1s, got {value!r}")
    if seconds > MAX_SECONDS:
        raise InvalidValueError(f"duration must be at most 24h, got {value!r}")
    return seconds

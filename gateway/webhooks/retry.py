"""What one attempt's result means, and when the next attempt is due (security.md §2.4).

* 2xx: delivered.
* 408, 409, 425, 429 and every 5xx, a timeout, a refused or reset connection, a TLS failure, a
  redirect (never followed) and an address the SSRF guard refuses at send time (DNS changed):
  retry later.
* 410 Gone: failed for good, and the endpoint is disabled (the receiver said it is gone).
* Any other 4xx: failed for good at once (the receiver rejects this request; resending the same
  bytes cannot help), with the reason recorded.

Retries follow the Standard Webhooks example schedule (``DEFAULT_SCHEDULE``: 5 s, 5 min, 30 min,
2 h, 5 h, 10 h, 14 h, 20 h, 24 h after the immediate first attempt: 10 attempts over about 75 h,
like Stripe's three days), so a receiver that is down for a whole weekend still gets its
events. Each delay is multiplied by a factor drawn uniformly from ``JITTER`` (0.8 to 1.2), so
messages that failed together (a receiver's outage) do not all come back at the same instant,
while every retry still lands near its scheduled time (full jitter would turn a 24 h step into
anything between 0 and 24 h). ``Retry-After`` on 429/503 is honoured (up to an hour) when it
asks for more than the schedule gave. Everything here is pure: the random source is passed in,
so tests can check the bounds without sleeping.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Literal

__all__ = ["DEFAULT_SCHEDULE", "JITTER", "MAX_RETRY_AFTER_S", "RETRYABLE_4XX", "Verdict", "judge_error",
           "judge_status", "retry_delay"]

#: Seconds before each retry (security.md §2.4); ``CALLGATE_WEBHOOK_RETRY_SCHEDULE`` overrides it.
DEFAULT_SCHEDULE: tuple[float, ...] = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 50400.0, 72000.0, 86400.0)
JITTER = (0.8, 1.2)
RETRYABLE_4XX = frozenset({408, 409, 425, 429})
HONOURS_RETRY_AFTER = frozenset({429, 503})
MAX_RETRY_AFTER_S = 3600.0

Result = Literal["delivered", "retry", "failed"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of one attempt: what happens to the message next."""

    result: Result
    reason: str | None = None  # why it was not delivered (also the delivery log's error)
    disable_endpoint: bool = False
    retry_after: float | None = None  # seconds the receiver asked for (429/503)


def judge_status(status: int, retry_after: str | None = None, *, now: datetime | None = None) -> Verdict:
    """The verdict on an HTTP answer."""
    if 200 <= status <= 299:
        return Verdict("delivered")
    if status == 410:
        return Verdict("failed", "410 Gone: the receiver says this endpoint no longer exists; endpoint disabled",
                       disable_endpoint=True)
    if 400 <= status <= 499 and status not in RETRYABLE_4XX:
        return Verdict("failed", f"HTTP {status}: the receiver rejected the request; not retried")
    if 300 <= status <= 399:
        return Verdict("retry", f"HTTP {status}: redirects are not followed; the endpoint URL may be outdated")
    asked = _retry_after_seconds(retry_after, now) if status in HONOURS_RETRY_AFTER else None
    return Verdict("retry", f"HTTP {status}", retry_after=asked)


def judge_error(kind: str, message: str) -> Verdict:
    """The verdict on an attempt that got no HTTP answer (transport error, DNS, SSRF refusal,
    a secret that cannot be opened)."""
    return Verdict("retry", f"{kind}: {message}")


def retry_delay(attempts: int, schedule: Sequence[float], rng: random.Random, *,
                retry_after: float | None = None) -> float | None:
    """Seconds until the next attempt after ``attempts`` attempts; ``None`` when they are used up.

    Attempt ``n`` (1-based, counted within the message's current budget: an admin replay starts
    a new one) failing is followed by ``schedule[n-1]`` times a factor drawn uniformly from
    ``JITTER``; after ``len(schedule) + 1`` attempts there is no next one."""
    if attempts < 1:
        raise ValueError("retry_delay is asked after at least one attempt")
    if attempts > len(schedule):
        return None
    delay = schedule[attempts - 1] * rng.uniform(*JITTER)
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER_S))
    return delay


def _retry_after_seconds(value: str | None, now: datetime | None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date; ``None`` if absent or invalid."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value[:8]), MAX_RETRY_AFTER_S)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, min(seconds, MAX_RETRY_AFTER_S))

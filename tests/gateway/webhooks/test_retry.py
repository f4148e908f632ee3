"""The retry policy: which answers are retried, and the backoff schedule's jitter bounds (pure
functions: no clock, no sleeping)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from gateway.config import Settings, parse_retry_schedule
from gateway.webhooks.retry import MAX_RETRY_AFTER_S, judge_error, judge_status, retry_delay

DEFAULT = Settings().retry_schedule()


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_is_delivered(status: int) -> None:
    assert judge_status(status).result == "delivered"


@pytest.mark.parametrize("status", [408, 409, 425, 429, 500, 502, 503, 504, 599, 301, 302, 307, 308, 100])
def test_transient_answers_are_retried(status: int) -> None:
    assert judge_status(status).result == "retry"


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 413, 415, 422, 451])
def test_other_4xx_fail_at_once_with_the_reason(status: int) -> None:
    verdict = judge_status(status)
    assert verdict.result == "failed" and f"HTTP {status}" in str(verdict.reason) and not verdict.disable_endpoint


def test_410_fails_and_disables_the_endpoint() -> None:
    verdict = judge_status(410)
    assert verdict.result == "failed" and verdict.disable_endpoint


def test_transport_errors_are_retried() -> None:
    for kind in ("timeout", "connect", "tls", "protocol", "dns", "ssrf_blocked"):
        verdict = judge_error(kind, "boom")
        assert verdict.result == "retry" and verdict.reason == f"{kind}: boom"


def test_the_default_schedule() -> None:
    """5 s, 30 s, 2 min, 10 min, 30 min, 1 h, 1 h: 8 attempts over up to ~2.6 h of caps."""
    assert DEFAULT == (5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0, 3600.0)
    assert len(DEFAULT) + 1 == 8


def test_full_jitter_stays_within_each_cap_and_uses_the_range() -> None:
    rng = random.Random(1234)
    for attempt, cap in enumerate(DEFAULT, start=1):
        delays = [retry_delay(attempt, DEFAULT, rng) for _ in range(2000)]
        assert all(d is not None and 0.0 <= d <= cap for d in delays)
        spread = [d for d in delays if d is not None]
        assert min(spread) < cap * 0.05 and max(spread) > cap * 0.95  # full jitter: the whole [0, cap]
        assert abs(sum(spread) / len(spread) - cap / 2) < cap * 0.05


def test_no_delay_after_the_last_attempt() -> None:
    rng = random.Random(1)
    assert retry_delay(len(DEFAULT), DEFAULT, rng) is not None
    assert retry_delay(len(DEFAULT) + 1, DEFAULT, rng) is None
    with pytest.raises(ValueError):
        retry_delay(0, DEFAULT, rng)


def test_retry_after_raises_the_delay_up_to_an_hour() -> None:
    rng = random.Random(5)
    assert retry_delay(1, (5.0,), rng, retry_after=90.0) == 90.0
    assert retry_delay(1, (5.0,), rng, retry_after=10 * 3600.0) == MAX_RETRY_AFTER_S
    assert 0 <= retry_delay(1, (5.0,), rng, retry_after=0.0) <= 5.0  # never earlier than the schedule's draw


def test_retry_after_forms() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert judge_status(429, "120").retry_after == 120.0
    assert judge_status(503, format_datetime(now + timedelta(seconds=300), usegmt=True), now=now).retry_after == 300.0
    assert judge_status(503, format_datetime(now - timedelta(seconds=300), usegmt=True), now=now).retry_after == 0.0
    assert judge_status(429, "soon").retry_after is None
    assert judge_status(429, "9" * 50).retry_after == MAX_RETRY_AFTER_S
    assert judge_status(500, "120").retry_after is None  # only 429/503 ask for a pause


@pytest.mark.parametrize(("text", "error"), [
    ("", "at least one"), ("5,,30", "not a number"), ("5,x", "not a number"), ("-1", "outside"),
    ("inf", "outside"), ("nan", "outside"), (",".join(["1"] * 31), "at most 30"),
])
def test_bad_schedules_are_refused(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_retry_schedule(text)
    with pytest.raises(ValueError):
        Settings(webhook_retry_schedule=text)


def test_the_lease_must_outlast_an_attempt() -> None:
    with pytest.raises(ValueError, match="LEASE"):
        Settings(webhook_timeout_seconds=10, webhook_lease_seconds=10.5)
    assert Settings(webhook_timeout_seconds=10, webhook_lease_seconds=11).webhook_lease_seconds == 11

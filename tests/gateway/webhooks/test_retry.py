"""The retry policy: which answers are retried, the backoff schedule (security.md §2.4) and its
jitter bounds (pure functions: no clock, no sleeping)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from gateway.config import Settings, parse_retry_schedule
from gateway.webhooks.delivery import DeliveryConfig
from gateway.webhooks.retry import DEFAULT_SCHEDULE, MAX_RETRY_AFTER_S, judge_error, judge_status, retry_delay
from gateway.webhooks.secrets import SecretBox

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
    for kind in ("timeout", "connect", "tls", "protocol", "dns", "ssrf_blocked", "secret"):
        verdict = judge_error(kind, "boom")
        assert verdict.result == "retry" and verdict.reason == f"{kind}: boom"


def test_the_default_schedule_is_the_specs() -> None:
    """0, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h: 10 attempts over about 75 h."""
    assert DEFAULT == DEFAULT_SCHEDULE == (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 50400.0, 72000.0, 86400.0)
    assert len(DEFAULT) + 1 == 10
    assert 75 * 3600 < sum(DEFAULT) < 76 * 3600
    config = DeliveryConfig.from_settings(Settings(secret_key="k"))
    assert config.schedule == DEFAULT and config.max_attempts == 10
    assert DeliveryConfig(SecretBox(b"k")).schedule == DEFAULT  # the same default without settings


def test_jitter_is_plus_minus_twenty_percent_of_each_step() -> None:
    rng = random.Random(1234)
    for attempt, step in enumerate(DEFAULT, start=1):
        spread = [retry_delay(attempt, DEFAULT, rng) for _ in range(2000)]
        delays = [d for d in spread if d is not None]
        assert len(delays) == 2000 and all(0.8 * step <= d <= 1.2 * step for d in delays)
        assert min(delays) < 0.81 * step and max(delays) > 1.19 * step  # the whole [0.8, 1.2] is used
        assert abs(sum(delays) / len(delays) - step) < 0.01 * step
    horizon = [sum(retry_delay(n, DEFAULT, rng) or 0.0 for n in range(1, 10)) for _ in range(200)]
    assert all(60 * 3600 < h < 91 * 3600 for h in horizon)  # ~75 h give or take the jitter


def test_a_schedule_override_keeps_working() -> None:
    """CALLGATE_WEBHOOK_RETRY_SCHEDULE (the tests' fast schedules, an operator's own) still wins."""
    settings = Settings(secret_key="k", webhook_retry_schedule="0,0.2,0.4,0.8")
    config = DeliveryConfig.from_settings(settings)
    assert config.schedule == (0.0, 0.2, 0.4, 0.8) and config.max_attempts == 5
    rng = random.Random(3)
    assert retry_delay(1, config.schedule, rng) == 0.0  # no jitter can make "at once" later
    assert 0.16 <= retry_delay(2, config.schedule, rng) <= 0.24  # type: ignore[operator]
    assert retry_delay(5, config.schedule, rng) is None


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
    assert 4.0 <= retry_delay(1, (5.0,), rng, retry_after=0.0) <= 6.0  # never earlier than the schedule's draw


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

"""Approval timeouts: units, integers, bounds."""

from __future__ import annotations

import pytest

from policies.durations import parse_duration


class TestParseDuration:
    @pytest.mark.parametrize(
        ("value", "seconds"),
        [("30s", 30), ("15m", 900), ("2h", 7200), ("1d", 86400), (60, 60), ("1s", 1), ("24h", 86400)],
    )
    def test_valid(self, value: object, seconds: int) -> None:
        """Units s/m/h/d and integer seconds are accepted."""
        assert parse_duration(value) == seconds

    @pytest.mark.parametrize(
        ("value", "message"),
        [
            ("0s", "duration must be at least 1s, got '0s'"),
            (0, "duration must be at least 1s, got 0"),
            ("25h", "duration must be at most 24h, got '25h'"),
            (86401, "duration must be at most 24h, got 86401"),
            ("1.5h", "duration must be like 30s, 15m, 2h, 1d or integer seconds, got '1.5h'"),
            ("15", "duration must be like 30s, 15m, 2h, 1d or integer seconds, got '15'"),
            ("1h30m", "duration must be like 30s, 15m, 2h, 1d or integer seconds, got '1h30m'"),
            (True, "duration must be like 30s, 15m, 2h, 1d or integer seconds, got True"),
            (1.5, "duration must be like 30s, 15m, 2h, 1d or integer seconds, got 1.5"),
            (None, "duration must be like 30s, 15m, 2h, 1d or integer seconds, got None"),
        ],
    )
    def test_invalid(self, value: object, message: str) -> None:
        """Out-of-range and malformed durations raise with a user-facing message."""
        with pytest.raises(ValueError) as caught:
            parse_duration(value)
        assert str(caught.value) == message

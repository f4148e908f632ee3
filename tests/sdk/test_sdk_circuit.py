"""Tests for callgate._circuit."""

from __future__ import annotations

from callgate._circuit import CircuitBreaker


class TestCircuitBreaker:
    def test_lifecycle(self) -> None:
        """5 failures open it; after the reset time exactly one probe goes; success closes it."""
        now = [0.0]
        b = CircuitBreaker(5, 30.0, clock=lambda: now[0])
        for _ in range(4):
            b.failure()
        assert b.allow()
        b.failure()
        assert b.state == "open" and not b.allow()
        now[0] = 31.0
        assert b.allow() and not b.allow()  # one probe only
        b.failure()
        assert b.state == "open"
        now[0] = 62.0
        assert b.allow()
        b.success()
        assert b.state == "closed" and b.allow()

"""The in-process login limiter: moving windows per username and per IP, on a fake clock."""

from __future__ import annotations

from console.ratelimit import IP_ATTEMPTS, LoginLimiter, MovingWindow, normalize_username


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TestMovingWindow:
    def test_limit_is_reached_at_the_nth_event(self) -> None:
        """Below the limit there is no wait; at the limit the wait runs to the oldest event's expiry."""
        clock = Clock()
        window = MovingWindow(3, 60, clock)
        for _ in range(2):
            window.hit("k")
            clock.now += 10
        assert window.retry_after("k") == 0
        window.hit("k")
        assert window.retry_after("k") == 40  # first hit at 1000 leaves the window at 1060; now 1020

    def test_window_moves(self) -> None:
        """Events older than the window stop counting, one by one."""
        clock = Clock()
        window = MovingWindow(2, 60, clock)
        window.hit("k")
        clock.now += 30
        window.hit("k")
        clock.now += 31
        assert window.retry_after("k") == 0

    def test_keys_are_independent_and_reset_clears_one(self) -> None:
        """One key's events never count against another; reset forgets a key."""
        window = MovingWindow(1, 60, Clock())
        window.hit("a")
        assert window.retry_after("a") > 0 and window.retry_after("b") == 0
        window.reset("a")
        assert window.retry_after("a") == 0


class TestLoginLimiter:
    def test_success_clears_the_failures_of_that_name(self) -> None:
        """A successful login forgets earlier failures of the same account."""
        limiter = LoginLimiter(Clock())
        for _ in range(4):
            limiter.failed("Rita")
        limiter.succeeded("rita")
        for _ in range(4):
            limiter.failed("rita")
        assert limiter.check("rita", "10.0.0.1") == 0

    def test_one_ip_is_limited_across_usernames(self) -> None:
        """Spraying many names from one address hits the per-IP limit; another address is unaffected."""
        limiter = LoginLimiter(Clock())
        for i in range(IP_ATTEMPTS):
            assert limiter.check(f"user{i}", "10.0.0.1") == 0
        assert limiter.check("someone", "10.0.0.1") > 0
        assert limiter.check("someone", "10.0.0.2") == 0

    def test_names_are_normalized(self) -> None:
        """Case, full-width forms and surrounding spaces all map to one counter key."""
        assert normalize_username(" ＲＩＴＡ ") == normalize_username("rita") == "rita"

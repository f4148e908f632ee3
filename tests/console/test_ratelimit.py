"""The login limiter: moving windows, reservations that hold under bursts, and the Redis store that
several processes share (with its in-process fallback)."""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError

from console import auth
from console.ratelimit import (
    IP_ATTEMPTS,
    IP_WINDOW_S,
    USERNAME_FAILURES,
    USERNAME_WINDOW_S,
    Attempt,
    Hits,
    Limit,
    LocalWindows,
    LoginLimiter,
    LoginThrottled,
    StoreUnavailable,
    normalize_username,
)
from console.ratelimit_redis import RedisWindows
from console.state import ConsoleState
from gateway.config import Settings
from tests.console.conftest import PASSWORD, login_form_token

REDIS_URL = "redis://127.0.0.1:6379/0"
T = TypeVar("T")


class Clock:
    """A settable clock (seconds); starts at a wall-clock-like value so Redis scores look real."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def burst(n: int, fn: Callable[[int], T]) -> list[T]:
    """Run ``fn(0..n-1)`` on ``n`` threads released together by a barrier."""
    barrier = threading.Barrier(n)

    def run(i: int) -> T:
        barrier.wait()
        return fn(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


def admitted(limiter: LoginLimiter, username: str, ip: str) -> Attempt | None:
    try:
        return limiter.reserve(username, ip)
    except LoginThrottled:
        return None


def retry_after(limiter: LoginLimiter, username: str, ip: str) -> int:
    with pytest.raises(LoginThrottled) as info:
        limiter.reserve(username, ip)
    return info.value.retry_after


class TestLocalWindows:
    def test_limit_is_reached_at_the_nth_event(self) -> None:
        """Below the limit there is no wait; at the limit the wait runs to the oldest event's expiry."""
        clock = Clock(1000)
        windows = LocalWindows(clock)
        hits = [("k", Limit(3, 60))]
        for i in range(2):
            assert windows.reserve(hits, f"t{i}") == 0
            clock.now += 10
        assert windows.reserve(hits, "t2") == 0  # the third, at 1020
        assert windows.reserve(hits, "t3") == 40  # first event at 1000 leaves the window at 1060

    def test_window_moves(self) -> None:
        """Events older than the window stop counting, one by one."""
        clock = Clock(1000)
        windows = LocalWindows(clock)
        hits = [("k", Limit(2, 60))]
        windows.reserve(hits, "a")
        clock.now += 30
        windows.reserve(hits, "b")
        clock.now += 30
        assert windows.reserve(hits, "c") == 0  # "a" is exactly 60 s old: out; "b" still counts
        assert windows.reserve(hits, "d") == 30  # "b" (at 1030) leaves at 1090
        clock.now += 30
        assert windows.reserve(hits, "d") == 0

    def test_reserve_is_all_or_nothing(self) -> None:
        """When one key is full, nothing is recorded under the others."""
        windows = LocalWindows(Clock())
        small, big = Limit(1, 60), Limit(10, 60)
        assert windows.reserve([("full", small)], "x") == 0
        assert windows.reserve([("free", big), ("full", small)], "y") > 0
        for i in range(10):
            assert windows.reserve([("free", big)], f"z{i}") == 0, i  # "y" took no slot of "free"

    def test_release_withdraws_only_that_token_and_reset_clears_one_key(self) -> None:
        """release frees exactly the attempt's slots; reset forgets one key, never another."""
        windows = LocalWindows(Clock())
        one = Limit(2, 60)
        windows.reserve([("a", one), ("b", one)], "t1")
        windows.reserve([("a", one)], "t2")
        assert windows.reserve([("a", one)], "t3") > 0
        windows.release(["a", "b"], "t1")
        assert windows.reserve([("a", one)], "t3") == 0
        windows.reserve([("b", one)], "t4")
        windows.reserve([("b", one)], "t5")
        windows.reset("a")
        assert windows.reserve([("a", one)], "t6") == 0
        assert windows.reserve([("b", one)], "t7") > 0

    def test_memory_is_bounded(self) -> None:
        """Past ``max_keys`` expired keys go first, then the least recently used half."""
        clock = Clock()
        windows = LocalWindows(clock, max_keys=10)
        for i in range(10):
            windows.reserve([(f"old{i}", Limit(1, 5))], "t")
        clock.now += 10  # all of them expired
        windows.reserve([("new", Limit(1, 60))], "t")
        assert len(windows) == 1
        for i in range(9):
            windows.reserve([(f"live{i}", Limit(1, 60))], "t")
            clock.now += 1
        windows.reserve([("newest", Limit(1, 60))], "t")  # 11 live keys: the least recently used half goes
        assert len(windows) == 6
        assert windows.reserve([("new", Limit(1, 60))], "t") == 0  # evicted: its history is gone
        assert windows.reserve([("live8", Limit(1, 60))], "t") > 0  # kept


class TestLoginLimiter:
    def test_sixth_attempt_of_a_name_waits_for_the_window(self) -> None:
        """Five admitted attempts (provisional failures) lock the name; Retry-After is the window."""
        clock = Clock()
        limiter = LoginLimiter(clock)
        for i in range(USERNAME_FAILURES):
            limiter.reserve("rita", f"10.0.0.{i}")
            clock.now += 1
        assert retry_after(limiter, "rita", "10.0.0.99") == USERNAME_WINDOW_S - USERNAME_FAILURES

    def test_success_clears_the_provisional_reservation(self) -> None:
        """The right password forgets the name's failures, including its own reservation."""
        limiter = LoginLimiter(Clock())
        for _ in range(USERNAME_FAILURES - 1):
            limiter.reserve("Rita", "10.0.0.1")
        limiter.succeeded(limiter.reserve("rita", "10.0.0.1"))
        for _ in range(USERNAME_FAILURES):
            limiter.reserve("rita", "10.0.0.1")
        assert admitted(limiter, "rita", "10.0.0.1") is None

    def test_release_gives_both_slots_back(self) -> None:
        """An attempt whose password was never verified counts against neither limit."""
        limiter = LoginLimiter(Clock())
        for _ in range(IP_ATTEMPTS):
            limiter.release(limiter.reserve("rita", "10.0.0.1"))
        assert admitted(limiter, "rita", "10.0.0.1") is not None

    def test_one_ip_is_limited_across_usernames(self) -> None:
        """Spraying many names from one address hits the per-IP limit; another address is unaffected."""
        limiter = LoginLimiter(Clock())
        for i in range(IP_ATTEMPTS):
            limiter.reserve(f"user{i}", "10.0.0.1")
        assert 0 < retry_after(limiter, "someone", "10.0.0.1") <= IP_WINDOW_S
        assert admitted(limiter, "someone", "10.0.0.2") is not None

    def test_refused_attempt_costs_the_ip_nothing(self) -> None:
        """A locked name refuses before anything is recorded, so it does not eat the IP's budget."""
        limiter = LoginLimiter(Clock())
        for _ in range(USERNAME_FAILURES):
            limiter.reserve("rita", "10.0.0.1")
        for _ in range(50):
            assert admitted(limiter, "rita", "10.0.0.1") is None
        for i in range(IP_ATTEMPTS - USERNAME_FAILURES):
            assert admitted(limiter, f"user{i}", "10.0.0.1") is not None, i

    def test_lock_ends_when_the_window_passes(self) -> None:
        """Failures leave the window one by one; no real sleeping."""
        clock = Clock()
        limiter = LoginLimiter(clock)
        for _ in range(USERNAME_FAILURES):
            limiter.reserve("rita", "10.0.0.1")
        clock.now += USERNAME_WINDOW_S - 1
        assert admitted(limiter, "rita", "10.0.0.2") is None
        clock.now += 1
        assert admitted(limiter, "rita", "10.0.0.2") is not None

    def test_names_are_normalized(self) -> None:
        """Case, full-width forms and surrounding spaces all map to one counter key."""
        assert normalize_username(" ＲＩＴＡ ") == normalize_username("rita") == "rita"
        limiter = LoginLimiter(Clock())
        for name in ("rita", "RITA", "Rita", "ｒｉｔａ", " rita"):
            limiter.reserve(name, "10.0.0.1")
        assert admitted(limiter, "rita", "10.0.0.2") is None

    def test_keys_are_keyed_hashes(self) -> None:
        """Counter keys reveal neither the name nor the address, and depend on the secret."""
        a, b = LoginLimiter(secret=b"s1"), LoginLimiter(secret=b"s2")
        attempt = a.reserve("rita@example.com", "203.0.113.7")
        assert "rita" not in attempt.user_key and "203.0.113" not in attempt.ip_key
        assert attempt.user_key == a.key("user", "rita@example.com") != b.key("user", "rita@example.com")
        assert attempt.user_key.startswith("user:") and len(attempt.user_key) == len("user:") + 32


class TestBursts:
    def test_twenty_simultaneous_attempts_on_one_name_admit_five(self) -> None:
        """The reservation is atomic: 20 threads at once, exactly 5 get a slot."""
        limiter = LoginLimiter()
        results = burst(20, lambda i: admitted(limiter, "rita", f"10.0.{i}.1"))
        assert sum(r is not None for r in results) == USERNAME_FAILURES

    def test_simultaneous_spray_from_one_ip_admits_thirty(self) -> None:
        """60 threads, 60 names, one address: exactly the per-IP limit gets through."""
        limiter = LoginLimiter()
        results = burst(60, lambda i: admitted(limiter, f"user{i}", "10.0.0.1"))
        assert sum(r is not None for r in results) == IP_ATTEMPTS


# -- through the console's login route ------------------------------------------------------------


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """Every password verification the console performs, by username (None: unknown user).
    Each takes 50 ms more, so a burst's requests all arrive while the first ones still verify."""
    calls: list[str | None] = []
    lock = threading.Lock()
    real = auth.verify_password

    def counting(env: str, row: dict | None, password: str) -> auth.Verified | None:
        with lock:
            calls.append(None if row is None else row["username"])
        time.sleep(0.05)
        return real(env, row, password)

    monkeypatch.setattr(auth, "verify_password", counting)
    return calls


def post_login(client: TestClient, token: str, username: str, password: str):  # type: ignore[no-untyped-def]
    return client.post("/login", data={"username": username, "password": password, "csrf_token": token},
                       follow_redirects=False)


class TestLoginRouteUnderBurst:
    def test_burst_on_one_name_verifies_at_most_five_passwords(
        self, client: TestClient, users: dict, verifications: list
    ) -> None:
        """20 simultaneous wrong passwords for one name: 5 verifications (401), 15 refusals (429)."""
        token = login_form_token(client)
        responses = burst(20, lambda i: post_login(client, token, "rita", f"wrong password {i:03}"))
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [401] * USERNAME_FAILURES + [429] * (20 - USERNAME_FAILURES)
        assert verifications == ["rita"] * USERNAME_FAILURES
        assert all(0 < int(r.headers["retry-after"]) <= USERNAME_WINDOW_S
                   for r in responses if r.status_code == 429)
        assert post_login(client, token, "rita", PASSWORD).status_code == 429  # locked, right password or not
        assert len(verifications) == USERNAME_FAILURES

    def test_burst_of_names_from_one_ip_verifies_at_most_thirty(
        self, client: TestClient, users: dict, verifications: list
    ) -> None:
        """A spray of 40 names at once from one address: 30 verifications, 10 refusals."""
        token = login_form_token(client)
        responses = burst(40, lambda i: post_login(client, token, f"ghost{i}", "wrong password 123"))
        assert sorted(r.status_code for r in responses) == [401] * IP_ATTEMPTS + [429] * (40 - IP_ATTEMPTS)
        assert len(verifications) == IP_ATTEMPTS

    def test_success_during_a_lockout_window_clears_the_reservation(
        self, client: TestClient, users: dict, verifications: list
    ) -> None:
        """Four failures then the right password: the name starts again from zero."""
        token = login_form_token(client)
        for _ in range(USERNAME_FAILURES - 1):
            assert post_login(client, token, "rita", "wrong password 123").status_code == 401
        assert post_login(client, token, "rita", PASSWORD).status_code == 303
        token = login_form_token(client)
        for _ in range(USERNAME_FAILURES):
            assert post_login(client, token, "rita", "wrong password 123").status_code == 401
        assert post_login(client, token, "rita", "wrong password 123").status_code == 429

    def test_attempt_that_never_verified_is_released(
        self, client: TestClient, users: dict, verifications: list, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A database error before the verify is not a failure: no lockout once the database is back."""
        def database_down(conn: object, username: str) -> None:
            raise OperationalError("SELECT", {}, Exception("connection refused"))

        token = login_form_token(client)
        with monkeypatch.context() as m:
            m.setattr(auth, "find_user", database_down)
            for _ in range(USERNAME_FAILURES + 2):
                assert post_login(client, token, "rita", PASSWORD).status_code == 503
        assert verifications == []
        assert post_login(client, token, "rita", PASSWORD).status_code == 303


# -- the shared store -----------------------------------------------------------------------------


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own; every key under it is deleted afterwards."""
    prefix = f"cgtest:login:{uuid.uuid4().hex}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def shared_limiter(prefix: str, clock: Clock | None = None, *, url: str = REDIS_URL,
                   retry_shared_after_s: float = 5.0) -> LoginLimiter:
    """A limiter as one gateway process builds it: its own in-process counts plus the shared store,
    with the secret every process shares."""
    store = RedisWindows(url, prefix=prefix, clock=clock or time.time)
    return LoginLimiter(clock or time.monotonic, shared=store, secret=b"shared-secret",
                        retry_shared_after_s=retry_shared_after_s)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.redis
class TestRedisStore:
    def test_two_processes_share_the_count(self, redis_prefix: str) -> None:
        """Three failures in one process and two in another lock the name in both."""
        a, b = shared_limiter(redis_prefix), shared_limiter(redis_prefix)
        for _ in range(3):
            a.reserve("rita", "10.0.0.1")
        for _ in range(2):
            b.reserve("rita", "10.0.0.2")
        assert 0 < retry_after(a, "rita", "10.0.0.3") <= USERNAME_WINDOW_S
        assert 0 < retry_after(b, "rita", "10.0.0.4") <= USERNAME_WINDOW_S

    def test_burst_across_two_processes_admits_five_in_total(self, redis_prefix: str) -> None:
        """The Lua check-and-reserve is atomic: 20 threads over two limiters, 5 slots in all
        (each limiter alone would have let 5 through)."""
        limiters = [shared_limiter(redis_prefix), shared_limiter(redis_prefix)]
        results = burst(20, lambda i: admitted(limiters[i % 2], "rita", f"10.0.{i}.1"))
        assert sum(r is not None for r in results) == USERNAME_FAILURES

    def test_success_in_one_process_clears_the_name_for_all(self, redis_prefix: str) -> None:
        """A success anywhere forgets the name's failures everywhere (the shared count)."""
        a, b = shared_limiter(redis_prefix), shared_limiter(redis_prefix)
        for _ in range(USERNAME_FAILURES - 1):
            a.reserve("rita", "10.0.0.1")
        b.succeeded(b.reserve("rita", "10.0.0.2"))
        # Without the shared reset, b's first attempt here would be the shared count's sixth.
        for _ in range(USERNAME_FAILURES):
            assert admitted(b, "rita", "10.0.0.2") is not None
        assert admitted(b, "rita", "10.0.0.2") is None

    def test_keys_are_hashed_and_expire_with_their_window(self, redis_prefix: str) -> None:
        """Redis holds keyed hashes only (no name, no address) and each key expires after its window."""
        limiter = shared_limiter(redis_prefix)
        limiter.reserve("rita@example.com", "203.0.113.7")
        client = redis.Redis.from_url(REDIS_URL)
        try:
            keys = sorted(k.decode() for k in client.scan_iter(match=redis_prefix + "*"))
            assert keys == sorted(redis_prefix + limiter.key(kind, value)
                                  for kind, value in (("user", "rita@example.com"), ("ip", "203.0.113.7")))
            assert not any("rita" in k or "203.0.113" in k for k in keys)
            ttl = {k.removeprefix(redis_prefix).split(":")[0]: client.pttl(k) for k in keys}
            assert 0 < ttl["user"] <= USERNAME_WINDOW_S * 1000 and 0 < ttl["ip"] <= IP_WINDOW_S * 1000
        finally:
            client.close()

    def test_window_expiry_with_an_injected_clock(self, redis_prefix: str) -> None:
        """The shared window moves with the (wall) clock it is given: no sleeping for 15 minutes."""
        clock = Clock()
        a, b = shared_limiter(redis_prefix, clock), shared_limiter(redis_prefix, clock)
        for i in range(USERNAME_FAILURES):
            (a if i % 2 else b).reserve("rita", f"10.0.0.{i}")
            clock.now += 10
        assert retry_after(a, "rita", "10.0.0.9") == USERNAME_WINDOW_S - 50
        clock.now += USERNAME_WINDOW_S - 50
        assert admitted(a, "rita", "10.0.0.9") is not None  # the first failure left the window
        assert admitted(b, "rita", "10.0.0.9") is None  # and that attempt filled it again

    def test_release_withdraws_the_attempt_from_redis(self, redis_prefix: str) -> None:
        """Released attempts leave the shared count too."""
        a, b = shared_limiter(redis_prefix), shared_limiter(redis_prefix)
        for _ in range(USERNAME_FAILURES):
            a.release(a.reserve("rita", "10.0.0.1"))
        for _ in range(USERNAME_FAILURES):
            b.reserve("rita", "10.0.0.2")
        assert admitted(b, "rita", "10.0.0.2") is None

    def test_console_uses_redis_when_the_gateway_has_it(self, tmp_path) -> None:  # type: ignore[no-untyped-def]
        """CALLGATE_REDIS_URL set: the console's limiter shares its counts through Redis."""
        base = {"secret_key": "s" * 40, "env": "test", "data_dir": tmp_path}
        assert isinstance(ConsoleState(Settings(redis_url=REDIS_URL, **base)).limiter.shared, RedisWindows)
        assert ConsoleState(Settings(**base)).limiter.shared is None


def test_several_workers_without_redis_are_warned_about(tmp_path, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    """--workers 4 without Redis multiplies the attempts: say so at startup (one worker: nothing to say)."""
    base = {"secret_key": "s" * 40, "env": "test", "data_dir": tmp_path}
    with caplog.at_level(logging.WARNING, logger="callgate.console"):
        ConsoleState(Settings(workers=1, **base))
        assert caplog.records == []
        ConsoleState(Settings(workers=4, **base))
    assert len(caplog.records) == 1 and "4 x 5 failures" in caplog.records[0].getMessage()


class TestSharedStoreOutage:
    def test_redis_down_falls_back_to_the_in_process_limit(self, caplog: pytest.LogCaptureFixture) -> None:
        """Redis unreachable: logins still stop at 5 per name (in-process), and the outage is logged once."""
        # retry interval 0: every attempt asks the closed port again, and fails
        limiter = shared_limiter("cgtest:down:", url=f"redis://127.0.0.1:{closed_port()}/0", retry_shared_after_s=0)
        with caplog.at_level(logging.WARNING, logger="callgate.console"):
            for _ in range(USERNAME_FAILURES):
                limiter.reserve("rita", "10.0.0.1")
            assert 0 < retry_after(limiter, "rita", "10.0.0.2") <= USERNAME_WINDOW_S
            results = burst(20, lambda i: admitted(limiter, "ada", f"10.0.{i}.9"))
        assert sum(r is not None for r in results) == USERNAME_FAILURES
        warnings = [r for r in caplog.records if r.name == "callgate.console"]
        assert len(warnings) == 1 and "unavailable" in warnings[0].getMessage()

    def test_outage_is_logged_once_and_recovery_shares_counts_again(self, caplog: pytest.LogCaptureFixture) -> None:
        """One warning when the store fails, one note when it is back; meanwhile the local count holds."""
        store = FlakyStore()
        limiter = LoginLimiter(shared=store, retry_shared_after_s=0)
        with caplog.at_level(logging.INFO, logger="callgate.console"):
            store.down = True
            for _ in range(3):
                limiter.reserve("rita", "10.0.0.1")
            store.down = False
            limiter.reserve("rita", "10.0.0.1")
        messages = [r.getMessage() for r in caplog.records if r.name == "callgate.console"]
        assert len(messages) == 2 and "unavailable" in messages[0] and "back" in messages[1]
        assert store.calls == 4  # tried every time (retry interval 0), recorded once
        for _ in range(USERNAME_FAILURES - 1):  # the shared store saw 1 attempt; 4 more fill it
            store.windows.reserve([(limiter.key("user", "rita"), Limit(USERNAME_FAILURES, USERNAME_WINDOW_S))], "x")
        assert admitted(limiter, "rita", "10.0.0.1") is None

    def test_after_an_error_the_store_is_left_alone_for_a_while(self) -> None:
        """An outage costs one failed call per retry interval, not one per login."""
        store = FlakyStore()
        store.down = True
        limiter = LoginLimiter(shared=store, retry_shared_after_s=60)
        for i in range(4):
            limiter.reserve(f"user{i}", "10.0.0.1")
        assert store.calls == 1


class FlakyStore:
    """A shared store that can be switched off: in-process windows behind a ``down`` flag."""

    def __init__(self) -> None:
        self.windows = LocalWindows()
        self.down = False
        self.calls = 0

    def _check(self) -> None:
        self.calls += 1
        if self.down:
            raise StoreUnavailable("switched off")

    def reserve(self, hits: Hits, token: str) -> float:
        self._check()
        return self.windows.reserve(hits, token)

    def release(self, keys: Sequence[str], token: str) -> None:
        self._check()
        self.windows.release(keys, token)

    def reset(self, key: str) -> None:
        self._check()
        self.windows.reset(key)

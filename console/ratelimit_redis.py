"""The Redis ``WindowStore`` of the login limiter: one count shared by every worker and host.

Each key is a sorted set of events scored by time in milliseconds (a moving window, like the
in-process store). Check and reserve are one Lua script, so two workers racing for the last slot
cannot both win: per key ``ZREMRANGEBYSCORE`` (drop what left the window) and ``ZCARD``; then,
only if every key has room, ``ZADD`` the attempt's token and ``PEXPIRE`` the key one window ahead
(idle keys disappear by themselves).

Time is the callers' wall clock (``time.time``), not ``time.monotonic``: it must mean the same in
every process. Hosts under NTP agree to milliseconds, far below the windows (60 s, 15 min).

Every Redis or socket error becomes ``StoreUnavailable``; the limiter then falls back to its
in-process counts. The client never retries (a retry would double the wait of a login during an
outage) and gives up after ``timeout_s``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from console.ratelimit import Hits, StoreUnavailable

DEFAULT_PREFIX = "callgate:login:"
DEFAULT_TIMEOUT_S = 0.5

# KEYS: the counters. ARGV: now_ms, token, then (limit, window_ms) for each key, in order.
# Returns 0 (reserved under every key) or the milliseconds until the fullest key has room.
RESERVE = """
local now = tonumber(ARGV[1])
local token = ARGV[2]
local wait = 0
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[1 + 2 * i])
  local window = tonumber(ARGV[2 + 2 * i])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  local count = redis.call('ZCARD', key)
  if count >= limit then
    local oldest = redis.call('ZRANGE', key, count - limit, count - limit, 'WITHSCORES')
    wait = math.max(wait, tonumber(oldest[2]) + window - now)
  end
end
if wait > 0 then
  return wait
end
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, token)
  redis.call('PEXPIRE', key, tonumber(ARGV[2 + 2 * i]))
end
return 0
"""


class RedisWindows:
    """Moving windows in Redis sorted sets under ``prefix`` (keys arrive already hashed)."""

    def __init__(self, url: str, *, prefix: str = DEFAULT_PREFIX, clock: Callable[[], float] = time.time,
                 timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.prefix = prefix
        self.clock = clock
        self._client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s,
                                            retry=Retry(NoBackoff(), 0))
        self._reserve = self._client.register_script(RESERVE)

    def reserve(self, hits: Hits, token: str) -> float:
        now_ms = int(self.clock() * 1000)
        keys = [self.prefix + key for key, _ in hits]
        args: list[int | str] = [now_ms, token]
        for _, limit in hits:
            args += [limit.count, int(limit.window_s * 1000)]
        with _unavailable_on_error():
            wait_ms = int(self._reserve(keys=keys, args=args))
        return wait_ms / 1000

    def release(self, keys: Sequence[str], token: str) -> None:
        with _unavailable_on_error():
            pipe = self._client.pipeline(transaction=False)
            for key in keys:
                pipe.zrem(self.prefix + key, token)
            pipe.execute()

    def reset(self, key: str) -> None:
        with _unavailable_on_error():
            self._client.delete(self.prefix + key)

    def close(self) -> None:
        self._client.close()


@contextmanager
def _unavailable_on_error() -> Iterator[None]:
    from redis.exceptions import RedisError

    try:
        yield
    except (RedisError, OSError) as exc:
        raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc

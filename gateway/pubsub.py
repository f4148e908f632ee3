"""Redis pub/sub bridge: wake long-polls held by *other* processes.

Every gateway worker subscribes to one channel in its lifespan and turns each message (call ids
separated by single spaces) into ``Notifier.publish(call_id)`` for each, releasing that worker's
held ``GET /v1/calls/{id}?wait=``. A publisher announcing many calls at once (an expiry sweep)
packs up to ``IDS_PER_MESSAGE`` ids into one message: one round trip and one message to parse per
hundred calls instead of per call (a single-id message is the same bytes as before, so older
publishers' messages are understood; an older *receiver* would miss packed wake-ups and fall back
to its DB re-check).
Publishers are every place a call leaves ``pending`` outside the worker that holds the poll:
``approvals.decide`` (console, Slack), the ``callgate calls approve|deny`` CLI and the Celery
expiry sweep.

Redis is an accelerator, never the source of truth (security.md §5.5): the database is re-read
after every wake-up and every ``recheck_seconds`` regardless. So on any Redis error we log, keep
serving (waiters fall back to the DB re-check) and reconnect with capped exponential backoff;
after a reconnect every local waiter is woken once, because messages published while we were
disconnected are lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from gateway.notify import Notifier

log = logging.getLogger("callgate.pubsub")

CHANNEL = "callgate:call-updated"
IDS_PER_MESSAGE = 100  # 100 UUIDs: 3.7 KB per message
_SOCKET_TIMEOUT = 2.0


def pack(call_ids: Iterable[str]) -> list[str]:
    """The messages announcing ``call_ids``: up to ``IDS_PER_MESSAGE`` ids each, space-separated."""
    ids = list(call_ids)
    return [" ".join(ids[i:i + IDS_PER_MESSAGE]) for i in range(0, len(ids), IDS_PER_MESSAGE)]


def unpack(data: bytes | str) -> list[str]:
    """The call ids of one message (a bare id, or several separated by spaces)."""
    text = data.decode("ascii", "replace") if isinstance(data, bytes) else str(data)
    return text.split()


class RedisBridge:
    """One subscriber task and one publishing client per gateway worker."""

    def __init__(self, url: str, notifier: Notifier, *, channel: str = CHANNEL, min_backoff: float = 0.1,
                 max_backoff: float = 5.0, client_name: str | None = None) -> None:
        self.url = url
        self.notifier = notifier
        self.channel = channel
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.client_name = client_name
        self.subscribed = asyncio.Event()
        self.received = 0
        self.subscriptions = 0  # successful (re)subscriptions
        self._task: asyncio.Task[None] | None = None
        self._publisher = None

    async def start(self) -> None:
        import redis.asyncio as aredis

        self._publisher = aredis.Redis.from_url(
            self.url, socket_connect_timeout=_SOCKET_TIMEOUT, socket_timeout=_SOCKET_TIMEOUT
        )
        self._task = asyncio.create_task(self._listen(), name="callgate-redis-bridge")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - shutting down
                pass
            self._task = None
        if self._publisher is not None:
            try:
                await self._publisher.aclose()
            except Exception:  # noqa: BLE001
                pass
            self._publisher = None

    async def publish(self, call_ids: Iterable[str]) -> bool:
        """Announce that these calls changed; False (logged) when Redis is unreachable."""
        from redis.exceptions import RedisError

        if self._publisher is None:
            return False
        try:
            for message in pack(call_ids):
                await self._publisher.publish(self.channel, message)
            return True
        except (RedisError, OSError) as exc:
            log.warning("redis publish failed (%s); other workers fall back to the DB re-check", exc)
            return False

    async def _listen(self) -> None:
        import redis.asyncio as aredis
        from redis.exceptions import RedisError

        backoff = self.min_backoff
        failing = False
        while True:
            client = aredis.Redis.from_url(
                self.url, socket_connect_timeout=_SOCKET_TIMEOUT, socket_keepalive=True,
                client_name=self.client_name,
            )
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                if failing or self.subscriptions:
                    log.info("redis pub/sub reconnected; waking every local waiter to re-check")
                    self.notifier.publish_all()  # anything published while we were away is lost
                self.subscriptions += 1
                failing = False
                backoff = self.min_backoff
                self.subscribed.set()
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    self.received += 1
                    for call_id in unpack(message.get("data") or b""):
                        self.notifier.publish(call_id)
                raise ConnectionError("subscription ended")
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, ConnectionError) as exc:
                self.subscribed.clear()
                if not failing:
                    log.warning("redis pub/sub unavailable (%s); long-polls fall back to the DB re-check, "
                                "reconnecting", exc)
                failing = True
            except Exception:  # noqa: BLE001 - never let the bridge die
                self.subscribed.clear()
                log.exception("redis pub/sub bridge failed; reconnecting")
                failing = True
            finally:
                try:
                    await pubsub.aclose()
                    await client.aclose()
                except Exception:  # noqa: BLE001
                    pass
            await asyncio.sleep(backoff)
            backoff = min(self.max_backoff, backoff * 2)


class SyncPublisher:
    """A blocking publisher for processes without an event loop (CLI, Celery task).

    Build (and ``connect``) it *before* the transaction it announces, so the wake-up leaves right
    after the commit instead of paying for the import and the TCP handshake then."""

    def __init__(self, url: str, *, channel: str = CHANNEL) -> None:
        import redis

        self.channel = channel
        self._client = redis.Redis.from_url(url, socket_connect_timeout=_SOCKET_TIMEOUT,
                                            socket_timeout=_SOCKET_TIMEOUT)

    def connect(self) -> bool:
        from redis.exceptions import RedisError

        try:
            self._client.ping()
            return True
        except (RedisError, OSError) as exc:
            log.warning("redis unreachable (%s); waiting agents will see the change at the next DB re-check", exc)
            return False

    def publish(self, call_ids: Iterable[str]) -> bool:
        from redis.exceptions import RedisError

        try:
            messages = pack(call_ids)
            if not messages:
                return True
            if len(messages) == 1:
                self._client.publish(self.channel, messages[0])
            else:  # one round trip for all of them
                pipe = self._client.pipeline(transaction=False)
                for message in messages:
                    pipe.publish(self.channel, message)
                pipe.execute()
            return True
        except (RedisError, OSError) as exc:
            log.warning("redis publish failed (%s); waiting agents see the change at the next DB re-check", exc)
            return False

    def close(self) -> None:
        self._client.close()


def publish_sync(url: str, call_ids: Iterable[str], *, channel: str = CHANNEL) -> bool:
    """Publish from a process without an event loop; False (logged) when Redis is unreachable."""
    ids = list(call_ids)
    if not ids:
        return True
    publisher = SyncPublisher(url, channel=channel)
    try:
        return publisher.publish(ids)
    finally:
        publisher.close()

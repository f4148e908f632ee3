"""The Redis pub/sub bridge against the local Redis: delivery, reconnect, and an unreachable Redis."""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid

import pytest
import redis

from gateway.notify import Notifier
from gateway.pubsub import IDS_PER_MESSAGE, RedisBridge, pack, publish_sync, unpack

pytestmark = pytest.mark.redis


@pytest.fixture
def redis_url() -> str:
    return f"redis://127.0.0.1:6379/{random.randint(1, 15)}"


def test_publish_from_another_process_wakes_local_waiters(redis_url: str) -> None:
    """publish_sync (CLI, Celery) -> every subscribed worker's notifier wakes that call's waiters only."""
    channel = f"test:{uuid.uuid4().hex}"

    async def main() -> tuple[bool, bool, float]:
        notifier = Notifier()
        bridges = [RedisBridge(redis_url, notifier, channel=channel) for _ in range(2)]
        for b in bridges:
            await b.start()
        for b in bridges:
            await asyncio.wait_for(b.subscribed.wait(), 5)
        target, other = str(uuid.uuid4()), str(uuid.uuid4())
        with notifier.watch(target) as hit, notifier.watch(other) as miss:
            started = time.perf_counter()
            await asyncio.to_thread(publish_sync, redis_url, [target], channel=channel)
            await asyncio.wait_for(hit.wait(), 2)
            latency = time.perf_counter() - started
            await asyncio.sleep(0.05)
            woke_other = miss.is_set()
        ok = await bridges[0].publish([other])  # the async publisher used by approvals.decide
        for b in bridges:
            await b.stop()
        return ok, woke_other, latency

    ok, woke_other, latency = asyncio.run(main())
    assert ok and not woke_other
    assert latency < 0.5


def test_many_ids_are_packed_into_few_messages() -> None:
    """A sweep announcing 250 calls sends 3 messages, not 250; a bare id is its own message (the
    format every publisher used before), and unpack reads both."""
    ids = [str(uuid.uuid4()) for _ in range(2 * IDS_PER_MESSAGE + 50)]
    messages = pack(ids)
    assert len(messages) == 3
    assert [i for m in messages for i in unpack(m.encode())] == ids
    assert pack(ids[:1]) == [ids[0]] and unpack(ids[0].encode()) == [ids[0]]
    assert pack([]) == []


@pytest.mark.parametrize("publisher", ["sync", "bridge"])
def test_a_packed_announcement_wakes_every_call_it_names(redis_url: str, publisher: str) -> None:
    """publish_sync (CLI, Celery) and the bridge's own publish (approvals.announce), with 250 ids:
    every waiter of those calls wakes; a call not named stays asleep."""
    channel = f"test:{uuid.uuid4().hex}"
    ids = [str(uuid.uuid4()) for _ in range(250)]

    async def main() -> tuple[int, bool, int]:
        notifier = Notifier()
        bridge = RedisBridge(redis_url, notifier, channel=channel)
        await bridge.start()
        await asyncio.wait_for(bridge.subscribed.wait(), 5)
        other = str(uuid.uuid4())
        watches = [notifier.watch(i) for i in [*ids, other]]
        events = [w.__enter__() for w in watches]
        if publisher == "sync":
            assert await asyncio.to_thread(publish_sync, redis_url, ids, channel=channel)
        else:
            assert await bridge.publish(ids)
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events[:-1])), 5)
        await asyncio.sleep(0.05)
        woke = sum(e.is_set() for e in events[:-1])
        for w in watches:
            w.__exit__(None, None, None)
        received = bridge.received
        await bridge.stop()
        return woke, events[-1].is_set(), received

    woke, other_woke, received = asyncio.run(main())
    assert (woke, other_woke, received) == (250, False, 3)


def test_bridge_reconnects_after_its_connection_is_killed(redis_url: str) -> None:
    """Redis drops the subscriber: the bridge resubscribes with backoff, wakes every local waiter once
    (messages may have been lost meanwhile), and delivers again afterwards."""
    channel = f"test:{uuid.uuid4().hex}"
    name = f"cg-test-{uuid.uuid4().hex[:12]}"

    async def main() -> tuple[bool, bool, int]:
        notifier = Notifier()
        bridge = RedisBridge(redis_url, notifier, channel=channel, client_name=name, min_backoff=0.05)
        await bridge.start()
        await asyncio.wait_for(bridge.subscribed.wait(), 5)
        call_id = str(uuid.uuid4())
        with notifier.watch(call_id) as woken:
            admin = redis.Redis.from_url(redis_url)
            killed = sum(admin.client_kill_filter(_id=c["id"]) for c in admin.client_list() if c["name"] == name)
            admin.close()
            await asyncio.wait_for(woken.wait(), 5)  # the reconnect wakes waiters to re-check
            woken_by_reconnect = woken.is_set()
            woken.clear()
            await asyncio.wait_for(bridge.subscribed.wait(), 5)
            await bridge.publish([call_id])
            await asyncio.wait_for(woken.wait(), 2)
            delivered = woken.is_set()
        subscriptions = bridge.subscriptions
        await bridge.stop()
        assert killed == 1
        return woken_by_reconnect, delivered, subscriptions

    woken_by_reconnect, delivered, subscriptions = asyncio.run(main())
    assert woken_by_reconnect and delivered and subscriptions == 2


def test_unreachable_redis_is_logged_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    """No Redis: start() succeeds, publish answers False (the DB re-check remains), the bridge keeps retrying."""
    url = "redis://127.0.0.1:1/0"

    async def main() -> tuple[bool, bool]:
        bridge = RedisBridge(url, Notifier(), max_backoff=0.1)
        await bridge.start()
        await asyncio.sleep(0.3)
        ok = await bridge.publish(["x"])
        alive = bridge._task is not None and not bridge._task.done()
        await bridge.stop()
        return ok, alive

    with caplog.at_level(logging.WARNING, logger="callgate.pubsub"):
        ok, alive = asyncio.run(main())
        assert publish_sync(url, ["x"]) is False
    assert (ok, alive) == (False, True)
    assert "fall back to the DB re-check" in caplog.text


def test_celery_sweep_task_wakes_waiters_through_redis(sqlite_database_url: str, redis_url: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Beat's sweep runs in its own process: the expired ids are published on Redis, so every
    gateway worker releases those long-polls (and its console queue) at once."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import insert

    import gateway.worker as worker
    from gateway.db import make_engine
    from gateway.models import ToolCall

    call_id = str(uuid.uuid4())
    now = datetime.now(UTC)
    engine = make_engine(sqlite_database_url, writer=True)
    with engine.begin() as conn:
        conn.execute(insert(ToolCall.__table__).values(
            id=call_id, agent="a", tool="t", args="{}", args_fp="0" * 64, redactions="[]", metadata="{}",
            fingerprint="0" * 64, fail_open=False, decision="require_approval", status="pending", policy_version=1,
            created_at=now - timedelta(seconds=10), expires_at=now - timedelta(seconds=1)))
    engine.dispose()
    monkeypatch.setenv("CALLGATE_DATABASE_URL", sqlite_database_url)
    monkeypatch.setenv("CALLGATE_REDIS_URL", redis_url)
    monkeypatch.setattr(worker, "_engine", None)

    async def main() -> int:
        notifier = Notifier()
        bridge = RedisBridge(redis_url, notifier)
        await bridge.start()
        await asyncio.wait_for(bridge.subscribed.wait(), 5)
        with notifier.watch(call_id) as woken:
            swept = await asyncio.to_thread(worker.sweep_expired_task)
            await asyncio.wait_for(woken.wait(), 2)
        await bridge.stop()
        return swept

    try:
        assert asyncio.run(main()) == 1
    finally:
        if worker._engine is not None:
            worker._engine[1].dispose()
        monkeypatch.setattr(worker, "_engine", None)

"""Who runs webhook delivery, and how a fresh decision gets it going at once.

* **Embedded mode** (no Redis): ``EmbeddedWorker``, a thread in the gateway process. It runs
  ``delivery.drain`` when woken (``kick()`` right after a decision or sweep commits here) and on
  a periodic tick (``CALLGATE_WEBHOOK_POLL_SECONDS``, 1 s by default), which is how decisions
  committed by *another* process (``callgate calls approve`` on the same SQLite file) are picked
  up. Its writes go through the gateway's own group commit, so they never contend with request
  writes for the SQLite lock.
* **Production** (Redis): Celery workers deliver (``gateway.worker``: the
  ``callgate.deliver_webhooks`` task, also on the beat schedule). ``CeleryKicker`` is the gateway
  side: ``kick()`` sends that task from a background thread (coalescing bursts), so a request
  never waits on the broker; if the send fails, beat's next run delivers anyway.

Both refresh the outbox gauges of ``gateway.metrics`` every few seconds from the database, off
the event loop.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import Engine

from gateway.webhooks.delivery import DeliveryConfig, RunUnit, drain, has_due
from gateway.webhooks.outbox import backlog

if TYPE_CHECKING:
    from gateway.metrics import Metrics
    from gateway.runtime import Runtime

__all__ = ["DELIVER_TASK", "CeleryKicker", "EmbeddedWorker", "WebhookDispatcher", "send_delivery_task", "start_for"]

log = logging.getLogger("callgate.webhooks")

DELIVER_TASK = "callgate.deliver_webhooks"
KICK_EXPIRES_S = 60.0  # a kick nobody consumed for a minute is moot: beat has run many times since
BROKER_TIMEOUT_S = 2.0
GAUGE_EVERY_S = 5.0


class WebhookDispatcher(Protocol):
    def start(self) -> None: ...
    def kick(self) -> None: ...
    def stop(self) -> None: ...


def send_delivery_task(redis_url: str, queue: str, *, timeout: float = BROKER_TIMEOUT_S) -> bool:
    """Ask the Celery workers to deliver now (one short-lived broker connection, no retries);
    False (logged) if the broker is unreachable: beat's schedule delivers anyway."""
    from gateway.worker import app

    options = {"socket_timeout": timeout, "socket_connect_timeout": timeout, "max_retries": 0}
    try:
        with app.connection_for_write(redis_url, connect_timeout=timeout, transport_options=options) as conn:
            app.send_task(DELIVER_TASK, queue=queue, connection=conn, retry=False, expires=KICK_EXPIRES_S)
        return True
    except Exception as exc:  # noqa: BLE001 - kombu raises many kinds; the beat schedule covers us
        log.warning("could not queue %s (%s); the beat schedule will deliver", DELIVER_TASK, exc)
        return False


class _Loop:
    """A daemon thread that runs ``tick`` when kicked and every ``interval`` seconds."""

    name = "callgate-webhooks"

    def __init__(self, interval: float, reader: Engine, metrics: Metrics | None) -> None:
        self.interval = interval
        self._reader = reader
        self._metrics = metrics
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._gauges_at = 0.0
        self.ticks = 0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def kick(self) -> None:
        """Run soon (thread-safe, never blocks; many kicks before the next run make one run)."""
        self._wake.set()

    def stop(self, timeout: float = 15.0) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stopping:
            woken = self._wake.wait(self.interval)
            self._wake.clear()
            if self._stopping:
                break
            try:
                self.tick(woken)
                self._refresh_gauges()
            except Exception:  # noqa: BLE001 - one failed round (database down...) must not end the loop
                log.exception("%s: round failed; retrying at the next tick", self.name)
            self.ticks += 1

    def tick(self, woken: bool) -> None:
        raise NotImplementedError

    def _refresh_gauges(self) -> None:
        if self._metrics is None or time.monotonic() - self._gauges_at < GAUGE_EVERY_S:
            return
        self._gauges_at = time.monotonic()
        with self._reader.connect() as conn:
            current = backlog(conn)
        self._metrics.webhook_pending.set(current.pending)
        self._metrics.webhook_due.set(current.due)
        self._metrics.webhook_oldest_due_seconds.set(current.oldest_due_seconds)


class EmbeddedWorker(_Loop):
    """Embedded mode's stand-in for the Celery worker: delivers in this process."""

    name = "callgate-webhooks-embedded"

    def __init__(self, run: RunUnit, reader: Engine, config: DeliveryConfig, *, poll_seconds: float,
                 metrics: Metrics | None = None) -> None:
        super().__init__(poll_seconds, reader, metrics)
        self._run_unit = run
        self._config = config

    def tick(self, woken: bool) -> None:
        with self._reader.connect() as conn:
            if not has_due(conn):  # a read: an idle tick never takes the write lock
                return
        drain(self._run_unit, self._config, metrics=self._metrics)


class CeleryKicker(_Loop):
    """Production: turns kicks into ``callgate.deliver_webhooks`` tasks, off the request path."""

    name = "callgate-webhooks-kicker"

    def __init__(self, redis_url: str, queue: str, reader: Engine, *, metrics: Metrics | None = None,
                 gauge_seconds: float = GAUGE_EVERY_S) -> None:
        super().__init__(gauge_seconds, reader, metrics)
        self._redis_url = redis_url
        self._queue = queue
        self.sent = 0

    def tick(self, woken: bool) -> None:
        if woken and send_delivery_task(self._redis_url, self._queue):
            self.sent += 1


def start_for(runtime: Runtime) -> WebhookDispatcher:
    """The dispatcher a gateway process runs (from the app lifespan), started: Celery kicks when
    Redis is configured, the in-process worker otherwise."""
    settings = runtime.settings
    dispatcher: WebhookDispatcher
    if settings.redis_url:
        dispatcher = CeleryKicker(settings.redis_url, settings.celery_queue, runtime.reader, metrics=runtime.metrics)
    else:
        queue = runtime.commit_queue
        dispatcher = EmbeddedWorker(lambda work: queue.run_sync(work), runtime.reader,
                                    DeliveryConfig.from_settings(settings),
                                    poll_seconds=settings.webhook_poll_seconds, metrics=runtime.metrics)
    dispatcher.start()
    return dispatcher

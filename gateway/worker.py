"""Celery on Redis for production background work; tasks are thin wrappers over plain functions.

``celery -A gateway.worker worker`` runs the tasks, ``celery -A gateway.worker beat`` schedules
the expiry sweep and the webhook delivery round. In embedded mode (no Redis) the gateway runs
the same functions in-process. Creating the Celery object connects to nothing; settings and the
engine are built lazily in each worker process (after fork), never at import.

Tasks carry no arguments: the work lives in database rows (the webhook outbox, pending calls),
so a lost, duplicated or late task message changes nothing but timing. Backoff lives in the
outbox's ``next_attempt_at`` too, never in Celery ETA/countdown (with the Redis broker those are
redelivered after the visibility timeout).
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from sqlalchemy import Engine

from gateway.config import Settings
from gateway.db import make_engine
from gateway.expiry import sweep_expired
from gateway.webhooks.delivery import DeliveryConfig, drain, has_due, in_transaction
from gateway.webhooks.dispatch import DELIVER_TASK


def _env(name: str) -> str:
    """A ``CALLGATE_*`` setting read at import (Celery's schedule and queue are fixed then);
    its default is the one ``Settings`` documents."""
    value = os.environ.get(f"CALLGATE_{name.upper()}")
    return value if value else str(Settings.model_fields[name].default)


SWEEP_INTERVAL_S = float(os.environ.get("CALLGATE_SWEEP_INTERVAL_S", "5"))
WEBHOOK_POLL_S = float(_env("webhook_poll_seconds"))
QUEUE = _env("celery_queue")
DELIVERY_BUDGET_S = 30.0  # one task delivers for at most this long; the rest is due on the next run


def _broker() -> str:
    return os.environ.get("CALLGATE_REDIS_URL") or "redis://127.0.0.1:6379/0"


app = Celery("callgate", broker=_broker(), backend=None)
app.conf.update(
    task_acks_late=True,  # a worker killed mid-task leaves the message for another worker
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    task_ignore_result=True,
    task_default_queue=QUEUE,
    beat_schedule={
        "sweep-expired": {"task": "callgate.sweep_expired", "schedule": SWEEP_INTERVAL_S},
        # The safety net under the kicks: nothing stays due longer than this if a kick is lost.
        "deliver-webhooks": {"task": DELIVER_TASK, "schedule": WEBHOOK_POLL_S,
                             "options": {"expires": max(10.0, WEBHOOK_POLL_S * 5)}},
    },
    timezone="UTC",
)

_engine: tuple[int, Engine] | None = None
_settings: Settings | None = None


def settings() -> Settings:
    global _settings
    if _settings is None:
        _settings = Settings()
    return _settings


def engine() -> Engine:
    """This process's engine (rebuilt after a fork: pooled connections must not cross processes)."""
    global _engine
    if _engine is None or _engine[0] != os.getpid():
        _engine = (os.getpid(), make_engine(settings().resolved_database_url(), writer=True))
    return _engine[1]


def run_unit(work: Any) -> Any:
    """Run one unit of work in its own transaction, chaining its audit events before commit."""
    return in_transaction(engine())(work)


@app.task(name="callgate.sweep_expired")
def sweep_expired_task() -> int:
    """Expire overdue approvals, then wake the agents waiting on them in every gateway worker
    (beat runs in its own process: the wake-up goes through Redis pub/sub). Their webhook rows
    were written by the sweep itself; delivery is queued right after."""
    expired = run_unit(sweep_expired)
    url = os.environ.get("CALLGATE_REDIS_URL")
    if expired and url:
        from gateway.pubsub import publish_sync

        publish_sync(url, expired)
    if expired:
        deliver_webhooks_task.apply_async(expires=60)
    return len(expired)


@app.task(name=DELIVER_TASK)
def deliver_webhooks_task() -> int:
    """Deliver every due webhook message (bounded by a time budget); the number of attempts."""
    with engine().connect() as conn:
        if not has_due(conn):  # most beat runs: one indexed read, no write transaction
            return 0
    return drain(run_unit, DeliveryConfig.from_settings(settings()), budget_seconds=DELIVERY_BUDGET_S)

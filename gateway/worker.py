"""Celery on Redis for production background work; tasks are thin wrappers over plain functions.

``celery -A gateway.worker worker`` runs the tasks, ``celery -A gateway.worker beat`` schedules
the expiry sweep. In embedded mode (no Redis) the gateway runs the same functions in-process.
Creating the Celery object connects to nothing; settings and the engine are built lazily in
each worker process (after fork), never at import.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from sqlalchemy import Engine

from gateway.audit import AuditBatch
from gateway.config import Settings
from gateway.db import make_engine
from gateway.expiry import sweep_expired

SWEEP_INTERVAL_S = float(os.environ.get("CALLGATE_SWEEP_INTERVAL_S", "5"))


def _broker() -> str:
    return os.environ.get("CALLGATE_REDIS_URL") or "redis://127.0.0.1:6379/0"


app = Celery("callgate", broker=_broker(), backend=None)
app.conf.update(
    task_acks_late=True,  # a worker killed mid-task leaves the message for another worker
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    task_ignore_result=True,
    beat_schedule={"sweep-expired": {"task": "callgate.sweep_expired", "schedule": SWEEP_INTERVAL_S}},
    timezone="UTC",
)

_engine: tuple[int, Engine] | None = None


def engine() -> Engine:
    """This process's engine (rebuilt after a fork: pooled connections must not cross processes)."""
    global _engine
    if _engine is None or _engine[0] != os.getpid():
        _engine = (os.getpid(), make_engine(Settings().resolved_database_url(), writer=True))
    return _engine[1]


def run_unit(work: Any) -> Any:
    """Run one unit of work in its own transaction, chaining its audit events before commit."""
    with engine().connect() as conn, conn.begin():
        audit = AuditBatch()
        result = work(conn, audit)
        audit.flush(conn)
    return result


@app.task(name="callgate.sweep_expired")
def sweep_expired_task() -> int:
    """Expire overdue approvals, then wake the agents waiting on them in every gateway worker
    (beat runs in its own process: the wake-up goes through Redis pub/sub)."""
    expired = run_unit(sweep_expired)
    url = os.environ.get("CALLGATE_REDIS_URL")
    if expired and url:
        from gateway.pubsub import publish_sync

        publish_sync(url, expired)
    return len(expired)

"""The resources one gateway process owns, built in the app's lifespan (never at import)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from gateway.commit_queue import CommitQueue
from gateway.config import Settings
from gateway.long_polls import LongPolls
from gateway.metrics import Metrics
from gateway.notify import Notifier
from gateway.policy_store import ActivePolicy

if TYPE_CHECKING:
    from gateway.pubsub import RedisBridge
    from gateway.webhooks.dispatch import WebhookDispatcher


@dataclass
class Runtime:
    settings: Settings
    writer: Engine
    reader: Engine
    commit_queue: CommitQueue
    policy: ActivePolicy
    secret: bytes
    metrics: Metrics
    notifier: Notifier
    long_polls: LongPolls  # the held long-polls' batched reads and re-check query
    recheck_seconds: float = 1.0  # long-polls re-read the DB at least this often (push is the fast path)
    pubsub: RedisBridge | None = None  # cross-process wake-ups when CALLGATE_REDIS_URL is set
    webhooks: WebhookDispatcher | None = None  # kicked after each decision commits (gateway.webhooks.dispatch)

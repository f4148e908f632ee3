"""The resources one gateway process owns, built in the app's lifespan (never at import)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from gateway.commit_queue import CommitQueue
from gateway.config import Settings
from gateway.metrics import Metrics
from gateway.notify import Notifier
from gateway.policy_store import ActivePolicy


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
    recheck_seconds: float = 1.0

"""Prometheus metrics, on a registry owned by each app (so tests can build many apps).

With several ``callgate serve`` workers, ``PROMETHEUS_MULTIPROC_DIR`` is set by the CLI and
``/metrics`` aggregates every worker's files.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.decisions = Counter(
            "callgate_decisions_total", "Tool-call decisions by tool and decision.", ["tool", "decision"],
            registry=self.registry,
        )
        self.decision_seconds = Histogram(
            "callgate_decision_seconds", "Time from request received to decision committed.",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )
        self.commit_batch = Histogram(
            "callgate_commit_batch_size", "Units of work per group commit.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=self.registry,
        )
        self.outcomes = Counter(
            "callgate_outcomes_total", "Tool outcomes reported by agents.", ["tool", "status"], registry=self.registry
        )
        # Webhooks. Attempts are counted by the process that sends them (the gateway in embedded
        # mode; Celery workers in production, which keep their own counts). The outbox gauges are
        # read from the database by every gateway process, so they are right in both modes.
        self.webhook_deliveries = Counter(
            "callgate_webhook_deliveries_total",
            "Webhook delivery attempts by result: delivered, retry (will be retried) or failed (given up).",
            ["result"], registry=self.registry,
        )
        self.webhook_endpoints_disabled = Counter(
            "callgate_webhook_endpoints_disabled_total",
            "Webhook endpoints the gateway disabled by itself, by cause: gone (the receiver answered 410) or dead "
            "(failing for longer than CALLGATE_WEBHOOK_DISABLE_AFTER_SECONDS with no success).",
            ["cause"], registry=self.registry,
        )
        self.webhook_pending = Gauge(
            "callgate_webhook_outbox_pending", "Webhook messages neither delivered nor given up (the backlog).",
            multiprocess_mode="livemostrecent", registry=self.registry,
        )
        self.webhook_due = Gauge(
            "callgate_webhook_outbox_due", "Webhook messages due for an attempt now.",
            multiprocess_mode="livemostrecent", registry=self.registry,
        )
        self.webhook_oldest_due_seconds = Gauge(
            "callgate_webhook_outbox_oldest_due_seconds", "How long the oldest due webhook message has waited.",
            multiprocess_mode="livemostrecent", registry=self.registry,
        )

    def render(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)

"""Deliver due webhook messages: claim, send, record. A plain function that every runner shares
(the embedded in-process worker, the Celery task, tests).

1. **Claim** (one short transaction): due ``pending`` rows are locked with ``FOR UPDATE SKIP
   LOCKED`` on PostgreSQL (SQLite has one writer: ``BEGIN IMMEDIATE`` already serializes), their
   ``attempts`` counted and ``next_attempt_at`` pushed forward by the *lease*. After the commit no
   other worker sees them as due until the lease ends, so concurrent workers never send the same
   message at once, and a worker killed mid-POST leaves its messages due again after the lease:
   at-least-once, with the same ``webhook-id``.
2. **Send** (no transaction open): the SSRF guard re-resolves and re-checks the host, the body is
   signed with a fresh timestamp and POSTed to the checked address. The messages of one claim are
   sent concurrently, so one slow receiver cannot push the others past their lease.
3. **Record** (one short transaction): a delivery-log row per attempt; the message becomes
   ``delivered``, is rescheduled (backoff with full jitter), or ends ``failed``. A message that
   ends is an audit event (``webhook.delivered`` / ``webhook.failed``). Updates are fenced on the
   attempt number, so a worker that lost its lease can never overwrite a newer attempt's state;
   a success always counts (``webhook.delivered`` exactly once per message).

The transaction runner, clock, random source, resolver and HTTP function are parameters, so
tests drive retries without sleeping and point the guard at any resolver they like.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Connection, Engine, insert, select, update

from callgate.redaction import redact
from gateway.audit import SYSTEM, AuditBatch
from gateway.errors import Conflict
from gateway.models import WebhookDelivery, WebhookEndpoint, WebhookOutbox
from gateway.webhooks import transport
from gateway.webhooks.endpoints import disable_endpoint
from gateway.webhooks.retry import Verdict, judge_error, judge_status, retry_delay
from gateway.webhooks.signing import signed_headers
from gateway.webhooks.ssrf import BlockedDestination, Resolver, UnresolvableHost, parse_url, resolve_checked

if TYPE_CHECKING:
    from gateway.config import Settings
    from gateway.metrics import Metrics

__all__ = [
    "Attempt",
    "Claimed",
    "DeliveryConfig",
    "RunUnit",
    "claim_due",
    "deliver_due",
    "drain",
    "has_due",
    "in_transaction",
    "record_attempts",
    "send",
]

log = logging.getLogger("callgate.webhooks")
T = TypeVar("T")
Work = Callable[[Connection, AuditBatch], T]
#: Runs one unit of work in its own committed transaction and returns its result: the group
#: commit's ``run_sync`` in a gateway process, ``in_transaction(engine)`` elsewhere.
RunUnit = Callable[[Work[Any]], Any]
Clock = Callable[[], datetime]
Post = Callable[..., transport.HttpAnswer]


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    """Delivery knobs (``CALLGATE_WEBHOOK_*``)."""

    timeout: float = 10.0  # one attempt, connect to last byte
    lease: float = 60.0  # how long a claim reserves a message; > timeout
    schedule: tuple[float, ...] = (5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0, 3600.0)
    allow_private: bool = False
    batch: int = 10  # messages per claim (sent concurrently)

    def __post_init__(self) -> None:
        if self.lease <= self.timeout:
            raise ValueError("the lease must outlast an attempt's timeout, or a slow attempt could be sent twice")
        if self.batch < 1:
            raise ValueError("batch must be at least 1")

    @property
    def max_attempts(self) -> int:
        return len(self.schedule) + 1

    @classmethod
    def from_settings(cls, settings: Settings) -> DeliveryConfig:
        return cls(timeout=settings.webhook_timeout_seconds, lease=settings.webhook_lease_seconds,
                   schedule=settings.retry_schedule(), allow_private=settings.webhook_allow_private)


@dataclass(frozen=True, slots=True)
class Claimed:
    """A message reserved for one attempt."""

    id: str
    endpoint_id: str
    call_id: str | None
    url: str
    secret: str
    payload: str
    attempt: int  # this attempt's number (1-based)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One finished attempt, before it is recorded."""

    message: Claimed
    started_at: datetime
    duration_ms: int
    verdict: Verdict
    status_code: int | None = None
    excerpt: str | None = None
    ip: str | None = None
    result: str = field(default="", compare=False)  # filled by record_attempts: delivered | retry | failed


def in_transaction(engine: Engine) -> RunUnit:
    """A ``RunUnit`` for processes without a group commit (Celery worker, CLI, tests)."""

    def run(work: Work[Any]) -> Any:
        with engine.connect() as conn, conn.begin():
            audit = AuditBatch()
            result = work(conn, audit)
            audit.flush(conn)
        return result

    return run


def has_due(conn: Connection, *, now: datetime | None = None) -> bool:
    """Is any message due? A cheap indexed read, so idle ticks never take the write lock."""
    now = now or _utc_now()
    t = WebhookOutbox
    return conn.execute(
        select(t.id).where(t.status == "pending", t.next_attempt_at <= now).limit(1)
    ).first() is not None


def claim_due(conn: Connection, audit: AuditBatch, *, now: datetime, lease: float, limit: int,
              max_attempts: int) -> list[Claimed]:
    """Reserve up to ``limit`` due messages for one attempt each (see the module docstring).

    Messages that cannot be sent end here instead: their endpoint was disabled, or their last
    allowed attempt was claimed but never recorded (the worker died during it)."""
    t, e = WebhookOutbox, WebhookEndpoint
    due = (select(t.id).where(t.status == "pending", t.next_attempt_at <= now)
           .order_by(t.next_attempt_at, t.id).limit(limit))
    if conn.dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    ids = list(conn.execute(due).scalars())
    if not ids:
        return []
    rows = conn.execute(
        select(t.id, t.endpoint_id, t.call_id, t.payload, t.attempts, e.url, e.secret, e.enabled)
        .join(e, e.id == t.endpoint_id).where(t.id.in_(ids)).order_by(t.next_attempt_at, t.id)
    ).all()
    claimed: list[Claimed] = []
    ended: list[tuple[Any, str]] = []
    for row in rows:
        if not row.enabled:
            ended.append((row, "endpoint disabled"))
        elif row.attempts >= max_attempts:
            ended.append((row, f"no result was recorded for attempt {row.attempts} of {max_attempts} "
                               "(the worker stopped during it); giving up"))
        else:
            claimed.append(Claimed(row.id, row.endpoint_id, row.call_id, row.url, row.secret, row.payload,
                                   row.attempts + 1))
    if claimed:
        conn.execute(
            update(t).where(t.id.in_([c.id for c in claimed]))
            .values(attempts=t.attempts + 1, next_attempt_at=now + timedelta(seconds=lease))
        )
    for row, reason in ended:
        conn.execute(update(t).where(t.id == row.id).values(status="failed", last_error=reason))
        audit.add("webhook.failed", SYSTEM, {"message_id": row.id, "endpoint_id": row.endpoint_id,
                                             "attempts": row.attempts, "reason": reason}, row.call_id)
    return claimed


def send(message: Claimed, config: DeliveryConfig, *, resolver: Resolver | None = None,
         post: Post = transport.post, clock: Clock = _utc_now) -> Attempt:
    """One attempt: re-check the destination, sign with this attempt's time, POST. Never raises
    for anything the receiver or the network does; the verdict says what happened."""
    started_at = clock()
    began = time.monotonic()
    status_code: int | None = None
    excerpt: str | None = None
    ip: str | None = None
    try:
        dest = parse_url(message.url)
        addresses = resolve_checked(dest, allow_private=config.allow_private, resolver=resolver)
    except BlockedDestination as exc:
        verdict = judge_error("ssrf_blocked", exc.reason)
    except UnresolvableHost as exc:
        verdict = judge_error("dns", str(exc))
    else:
        try:
            # The signing time is the real time whatever ``clock`` says: it is what receivers check.
            headers = signed_headers(message.id, message.payload, message.secret, datetime.now(UTC))
            answer = post(dest, addresses, message.payload.encode("ascii"), headers, timeout=config.timeout)
        except transport.TransportError as exc:
            verdict = judge_error(exc.kind, exc.message)
            ip = exc.ip
        except Exception as exc:  # noqa: BLE001 - one broken message (say, a corrupted secret) must not sink
            # the batch: it is recorded like any failed attempt and retried, and the error is logged.
            log.exception("webhook %s: attempt %d failed inside the gateway", message.id, message.attempt)
            verdict = judge_error("internal", f"{type(exc).__name__}: {exc}")
        else:
            status_code, ip = answer.status, answer.ip
            excerpt = redact(answer.excerpt).value if answer.excerpt else None
            verdict = judge_status(answer.status, answer.retry_after)
    duration_ms = int((time.monotonic() - began) * 1000)
    return Attempt(message, started_at, duration_ms, verdict, status_code, excerpt, ip)


def record_attempts(conn: Connection, audit: AuditBatch, attempts: list[Attempt], *, now: datetime,
                    schedule: tuple[float, ...], rng: random.Random) -> list[Attempt]:
    """Log each attempt and move its message on; returns the attempts with their final result."""
    t = WebhookOutbox
    recorded = []
    for attempt in attempts:
        msg, verdict = attempt.message, attempt.verdict
        mine = (t.id == msg.id, t.status == "pending", t.attempts == msg.attempt)  # the fence
        result = verdict.result
        event: tuple[str, dict[str, Any]] | None = None
        if result == "delivered":
            if conn.execute(update(t).where(t.id == msg.id, t.status == "pending")
                            .values(status="delivered", delivered_at=now, last_error=None)).rowcount == 1:
                event = ("webhook.delivered", {"status_code": attempt.status_code})
        elif result == "retry":
            delay = retry_delay(msg.attempt, schedule, rng, retry_after=verdict.retry_after)
            if delay is None:
                result = "failed"
                reason = f"gave up after {msg.attempt} attempts; last: {verdict.reason}"
                if conn.execute(update(t).where(*mine).values(status="failed", last_error=reason)).rowcount == 1:
                    event = ("webhook.failed", {"reason": reason})
            else:
                conn.execute(update(t).where(*mine).values(next_attempt_at=now + timedelta(seconds=delay),
                                                           last_error=verdict.reason))
        else:
            if conn.execute(update(t).where(*mine).values(status="failed", last_error=verdict.reason)).rowcount == 1:
                event = ("webhook.failed", {"reason": verdict.reason, "status_code": attempt.status_code})
        conn.execute(insert(WebhookDelivery).values(
            message_id=msg.id, endpoint_id=msg.endpoint_id, attempt=msg.attempt, started_at=attempt.started_at,
            duration_ms=attempt.duration_ms, status_code=attempt.status_code, result=result,
            error=verdict.reason, response_excerpt=attempt.excerpt, resolved_ip=attempt.ip,
        ))
        if event is not None:
            data = {"message_id": msg.id, "endpoint_id": msg.endpoint_id, "attempts": msg.attempt, **event[1]}
            audit.add(event[0], SYSTEM, data, msg.call_id)
        if verdict.disable_endpoint:
            try:
                disable_endpoint(conn, audit, endpoint_id=msg.endpoint_id, actor=SYSTEM, reason=verdict.reason or "",
                                 now=now)
            except Conflict:
                pass  # already disabled (another message of it said 410 first)
        recorded.append(replace(attempt, result=result))
    return recorded


def deliver_due(run: RunUnit, config: DeliveryConfig, *, clock: Clock = _utc_now, rng: random.Random | None = None,
                resolver: Resolver | None = None, post: Post = transport.post,
                metrics: Metrics | None = None) -> list[Attempt]:
    """Claim one batch of due messages, send them concurrently, record the results."""
    max_attempts = config.max_attempts
    claimed: list[Claimed] = run(lambda conn, audit: claim_due(
        conn, audit, now=clock(), lease=config.lease, limit=config.batch, max_attempts=max_attempts))
    if not claimed:
        return []

    def one(message: Claimed) -> Attempt:
        return send(message, config, resolver=resolver, post=post, clock=clock)

    if len(claimed) == 1:
        attempts = [one(claimed[0])]
    else:
        with ThreadPoolExecutor(max_workers=len(claimed), thread_name_prefix="callgate-webhook") as pool:
            attempts = list(pool.map(one, claimed))
    rng = rng or random.Random()
    recorded: list[Attempt] = run(lambda conn, audit: record_attempts(
        conn, audit, attempts, now=clock(), schedule=config.schedule, rng=rng))
    for attempt in recorded:
        level = logging.INFO if attempt.result == "delivered" else logging.WARNING
        log.log(level, "webhook %s to endpoint %s attempt %d: %s%s", attempt.message.id, attempt.message.endpoint_id,
                attempt.message.attempt, attempt.result,
                f" ({attempt.verdict.reason})" if attempt.verdict.reason else "")
        if metrics is not None:
            metrics.webhook_deliveries.labels(attempt.result).inc()
    return recorded


def drain(run: RunUnit, config: DeliveryConfig, *, budget_seconds: float = 30.0, **kwargs: Any) -> int:
    """Deliver batches until nothing is due or the time budget is spent; the number of attempts.
    (The budget keeps a Celery task short; whatever is left is due on the next run.)"""
    deadline = time.monotonic() + budget_seconds
    total = 0
    while True:
        done = deliver_due(run, config, **kwargs)
        total += len(done)
        if len(done) < config.batch or time.monotonic() >= deadline:
            return total

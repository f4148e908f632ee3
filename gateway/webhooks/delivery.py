"""Deliver due webhook messages: claim, send, record. A plain function that every runner shares
(the embedded in-process worker, the Celery task, tests).

1. **Claim** (one short transaction): due ``pending`` rows are locked with ``FOR UPDATE SKIP
   LOCKED`` on PostgreSQL (SQLite has one writer: ``BEGIN IMMEDIATE`` already serializes), their
   ``attempts`` counted and ``next_attempt_at`` pushed forward by the *lease*. After the commit no
   other worker sees them as due until the lease ends, so concurrent workers never send the same
   message at once, and a worker killed mid-POST leaves its messages due again after the lease:
   at-least-once, with the same ``webhook-id``. The claim also picks the secrets that sign: the
   endpoint's current one, plus the previous one while its rotation overlap lasts.
2. **Send** (no transaction open): the endpoint's sealed secrets are opened (the only place a
   secret exists in plain text after it was shown), the URL's scheme is checked (https only,
   unless ``CALLGATE_WEBHOOK_ALLOW_HTTP``), the SSRF guard re-resolves and re-checks the host,
   the body is signed with a fresh timestamp and POSTed to the checked address. The messages of
   one claim are sent concurrently, so one slow receiver cannot push the others past their lease.
3. **Record** (one short transaction): a delivery-log row per attempt; the message becomes
   ``delivered``, is rescheduled (the schedule's backoff with jitter), or ends ``failed``. A
   message that ends is an audit event (``webhook.delivered`` / ``webhook.failed``). Updates are
   fenced on the attempt number, so a worker that lost its lease can never overwrite a newer
   attempt's state; a success always counts (``webhook.delivered`` exactly once per message),
   unless it belongs to an attempt from before an admin replay (the replay asked for a new one).
   The endpoint's health is kept too (``last_success_at``, ``first_failure_at``): an endpoint
   that has failed for longer than ``disable_after`` with no success is disabled (as a 410 Gone
   disables it at once), so a dead receiver does not collect messages, retries and log rows
   forever.

Attempt numbers count up for the life of a message; its *budget* (the schedule's length + 1)
counts the attempts above ``replay_base``, which an admin replay raises to the attempts made so
far (``replay``).

The transaction runner, clock, random source, resolver and HTTP function are parameters, so
tests drive retries, overlaps and outages without sleeping and point the guard at any resolver.
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

from sqlalchemy import Connection, Engine, case, func, insert, select, update

from callgate.redaction import redact
from gateway.audit import SYSTEM, AuditBatch
from gateway.errors import Conflict
from gateway.models import WebhookDelivery, WebhookEndpoint, WebhookOutbox
from gateway.webhooks import transport
from gateway.webhooks.endpoints import disable_endpoint
from gateway.webhooks.outbox import rfc3339
from gateway.webhooks.retry import DEFAULT_SCHEDULE, Verdict, judge_error, judge_status, retry_delay
from gateway.webhooks.secrets import SealedSecretError, SecretBox
from gateway.webhooks.signing import signed_headers
from gateway.webhooks.ssrf import (
    BlockedDestination,
    Resolver,
    UnresolvableHost,
    check_scheme,
    parse_url,
    resolve_checked,
)

if TYPE_CHECKING:
    from gateway.config import Settings
    from gateway.metrics import Metrics

__all__ = [
    "DISABLE_AFTER_S",
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

DISABLE_AFTER_S = 5 * 86400.0  # security.md §2.4: failures spanning more than 5 days, no success


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; they are UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    """Delivery knobs (``CALLGATE_WEBHOOK_*``) and the box that opens the endpoints' secrets."""

    secrets: SecretBox
    timeout: float = 10.0  # one attempt, connect to last byte
    lease: float = 60.0  # how long a claim reserves a message; > timeout
    schedule: tuple[float, ...] = DEFAULT_SCHEDULE
    allow_private: bool = False
    allow_http: bool = False
    batch: int = 10  # messages per claim (sent concurrently)
    disable_after: float = DISABLE_AFTER_S  # an endpoint failing this long with no success is disabled

    def __post_init__(self) -> None:
        if self.lease <= self.timeout:
            raise ValueError("the lease must outlast an attempt's timeout, or a slow attempt could be sent twice")
        if self.batch < 1:
            raise ValueError("batch must be at least 1")
        if self.disable_after <= 0:
            raise ValueError("disable_after must be positive")

    @property
    def max_attempts(self) -> int:
        return len(self.schedule) + 1

    @classmethod
    def from_settings(cls, settings: Settings) -> DeliveryConfig:
        return cls(SecretBox.from_settings(settings), timeout=settings.webhook_timeout_seconds,
                   lease=settings.webhook_lease_seconds, schedule=settings.retry_schedule(),
                   allow_private=settings.webhook_allow_private, allow_http=settings.webhook_allow_http,
                   disable_after=settings.webhook_disable_after_seconds)


@dataclass(frozen=True, slots=True)
class Claimed:
    """A message reserved for one attempt. The secrets are still sealed here."""

    id: str
    endpoint_id: str
    call_id: str | None
    url: str
    secret: str = field(repr=False)  # sealed: the endpoint's current secret
    previous_secret: str | None = field(repr=False)  # sealed: still in its rotation overlap, or None
    payload: str = field(repr=False)
    attempt: int  # this attempt's number (1-based, for the life of the message: the fence)
    budget_attempt: int  # this attempt's number within the current budget (an admin replay starts a new one)


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
    #: filled by record_attempts when this attempt made the gateway disable its endpoint: "gone" | "dead"
    disabled: str | None = field(default=None, compare=False)


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

    Messages that cannot be sent end here instead: their endpoint was disabled, or the last
    attempt of their budget was claimed but never recorded (the worker died during it). A
    previous secret whose overlap is over is left out (``record_attempts`` clears it: the claim
    writes no endpoint row, see the lock order there)."""
    t, e = WebhookOutbox, WebhookEndpoint
    due = (select(t.id).where(t.status == "pending", t.next_attempt_at <= now)
           .order_by(t.next_attempt_at, t.id).limit(limit))
    if conn.dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    ids = list(conn.execute(due).scalars())
    if not ids:
        return []
    rows = conn.execute(
        select(t.id, t.endpoint_id, t.call_id, t.payload, t.attempts, t.replay_base, e.url, e.secret,
               e.previous_secret, e.previous_secret_expires_at, e.enabled)
        .join(e, e.id == t.endpoint_id).where(t.id.in_(ids)).order_by(t.next_attempt_at, t.id)
    ).all()
    claimed: list[Claimed] = []
    ended: list[tuple[Any, str]] = []
    for row in rows:
        used = row.attempts - row.replay_base
        if not row.enabled:
            ended.append((row, "endpoint disabled"))
        elif used >= max_attempts:
            ended.append((row, f"no result was recorded for attempt {used} of {max_attempts} "
                               "(the worker stopped during it); giving up"))
        else:
            in_overlap = row.previous_secret_expires_at is not None and _aware(row.previous_secret_expires_at) > now
            previous = row.previous_secret if in_overlap else None
            claimed.append(Claimed(row.id, row.endpoint_id, row.call_id, row.url, row.secret, previous,
                                   row.payload, row.attempts + 1, used + 1))
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


def _signing_secrets(message: Claimed, box: SecretBox) -> list[str]:
    """The plain secrets that sign this attempt, current first. The current one must open
    (``SealedSecretError`` otherwise: nothing is sent); a previous one that does not open only
    costs its signature (receivers have the current one), and is logged."""
    keys = [box.unseal(message.endpoint_id, message.secret)]
    if message.previous_secret is not None:
        try:
            keys.append(box.unseal(message.endpoint_id, message.previous_secret))
        except SealedSecretError as exc:
            log.warning("webhook %s: the previous secret of %s does not open; signing with the current one only (%s)",
                        message.id, message.endpoint_id, exc)
    return keys


def send(message: Claimed, config: DeliveryConfig, *, resolver: Resolver | None = None,
         post: Post = transport.post, clock: Clock = _utc_now) -> Attempt:
    """One attempt: open the secrets, re-check the destination, sign with this attempt's time,
    POST. Never raises for anything the receiver, the network or a damaged row does; the
    verdict says what happened."""
    started_at = clock()
    began = time.monotonic()
    status_code: int | None = None
    excerpt: str | None = None
    ip: str | None = None
    try:
        keys = _signing_secrets(message, config.secrets)
        dest = parse_url(message.url)
        check_scheme(dest, allow_http=config.allow_http)
        addresses = resolve_checked(dest, allow_private=config.allow_private, resolver=resolver)
    except SealedSecretError as exc:
        verdict = judge_error("secret", str(exc))
    except BlockedDestination as exc:
        verdict = judge_error("ssrf_blocked", exc.reason)
    except UnresolvableHost as exc:
        verdict = judge_error("dns", str(exc))
    else:
        try:
            # The signing time is the real time whatever ``clock`` says: it is what receivers check.
            headers = signed_headers(message.id, message.payload, keys, datetime.now(UTC))
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


def _note_health(conn: Connection, endpoint_id: str, *, answered: bool, now: datetime) -> datetime | None:
    """Record a batch's outcome on one endpoint; while it keeps failing (and is enabled), since when.

    A success (any 2xx, even one fenced out of its message's state: the receiver *is* up) sets
    ``last_success_at`` and ends the failing run; otherwise a failure starts one if none is
    running. The same statement drops a previous secret whose rotation overlap is over: a secret
    that no longer signs is not kept, even sealed."""
    e = WebhookEndpoint
    overlap_over = e.previous_secret_expires_at <= now
    values: dict[str, Any] = {
        "previous_secret": case((overlap_over, None), else_=e.previous_secret),
        "previous_secret_expires_at": case((overlap_over, None), else_=e.previous_secret_expires_at),
    }
    if answered:
        values.update(last_success_at=now, first_failure_at=None)
    else:
        values.update(first_failure_at=func.coalesce(e.first_failure_at, now))
    row = conn.execute(update(e).where(e.id == endpoint_id).values(values)
                       .returning(e.first_failure_at, e.enabled)).first()
    if row is None or answered or not row.enabled or row.first_failure_at is None:
        return None
    return _aware(row.first_failure_at)


def _disable(conn: Connection, audit: AuditBatch, endpoint_id: str, reason: str, now: datetime) -> bool:
    try:
        disable_endpoint(conn, audit, endpoint_id=endpoint_id, actor=SYSTEM, reason=reason, now=now)
    except Conflict:
        return False  # already disabled (another message of it got there first)
    return True


def record_attempts(conn: Connection, audit: AuditBatch, attempts: list[Attempt], *, now: datetime,
                    schedule: tuple[float, ...], rng: random.Random,
                    disable_after: float = DISABLE_AFTER_S) -> list[Attempt]:
    """Log each attempt, move its message on and keep its endpoint's health; returns the attempts
    with their final result (and, on the one that caused it, whether the endpoint was disabled).

    Lock order, so that concurrent workers (and an admin disabling an endpoint) never deadlock on
    PostgreSQL: endpoint rows first, in id order (the health updates), then outbox rows (the
    messages, then ``disable_endpoint`` ending an endpoint's other messages). The claim writes
    outbox rows only, and an admin's disable also takes the endpoint before its messages."""
    endpoint_ids = sorted({a.message.endpoint_id for a in attempts})
    failing_since = {
        endpoint_id: _note_health(conn, endpoint_id, now=now, answered=any(
            a.verdict.result == "delivered" for a in attempts if a.message.endpoint_id == endpoint_id))
        for endpoint_id in endpoint_ids
    }
    t = WebhookOutbox
    recorded = []
    for attempt in attempts:
        msg, verdict = attempt.message, attempt.verdict
        # An attempt made before an admin replay belongs to a finished budget: it may not move
        # the replayed message (its ``replay_base`` is at least that attempt's number).
        current_budget = (t.id == msg.id, t.status == "pending", t.replay_base < msg.attempt)
        mine = (*current_budget, t.attempts == msg.attempt)  # the fence: the newest attempt only
        result = verdict.result
        event: tuple[str, dict[str, Any]] | None = None
        if result == "delivered":
            # Not fenced on the attempt number: a late success still counts (once).
            if conn.execute(update(t).where(*current_budget)
                            .values(status="delivered", delivered_at=now, last_error=None)).rowcount == 1:
                event = ("webhook.delivered", {"status_code": attempt.status_code})
        elif result == "retry":
            delay = retry_delay(msg.budget_attempt, schedule, rng, retry_after=verdict.retry_after)
            if delay is None:
                result = "failed"
                reason = f"gave up after {msg.budget_attempt} attempts; last: {verdict.reason}"
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
        recorded.append(replace(attempt, result=result))
    # Endpoints to disable, after every message of the batch is recorded: a 410 Gone, or failing
    # for longer than the horizon with no success. Marked on the attempt that decided it.
    for index, attempt in enumerate(recorded):
        endpoint_id, verdict = attempt.message.endpoint_id, attempt.verdict
        since = failing_since.get(endpoint_id)
        if verdict.disable_endpoint:
            if _disable(conn, audit, endpoint_id, verdict.reason or "", now):
                recorded[index] = replace(attempt, disabled="gone")
        elif verdict.result != "delivered" and since is not None and (now - since).total_seconds() > disable_after:
            reason = (f"no successful delivery since the failures began at {rfc3339(since)} "
                      f"(more than {disable_after / 86400:g} days); last: {verdict.reason}")
            if _disable(conn, audit, endpoint_id, reason, now):
                recorded[index] = replace(attempt, disabled="dead")
                log.warning("webhook endpoint %s disabled: %s", endpoint_id, reason)
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
        conn, audit, attempts, now=clock(), schedule=config.schedule, rng=rng, disable_after=config.disable_after))
    for attempt in recorded:
        level = logging.INFO if attempt.result == "delivered" else logging.WARNING
        log.log(level, "webhook %s to endpoint %s attempt %d: %s%s", attempt.message.id, attempt.message.endpoint_id,
                attempt.message.attempt, attempt.result,
                f" ({attempt.verdict.reason})" if attempt.verdict.reason else "")
        if metrics is not None:
            metrics.webhook_deliveries.labels(attempt.result).inc()
            if attempt.disabled is not None:
                metrics.webhook_endpoints_disabled.labels(attempt.disabled).inc()
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

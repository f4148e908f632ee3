"""Off-the-hot-path delivery: outcome reports, LLM usage and the fail-open spool upload.

One daemon thread per process (started on first use, restarted after fork) drains a
bounded queue in batches over the shared keep-alive pool. A failed delivery is retried
with exponential backoff; after ``max_tries`` (or when the queue is full, or at exit)
the report is written to the spool instead, so it is never silently lost. The spool is
uploaded whenever the gateway looks reachable again (a successful decision, a periodic
tick, ``callgate.flush()``). Nothing here ever raises into the agent.

LLM usage (:mod:`callgate._usage`) takes a cheaper path in: the agent thread appends the
raw record to a deque (no lock, no queue, no I/O) and only the first record of a batch
window puts a wake-up token in the queue. The thread lingers ``usage_linger`` seconds so
that records accumulate, then validates them, gives each a UUIDv7 and posts them to
``POST /v1/usage`` in batches (bounded in count and bytes). From then on a usage batch is
an item like an outcome: retried, spooled as one ``{"kind": "usage", "events": [...]}``
line, uploaded again later; the gateway is idempotent on the event ids.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import threading
import time
import weakref
from typing import Any

from ._client import GatewayClient, encode_json
from ._spool import Spool
from ._usage import MAX_EVENTS_PER_BATCH, RawUsage, normalize
from .errors import GatewayUnavailable
from .ids import uuid7

__all__ = ["Reporter"]

log = logging.getLogger("callgate")

_BATCH = 128
_TICK = 30.0
#: Bounds of one ``POST /v1/usage`` body: at most this many events, and at most this many
#: bytes (well under the gateway's default 256 KiB body limit, whatever the strings hold).
_USAGE_BATCH_EVENTS = min(500, MAX_EVENTS_PER_BATCH)
_USAGE_BATCH_BYTES = 192 * 1024


class _Outcome:
    __slots__ = ("call_id", "payload", "tries", "due")

    def __init__(self, call_id: str, payload: dict[str, Any]) -> None:
        self.call_id = call_id
        self.payload = payload
        self.tries = 0
        self.due = 0.0


class _UsageBatch:
    """Validated usage events with their ids: from here on, retried and spooled as one unit."""

    __slots__ = ("due", "events", "tries")

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events
        self.tries = 0
        self.due = 0.0

    @property
    def call_id(self) -> str:  # for log lines shared with outcomes
        return f"usage batch {self.events[0]['id']} (+{len(self.events) - 1})"


def _rfc3339(ts: float) -> str:
    """Unix time -> RFC 3339 UTC with microseconds (no datetime import on the SDK side)."""
    us = round(ts * 1_000_000)
    secs, frac = divmod(us, 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:06d}Z"


class _Flush:
    __slots__ = ("event", "ok")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.ok = False


_STOP = object()
_WAKE = object()
_USAGE = object()

_reporters: weakref.WeakSet[Reporter] = weakref.WeakSet()


class Reporter:
    def __init__(self, client: GatewayClient, spool: Spool, *, maxsize: int = 10_000, max_tries: int = 6,
                 request_timeout: float = 10.0, usage_linger: float = 1.0, max_usage_buffered: int = 100_000) -> None:
        self.client = client
        self.spool = spool
        self.maxsize = maxsize
        self.max_tries = max_tries
        self.request_timeout = request_timeout
        self.usage_linger = usage_linger
        self.max_usage_buffered = max_usage_buffered
        self.spool_dirty = spool.has_records()
        #: usage records dropped as invalid (see callgate._usage.normalize) or for lack of memory
        self.usage_dropped = 0
        self._overflow_logged_at = float("-inf")
        self._init_runtime_state()
        _reporters.add(self)

    def _init_runtime_state(self) -> None:
        self._pid = os.getpid()
        self._q: queue.Queue[Any] = queue.Queue(self.maxsize)
        self._retry: list[_Outcome | _UsageBatch] = []
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False
        # Usage records not yet batched. A forked child starts empty: the parent uploads these.
        self._usage: collections.deque[RawUsage] = collections.deque()
        self._usage_armed = False

    # -- called from agent threads (must be cheap and never raise) ------------------------
    def submit_outcome(self, call_id: str, payload: dict[str, Any]) -> None:
        self._ensure_thread()
        try:
            self._q.put_nowait(_Outcome(call_id, payload))
        except queue.Full:
            self._spill(_Outcome(call_id, payload), "report queue full")

    def submit_usage(self, raw: RawUsage) -> None:
        """Buffer one raw usage record (see :func:`callgate._usage.record_usage`).

        The common case is a bare ``deque.append`` (atomic under the GIL). Only the first
        record after a batch was taken wakes the thread; it then lingers to collect more."""
        usage = self._usage
        if len(usage) >= self.max_usage_buffered:
            self._overflow()
            return
        usage.append(raw)
        if not self._usage_armed:
            self._arm_usage()

    def _overflow(self) -> None:
        """The buffer is full (the thread cannot keep up, or is stuck): drop, and say so at most
        once a minute. Bounded memory beats an agent that runs out of it."""
        self.usage_dropped += 1
        now = time.monotonic()
        if now >= self._overflow_logged_at + 60.0:
            self._overflow_logged_at = now
            log.error("callgate: %d usage records are waiting for upload; new records are dropped "
                      "(%d dropped so far)", len(self._usage), self.usage_dropped)

    def _arm_usage(self) -> None:
        if self._closed:  # after close() (interpreter exit): straight to the spool, nothing runs later
            self._spill_usage(self._take_usage(), "exit")
            return
        self._usage_armed = True
        self._ensure_thread()
        try:
            self._q.put_nowait(_USAGE)
        except queue.Full:
            self._usage_armed = False  # the next record tries again; the periodic tick also drains

    def spool_outcome(self, call_id: str, payload: dict[str, Any]) -> None:
        """For fail-open runs: the call is not on the gateway yet, so the outcome must
        follow the spooled call record, in order."""
        self._spill(_Outcome(call_id, payload), "fail-open run")
        self.wake()

    def wake(self) -> None:
        """Ask the thread to try the spool now (e.g. the gateway just answered)."""
        if not self.spool_dirty:
            return
        self._ensure_thread()
        try:
            self._q.put_nowait(_WAKE)
        except queue.Full:
            pass

    def mark_spooled(self) -> None:
        self.spool_dirty = True

    def flush(self, timeout: float | None = 5.0) -> bool:
        """Deliver what is queued (retries included, backoff ignored) and try the spool.
        True when nothing is left undelivered."""
        if self._closed:
            return not self.spool_dirty
        self._ensure_thread()
        token = _Flush()
        try:
            self._q.put(token, timeout=timeout)
        except queue.Full:
            return False
        token.event.wait(timeout)
        return token.ok

    def close(self, timeout: float = 2.0) -> None:
        """Flush within ``timeout``, spill anything left to the spool, stop the thread."""
        if self._closed:
            return
        thread = self._thread
        if thread is not None and thread.is_alive() and self._pid == os.getpid():
            self.flush(timeout)
            try:
                self._q.put(_STOP, timeout=0.5)
            except queue.Full:
                pass
            thread.join(timeout=1.0)
        self._closed = True
        # Whatever did not make it: durable in the spool, uploaded by the next process.
        leftovers: list[_Outcome | _UsageBatch]
        leftovers, self._retry = self._retry, []
        while True:
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Outcome):
                leftovers.append(item)
            elif isinstance(item, _Flush):
                item.event.set()
        for item in leftovers:
            self._spill(item, "exit")
        self._spill_usage(self._take_usage(), "exit")

    # -- internals -----------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        if self._pid != os.getpid():  # forked child: the parent's thread does not exist here
            self._init_runtime_state()
        t = self._thread
        if t is not None and t.is_alive():
            return
        with self._start_lock:
            if self._closed or (self._thread is not None and self._thread.is_alive()):
                return
            self._thread = threading.Thread(target=self._run, name="callgate-reporter", daemon=True)
            self._thread.start()

    def _spill(self, item: _Outcome | _UsageBatch, why: str) -> None:
        if isinstance(item, _UsageBatch):
            record: dict[str, Any] = {"kind": "usage", "id": item.events[0]["id"], "events": item.events}
        else:
            record = {"kind": "outcome", "id": item.call_id, "outcome": item.payload}
        try:
            self.spool.append(record)
            self.spool_dirty = True
        except OSError as e:
            log.error("callgate: could not spool %s (%s): %s",
                      item.call_id if isinstance(item, _UsageBatch) else f"outcome of {item.call_id}", why, e)

    def _spill_usage(self, batches: list[_UsageBatch], why: str) -> None:
        for batch in batches:
            self._spill(batch, why)

    def _take_usage(self) -> list[_UsageBatch]:
        """Drain the usage buffer into validated, id-stamped batches (bounded in count and bytes).

        Runs on the reporter thread (or at close); the ids are fixed here, once, so every
        later retry or spool upload of a batch carries the same ids."""
        self._usage_armed = False  # before draining: a record appended after this re-arms
        usage = self._usage
        batches: list[_UsageBatch] = []
        events: list[dict[str, Any]] = []
        size = 0
        while True:
            try:
                raw = usage.popleft()
            except IndexError:
                break
            try:
                event = normalize(raw)
            except Exception:  # noqa: BLE001 - an SDK bug must not kill the reporter
                log.exception("callgate: unexpected error validating a usage record")
                event = None
            if event is None:
                self.usage_dropped += 1
                continue
            event = {"id": uuid7(), "ts": _rfc3339(raw[0]), **event}
            n = len(encode_json(event)) + 1  # exactly its share of the body (plus a comma)
            if events and (len(events) >= _USAGE_BATCH_EVENTS or size + n > _USAGE_BATCH_BYTES):
                batches.append(_UsageBatch(events))
                events, size = [], 0
            events.append(event)
            size += n
        if events:
            batches.append(_UsageBatch(events))
        return batches

    def _run(self) -> None:
        while True:
            try:
                self._loop()
                return
            except Exception:  # noqa: BLE001 - a bug must not silently end all background delivery
                log.exception("callgate: reporter thread failed; restarting it")
                time.sleep(1.0)

    def _loop(self) -> None:
        last_spool_try = 0.0
        usage_due: float | None = None  # when the lingering usage records are sent
        while True:
            now = time.monotonic()
            wait = _TICK
            if self._retry:
                wait = max(0.0, min(r.due for r in self._retry) - now)
            if usage_due is not None:
                wait = min(wait, max(0.0, usage_due - now))
            try:
                first = self._q.get(timeout=wait)
            except queue.Empty:
                first = None
            batch = [] if first is None else [first]
            while len(batch) < _BATCH:
                try:
                    batch.append(self._q.get_nowait())
                except queue.Empty:
                    break
            flushes: list[_Flush] = []
            stop = wake = False
            for item in batch:
                if item is _STOP:
                    stop = True
                elif item is _WAKE:
                    wake = True
                elif item is _USAGE:
                    pass  # the buffer is looked at below
                elif isinstance(item, _Flush):
                    flushes.append(item)
                else:
                    self._deliver(item)
            if self._usage:
                now = time.monotonic()
                if usage_due is None:
                    usage_due = now + self.usage_linger
                if flushes or stop or now >= usage_due:
                    usage_due = None
                    for usage_batch in self._take_usage():
                        self._deliver(usage_batch)
            else:
                usage_due = None
            if flushes or stop or self._retry:
                # Swap, never remove in place: close() on another thread may take the list meanwhile.
                now = time.monotonic()
                pending, self._retry = self._retry, []
                for item in pending:
                    if flushes or stop or item.due <= now:
                        self._deliver(item)
                    else:
                        self._retry.append(item)
            now = time.monotonic()
            if self.spool_dirty and (wake or flushes or now - last_spool_try >= _TICK):
                last_spool_try = now
                self._upload_spool()
            for f in flushes:
                f.ok = not self._retry and not self.spool_dirty and self._q.empty() and not self._usage
                f.event.set()
            if stop:
                return

    def _deliver(self, item: _Outcome | _UsageBatch) -> None:
        if isinstance(item, _UsageBatch):
            self._deliver_usage(item)
            return
        item.tries += 1
        try:
            resp = self.client.request(
                "POST", f"/v1/calls/{item.call_id}/outcome", item.payload,
                deadline=time.monotonic() + self.request_timeout, attempts=1, call_id=item.call_id,
            )
        except GatewayUnavailable as e:
            self._retry_later(item, str(e))
            return
        except Exception:  # noqa: BLE001 - an SDK bug must not kill the reporter
            log.exception("callgate: unexpected error reporting outcome of %s", item.call_id)
            return
        if resp.status < 300 or resp.status == 409:
            if resp.status == 409:
                log.debug("callgate: outcome of %s already recorded", item.call_id)
            return
        if resp.status == 404:  # the call is not there (yet): keep it durable
            self._spill(item, "call not found")
            return
        log.warning("callgate: gateway rejected outcome of %s: HTTP %s %s", item.call_id, resp.status,
                    resp.body[:300])

    def _deliver_usage(self, item: _UsageBatch) -> None:
        item.tries += 1
        try:
            resp = self.client.request("POST", "/v1/usage", {"events": item.events},
                                       deadline=time.monotonic() + self.request_timeout, attempts=1)
        except GatewayUnavailable as e:
            self._retry_later(item, str(e))
            return
        except Exception:  # noqa: BLE001 - an SDK bug must not kill the reporter
            log.exception("callgate: unexpected error uploading %s", item.call_id)
            self._spill(item, "unexpected error")
            return
        if resp.status < 300:
            return
        if resp.status == 413 and len(item.events) > 1:
            # The gateway's body limit is lower than our batch size: halve until it fits.
            half = len(item.events) // 2
            for part in (item.events[:half], item.events[half:]):
                self._deliver_usage(_UsageBatch(part))
            return
        # A 4xx for a batch the SDK validated itself is a configuration problem (revoked key,
        # a gateway without /v1/usage...): keep the events durable rather than drop them; the
        # spool upload retries them and dead-letters what the gateway still refuses.
        log.warning("callgate: gateway rejected %s: HTTP %s %s", item.call_id, resp.status, resp.body[:300])
        self._spill(item, f"HTTP {resp.status}")

    def _retry_later(self, item: _Outcome | _UsageBatch, why: str) -> None:
        """Back off and retry; after max_tries, or once the reporter is closed, spool it."""
        if item.tries >= self.max_tries or self._closed:
            self._spill(item, why)
        else:
            item.due = time.monotonic() + min(30.0, 0.5 * 2 ** (item.tries - 1))
            self._retry.append(item)

    def _upload_spool(self) -> None:
        try:
            records = self.spool.read()
        except OSError as e:
            log.warning("callgate: cannot read spool %s: %s", self.spool.path, e)
            return
        done: set[str] = set()
        rejected: set[str] = set()
        stalled = split = False
        for line, rec in records:
            kind, call_id = rec.get("kind"), rec.get("id")
            if kind == "fail_open":
                path = "/v1/calls"
                body: dict[str, Any] = {k: rec[k] for k in ("id", "tool", "args") if k in rec}
                for k in ("agent", "session_id", "framework"):
                    if rec.get(k) is not None:
                        body[k] = rec[k]
                meta = dict(rec.get("metadata") or {})
                meta["callgate_fail_open"] = {"started_at": rec.get("started_at"), "reason": rec.get("reason")}
                body["metadata"] = meta
                body["fail_open"] = True
            elif kind == "outcome" and isinstance(rec.get("outcome"), dict):
                path = f"/v1/calls/{call_id}/outcome"
                body = rec["outcome"]
            elif kind == "usage" and isinstance(rec.get("events"), list) and rec["events"]:
                path = "/v1/usage"
                body = {"events": rec["events"]}
            else:
                rejected.add(line)
                continue
            try:
                resp = self.client.request("POST", path, body, deadline=time.monotonic() + self.request_timeout,
                                           attempts=1, call_id=call_id)
            except GatewayUnavailable:
                stalled = True
                break
            except Exception:  # noqa: BLE001
                log.exception("callgate: unexpected error uploading spool record %s", call_id)
                stalled = True
                break
            if resp.status < 300 or (kind == "outcome" and resp.status == 409):
                done.add(line)
            elif kind == "usage" and resp.status == 413 and len(body["events"]) > 1:
                half = len(body["events"]) // 2  # smaller pieces, uploaded on the next pass
                try:
                    for part in (body["events"][:half], body["events"][half:]):
                        self.spool.append({"kind": "usage", "id": part[0].get("id"), "events": part})
                except OSError as e:
                    log.warning("callgate: cannot split spooled usage batch: %s", e)
                    stalled = True
                    break
                done.add(line)
                split = True
            elif resp.status == 429:
                stalled = True
                break
            else:
                log.warning("callgate: gateway rejected spooled %s %s: HTTP %s %s", kind, call_id, resp.status,
                            resp.body[:300])
                rejected.add(line)
        try:
            self.spool.remove(done, rejected)
        except OSError as e:
            log.warning("callgate: cannot rewrite spool %s: %s", self.spool.path, e)
            return
        if not stalled:
            self.spool_dirty = self.spool.has_records()
            if split:  # upload the halves now (at most log2(batch size) rounds)
                self._upload_spool()


def _after_fork_in_child() -> None:
    """The child must not upload (with new ids) what the parent buffered: start empty."""
    for reporter in list(_reporters):
        reporter._init_runtime_state()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

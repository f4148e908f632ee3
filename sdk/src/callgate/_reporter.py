"""Off-the-hot-path delivery: outcome reports and the fail-open spool upload.

One daemon thread per process (started on first use, restarted after fork) drains a
bounded queue in batches over the shared keep-alive pool. A failed delivery is retried
with exponential backoff; after ``max_tries`` (or when the queue is full, or at exit)
the report is written to the spool instead, so it is never silently lost. The spool is
uploaded whenever the gateway looks reachable again (a successful decision, a periodic
tick, ``callgate.flush()``). Nothing here ever raises into the agent.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from typing import Any

from ._client import GatewayClient
from ._spool import Spool
from .errors import GatewayUnavailable

__all__ = ["Reporter"]

log = logging.getLogger("callgate")

_BATCH = 128
_TICK = 30.0


class _Outcome:
    __slots__ = ("call_id", "payload", "tries", "due")

    def __init__(self, call_id: str, payload: dict[str, Any]) -> None:
        self.call_id = call_id
        self.payload = payload
        self.tries = 0
        self.due = 0.0


class _Flush:
    __slots__ = ("event", "ok")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.ok = False


_STOP = object()
_WAKE = object()


class Reporter:
    def __init__(self, client: GatewayClient, spool: Spool, *, maxsize: int = 10_000, max_tries: int = 6,
                 request_timeout: float = 10.0) -> None:
        self.client = client
        self.spool = spool
        self.maxsize = maxsize
        self.max_tries = max_tries
        self.request_timeout = request_timeout
        self.spool_dirty = spool.has_records()
        self._init_runtime_state()

    def _init_runtime_state(self) -> None:
        self._pid = os.getpid()
        self._q: queue.Queue[Any] = queue.Queue(self.maxsize)
        self._retry: list[_Outcome] = []
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False

    # -- called from agent threads (must be cheap and never raise) ------------------------
    def submit_outcome(self, call_id: str, payload: dict[str, Any]) -> None:
        self._ensure_thread()
        try:
            self._q.put_nowait(_Outcome(call_id, payload))
        except queue.Full:
            self._spill(_Outcome(call_id, payload), "report queue full")

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
        leftovers = list(self._retry)
        self._retry.clear()
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

    def _spill(self, item: _Outcome, why: str) -> None:
        try:
            self.spool.append({"kind": "outcome", "id": item.call_id, "outcome": item.payload})
            self.spool_dirty = True
        except OSError as e:
            log.error("callgate: could not spool outcome of %s (%s): %s", item.call_id, why, e)

    def _run(self) -> None:
        last_spool_try = 0.0
        while True:
            now = time.monotonic()
            wait = _TICK
            if self._retry:
                wait = max(0.0, min(r.due for r in self._retry) - now)
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
                elif isinstance(item, _Flush):
                    flushes.append(item)
                else:
                    self._deliver(item)
            if flushes or stop:
                for item in self._retry[:]:
                    self._retry.remove(item)
                    self._deliver(item)
            elif self._retry:
                now = time.monotonic()
                for item in [r for r in self._retry if r.due <= now]:
                    self._retry.remove(item)
                    self._deliver(item)
            now = time.monotonic()
            if self.spool_dirty and (wake or flushes or now - last_spool_try >= _TICK):
                last_spool_try = now
                self._upload_spool()
            for f in flushes:
                f.ok = not self._retry and not self.spool_dirty and self._q.empty()
                f.event.set()
            if stop:
                return

    def _deliver(self, item: _Outcome) -> None:
        item.tries += 1
        try:
            resp = self.client.request(
                "POST", f"/v1/calls/{item.call_id}/outcome", item.payload,
                deadline=time.monotonic() + self.request_timeout, attempts=1, call_id=item.call_id,
            )
        except GatewayUnavailable as e:
            if item.tries >= self.max_tries:
                self._spill(item, str(e))
            else:
                item.due = time.monotonic() + min(30.0, 0.5 * 2 ** (item.tries - 1))
                self._retry.append(item)
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

    def _upload_spool(self) -> None:
        try:
            records = self.spool.read()
        except OSError as e:
            log.warning("callgate: cannot read spool %s: %s", self.spool.path, e)
            return
        done: set[str] = set()
        rejected: set[str] = set()
        stalled = False
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

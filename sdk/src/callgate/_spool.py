"""Durable local spool for work the gateway has not acknowledged yet (JSONL, fsync'd).

Two record kinds share one file per agent (``$CALLGATE_SPOOL_DIR/<agent>.jsonl``,
default ``~/.callgate/spool``), in the order they happened:

* ``{"kind": "fail_open", "id", "tool", "args", "agent", "session_id", "framework",
  "started_at", "reason"}`` -- a fail-open tool ran while the gateway was unreachable
  (written and fsync'd *before* the tool runs: no unaudited execution);
* ``{"kind": "outcome", "id", "outcome": {...}}`` -- an outcome report that could not be
  delivered (fail-open runs, or persistent failures, or at exit).

Lines are removed only after the gateway answered 2xx for them. A flock on a sidecar
lock file serialises appends and rewrites across threads *and* processes (several
processes of one agent share the file; duplicate uploads are idempotent by call id).
Permanently rejected lines (4xx other than 429) move to ``<agent>.rejected.jsonl``.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["Spool", "default_spool_dir"]

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: thread lock only
    fcntl = None  # type: ignore[assignment]


def default_spool_dir() -> Path:
    env = os.environ.get("CALLGATE_SPOOL_DIR")
    return Path(env) if env else Path.home() / ".callgate" / "spool"


class Spool:
    def __init__(self, directory: Path, agent: str | None) -> None:
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", agent or "default") or "default"
        self.path = directory / f"{name}.jsonl"
        self.rejected_path = directory / f"{name}.rejected.jsonl"
        self._lock_path = directory / f"{name}.jsonl.lock"
        self._tlock = threading.Lock()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self._tlock:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # releases the flock

    def append(self, record: dict[str, Any]) -> None:
        """Append one record durably (write + fsync). Raises OSError on failure."""
        line = json.dumps(record, separators=(",", ":"), ensure_ascii=True, default=str) + "\n"
        with self._locked():
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode("ascii"))
                os.fsync(fd)
            finally:
                os.close(fd)

    def has_records(self) -> bool:
        try:
            return self.path.stat().st_size > 0
        except OSError:
            return False

    def read(self) -> list[tuple[str, dict[str, Any]]]:
        """Every well-formed record as (raw line, parsed). Torn/corrupt lines are skipped."""
        with self._locked():
            try:
                text = self.path.read_text("ascii", errors="replace")
            except FileNotFoundError:
                return []
        out = []
        for line in text.splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                out.append((line, rec))
        return out

    def remove(self, done: set[str], rejected: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        """Drop acknowledged lines (and dead-letter rejected ones); keep everything else,
        including lines appended since :meth:`read`. Atomic rewrite (tmp + fsync + rename)."""
        if not done and not rejected:
            return
        with self._locked():
            try:
                lines = self.path.read_text("ascii", errors="replace").splitlines()
            except FileNotFoundError:
                return
            if rejected:
                with open(self.rejected_path, "a", encoding="ascii") as f:
                    for line in lines:
                        if line in rejected:
                            f.write(line + "\n")
                    f.flush()
                    os.fsync(f.fileno())
            keep = [ln for ln in lines if ln and ln not in done and ln not in rejected]
            tmp = self.path.with_suffix(f".tmp.{os.getpid()}")
            with open(tmp, "w", encoding="ascii") as f:
                f.write("".join(ln + "\n" for ln in keep))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)

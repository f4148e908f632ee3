"""What one gateway worker's held long-polls share: their reads, batched (polls woken together
cost one query, ``gateway.read_batch``), and the query behind the worker's periodic re-check of
every held call (``Notifier.recheck_with``). Built once per runtime (``gateway.app.build_runtime``)."""

from __future__ import annotations

from sqlalchemy import Engine

from gateway.calls import CallView, read_calls, settled_calls
from gateway.errors import DomainError
from gateway.keys import ParsedKey
from gateway.read_batch import ReadBatcher

__all__ = ["LongPolls"]


class LongPolls:
    """What this worker's long-polls share: their reads, batched (``gateway.read_batch``), and
    the worker's periodic re-check of every held call (``Notifier.recheck_with``)."""

    def __init__(self, reader: Engine, pepper: bytes) -> None:
        self.reader = reader
        self.pepper = pepper
        self.reads: ReadBatcher[tuple[str, ParsedKey], CallView | DomainError] = ReadBatcher(self._read_many)

    async def read(self, call_id: str, key: ParsedKey) -> CallView:
        result = await self.reads.read((call_id, key))
        if isinstance(result, DomainError):
            raise result
        return result

    def _read_many(self, requests: list[tuple[str, ParsedKey]]) -> list[CallView | DomainError]:
        with self.reader.begin() as conn:
            return read_calls(conn, requests, pepper=self.pepper)

    def settled(self, call_ids: list[str]) -> list[str]:
        with self.reader.begin() as conn:
            return settled_calls(conn, call_ids)

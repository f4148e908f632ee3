"""Coalescing concurrent reads into set-based batches (gateway.read_batch)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from gateway.read_batch import ReadBatcher


def test_reads_requested_together_are_answered_by_one_batch_in_order() -> None:
    batches: list[list[int]] = []

    def run(requests: list[int]) -> list[object]:
        batches.append(requests)
        return [ValueError(r) if r % 10 == 0 else r * 2 for r in requests]

    async def main() -> list[object]:
        batcher: ReadBatcher[int, object] = ReadBatcher(run)
        return await asyncio.gather(*(batcher.read(i) for i in range(1, 101)))

    results = asyncio.run(main())
    assert batches == [list(range(1, 101))]  # one batch for 100 reads made in one loop iteration
    assert [r for r in results if not isinstance(r, ValueError)] == [i * 2 for i in range(1, 101) if i % 10]
    assert [r.args[0] for r in results if isinstance(r, ValueError)] == list(range(10, 101, 10))


def test_reads_arriving_while_batches_run_form_the_next_larger_batch() -> None:
    """At most max_in_flight batches run at once; the rest queue and go together (max_batch each)."""
    release = threading.Event()
    batches: list[list[int]] = []
    in_flight, most = [0], [0]
    lock = threading.Lock()

    def run(requests: list[int]) -> list[int]:
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
            batches.append(requests)
        release.wait(5)
        with lock:
            in_flight[0] -= 1
        return requests

    async def main() -> list[int]:
        batcher: ReadBatcher[int, int] = ReadBatcher(run, max_batch=50, max_in_flight=2)
        first = [asyncio.ensure_future(batcher.read(0))]
        await asyncio.sleep(0.05)
        first.append(asyncio.ensure_future(batcher.read(1)))
        await asyncio.sleep(0.05)  # two single-read batches are now running
        later = [asyncio.ensure_future(batcher.read(i)) for i in range(2, 122)]
        await asyncio.sleep(0.05)
        release.set()
        return list(await asyncio.gather(*first, *later))

    assert asyncio.run(main()) == list(range(122))
    assert most[0] == 2
    assert [len(b) for b in batches[:2]] == [1, 1]
    assert sorted(len(b) for b in batches[2:]) == [20, 50, 50]  # 120 queued reads, 50 at most per batch


def test_a_failing_batch_fails_each_of_its_reads_and_the_next_batch_still_runs() -> None:
    calls = [0]

    def run(requests: list[int]) -> list[int]:
        calls[0] += 1
        if calls[0] == 1:
            raise ConnectionError("database unreachable")
        return requests

    async def main() -> tuple[list[object], int]:
        batcher: ReadBatcher[int, int] = ReadBatcher(run)
        failed = await asyncio.gather(batcher.read(1), batcher.read(2), return_exceptions=True)
        return list(failed), await batcher.read(3)

    failed, ok = asyncio.run(main())
    assert all(isinstance(e, ConnectionError) for e in failed) and ok == 3


def test_a_cancelled_read_is_dropped_without_disturbing_the_others() -> None:
    started = threading.Event()
    release = threading.Event()
    seen: list[list[int]] = []

    def run(requests: list[int]) -> list[int]:
        seen.append(requests)
        started.set()
        release.wait(5)
        return requests

    async def main() -> int:
        batcher: ReadBatcher[int, int] = ReadBatcher(run, max_in_flight=1)
        running = asyncio.ensure_future(batcher.read(0))
        await asyncio.to_thread(started.wait, 5)
        doomed = asyncio.ensure_future(batcher.read(1))  # queued behind the running batch
        kept = asyncio.ensure_future(batcher.read(2))
        await asyncio.sleep(0.01)
        doomed.cancel()
        release.set()
        await running
        with pytest.raises(asyncio.CancelledError):
            await doomed
        return await kept

    assert asyncio.run(main()) == 2
    assert seen == [[0], [2]]  # the cancelled read never reached the database

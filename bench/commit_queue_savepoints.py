"""What a SAVEPOINT per unit of work costs the group commit (PostgreSQL, hash chain on).

``CommitQueue.submit(work, savepoint=True)`` runs the unit inside ``SAVEPOINT`` / ``RELEASE`` so
that a ``DomainError`` raised after it wrote rolls back exactly its writes. This measures whether
that may be the default: T closed-loop threads push real decision units
(``gateway.approvals.decide_call`` on pending calls: db clock, conditional UPDATE, re-read, outbox
lookup, one chained audit event) through one ``CommitQueue``, with and without savepoints,
variants interleaved and the order alternating per round, on one throwaway database.

A third variant, ``no_trigger``, runs the plain units with migration 0006's transition trigger
disabled (this bench's own database only), which prices the trigger on the same update path.

Printed: units/s (median and best of the rounds), per-unit latency p50/p99 as the submitting
thread sees it, the mean batch size, the writer thread's busy time per unit (the group commit's
ceiling: every unit of a batch waits for it), and each variant as a ratio of the plain one. The
box is shared and noisy: prefer many short rounds (the medians) over a few long ones.

    uv run python bench/commit_queue_savepoints.py [--rounds 3] [--units 1500] [--threads 32]
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _common as C  # noqa: E402

from sqlalchemy import insert  # noqa: E402

from gateway.approvals import decide_call  # noqa: E402
from gateway.audit import Actor  # noqa: E402
from gateway.commit_queue import CommitQueue  # noqa: E402
from gateway.db import make_engine  # noqa: E402
from gateway.migrate import upgrade  # noqa: E402
from gateway.models import ToolCall  # noqa: E402

REVIEWER = Actor("user", "bench-reviewer")


def pending_rows(n: int) -> tuple[list[str], list[dict]]:
    """``n`` pending approval rows as the gateway inserts them (ids, rows without the id)."""
    now = datetime.now(UTC)
    return [str(uuid.uuid4()) for _ in range(n)], [
        {"agent": "bench", "tool": "refund", "args": "{}", "args_fp": "0" * 64, "redactions": "[]",
         "session_id": None, "framework": None, "metadata": "{}", "fingerprint": "0" * 64, "fail_open": False,
         "decision": "require_approval", "status": "pending", "reason": "bench", "rule": "bench",
         "policy_version": 1, "created_at": now, "expires_at": now + timedelta(hours=1), "decided_at": None,
         "decided_by": None, "decided_channel": None, "claimed_at": None, "claimed_by": None, "comment": None,
         "outcome_status": None, "outcome_error": None, "duration_ms": None, "outcome_at": None,
         "outcome_fingerprint": None} for _ in range(n)]


def run_variant(engine, ids: list[str], threads: int, savepoint: bool) -> dict:  # type: ignore[no-untyped-def]
    sizes: list[int] = []
    busy: list[float] = []

    def on_batch(size: int, seconds: float) -> None:
        sizes.append(size)
        busy.append(seconds)

    queue = CommitQueue(engine, on_batch=on_batch)
    queue.start()
    latencies: list[float] = []
    lock = threading.Lock()
    chunks = [ids[i::threads] for i in range(threads)]

    def worker(chunk: list[str]) -> None:
        mine = []
        for call_id in chunk:
            t0 = time.perf_counter()
            decision = queue.run_sync(
                lambda conn, audit, c=call_id: decide_call(conn, audit, call_id=c, approve=True, actor=REVIEWER,
                                                           channel="console", comment=None),
                savepoint=savepoint)
            mine.append(time.perf_counter() - t0)
            assert decision.won
        with lock:
            latencies.extend(mine)

    pool = [threading.Thread(target=worker, args=(chunk,)) for chunk in chunks]
    started = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - started
    queue.stop()
    return {"units_per_s": len(ids) / elapsed, "lat_p50": C.pct(latencies, 50), "lat_p99": C.pct(latencies, 99),
            "mean_batch": sum(sizes) / len(sizes), "writer_us_per_unit": sum(busy) / sum(sizes) * 1e6}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--units", type=int, default=1500, help="decisions per variant per round")
    ap.add_argument("--threads", type=int, default=32)
    opts = ap.parse_args()
    variants = {"plain": False, "savepoint": True, "no_trigger": False}
    results: dict[str, list[dict]] = {v: [] for v in variants}
    with C.pg_database("cqsp") as url:
        upgrade(url)
        engine = make_engine(url, writer=True)
        try:
            for r in range(opts.rounds):
                order = list(variants) if r % 2 == 0 else list(reversed(variants))
                for name in order:
                    ids, rows = pending_rows(opts.units)
                    with engine.begin() as conn:
                        conn.execute(insert(ToolCall.__table__), [{"id": i, **row} for i, row in zip(ids, rows)])
                    if name == "no_trigger":
                        with engine.begin() as conn:
                            conn.exec_driver_sql("ALTER TABLE tool_call DISABLE TRIGGER tool_call_transitions")
                    try:
                        res = run_variant(engine, ids, opts.threads, variants[name])
                    finally:
                        if name == "no_trigger":
                            with engine.begin() as conn:
                                conn.exec_driver_sql("ALTER TABLE tool_call ENABLE ALWAYS TRIGGER tool_call_transitions")
                    results[name].append(res)
                    print(f"  round {r + 1} {name}: {res['units_per_s']:,.0f} units/s  p50 {res['lat_p50'] * 1e3:.2f} ms"
                          f"  p99 {res['lat_p99'] * 1e3:.2f} ms  mean batch {res['mean_batch']:.1f}"
                          f"  writer {res['writer_us_per_unit']:.0f} us/unit", flush=True)
        finally:
            engine.dispose()
    med = {n: sorted(x["units_per_s"] for x in results[n])[len(results[n]) // 2] for n in variants}
    best = {n: max(x["units_per_s"] for x in results[n]) for n in variants}
    busy = {n: C.summary([x["writer_us_per_unit"] for x in results[n]])["p50"] for n in variants}
    rows_out = [[n, med[n], best[n], C.summary([x["lat_p50"] for x in results[n]])["p50"] * 1e3,
                 max(x["lat_p99"] for x in results[n]) * 1e3,
                 sum(x["mean_batch"] for x in results[n]) / len(results[n]), busy[n],
                 C.ratio(med[n], med["plain"]), C.ratio(busy[n], busy["plain"])]
                for n in variants]
    table = C.print_table(
        f"\nGroup commit of decision units, {opts.threads} threads, {opts.units} units per round, {opts.rounds} rounds",
        ["variant", "median/s", "best/s", "lat p50 ms", "lat p99 ms", "mean batch", "writer us/unit",
         "x plain (units/s)", "x plain (writer)"], rows_out)
    C.write_json("commit_queue_savepoints", {"options": vars(opts), "results": results, "median": med,
                                             "best": best, "tables": [table]})
    print(json.dumps({"savepoint_vs_plain_units_per_s": med["savepoint"] / med["plain"],
                      "savepoint_vs_plain_writer_time": busy["savepoint"] / busy["plain"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

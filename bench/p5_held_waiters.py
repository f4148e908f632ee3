"""P5: pending approvals held per gateway worker: memory per waiter, idle CPU, release time.

For each size N (default 5,000 then 20,000), all on 127.0.0.1 with ephemeral ports:

1. a fresh throwaway PostgreSQL database and ONE ``callgate serve`` worker process with
   ``CALLGATE_REDIS_URL`` set (the production wake-up path: decisions made elsewhere arrive
   through Redis pub/sub; the worker re-checks its held calls in the database every 1 s);
2. N pending calls submitted through ``POST /v1/calls`` (policy: ``stripe.*`` over 200 needs a
   human), then a warm-up: 200 long-polls held and released, so the worker's lazily built
   pools and caches are not charged to the waiters;
3. the worker's VmRSS (``/proc/<pid>/status``), then N long-polls ``GET /v1/calls/{id}?wait=30``
   held at once, one keep-alive connection each, from an asyncio raw-socket client in this
   process (bench/_waiters.py; the fd limit is raised with ``resource.setrlimit``). A wait that
   ends still pending is renewed on its connection at once, as the SDK does (counted as
   re-polls). VmRSS again once the worker is quiet: ``(after - before) / N`` is the memory per
   held waiter (request, connection and task objects; socket buffers are kernel memory);
4. the worker's CPU (utime+stime from ``/proc/<pid>/stat``) over ``--idle`` seconds while all N
   are held and nothing is decided: the cost of holding them (incl. any re-polls in that window);
5. the release: ONE bulk SQL ``UPDATE tool_call SET status='approved' ...`` for all N in one
   transaction (bench-only: it bypasses ``approvals.decide``, so there are no
   ``approval.decided`` audit events: what is measured is the wake-up path, not N decisions),
   then the announcement on the gateway's Redis channel: ``--publish per-call`` (default) sends
   one PUBLISH per call, exactly what N separate ``approvals.decide`` calls send; ``packed``
   sends what the gateway's own bulk publisher (``gateway.pubsub.publish_sync``, used by the
   expiry sweep) sends: 100 ids per message. Measured: from the bulk commit to each waiter's
   answer; the last one is "all woken". Every answer must be ``approved``.

Targets (docs/performance.md P5): ≥ 5,000 held at ≤ 32 KiB each, all woken within 1 s;
ambitious 20,000. Floor (performance.md, other runs): 26 KiB per held long-poll, 0 % CPU,
release of 5,000 at once p50 245 ms.

    uv run python bench/p5_held_waiters.py [--sizes 5000,20000] [--idle 5] [--publish per-call|packed]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import _waiters as W  # noqa: E402

CHANNEL = "callgate:call-updated"  # gateway.pubsub.CHANNEL (imported lazily below to keep startup light)
WARMUP = 200
FD_HEADROOM = 500  # descriptors each process needs besides the held connections


def raise_fd_limit(need: int) -> int:
    """Soft (and, as root, hard) RLIMIT_NOFILE to at least ``need``; the gateway inherits it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, need)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def body(call_id: str) -> dict[str, Any]:
    return {"id": call_id, "tool": "stripe.refund", "args": {"amount": 500, "customer": "cus_42"}}


def bulk_approve(pg_url: str, ids: list[str]) -> float:
    """One transaction approving every id; returns time.monotonic() right after its COMMIT."""
    import psycopg

    with psycopg.connect(C.libpq_dsn(pg_url)) as conn:
        changed = conn.execute(
            "UPDATE tool_call SET status = 'approved', decided_at = now(), decided_by = 'bench:bulk', "
            "decided_channel = 'cli' WHERE id = ANY(%s) AND status = 'pending'", (ids,)).rowcount
        conn.commit()
        committed = time.monotonic()
    if changed != len(ids):
        raise RuntimeError(f"bulk approve changed {changed} of {len(ids)} calls")
    return committed


def publish_all(redis_url: str, ids: list[str], packed: bool, chunk: int = 1000) -> float:
    """Announce every id on the gateway's channel; returns when the last message was sent.

    ``packed=False``: one PUBLISH per call (pipelined), exactly what N separate
    ``approvals.decide`` calls send. ``packed=True``: ``gateway.pubsub.publish_sync(ids)``, what a
    bulk announcement (the expiry sweep) sends: 100 ids per message."""
    if packed:
        from gateway.pubsub import publish_sync

        if not publish_sync(redis_url, ids):
            raise RuntimeError("publish_sync failed")
        return time.monotonic()
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        for i in range(0, len(ids), chunk):
            pipe = client.pipeline(transaction=False)
            for call_id in ids[i:i + chunk]:
                pipe.publish(CHANNEL, call_id)
            pipe.execute()
        return time.monotonic()
    finally:
        client.close()


async def wait_quiet(proc: C.PidStats, *, below: float = 0.1, window: float = 0.5, timeout: float = 30) -> float:
    """Wait until the worker uses < ``below`` of a core over ``window``; returns the last reading."""
    end = time.monotonic() + timeout
    while True:
        used = await proc.cpu_over(window)
        if used < below or time.monotonic() > end:
            return used


async def release(held: W.HeldPolls, ids: list[str], pg_url: str, redis_url: str, timeout: float,
                  packed: bool) -> tuple[float, float, bool]:
    """Approve every id (one bulk commit), then publish each; returns (commit time, publishing
    done, all answered). Both run in threads, so this loop keeps timestamping answers meanwhile."""
    committed = await asyncio.to_thread(bulk_approve, pg_url, ids)
    published = await asyncio.to_thread(publish_all, redis_url, ids, packed)
    ok = await held.wait_all(max(0.0, committed + timeout - time.monotonic()))
    return committed, published, ok


async def run_size(n: int, opts: argparse.Namespace, url: str, key: str, pg_url: str, redis_url: str,
                   stats: C.PidStats) -> dict[str, Any]:
    host, port = url.removeprefix("http://").split(":")
    t0 = time.monotonic()
    ids = await W.submit_calls(host, int(port), key, n + WARMUP, body)
    submitted_s = time.monotonic() - t0
    warm, ids = ids[:WARMUP], ids[WARMUP:]
    held = await W.hold_polls(host, int(port), key, warm, wait=opts.wait)
    await asyncio.sleep(0.5)
    if not (await release(held, warm, pg_url, redis_url, 30, opts.publish == "packed"))[2]:
        raise RuntimeError("warm-up waiters were not released")
    gc.collect()
    await wait_quiet(stats, below=0.05)
    rss_before = stats.rss_kib()

    t_open = time.monotonic()
    held = await W.hold_polls(host, int(port), key, ids, wait=opts.wait, concurrency=opts.concurrency)
    sent_s = held.all_sent_at - t_open
    await wait_quiet(stats, timeout=opts.settle)
    settled_s = time.monotonic() - t_open
    rss_held = stats.rss_kib()
    repolls_before = held.repolls
    idle_cpu = await stats.cpu_over(opts.idle)
    idle_repolls = held.repolls - repolls_before
    early = held.answered  # answers before the release: must stay 0 (nothing was decided yet)

    cpu_release = stats.cpu_start()
    committed, published, ok = await release(held, ids, pg_url, redis_url, opts.release_timeout,
                                             opts.publish == "packed")
    release_cpu = stats.cpu_since(cpu_release)
    lat = [a.at - committed for a in held.answers if a.at]
    bad = [a for a in held.answers if a.status != 200 or b'"approved"' not in a.body]
    rss_after = stats.rss_kib()
    return {
        "n": n, "submitted_s": submitted_s, "open_sent_s": sent_s, "open_settled_s": settled_s,
        "connected": held.connected, "rss_before_kib": rss_before, "rss_held_kib": rss_held,
        "rss_after_kib": rss_after, "kib_per_waiter": (rss_held - rss_before) / n,
        "answered_before_release": early, "idle_cpu_core_fraction": idle_cpu,
        "idle_repolls_per_s": idle_repolls / opts.idle, "repolls_total": held.repolls,
        "publish_s": published - committed, "release": C.summary(lat),
        "all_woken_s": max(lat) if lat else float("nan"), "all_answered": ok, "not_approved": len(bad),
        "bad_examples": [(a.status, a.body[:120].decode(errors="replace"), a.error) for a in bad[:3]],
        "release_cpu_core_fraction": release_cpu,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="5000,20000", help="comma-separated waiter counts")
    ap.add_argument("--idle", type=float, default=5.0, help="seconds of idle CPU measurement while held")
    ap.add_argument("--wait", type=int, default=30, help="long-poll wait (the gateway caps it at 30)")
    ap.add_argument("--concurrency", type=int, default=256, help="connects in flight while opening")
    ap.add_argument("--settle", type=float, default=60, help="max seconds to wait for the worker to go quiet")
    ap.add_argument("--release-timeout", type=float, default=60, help="max seconds for the release")
    ap.add_argument("--publish", choices=["per-call", "packed"], default="per-call",
                    help="per-call: one PUBLISH per call, as N separate decisions send; packed: "
                    "gateway.pubsub.publish_sync(ids), as a bulk announcement (expiry sweep) sends")
    opts = ap.parse_args()
    wanted = [int(s) for s in opts.sizes.split(",")]
    limit = raise_fd_limit(max(wanted) + FD_HEADROOM)  # per process: this client and the worker (inherits it)
    sizes = [min(n, limit - FD_HEADROOM) for n in wanted]
    for want, n in zip(wanted, sizes):
        if n < want:
            print(f"P5: {want} waiters need {want + FD_HEADROOM} descriptors per process but RLIMIT_NOFILE's hard "
                  f"limit here is {limit} (raising it needs CAP_SYS_RESOURCE): measuring {n} instead", flush=True)
    redis_url = f"redis://127.0.0.1:6379/{random.randint(1, 15)}"
    results = []
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    for n in sizes:
        with C.tmpdir("p5") as tmp, C.pg_database("p5") as pg_url:
            work = Path(tmp)
            env = C.gateway_env(pg_url, work)
            env["CALLGATE_REDIS_URL"] = redis_url
            key = C.prepare_gateway_db(env)
            with C.start_gateway(env, work) as gw:
                stats = C.PidStats(gw.popen.pid)
                print(f"P5: {n} waiters on one worker (pid {gw.popen.pid}, fd limit {limit}) ...", flush=True)
                results.append(runner(run_size(n, opts, gw.url, key, pg_url, redis_url, stats)))
                print(f"  done: {results[-1]['kib_per_waiter']:.1f} KiB/waiter, idle CPU "
                      f"{results[-1]['idle_cpu_core_fraction'] * 100:.1f} %, all woken in "
                      f"{results[-1]['all_woken_s'] * 1000:.0f} ms", flush=True)

    rows = []
    for r in results:
        rel = r["release"]
        rows.append([r["n"], r["kib_per_waiter"], r["idle_cpu_core_fraction"] * 100, r["idle_repolls_per_s"],
                     rel["p50"] * 1e3, rel["p99"] * 1e3, r["all_woken_s"] * 1e3, r["publish_s"] * 1e3,
                     r["open_settled_s"], r["not_approved"], r["answered_before_release"]])
    table = C.print_table(
        "\nP5 held waiters on one gateway worker (PostgreSQL + Redis; machine shared, 2 cores)",
        ["waiters", "KiB/waiter", "idle CPU %", "re-polls/s", "release p50 ms", "p99 ms", "all woken ms",
         "publish ms", "open s", "not approved", "early answers"], rows)
    checks = []
    for r in results:
        checks += [
            [f"{r['n']}: <= 32 KiB per waiter", f"{r['kib_per_waiter']:.1f} KiB", r["kib_per_waiter"] <= 32],
            [f"{r['n']}: all woken within 1 s", f"{r['all_woken_s'] * 1000:.0f} ms",
             r["all_woken_s"] <= 1.0 and r["all_answered"] and r["not_approved"] == 0],
            [f"{r['n']}: idle CPU (info; floor 0 %)", f"{r['idle_cpu_core_fraction'] * 100:.1f} % of a core", "info"],
            [f"{r['n']}: x floor 26 KiB (performance.md)", f"{C.ratio(r['kib_per_waiter'], 26):.2f}x", "info"],
            [f"{r['n']}: release p50 x floor 245 ms (5,000)", f"{C.ratio(r['release']['p50'] * 1e3, 245):.2f}x",
             "info"],
        ]
    target_table = C.print_table("\nP5 targets", ["target", "measured", "met"], [[a, b, str(c)] for a, b, c in checks])
    how = ("one Redis PUBLISH per call (what N separate approvals.decide calls send)" if opts.publish == "per-call"
           else "gateway.pubsub.publish_sync(ids): 100 ids per message (what a bulk announcement sends)")
    print(f"release = ONE bulk SQL UPDATE approving all N (bench-only: no approval.decided audit events), "
          f"then {how}; measured from that commit to each waiter's answer.")
    C.write_json("p5_held_waiters", {"options": vars(opts), "fd_limit": limit, "sizes_wanted": wanted,
                                     "results": results,
                                     "targets": checks, "tables": [table, target_table]})
    failed = [r for r in results if not r["all_answered"] or r["not_approved"]]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Closed-loop HTTP/1.1 load generator: C keep-alive connections, each sending POST /v1/calls
(a fresh UUID per request) back to back for a fixed time. Runs as its own process (uvloop when
installed) so the bench parent never competes inside it; it still shares the machine's cores.

    python bench/_loadgen.py URL KEY --connections 64 --warmup 2 --duration 10

Prints one JSON object: answers by status over the whole run (for the row-count check) and
within the measured window (for the rate), and per-request latency percentiles in the window.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid

ARGS = b'{"to":"alice@example.com","subject":"quarterly report","body":"see the attached figures","attachments":1}'


async def worker(host: str, port: int, key: str, path: str, stop_at: float, win: tuple[float, float],
                 stats: dict, lat: list[float]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\n").encode()
    perf = time.perf_counter
    all_status = stats["all"]
    win_status = stats["window"]
    try:
        while True:
            t0 = perf()
            if t0 >= stop_at:
                break
            body = b'{"id":"%s","tool":"send_email","args":%s}' % (str(uuid.uuid4()).encode(), ARGS)
            writer.write(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            response_head = await reader.readuntil(b"\r\n\r\n")
            status = int(response_head[9:12])
            i = response_head.lower().find(b"content-length:")
            length = int(response_head[i + 15:response_head.find(b"\r\n", i)]) if i >= 0 else 0
            if length:
                await reader.readexactly(length)
            t1 = perf()
            all_status[status] = all_status.get(status, 0) + 1
            if win[0] <= t1 < win[1]:
                win_status[status] = win_status.get(status, 0) + 1
                lat.append(t1 - t0)
    except (ConnectionError, asyncio.IncompleteReadError) as exc:
        stats["errors"].append(type(exc).__name__)
    finally:
        writer.close()


async def main(opts: argparse.Namespace) -> dict:
    host, port = opts.url.removeprefix("http://").split(":")
    now = time.perf_counter()
    window = (now + opts.warmup, now + opts.warmup + opts.duration)
    stats: dict = {"all": {}, "window": {}, "errors": []}
    lat: list[float] = []
    tasks = [asyncio.create_task(worker(host, int(port), opts.key, opts.path, window[1], window, stats, lat))
             for _ in range(opts.connections)]
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=opts.warmup + opts.duration + 60)
    lat.sort()
    pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")  # noqa: E731
    ok_window = sum(v for k, v in stats["window"].items() if 200 <= k < 300)
    return {
        "connections": opts.connections, "duration": opts.duration, "warmup": opts.warmup,
        "status_all": stats["all"], "status_window": stats["window"],
        "ok_all": sum(v for k, v in stats["all"].items() if 200 <= k < 300),
        "ok_per_s": ok_window / opts.duration, "errors": stats["errors"][:10], "n_errors": len(stats["errors"]),
        "lat_p50": pick(0.5), "lat_p99": pick(0.99),
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("key")
    ap.add_argument("--path", default="/v1/calls")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--duration", type=float, default=10.0)
    o = ap.parse_args()
    o.duration = min(o.duration, 20.0)
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(main(o))
    else:
        result = uvloop.run(main(o))
    print(json.dumps(result))

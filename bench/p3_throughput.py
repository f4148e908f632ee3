"""P3: durable decisions per second on PostgreSQL with the hash chain on (2 cores).

For each round (variants interleaved, order alternating) it starts one server, drives it for a
fixed time from a separate load-generator process (bench/_loadgen.py: C keep-alive connections,
POST /v1/calls with a fresh UUID each), then stops it:

  gw_w2    callgate serve --workers 2, PostgreSQL (one throwaway database for all its rounds)
  gw_w1    callgate serve --workers 1, PostgreSQL (its own throwaway database)
  stub     bench/_stub.py (bare asyncio.Protocol, 1 process, no work): the HTTP floor of this
           load generator on this machine, measured in the same run

Afterwards, per gateway database: ``callgate audit verify`` must exit 0 and the number of
tool_call rows must equal the number of 2xx answers the load generator got.
NOTE: the load generator runs on the same 2 cores as the server (and PostgreSQL), so every
figure here is a lower bound of what the server alone would do.

    uv run python bench/p3_throughput.py [--rounds 2] [--duration 10] [--connections 64]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

DOC_FLOORS = {  # performance.md, decisions/s on 2 cores (1 worker / 2 workers)
    "bare ASGI": (11_900, 18_600),
    "FastAPI": (3_750, 6_300),
    "FastAPI + durable row": (1_300, 1_600),
    "FastAPI + group commit": (2_600, 2_700),
}


def load(url: str, key: str, opts: argparse.Namespace) -> dict:
    out = subprocess.run(
        [sys.executable, str(C.BENCH_DIR / "_loadgen.py"), url, key, "--connections", str(opts.connections),
         "--warmup", str(opts.warmup), "--duration", str(opts.duration)],
        capture_output=True, text=True, timeout=opts.warmup + opts.duration + 120, cwd=C.REPO,
    )
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def count_rows(pg_url: str) -> int:
    import psycopg

    with psycopg.connect(C.libpq_dsn(pg_url)) as conn:
        return int(conn.execute("SELECT count(*) FROM tool_call").fetchone()[0])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--duration", type=float, default=10.0, help="measured seconds per round (max 20)")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--variants", default="gw_w2,gw_w1,stub")
    opts = ap.parse_args()
    opts.duration = min(opts.duration, 20.0)
    variants = opts.variants.split(",")

    results: dict[str, list[dict]] = {v: [] for v in variants}
    checks: dict[str, dict] = {}
    with C.tmpdir("p3") as tmp, C.pg_database("p3w1") as url_w1, C.pg_database("p3w2") as url_w2:
        work = Path(tmp)
        dbs = {"gw_w1": (url_w1, 1), "gw_w2": (url_w2, 2)}
        envs, keys, ok_total = {}, {}, {}
        for name, (url, _w) in dbs.items():
            if name in variants:
                (work / name).mkdir()
                envs[name] = C.gateway_env(url, work / name)
                keys[name] = C.prepare_gateway_db(envs[name])
                ok_total[name] = 0
        for r in range(opts.rounds):
            order = variants if r % 2 == 0 else list(reversed(variants))
            for name in order:
                if name == "stub":
                    with C.start_stub() as stub:
                        res = load(stub.url, "unused", opts)
                else:
                    with C.start_gateway(envs[name], work / name, workers=dbs[name][1]) as gw:
                        time.sleep(1.0)  # let every worker finish its lifespan start-up
                        res = load(gw.url, keys[name], opts)
                    ok_total[name] += res["ok_all"]
                results[name].append(res)
                print(f"  round {r + 1} {name}: {res['ok_per_s']:,.0f}/s  statuses {res['status_window']}"
                      f"  errors {res['n_errors']}", flush=True)
        for name in envs:
            rows = count_rows(dbs[name][0])
            t0 = time.perf_counter()
            verify = subprocess.run([*C.CALLGATE, "audit", "verify", "--json"], env=envs[name], capture_output=True,
                                    text=True, timeout=600, cwd=C.REPO)
            checks[name] = {"tool_call_rows": rows, "ok_answers": ok_total[name], "rows_match": rows == ok_total[name],
                            "verify_exit": verify.returncode, "verify": verify.stdout.strip()[-300:], "verify_stderr": verify.stderr.strip()[-1500:],
                            "verify_seconds": time.perf_counter() - t0}

    best = {n: max(x["ok_per_s"] for x in results[n]) for n in variants if results[n]}
    med = {n: sorted(x["ok_per_s"] for x in results[n])[len(results[n]) // 2] for n in variants if results[n]}
    rows_out = []
    for n in variants:
        lat50 = C.summary([x["lat_p50"] for x in results[n]])["p50"] * 1e3
        lat99 = max(x["lat_p99"] for x in results[n]) * 1e3
        rows_out.append([n, len(results[n]), med[n], best[n], lat50, lat99, C.ratio(best[n], best.get("stub", 0)),
                         C.ratio(best[n], 2500), C.ratio(best[n], 5000)])
    table = C.print_table(
        f"\nP3 durable decisions/s ({opts.connections} connections, {opts.duration:g}s per round, "
        f"{opts.rounds} rounds; load generator shares the 2 cores)",
        ["variant", "rounds", "median/s", "best/s", "lat p50 ms", "lat p99 ms", "x stub", "x 2,500", "x 5,000"],
        rows_out)
    doc_rows = []
    for label, (w1, w2) in DOC_FLOORS.items():
        doc_rows.append([label, w1, w2, C.ratio(best.get("gw_w1", 0), w1), C.ratio(best.get("gw_w2", 0), w2)])
    doc_table = C.print_table("\nP3 vs performance.md figures (other runs; indicative only)",
                              ["doc figure", "1 worker/s", "2 workers/s", "gw_w1 / it", "gw_w2 / it"], doc_rows)
    check_rows = [[n, c["ok_answers"], c["tool_call_rows"], str(c["rows_match"]), c["verify_exit"],
                   c["verify_seconds"]] for n, c in checks.items()]
    check_table = C.print_table("\nP3 integrity after the run", ["db", "2xx answers", "tool_call rows", "match",
                                                                 "audit verify exit", "verify s"], check_rows)
    w2 = best.get("gw_w2", float("nan"))
    print(f"\nP3 target >= 2,500/s: {'MET' if w2 >= 2500 else 'NOT MET'} (gw_w2 best {w2:,.0f}/s); "
          f"ambitious >= 5,000/s: {'MET' if w2 >= 5000 else 'NOT MET'}")
    C.write_json("p3_throughput", {"options": vars(opts), "results": results, "best": best, "median": med,
                                   "checks": checks, "tables": [table, doc_table, check_table]})
    bad = [n for n, c in checks.items() if not c["rows_match"] or c["verify_exit"] != 0]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())

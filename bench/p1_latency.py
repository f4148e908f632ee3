"""P1: added latency of an allowed call, as the SDK sees it, with a durable audit row in PostgreSQL.

Starts (all on 127.0.0.1, ephemeral ports, all stopped at the end):
  * ``callgate serve`` on a throwaway PostgreSQL database (created and dropped here),
  * ``callgate serve`` on a throwaway SQLite file (the embedded default; for information),
  * bench/_stub.py, a do-nothing asyncio.Protocol HTTP server (floor (a), and the peers' server),
  * ardenpy 0.5.7 in its own venv (bench/.venv-peers, created on first run), in a subprocess.

Variants, interleaved in rounds (the order rotates every round), each timed per call:
  ours_pg        callgate.check_call("send_email", {...}) -> allowed, gateway on PostgreSQL
  ours_sqlite    the same against the SQLite gateway
  guard_pg       a @callgate.guard'ed no-op (minus the bare call), incl. its background outcome report
  sdk_stub       check_call against the stub: pure SDK client + loopback cost, no server work
  raw_post_pg    POST /v1/calls over one raw keep-alive socket: the gateway's cost without our SDK
  raw_healthz_pg GET /healthz over a raw socket: uvicorn+FastAPI cost without auth, policy or DB
  floor_rtt      raw-socket keep-alive round trip to the stub                    (floor a)
  floor_insert   one autocommit INSERT via psycopg, synchronous_commit on        (floor b)
  ardenpy        ardenpy guard_tool()'d function against the stub (allowed)     (peer)

    uv run python bench/p1_latency.py [--rounds 12] [--per-round 200] [--peer-per-round 20]
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

PEER_VENV = C.BENCH_DIR / ".venv-peers"
PEER_PY = PEER_VENV / "bin" / "python"
ARDENPY = "ardenpy==0.5.7"
ARGS = {"to": "alice@example.com", "subject": "quarterly report", "body": "see the attached figures", "attachments": 1}


def ensure_peer_venv() -> str | None:
    """bench/.venv-peers with ardenpy 0.5.7; returns None (and says why) when it cannot be built."""
    try:
        if not PEER_PY.exists():
            subprocess.run(["uv", "venv", "-q", str(PEER_VENV)], check=True, timeout=300, cwd=C.BENCH_DIR)
        probe = subprocess.run([str(PEER_PY), "-c", "import importlib.metadata as m; print(m.version('ardenpy'))"],
                               capture_output=True, text=True, timeout=60)
        if probe.stdout.strip() != ARDENPY.split("==")[1]:
            subprocess.run(["uv", "pip", "install", "-q", "--python", str(PEER_PY), ARDENPY], check=True,
                           timeout=600, cwd=C.BENCH_DIR)
        return None
    except (OSError, subprocess.SubprocessError) as exc:
        return f"could not build {PEER_VENV.name} with {ARDENPY}: {exc}"


class Peer:
    """ardenpy in its venv, driven batch by batch over stdin/stdout."""

    def __init__(self, stub_url: str) -> None:
        self.p = subprocess.Popen([str(PEER_PY), str(C.BENCH_DIR / "_peer_ardenpy.py"), stub_url],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=C.BENCH_DIR)
        ready = self.p.stdout.readline()  # type: ignore[union-attr]
        if not ready.startswith("{"):
            self.stop()
            raise RuntimeError(f"ardenpy runner failed to start: {ready!r}")

    def run(self, n: int) -> list[float]:
        self.p.stdin.write(f"run {n}\n")  # type: ignore[union-attr]
        self.p.stdin.flush()  # type: ignore[union-attr]
        return json.loads(self.p.stdout.readline())  # type: ignore[union-attr]

    def stop(self) -> None:
        try:
            if self.p.poll() is None:
                self.p.stdin.write("quit\n")  # type: ignore[union-attr]
                self.p.stdin.flush()  # type: ignore[union-attr]
                self.p.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            pass
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(5)


def timed(fn: Callable[[int], Any], n: int) -> list[float]:
    perf = time.perf_counter
    out = []
    for i in range(n):
        t0 = perf()
        fn(i)
        out.append(perf() - t0)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--per-round", type=int, default=200, help="calls per variant per round")
    ap.add_argument("--peer-per-round", type=int, default=20, help="ardenpy calls per round (each ~20-40 ms)")
    ap.add_argument("--max-seconds", type=float, default=240, help="stop starting new rounds after this")
    ap.add_argument("--no-peer", action="store_true")
    opts = ap.parse_args()

    import psycopg

    import callgate

    peer_note = "skipped (--no-peer)" if opts.no_peer else ensure_peer_venv()
    started: list[Any] = []
    samples: dict[str, list[float]] = {}
    with C.tmpdir("p1") as tmp, C.pg_database("p1") as pg_url:
        work = Path(tmp)
        (work / "pg").mkdir()
        (work / "sq").mkdir()
        env_pg = C.gateway_env(pg_url, work / "pg")
        env_sq = C.gateway_env(f"sqlite:///{work / 'sq' / 'callgate.db'}", work / "sq")
        key_pg = C.prepare_gateway_db(env_pg)
        key_sq = C.prepare_gateway_db(env_sq)
        try:
            stub = C.start_stub()
            started.append(stub)
            gw_pg = C.start_gateway(env_pg, work / "pg")
            started.append(gw_pg)
            gw_sq = C.start_gateway(env_sq, work / "sq")
            started.append(gw_sq)
            peer = None
            if peer_note is None:
                try:
                    peer = Peer(stub.url)
                    started.append(peer)
                except RuntimeError as exc:
                    peer_note = str(exc)

            # floor (b): one autocommit INSERT, synchronous_commit on (the server default)
            pg = psycopg.connect(C.libpq_dsn(pg_url), autocommit=True)
            pg.execute("CREATE TABLE floor_row (id bigserial PRIMARY KEY, call_id uuid NOT NULL, payload text)")
            payload = json.dumps(ARGS)

            def floor_insert(_i: int) -> None:
                pg.execute("INSERT INTO floor_row (call_id, payload) VALUES (%s, %s)", (uuid.uuid4(), payload),
                           prepare=True)

            # floor (a): raw keep-alive round trip to the stub
            raw_stub = C.RawHTTP.for_url(stub.url)
            req_stub = C.http_request("GET", "/", "127.0.0.1")

            def floor_rtt(_i: int) -> None:
                raw_stub.roundtrip(req_stub)

            # server-side split: raw socket to the gateway (no SDK client)
            raw_gw = C.RawHTTP.for_url(gw_pg.url)
            req_health = C.http_request("GET", "/healthz", "127.0.0.1")
            auth = f"Authorization: Bearer {key_pg}\r\n"
            args_json = json.dumps(ARGS, separators=(",", ":"))

            def raw_healthz(_i: int) -> None:
                status, _ = raw_gw.roundtrip(req_health)
                assert status == 200, status

            def raw_post(_i: int) -> None:
                body = ('{"id":"%s","tool":"send_email","args":%s}' % (uuid.uuid4(), args_json)).encode()
                status, answer = raw_gw.roundtrip(C.http_request("POST", "/v1/calls", "127.0.0.1", body, auth))
                assert status == 201 and b'"allowed"' in answer, (status, answer)

            spool = work / "spool"
            configs = {
                "pg": dict(url=gw_pg.url, api_key=key_pg),
                "sqlite": dict(url=gw_sq.url, api_key=key_sq),
                "stub": dict(url=stub.url, api_key=key_pg),
            }

            def use(target: str) -> None:
                callgate.flush(5.0)
                callgate.configure(**configs[target], spool_dir=spool, integrations=False)

            def check(_i: int) -> None:
                permit = callgate.check_call("send_email", ARGS)
                assert permit.status == "allowed", permit

            def noop(to: str, subject: str, body: str, attachments: int) -> str:
                return "sent"

            guarded = callgate.guard(noop, name="send_email")

            def call_guarded(_i: int) -> None:
                guarded(**ARGS)

            def call_bare(_i: int) -> None:
                noop(**ARGS)

            variants: dict[str, tuple[str | None, Callable[[int], Any], int]] = {
                "ours_pg": ("pg", check, opts.per_round),
                "ours_sqlite": ("sqlite", check, opts.per_round),
                "guard_pg": ("pg", call_guarded, opts.per_round // 2),
                "bare_call": (None, call_bare, opts.per_round),
                "sdk_stub": ("stub", check, opts.per_round),
                "raw_post_pg": (None, raw_post, opts.per_round),
                "raw_healthz_pg": (None, raw_healthz, opts.per_round),
                "floor_rtt": (None, floor_rtt, opts.per_round),
                "floor_insert": (None, floor_insert, opts.per_round),
            }
            if peer is not None:
                variants["ardenpy"] = (None, lambda _i: None, opts.peer_per_round)

            def run_variant(name: str, n: int, record: bool) -> None:
                target, fn, _ = variants[name]
                if target is not None:
                    use(target)
                gc.collect()
                got = peer.run(n) if name == "ardenpy" and peer is not None else timed(fn, n)
                if record:
                    samples.setdefault(name, []).extend(got)

            print(f"P1: warming up ({len(variants)} variants) ...", flush=True)
            for name, (_t, _f, n) in variants.items():
                run_variant(name, min(n, 100) if name != "ardenpy" else 3, record=False)
            t_start = time.monotonic()
            names = list(variants)
            rounds_done = 0
            for r in range(opts.rounds):
                if time.monotonic() - t_start > opts.max_seconds:
                    break
                order = names[r % len(names):] + names[: r % len(names)]
                for name in order:
                    run_variant(name, variants[name][2], record=True)
                rounds_done += 1
                print(f"  round {r + 1}/{opts.rounds} done", flush=True)
            callgate.flush(5.0)
            callgate.reset()
            raw_stub.close()
            raw_gw.close()
            pg.close()
            # sanity: every ours_pg call left its durable row
            with psycopg.connect(C.libpq_dsn(pg_url)) as conn:
                tool_calls = conn.execute("SELECT count(*) FROM tool_call").fetchone()[0]
                audit_rows = conn.execute("SELECT count(*) FROM audit_event").fetchone()[0]
        finally:
            for proc in reversed(started):
                proc.stop()

    s = {k: C.summary(v) for k, v in samples.items()}
    ms = lambda name, q="p50": s[name][q] * 1e3 if name in s else float("nan")  # noqa: E731
    floor = ms("floor_rtt") + ms("floor_insert")
    ours50, ours99 = ms("ours_pg"), ms("ours_pg", "p99")
    guard_added = ms("guard_pg") - ms("bare_call")
    arden50 = ms("ardenpy")
    rows = []
    for name in ["ours_pg", "guard_pg", "ours_sqlite", "sdk_stub", "raw_post_pg", "raw_healthz_pg", "floor_rtt",
                 "floor_insert", "ardenpy", "bare_call"]:
        if name in s:
            rows.append([name, s[name]["n"], ms(name), ms(name, "p90"), ms(name, "p99"),
                         C.ratio(ms(name), floor), C.ratio(ms(name), ours50)])
    rows.append(["floor = rtt + insert (p50s)", "", floor, "", "", 1.0, C.ratio(floor, ours50)])
    table = C.print_table(f"\nP1 latency of an allowed call (ms; {rounds_done} interleaved rounds)",
                          ["variant", "n", "p50", "p90", "p99", "x floor", "x ours_pg"], rows)

    split = {
        "loopback round trip (floor a)": ms("floor_rtt"),
        "SDK client beyond a raw socket (sdk_stub - floor_rtt)": ms("sdk_stub") - ms("floor_rtt"),
        "uvicorn+FastAPI routing (raw_healthz - floor_rtt)": ms("raw_healthz_pg") - ms("floor_rtt"),
        "auth+parse+policy+group commit+audit (raw_post - raw_healthz)": ms("raw_post_pg") - ms("raw_healthz_pg"),
        "  of which one autocommit INSERT (floor b)": ms("floor_insert"),
        "unexplained (ours_pg - sdk_stub - raw_post + floor_rtt)": ours50 - ms("sdk_stub") - ms("raw_post_pg")
        + ms("floor_rtt"),
    }
    split_table = C.print_table("\nP1 cost split of ours_pg (p50 differences, ms)", ["part", "ms"],
                                [[k, v] for k, v in split.items()])
    checks = [
        ["p50 <= 1.5 ms", f"{ours50:.3f} ms", ours50 <= 1.5],
        ["p99 <= 5 ms", f"{ours99:.3f} ms", ours99 <= 5.0],
        [">= 25x faster than ardenpy (p50)", f"{C.ratio(arden50, ours50):.1f}x" if peer_note is None else "n/a",
         C.ratio(arden50, ours50) >= 25 if peer_note is None else "n/a"],
        ["ambitious: p50 <= 1.0 ms", f"{ours50:.3f} ms", ours50 <= 1.0],
        ["ambitious: ours/floor <= 4x", f"{C.ratio(ours50, floor):.2f}x", C.ratio(ours50, floor) <= 4],
        ["guard overhead (guard_pg - bare) p50", f"{guard_added:.3f} ms", "info"],
        ["sqlite/pg p50 (info)", f"{C.ratio(ms('ours_sqlite'), ours50):.2f}x", "info"],
    ]
    target_table = C.print_table("\nP1 targets", ["target", "measured", "met"], [[a, b, str(c)] for a, b, c in checks])
    if peer_note:
        print(f"peer: {peer_note}")
    print(f"rows written to PostgreSQL during the run: tool_calls={tool_calls} audit_events={audit_rows}")
    C.write_json("p1_latency", {
        "options": vars(opts), "rounds": rounds_done, "summary_seconds": s, "floor_ms": floor,
        "split_ms": split, "targets": [[a, b, c] for a, b, c in checks], "peer_note": peer_note,
        "tables": [table, split_table, target_table], "tool_calls": tool_calls, "audit_events": audit_rows,
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

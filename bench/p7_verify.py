"""P7: audit-chain verification speed, events/s, over a chain of >= 100k events.

Builds the chain with ``gateway.audit.append_events`` in large batches (realistic
tool_call.received / policy.evaluated records, ~10 % with non-ASCII text) into a throwaway
SQLite file and a throwaway PostgreSQL database, then measures, interleaved in rounds:

  verify_mem        gateway.audit.verify_rows over rows already in memory (pure CPU)
  exact_mem         bench-local reference `exact_verify_rows`: the same checks with rfc8785 re-serializing
                    every row (the pre-optimization implementation) — verify_rows must agree with it
  read_sqlite       gateway.audit.stream_rows alone (SQLite): the read cost without verifying
  stream_sqlite     verify_rows(stream_rows(conn)) on SQLite, in process
  stream_pg         verify_rows(stream_rows(conn)) on PostgreSQL, in process
  cli_sqlite/cli_pg `callgate audit verify` end to end (subprocess wall time incl. start-up)

Also: a cProfile of verify_rows, and an equivalence check (ok, first bad seq, reason) of verify_rows against the exact reference on
the intact chain and on tampered copies (reformatted JSON, reordered keys, edited text).

    uv run python bench/p7_verify.py [--events 100000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import hashlib
import io
import json
import pstats
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402



def exact_verify_rows(rows: Iterable[Any]) -> Any:
    """The reference: gateway.audit.verify_rows with every row re-canonicalized by rfc8785
    (``exact_canonical_record``) instead of the C-encoder fast path."""
    from gateway.audit import exact_canonical_record, verify_rows

    return verify_rows(rows, canonical_record=exact_canonical_record)


def make_events(start: int, n: int) -> list[tuple[str, Any, dict, str | None]]:
    import uuid

    from gateway.audit import Actor

    actor = Actor("agent_key", "0123456789ab")
    out = []
    for i in range(start, start + n, 2):
        call_id = str(uuid.uuid4())
        subject = "Réunion trimestrielle – chiffres" if i % 20 == 0 else "quarterly report"
        out.append(("tool_call.received", actor, {
            "tool": "send_email", "args": {"to": f"user{i}@example.com", "subject": subject, "body": "[REDACTED]",
                                           "attachments": i % 7},
            "args_hmac": hashlib.sha256(str(i).encode()).hexdigest(), "redactions": [["/body", "secret"]],
            "agent": "bench", "session_id": f"s-{i // 50}", "framework": "guard", "metadata": {"run": i % 13},
        }, call_id))
        out.append(("policy.evaluated", actor, {"decision": "allow", "rule": None, "reason": None,
                                                "policy_version": 1}, call_id))
    return out


def build_chain(url: str, n: int, batch: int = 5000) -> float:
    from gateway.audit import append_events
    from gateway.db import make_engine
    from gateway.migrate import upgrade

    upgrade(url)
    engine = make_engine(url, writer=True)
    t0 = time.perf_counter()
    try:
        done = 0
        while done < n:
            k = min(batch, n - done)
            events = make_events(done, k)
            with engine.begin() as conn:
                append_events(conn, events)
            done += len(events)
    finally:
        engine.dispose()
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-seconds", type=float, default=300)
    opts = ap.parse_args()

    from gateway import audit
    from gateway.db import make_engine

    timings: dict[str, list[float]] = {}
    with C.tmpdir("p7") as tmp, C.pg_database("p7") as pg_url:
        work = Path(tmp)
        sq_url = f"sqlite:///{work / 'chain.db'}"
        print(f"P7: building {opts.events:,} events in SQLite and PostgreSQL ...", flush=True)
        build_s = {"sqlite": build_chain(sq_url, opts.events), "pg": build_chain(pg_url, opts.events)}
        engines = {"sqlite": make_engine(sq_url, writer=False), "pg": make_engine(pg_url)}
        with engines["sqlite"].connect() as conn:
            rows = list(audit.stream_rows(conn))
        n = len(rows)
        assert n >= opts.events, n

        # equivalence with the exact reference on the intact chain and on tampered copies
        equivalence = []
        ref, cand = audit.verify_rows(rows), exact_verify_rows(rows)
        equivalence.append(["intact chain", ref.ok, cand.ok, (ref.ok, ref.first_bad_seq, ref.reason) == (cand.ok, cand.first_bad_seq, cand.reason)])

        def tampered(idx: int, text: str) -> list[Any]:
            prev = rows[idx].prev_hash
            changed = dataclasses.replace(rows[idx], canonical=text,
                                          row_hash=hashlib.sha256(prev + text.encode()).digest())
            return rows[:idx] + [changed]

        base = json.loads(rows[10].canonical)
        non_ascii = next(i for i, r in enumerate(rows) if not r.canonical.isascii())
        cases = {
            "spaces after separators": json.dumps(base, sort_keys=True, ensure_ascii=False),
            "keys not sorted": json.dumps(dict(reversed(list(base.items()))), separators=(",", ":"),
                                          ensure_ascii=False),
            "escaped non-ASCII": json.dumps(json.loads(rows[non_ascii].canonical), sort_keys=True,
                                            separators=(",", ":"), ensure_ascii=True),
            "float 1.0 for int": rows[10].canonical.replace('"policy_version":1', '"policy_version":1.0')
            if '"policy_version":1' in rows[10].canonical else rows[10].canonical.replace('"v":1', '"v":1.0'),
            "huge int": rows[10].canonical.replace('"v":1', '"v":18014398509481984'),
            "seq differs": rows[10].canonical.replace(f'"seq":{rows[10].seq}', f'"seq":{rows[10].seq + 1}'),
        }
        for label, text in cases.items():
            idx = non_ascii if label == "escaped non-ASCII" else 10
            t = tampered(idx, text)
            r1, r2 = audit.verify_rows(t), exact_verify_rows(t)
            equivalence.append([label, f"{r1.ok}/{r1.reason}", f"{r2.ok}/{r2.reason}", (r1.ok, r1.first_bad_seq, r1.reason) == (r2.ok, r2.first_bad_seq, r2.reason)])

        # profile of the current implementation (in memory)
        prof = cProfile.Profile()
        prof.enable()
        audit.verify_rows(rows[: min(n, 30000)])
        prof.disable()
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(12)
        profile_text = "\n".join(line for line in buf.getvalue().splitlines() if line.strip())[:4000]

        def stream_verify(engine_name: str) -> Any:
            with engines[engine_name].connect() as conn:
                return audit.verify_rows(audit.stream_rows(conn))

        def read_only(engine_name: str) -> Any:
            with engines[engine_name].connect() as conn:
                k = 0
                for _ in audit.stream_rows(conn):
                    k += 1
                return k

        def cli(url: str) -> Any:
            env = C.gateway_env(url, work)
            res = subprocess.run([*C.CALLGATE, "audit", "verify", "--json"], env=env, capture_output=True,
                                 text=True, timeout=900, cwd=C.REPO)
            if res.returncode != 0:
                raise RuntimeError(f"audit verify exited {res.returncode}: {res.stdout} {res.stderr}")
            return json.loads(res.stdout)

        variants = {
            "verify_mem": lambda: audit.verify_rows(rows),
             "exact_mem": lambda: exact_verify_rows(rows),
            "read_sqlite": lambda: read_only("sqlite"),
            "stream_sqlite": lambda: stream_verify("sqlite"),
            "stream_pg": lambda: stream_verify("pg"),
            "cli_sqlite": lambda: cli(sq_url),
            "cli_pg": lambda: cli(pg_url),
        }
        names = list(variants)
        t_start = time.monotonic()
        rounds = 0
        for r in range(opts.rounds):
            if time.monotonic() - t_start > opts.max_seconds:
                break
            for name in names[r % len(names):] + names[: r % len(names)]:
                t0 = time.perf_counter()
                result = variants[name]()
                timings.setdefault(name, []).append(time.perf_counter() - t0)
                ok = result if isinstance(result, int) else (result["ok"] if isinstance(result, dict) else result.ok)
                assert ok, (name, result)
            rounds += 1
            print(f"  round {r + 1}/{opts.rounds} done", flush=True)
        for e in engines.values():
            e.dispose()

    med = {k: C.pct(v, 50) for k, v in timings.items()}
    rate = {k: n / v for k, v in med.items()}
    rows_out = [[k, len(timings[k]), med[k], rate[k], C.ratio(rate[k], 100_000), C.ratio(rate[k], 500_000),
                 C.ratio(rate[k], rate["verify_mem"])] for k in names]
    table = C.print_table(f"\nP7 audit verification, {n:,} events ({rounds} interleaved rounds; median time)",
                          ["variant", "runs", "seconds", "events/s", "x 100k target", "x 500k ambitious",
                           "x verify_mem"], rows_out)
    eq_table = C.print_table("\nP7 verify_rows vs the exact reference (ok/reason)",
                             ["case", "verify_rows", "exact_verify_rows", "same result"], equivalence)
    print("\nP7 cProfile of verify_rows (in memory, 30k events, by own time):\n" + profile_text)
    cli_pg = rate.get("cli_pg", float("nan"))
    print(f"\nP7 target >= 100k events/s for `callgate audit verify` (PG): {'MET' if cli_pg >= 100_000 else 'NOT MET'}"
          f" ({cli_pg:,.0f}/s); chain build: sqlite {build_s['sqlite']:.1f}s, pg {build_s['pg']:.1f}s")
    C.write_json("p7_verify", {"options": vars(opts), "events": n, "rounds": rounds, "timings_s": timings,
                               "events_per_s": rate, "build_s": build_s, "equivalence": equivalence,
                               "profile": profile_text, "tables": [table, eq_table]})
    return 0 if all(e[-1] for e in equivalence) else 1


if __name__ == "__main__":
    raise SystemExit(main())

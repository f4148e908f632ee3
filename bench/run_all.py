"""Run every benchmark in sequence (never in parallel: they would share the 2 cores).

    uv run python bench/run_all.py [--quick] [--only p1,p2,p3,p4,p5,p7]

Each script prints its own table and writes bench/results/<name>-<stamp>.json (and -latest.json).
``--quick`` runs shorter versions (smoke test of the harness, not figures to quote).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = {
    "p1": ("p1_latency.py", [], ["--rounds", "2", "--per-round", "50", "--peer-per-round", "5"]),
    "p2": ("p2_approval_wakeup.py", [], ["--rounds", "2", "--per-round", "3", "--peer-per-round", "3"]),
    "p3": ("p3_throughput.py", [], ["--rounds", "1", "--duration", "4"]),
    "p4": ("p4_policy.py", [], ["--rounds", "3", "--per-round", "1000"]),
    "p5": ("p5_held_waiters.py", [], ["--sizes", "1000", "--idle", "2"]),
    "p6": ("p6_import_configure.py", [], ["--rounds", "3", "--p8-rounds", "3", "--p8-calls", "5000"]),
    "p6i": ("p6_integration_overhead.py", [], ["--rounds", "2", "--per-round", "100"]),
    "p7": ("p7_verify.py", [], ["--events", "20000", "--rounds", "1"]),
}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default=",".join(SCRIPTS))
    opts = ap.parse_args()
    failed = []
    for key in opts.only.split(","):
        script, full, quick = SCRIPTS[key]
        print(f"\n===== {script} =====", flush=True)
        t0 = time.monotonic()
        rc = subprocess.run([sys.executable, str(HERE / script), *(quick if opts.quick else full)],
                            timeout=1800).returncode
        print(f"===== {script}: exit {rc} in {time.monotonic() - t0:.0f}s =====", flush=True)
        if rc != 0:
            failed.append(script)
    if failed:
        print("failed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Runs inside bench/.venv-peers (ardenpy 0.5.7): times ardenpy's guard_tool against the stub.

Line protocol on stdin/stdout so the parent can interleave batches with its own variants:
``run N`` -> one JSON line with N per-call times in seconds; ``quit`` -> exit.
Usage: python _peer_ardenpy.py STUB_URL
"""

import json
import logging
import sys
import time

import ardenpy
from ardenpy.guard import guard_tool

logging.disable(logging.CRITICAL)


def send_email(to: str, subject: str, body: str) -> str:
    return "sent"


def main() -> None:
    url = sys.argv[1]
    ardenpy.configure(api_key="test_bench_key", api_url=url, retry_attempts=1)
    guarded = guard_tool("send_email", send_email)
    assert guarded("a@example.com", "hi", "hello") == "sent"  # warm-up, and proves the stub's answer is "allow"
    print(json.dumps({"ready": ardenpy.__dict__.get("__version__", "?")}), flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        n = int(cmd[1])
        times = []
        perf = time.perf_counter
        for i in range(n):
            t0 = perf()
            guarded(f"user{i}@example.com", "quarterly report", "see attachment")
            times.append(perf() - t0)
        print(json.dumps(times), flush=True)


if __name__ == "__main__":
    main()

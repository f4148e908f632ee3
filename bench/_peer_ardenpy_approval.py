"""Runs inside bench/.venv-peers (ardenpy 0.5.7): how long ardenpy's polling client takes to
start a tool after its approval, against bench/_approval_stub.py.

Each call: ``guard_tool``'s default ``wait`` mode posts the call, gets ``requires_approval`` and
polls ``GET /status/{id}`` every ``poll_interval`` (its default, 2 s). The stub approves the
action ``flip_in_ms`` after the call arrived, drawn uniformly from [50, 50 + 2000) ms so the
approval lands at a random phase of the polling (a human clicks whenever). Measured per call:
the tool's first line minus the stub's approval moment (both ``time.monotonic()``, one clock for
every process of the machine).

Line protocol on stdin/stdout, as bench/_peer_ardenpy.py: ``run N`` -> one JSON line with N
wake-up times in seconds (the calls run in parallel threads: each mostly sleeps); ``quit``.
Usage: python _peer_ardenpy_approval.py STUB_URL
"""

import json
import logging
import random
import sys
import threading
import time
import urllib.request
import uuid

import ardenpy
from ardenpy.config import get_config
from ardenpy.guard import guard_tool

logging.disable(logging.CRITICAL)
STARTED: dict = {}


def wire_transfer(iban: str, amount: int, nonce: str, flip_in_ms: float) -> str:
    STARTED[nonce] = time.monotonic()  # the tool's first line
    return "sent"


def main() -> None:
    url = sys.argv[1]
    ardenpy.configure(api_key="test_bench_key", api_url=url, retry_attempts=1)  # poll_interval: its default
    guarded = guard_tool("wire_transfer", wire_transfer)
    rng = random.Random(7)
    print(json.dumps({"ready": True, "poll_interval": get_config().poll_interval}), flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        nonces = [str(uuid.uuid4()) for _ in range(int(cmd[1]))]
        threads = [threading.Thread(target=guarded, args=("DE89", 2500, n, 50 + rng.random() * 2000)) for n in nonces]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        out = []
        for n in nonces:
            with urllib.request.urlopen(f"{url}/flip/{n}", timeout=10) as r:
                flip_at = json.loads(r.read())["flip_at"]
            out.append(STARTED[n] - flip_at)
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()

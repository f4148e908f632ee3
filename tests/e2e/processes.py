"""Run the real ``callgate`` command as a user would: CLI subprocesses and a served gateway."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The gateway runs in the project's main environment; the framework suites (each in its own
#: environment under tests/envs/, without the server's dependencies) point this at it.
CALLGATE = [os.environ.get("CALLGATE_GATEWAY_PYTHON") or sys.executable, "-m", "gateway.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(env: dict[str, str], *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*CALLGATE, *args], env={**os.environ, **env}, capture_output=True, text=True, input=input, timeout=120
    )
    if check and result.returncode != 0:
        raise AssertionError(f"callgate {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


@dataclass
class Served:
    url: str
    process: subprocess.Popen[str]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_until_ready(url: str, process: subprocess.Popen[Any], log: Callable[[], str], timeout: float) -> None:
    """Poll ``url``/readyz until it answers 200; fail with the process's log if it exits or times out."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise AssertionError(f"callgate serve exited {process.returncode}:\n{log()}")
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"callgate serve not ready after {timeout}s:\n{log()}")
        time.sleep(0.1)


@contextmanager
def serve(env: dict[str, str], workdir: Path, *args: str, port: int | None = None, ready_timeout: float = 60) -> Iterator[Served]:
    """Start ``callgate serve`` on an ephemeral port and wait until /readyz answers."""
    port = port or free_port()
    log_path = workdir / f"serve-{port}.log"
    log_file = log_path.open("w")
    process = subprocess.Popen(
        [*CALLGATE, "serve", "--host", "127.0.0.1", "--port", str(port), *args],
        env={**os.environ, **env}, stdout=log_file, stderr=subprocess.STDOUT, text=True, cwd=workdir,
    )
    served = Served(f"http://127.0.0.1:{port}", process, log_path)
    try:
        wait_until_ready(served.url, process, served.log, ready_timeout)
        yield served
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        log_file.close()

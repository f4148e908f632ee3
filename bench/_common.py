"""Shared helpers for the benchmarks: ports, throwaway databases, gateway processes, stats, output.

Every helper that starts something returns a handle whose ``stop()`` (or context manager exit)
stops exactly what it started. Nothing here is imported by the gateway or the SDK.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS = BENCH_DIR / "results"
sys.path.insert(0, str(REPO))  # one copy of the process and database helpers: the tests' own
from tests.e2e.processes import wait_until_ready  # noqa: E402
from tests.pg import PG_URL_PREFIX, throwaway_database  # noqa: E402
SECRET = "bench-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz"
CALLGATE = [sys.executable, "-m", "gateway.cli"]

# The policy every gateway bench runs with: send_email is allowed unless a rule matches, so
# an allowed call still walks real rules (not the empty allow-all policy).
BENCH_POLICY = """\
defaults: {action: allow, approval_timeout: 15m}
policies:
  - tool: send_email
    rules:
      - name: no-competitors
        when: {arg: to, email_domain_in: [evil.example, competitor.example]}
        action: block
        reason: never mail competitors
      - name: big-attachments-need-a-human
        when: {arg: attachments, gt: 10}
        action: require_approval
    default: allow
  - tool: stripe.*
    rules:
      - name: big-refunds
        when: {arg: amount, gt: 200}
        action: require_approval
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- statistics ------------------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of unsorted values; NaN when empty."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(q / 100 * len(s) + 0.5)) - 1))
    return s[k]


def summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": pct(values, 50),
        "p90": pct(values, 90),
        "p99": pct(values, 99),
        "mean": statistics.fmean(values) if values else float("nan"),
        "min": min(values) if values else float("nan"),
    }


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def fmt(v: Any, unit: str = "") -> str:
    if isinstance(v, float):
        if v != v:
            return "-"
        if abs(v) >= 100:
            return f"{v:,.0f}{unit}"
        if abs(v) >= 10:
            return f"{v:.1f}{unit}"
        return f"{v:.2f}{unit}" if abs(v) >= 1 else f"{v:.3f}{unit}"
    return f"{v}{unit}"


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[c if isinstance(c, str) else fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(cells[0], widths)), "  ".join("-" * w for w in widths)]
    for r in cells[1:]:
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def machine() -> dict[str, Any]:
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count(),
            "loadavg_at_start": load}


def write_json(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = RESULTS / f"{name}-{stamp}.json"
    payload = {"bench": name, "when": stamp, "machine": machine(), **payload}
    path.write_text(json.dumps(payload, indent=2, default=str))
    (RESULTS / f"{name}-latest.json").write_text(path.read_text())
    print(f"\nwrote {path.relative_to(REPO)}", flush=True)
    return path


# -- databases -------------------------------------------------------------------------------


@contextlib.contextmanager
def pg_database(prefix: str) -> Iterator[str]:
    """A throwaway database (the tests' helper), as a SQLAlchemy URL; dropped afterwards."""
    with throwaway_database(f"bench_{prefix}") as name:
        yield PG_URL_PREFIX + name


def libpq_dsn(sqlalchemy_url: str) -> str:
    return sqlalchemy_url.replace("postgresql+psycopg://", "postgresql://")


# -- the gateway -----------------------------------------------------------------------------


def gateway_env(database_url: str, workdir: Path, policy_text: str = BENCH_POLICY) -> dict[str, str]:
    policy = workdir / "policy.yaml"
    policy.write_text(policy_text)
    return {
        **os.environ,
        "CALLGATE_DATABASE_URL": database_url,
        "CALLGATE_SECRET_KEY": SECRET,
        "CALLGATE_POLICIES": str(policy),
        "CALLGATE_DATA_DIR": str(workdir / "data"),
        "CALLGATE_LOG_LEVEL": "warning",
        "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }


def cli(env: dict[str, str], *args: str, timeout: float = 180, input: str | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*CALLGATE, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO,
                            input=input)
    if result.returncode != 0:
        raise RuntimeError(f"callgate {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def prepare_gateway_db(env: dict[str, str], agent: str = "bench") -> str:
    """Migrate and create an agent key; returns the key (the last stdout line)."""
    cli(env, "migrate")
    return cli(env, "keys", "create", "--agent", agent).stdout.strip().splitlines()[-1]


class Proc:
    """A child process we started; ``stop()`` terminates exactly it (and waits)."""

    def __init__(self, popen: subprocess.Popen[Any], log_path: Path | None = None, url: str = "") -> None:
        self.popen = popen
        self.log_path = log_path
        self.url = url

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def stop(self, timeout: float = 15) -> None:
        p = self.popen
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)

    def __enter__(self) -> Proc:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_gateway(env: dict[str, str], workdir: Path, *, workers: int = 1, ready_timeout: float = 90) -> Proc:
    port = free_port()
    log_path = workdir / f"serve-{port}.log"
    log_file = log_path.open("w")
    popen = subprocess.Popen(
        [*CALLGATE, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
        env=env, stdout=log_file, stderr=subprocess.STDOUT, cwd=REPO,
    )
    log_file.close()
    proc = Proc(popen, log_path, f"http://127.0.0.1:{port}")
    try:
        wait_until_ready(proc.url, popen, proc.log, ready_timeout)
    except BaseException:
        proc.stop()
        raise
    return proc


def start_stub(*, ready_timeout: float = 20) -> Proc:
    """The minimal asyncio.Protocol HTTP server (bench/_stub.py) on an ephemeral port."""
    return start_script_server("_stub.py", ready_timeout=ready_timeout)


def start_script_server(script: str, *args: str, ready_timeout: float = 20) -> Proc:
    """``python bench/SCRIPT PORT *ARGS`` on an ephemeral port; returns once it accepts connections."""
    port = free_port()
    popen = subprocess.Popen([sys.executable, str(BENCH_DIR / script), str(port), *args], cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    proc = Proc(popen, None, f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + ready_timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            if popen.poll() is not None or time.monotonic() > deadline:
                proc.stop()
                error = popen.stderr.read().decode() if popen.stderr else ""
                raise RuntimeError(f"{script} did not start: {error}") from None
            time.sleep(0.05)


# -- a console reviewer (a logged-in session, as a browser has one) --------------------------


def create_reviewer(env: dict[str, str], username: str, password: str) -> None:
    cli(env, "users", "create", username, "--role", "reviewer", "--password-stdin", input=password + "\n")


class ConsoleReviewer:
    """A reviewer signed in to the console the way a browser signs in: the login form (its
    pre-login cookie and token), ``POST /login``, then the CSRF token from the queue page.
    ``approve_request`` is the exact form POST the detail page's Approve button sends."""

    def __init__(self, url: str, username: str, password: str) -> None:
        import http.client
        import re
        from urllib.parse import urlencode

        self.url = url
        host, port = url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            conn.request("GET", "/login")
            r = conn.getresponse()
            page = r.read().decode()
            prelogin = _cookie(r.getheaders(), "__Host-callgate_prelogin")
            token = re.search(r'name="csrf_token" value="([^"]+)"', page)
            if token is None:
                raise RuntimeError("no login token on /login")
            form = urlencode({"username": username, "password": password, "csrf_token": token.group(1), "next": "/"})
            conn.request("POST", "/login", body=form, headers={
                "Content-Type": "application/x-www-form-urlencoded", "Cookie": prelogin, "Origin": url})
            r = conn.getresponse()
            r.read()
            if r.status != 303:
                raise RuntimeError(f"console login answered {r.status}")
            self.session = _cookie(r.getheaders(), "__Host-callgate_session")
            conn.request("GET", "/", headers={"Cookie": self.session})
            r = conn.getresponse()
            csrf = re.search(r'<meta name="csrf-token" content="([^"]+)">', r.read().decode())
            if csrf is None:
                raise RuntimeError("no CSRF token on the queue page")
            self.csrf = csrf.group(1)
        finally:
            conn.close()

    def approve_request(self, call_id: str) -> bytes:
        """``POST /calls/{id}/approve`` (plain form, no htmx: answered 303 to the detail page)."""
        body = f"csrf_token={self.csrf}".encode()
        return http_request("POST", f"/calls/{call_id}/approve", self.url.removeprefix("http://"), None,
                            f"Cookie: {self.session}\r\nOrigin: {self.url}\r\n"
                            "Content-Type: application/x-www-form-urlencoded\r\n"
                            f"Content-Length: {len(body)}\r\n") + body


def _cookie(headers: list[tuple[str, str]], name: str) -> str:
    """``name=value`` of the Set-Cookie header setting ``name``."""
    for key, value in headers:
        if key.lower() == "set-cookie" and value.startswith(name + "="):
            return value.split(";", 1)[0]
    raise RuntimeError(f"no {name} cookie was set")


def tmpdir(prefix: str) -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix=f"callgate-bench-{prefix}-")


# -- one process's memory and CPU (Linux /proc) ----------------------------------------------


class PidStats:
    """VmRSS and CPU time of one process, read from ``/proc/<pid>``: what P5 charges to the
    gateway worker (its threads included), nothing the bench client does."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.tick = os.sysconf("SC_CLK_TCK")

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError(f"no VmRSS for pid {self.pid}")

    def cpu_seconds(self) -> float:
        """utime + stime so far (``comm`` may hold spaces: split after its closing parenthesis)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self.tick

    def cpu_start(self) -> tuple[float, float]:
        return self.cpu_seconds(), time.monotonic()

    def cpu_since(self, start: tuple[float, float]) -> float:
        """Fraction of one core used since ``cpu_start()`` (1.0 = one core busy throughout)."""
        cpu, wall = start
        return (self.cpu_seconds() - cpu) / max(1e-9, time.monotonic() - wall)

    async def cpu_over(self, seconds: float) -> float:
        import asyncio

        start = self.cpu_start()
        await asyncio.sleep(seconds)
        return self.cpu_since(start)


# -- a raw keep-alive HTTP/1.1 client (the floor's client) -----------------------------------


class RawHTTP:
    """One keep-alive socket; sends prebuilt requests and reads Content-Length framed answers."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    @classmethod
    def for_url(cls, url: str) -> RawHTTP:
        host, port = url.removeprefix("http://").split(":")
        return cls(host, int(port))

    def roundtrip(self, request: bytes) -> tuple[int, bytes]:
        sock = self.sock
        sock.sendall(request)
        buf = self.buf
        while True:
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                head = buf[:end]
                i = head.lower().find(b"content-length:")
                length = int(head[i + 15:head.find(b"\r\n", i) if head.find(b"\r\n", i) > 0 else None]) if i >= 0 else 0
                total = end + 4 + length
                if len(buf) >= total:
                    self.buf = buf[total:]
                    return int(head[9:12]), buf[end + 4:total]
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            buf += chunk

    def close(self) -> None:
        self.sock.close()


def http_request(method: str, path: str, host: str, body: bytes | None = None, headers: str = "") -> bytes:
    if body is None:
        return f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n{headers}\r\n".encode()
    return (f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n{headers}Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body

"""P2's peer server: speaks ardenpy's approval protocol and flips each action to approved at a
known moment (an asyncio.Protocol HTTP/1.1 server, uvloop when installed).

    python bench/_approval_stub.py PORT

- ``POST /policy/check``  -> ``requires_approval`` with ``action_id`` = the call's ``nonce``
  argument; the action turns ``approved`` ``flip_in_ms`` (another argument) after this request
  arrived: that moment, ``time.monotonic()`` in this process (CLOCK_MONOTONIC: the same clock in
  every process of the machine), is the "decision committed" of the peer's measurement;
- ``GET /status/{id}``    -> ``pending`` before that moment, ``approved`` from it on;
- ``GET /flip/{id}``      -> ``{"flip_at": T}`` (read by the runner after the run, untimed);
- anything else           -> 200 ``{"ok":true}``.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time

CREATED_AT = "2026-01-01T00:00:00Z"


def _response(body: bytes, status: bytes = b"200 OK") -> bytes:
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)


class ApprovalStub(asyncio.Protocol):
    flips: dict[str, float] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end]
            i = head.lower().find(b"content-length:")
            length = int(head[i + 15:head.find(b"\r\n", i) if head.find(b"\r\n", i) > 0 else None]) if i >= 0 else 0
            if len(self.buf) < end + 4 + length:
                return
            body, self.buf = self.buf[end + 4:end + 4 + length], self.buf[end + 4 + length:]
            method, target = head.split(b" ", 2)[:2]
            self.transport.write(self.answer(method, target.decode(), body))  # type: ignore[attr-defined]

    def answer(self, method: bytes, target: str, body: bytes) -> bytes:
        now = time.monotonic()
        if method == b"POST" and target.startswith("/policy/check"):
            kwargs = json.loads(body).get("kwargs", {})
            action = str(kwargs["nonce"])
            self.flips[action] = now + float(kwargs["flip_in_ms"]) / 1000
            return _response(json.dumps({"decision": "requires_approval", "action_id": action,
                                         "status": "pending"}).encode())
        if target.startswith("/status/"):
            action = target.removeprefix("/status/")
            status = "approved" if now >= self.flips.get(action, float("inf")) else "pending"
            return _response(json.dumps({"action_id": action, "status": status, "created_at": CREATED_AT}).encode())
        if target.startswith("/flip/"):
            return _response(json.dumps({"flip_at": self.flips.get(target.removeprefix("/flip/"))}).encode())
        return _response(b'{"ok":true}')


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(ApprovalStub, "127.0.0.1", port, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(int(sys.argv[1])))
    else:
        uvloop.run(main(int(sys.argv[1])))

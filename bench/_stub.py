"""A do-nothing HTTP/1.1 keep-alive server on asyncio.Protocol (uvloop when installed).

It is the floor for "one loopback round trip" and the stand-in server for the peers: it answers
immediately with an *allowed* decision in whatever shape the caller's protocol expects.

    python bench/_stub.py PORT

- ``POST /policy/check``        -> 200 ``{"decision":"allow",...}``   (ardenpy's protocol)
- ``POST /v1/calls``            -> 201 a callgate decision body        (our SDK's protocol)
- anything else                 -> 200 ``{"ok":true}``
"""

from __future__ import annotations

import asyncio
import signal
import sys

ARDEN = b'{"decision":"allow","action_id":null,"message":null,"reason":"policy_allows","status":"allowed"}'
CALLGATE = (b'{"call_id":"00000000-0000-7000-8000-000000000000","decision":"allow","status":"allowed",'
            b'"reason":null,"rule":null,"policy_version":1,"expires_at":null}')
OK = b'{"ok":true}'


def _response(status: bytes, body: bytes) -> bytes:
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)


R_ARDEN = _response(b"200 OK", ARDEN)
R_CALLGATE = _response(b"201 Created", CALLGATE)
R_OK = _response(b"200 OK", OK)


class Stub(asyncio.Protocol):
    __slots__ = ("transport", "buf")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data
        out = []
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buf[:end]
            length = 0
            i = head.lower().find(b"content-length:")
            if i >= 0:
                j = head.find(b"\r\n", i)
                length = int(head[i + 15:j if j > 0 else None])
            total = end + 4 + length
            if len(buf) < total:
                break
            target = head.split(b" ", 2)[1] if b" " in head else b""
            if target.startswith(b"/policy/check"):
                out.append(R_ARDEN)
            elif target.startswith(b"/v1/calls"):
                out.append(R_CALLGATE)
            else:
                out.append(R_OK)
            buf = buf[total:]
        self.buf = buf
        if out:
            self.transport.write(b"".join(out))  # type: ignore[attr-defined]


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Stub, "127.0.0.1", port, backlog=1024)
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

"""Request body size limit as pure ASGI middleware (security.md §6.3).

``BodySizeLimitMiddleware(app, max_bytes, path_prefixes=("/v1/",))``

* ``Content-Length`` above the limit -> 413 ``payload_too_large`` (with ``limit_bytes``) before a
  single body byte is read (so ``Expect: 100-continue`` clients never upload).
* Malformed ``Content-Length`` (not digits, several different values) -> 400
  ``invalid_content_length``.
* Otherwise ``receive()`` is wrapped and counts bytes; as soon as the running total exceeds
  the limit (chunked uploads, or a body longer than its declared length) the middleware sends the
  413 itself, stops reading (at most limit + one chunk is ever read), raises
  :class:`PayloadTooLarge` into the app to abort it, and drops anything the app still tries to
  send (FastAPI turns errors while reading the body into a 400, which must not win).
  If the app had already started its response, the 413 cannot be sent; the exception then
  propagates and the server aborts the connection.
* Only ``http`` scopes whose path starts with one of ``path_prefixes`` are limited
  (``path_prefixes=None``: every path). ``lifespan`` and ``websocket`` scopes pass through
  untouched, and response streaming is unaffected.

Use one instance per limit, e.g.::

    app.add_middleware(BodySizeLimitMiddleware, max_bytes=256 * 1024, path_prefixes=("/v1/",))
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=1024 * 1024, path_prefixes=("/slack/",))
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.problems import send_problem

__all__ = ["DEFAULT_MAX_BODY_BYTES", "BodySizeLimitMiddleware", "PayloadTooLarge"]

DEFAULT_MAX_BODY_BYTES = 256 * 1024
_CLOSE = {"connection": "close"}


class PayloadTooLarge(Exception):
    """Raised from ``receive()`` once the body exceeds the limit (the 413 is already sent)."""

    def __init__(self, limit_bytes: int) -> None:
        super().__init__(f"request body exceeds {limit_bytes} bytes")
        self.limit_bytes = limit_bytes


class _BadContentLength(Exception):
    pass


def _content_length(scope: Scope) -> int | None:
    value: bytes | None = None
    for name, raw in scope.get("headers") or ():
        if name.lower() != b"content-length":
            continue
        for part in raw.split(b","):  # "5, 5" is a folded duplicate; differing values are not
            part = part.strip(b" \t")
            if not part or len(part) > 19 or not part.isdigit():
                raise _BadContentLength
            if value is not None and part != value:
                raise _BadContentLength
            value = part
    return None if value is None else int(value)


class BodySizeLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int = DEFAULT_MAX_BODY_BYTES,
        path_prefixes: Iterable[str] | None = ("/v1/",),
    ) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.app = app
        self.max_bytes = max_bytes
        self.path_prefixes: tuple[str, ...] | None = None if path_prefixes is None else tuple(path_prefixes)

    def _applies(self, scope: Scope) -> bool:
        if scope["type"] != "http":
            return False
        if self.path_prefixes is None:
            return True
        path: str = scope.get("path", "")
        return path.startswith(self.path_prefixes)

    async def _too_large(self, send: Send) -> None:
        await send_problem(
            send,
            413,
            "payload_too_large",
            title="Payload too large",
            detail=f"Request body exceeds {self.max_bytes} bytes",
            headers=_CLOSE,
            limit_bytes=self.max_bytes,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._applies(scope):
            await self.app(scope, receive, send)
            return

        try:
            declared = _content_length(scope)
        except _BadContentLength:
            await send_problem(
                send, 400, "invalid_content_length", detail="Malformed Content-Length header", headers=_CLOSE
            )
            return
        if declared is not None and declared > self.max_bytes:
            await self._too_large(send)
            return

        limit = self.max_bytes
        received = 0
        exceeded = False
        response_started = False
        responded = False  # we sent the 413: everything the app sends afterwards is dropped

        async def limited_receive() -> Message:
            nonlocal received, exceeded, responded
            if exceeded:
                raise PayloadTooLarge(limit)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    if not response_started:
                        responded = True
                        await self._too_large(send)
                    raise PayloadTooLarge(limit)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if responded:
                return
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not responded:
                raise
            # the 413 is out; whatever the app raised on the way out is a consequence of it

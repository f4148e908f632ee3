"""The reviewer console: server-rendered pages (Jinja2 + vendored htmx) mounted on the gateway app.

``install(app, settings)`` is the only entry point; ``gateway.app.create_app`` calls it. It adds
the console routes (``/login``, ``/logout``, ``/``, ``/calls/{id}`` and its approve/deny POSTs),
the static files under ``/static/``, and the console's HTTP hardening headers (security.md §3.11).
The console reads the gateway's ``Runtime`` from ``app.state.runtime`` at request time, so it
shares the lifespan-owned engines, group commit and notifier.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.config import Settings

from console.routes import router
from console.state import ConsoleState
from console.templating import STATIC_DIR

__all__ = ["CONSOLE_PATHS", "SecurityHeadersMiddleware", "install"]

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)
#: path prefixes the console owns (everything else -- /v1, health, metrics, docs -- is untouched)
CONSOLE_PATHS = ("/login", "/logout", "/calls/", "/static/")


def is_console_path(path: str) -> bool:
    return path == "/" or path.startswith(CONSOLE_PATHS)


class SecurityHeadersMiddleware:
    """Adds CSP, framing, sniffing, referrer and caching headers to console responses."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_console_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith("/static/")
        https = scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"cache-control" or static]
                headers += [
                    (b"content-security-policy", CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"same-origin"),
                    (b"x-frame-options", b"DENY"),
                    (b"cross-origin-opener-policy", b"same-origin"),
                ]
                if not static:  # pages carry reviewer data and CSRF tokens: never cache them
                    headers.append((b"cache-control", b"no-store"))
                if https:
                    headers.append((b"strict-transport-security", b"max-age=31536000"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install(app: FastAPI, settings: Settings) -> None:
    """Mount the console on ``app``."""
    app.state.console = ConsoleState(settings)
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="console-static")
    app.add_middleware(SecurityHeadersMiddleware)

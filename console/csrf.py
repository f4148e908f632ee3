"""CSRF defence for the console's cookie-authenticated POSTs (security.md §3.7).

Three independent checks, any failure is a 403 problem (``csrf_failed``):

1. Fetch metadata: a ``Sec-Fetch-Site`` other than ``same-origin`` / ``none`` (typed URL,
   bookmark) means another site made the browser send this request.
2. ``Origin``, when present, must be our own origin: ``CALLGATE_PUBLIC_URL`` when it is set, else
   the origin the request was addressed to (scheme + Host, as uvicorn reports it). Behind a
   TLS-terminating proxy the request arrives as ``http://internal:8080`` while browsers send
   ``Origin: https://callgate.example.com``, so only the configured origin can match; and once it
   is configured it is the *only* one accepted, because a Host-derived origin is whatever name the
   browser used, including a DNS-rebinding attacker's.
3. A synchronizer token: the session's random ``csrf_token``, sent by htmx in the
   ``X-CSRF-Token`` header (``hx-headers`` on ``<body>``) and by plain forms in the
   ``csrf_token`` field, compared in constant time.

The login form has no session yet; it uses the same checks 1-2 plus a signed double submit of the
``__Host-callgate_prelogin`` cookie (see ``console.auth.prelogin_token``).
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from starlette.requests import Request

from gateway.errors import DomainError

SAFE_FETCH_SITES = frozenset({"same-origin", "none"})
TOKEN_HEADER = "x-csrf-token"
TOKEN_FIELD = "csrf_token"


class CsrfFailed(DomainError):
    status, code, title = 403, "csrf_failed", "Forbidden"


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` with the default port dropped; None when ``url`` has no usable origin
    (it comes from a request header: a malformed one is a foreign origin, never an error)."""
    try:
        parts = urlsplit(url)
        port_number = parts.port
    except ValueError:  # bad port or bracketed host
        return None
    if not parts.scheme or not parts.hostname:
        return None
    default_port = {"http": 80, "https": 443}.get(parts.scheme)
    port = "" if port_number in (None, default_port) else f":{port_number}"
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}{port}"


def allowed_origin(request: Request, public_url: str | None) -> str | None:
    """The one origin our pages are served from (see check 2)."""
    return origin_of(public_url) if public_url else origin_of(str(request.url))


def check_origin(request: Request, public_url: str | None = None) -> None:
    """Checks 1 and 2: refuse cross-site requests by their fetch metadata and Origin."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site.lower() not in SAFE_FETCH_SITES:
        raise CsrfFailed(f"cross-site request refused (Sec-Fetch-Site: {site[:32]})")
    origin = request.headers.get("origin")
    if origin is not None and not _same_origin(origin, allowed_origin(request, public_url)):
        raise CsrfFailed("request from another origin refused")


def _same_origin(presented: str, ours: str | None) -> bool:
    parsed = origin_of(presented.lower())  # None for "null" (opaque origins: sandboxed frames, file:)
    return parsed is not None and parsed == ours


def check_token(presented: str | None, expected: str) -> None:
    """Check 3: the synchronizer token, in constant time."""
    if not presented or not expected or not hmac.compare_digest(presented.encode(), expected.encode()):
        raise CsrfFailed("missing or wrong CSRF token; reload the page and try again")


def presented_token(request: Request, form: dict[str, str]) -> str | None:
    return request.headers.get(TOKEN_HEADER) or form.get(TOKEN_FIELD)

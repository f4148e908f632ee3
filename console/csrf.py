"""CSRF defence for the console's cookie-authenticated POSTs (security.md §3.7).

Three independent checks, any failure is a 403 problem (``csrf_failed``):

1. Fetch metadata: a ``Sec-Fetch-Site`` other than ``same-origin`` / ``none`` (typed URL,
   bookmark) means another site made the browser send this request.
2. ``Origin``, when present, must be our own origin: the origin the request was addressed to
   (scheme + Host, as uvicorn reports it), or ``settings.public_url`` when that is configured
   (behind a TLS-terminating proxy that does not forward the scheme).
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
    parts = urlsplit(url)
    if not parts.scheme or not parts.hostname:
        return None
    default_port = {"http": 80, "https": 443}.get(parts.scheme)
    port = "" if parts.port in (None, default_port) else f":{parts.port}"
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}{port}"


def allowed_origins(request: Request, public_url: str | None) -> set[str]:
    origins = {origin_of(str(request.url))}
    if public_url:
        origins.add(origin_of(public_url))
    return {o for o in origins if o}


def check_origin(request: Request, public_url: str | None = None) -> None:
    """Checks 1 and 2: refuse cross-site requests by their fetch metadata and Origin."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site.lower() not in SAFE_FETCH_SITES:
        raise CsrfFailed(f"cross-site request refused (Sec-Fetch-Site: {site[:32]})")
    origin = request.headers.get("origin")
    if origin is not None and origin_of(origin.lower()) not in allowed_origins(request, public_url):
        raise CsrfFailed("request from another origin refused")


def check_token(presented: str | None, expected: str) -> None:
    """Check 3: the synchronizer token, in constant time."""
    if not presented or not expected or not hmac.compare_digest(presented.encode(), expected.encode()):
        raise CsrfFailed("missing or wrong CSRF token; reload the page and try again")


def presented_token(request: Request, form: dict[str, str]) -> str | None:
    return request.headers.get(TOKEN_HEADER) or form.get(TOKEN_FIELD)

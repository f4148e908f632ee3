"""RFC 9457 ``application/problem+json`` errors (security.md §7.3).

Every non-2xx response of the gateway has this shape::

    {"type": "https://callgate.dev/errors/duplicate-key", "title": "Unprocessable Content",
     "status": 422, "detail": "duplicate object key", "code": "duplicate_key",
     "errors": [{"pointer": "/arguments/a", "code": "duplicate_key", "message": "duplicate object key"}]}

Public API:

* :class:`Problem`, :class:`ProblemError` -- pydantic models (for OpenAPI and for clients).
* :class:`ProblemException` -- raise it anywhere in a request; the installed handler renders it.
* :func:`problem_response` -- build the ``Response`` directly (e.g. from ASGI middleware use
  :func:`problem_body` + :func:`send_problem`).
* :func:`problem_responses` / :data:`PROBLEM_RESPONSES` -- ``responses=`` entries for routes, so
  Schemathesis' status/schema conformance checks see every documented status.
* :func:`install_problem_handlers` -- converts ``ProblemException``, ``BadJSON`` (422),
  ``RequestValidationError`` and ``pydantic.ValidationError`` (422 ``validation_error``, one
  entry per error, pointer from ``loc``, never the input), Starlette ``HTTPException`` (404
  ``not_found``, 405 ``method_not_allowed``, ...) and any other exception (500
  ``internal_error`` with an opaque ``error_id``; the stack trace is logged, the message never
  leaves the server).

Note: for the catch-all, Starlette's ``ServerErrorMiddleware`` sends our 500 and then re-raises
the exception (so servers log it). ``TestClient(app)`` therefore raises in tests unless it is
created with ``raise_server_exceptions=False``.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from http import HTTPStatus
from typing import Any

import pydantic
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import Send

from gateway.strict_json import BadJSON, safe_pointer

__all__ = [
    "PROBLEM_MEDIA_TYPE",
    "PROBLEM_RESPONSES",
    "STATUS_CODES",
    "TYPE_BASE",
    "Problem",
    "ProblemError",
    "ProblemException",
    "install_problem_handlers",
    "problem_body",
    "problem_response",
    "problem_responses",
    "send_problem",
    "type_uri",
]

log = logging.getLogger("callgate.gateway.problems")

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "https://callgate.dev/errors/"

#: Default ``code`` for a bare HTTP status (Starlette ``HTTPException`` and friends).
STATUS_CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "request_timeout",
    409: "conflict",
    410: "gone",
    411: "length_required",
    413: "payload_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    422: "validation_error",
    428: "precondition_required",
    429: "rate_limited",
    431: "request_header_fields_too_large",
    500: "internal_error",
    501: "not_implemented",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "gateway_timeout",
}

_MAX_MESSAGE = 300


class ProblemError(BaseModel):
    """One detailed error: where (RFC 6901 pointer into the body), what (code), and why."""

    model_config = ConfigDict(extra="allow")

    pointer: str | None = None
    code: str
    message: str
    #: for errors outside the body: ``"query.limit"``, ``"header.x-request-id"``, ``"path.call_id"``
    parameter: str | None = None


class Problem(BaseModel):
    """RFC 9457 problem details, plus ``code`` and ``errors``; extension members are allowed
    (``limit_bytes``, ``error_id``, ...)."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str | None = None
    code: str
    errors: list[ProblemError] | None = None


def type_uri(code: str) -> str:
    return TYPE_BASE + code.replace("_", "-")


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _clip(s: str, limit: int = _MAX_MESSAGE) -> str:
    return s if len(s) <= limit else s[: limit - 1] + "\u2026"


def _error_dict(e: ProblemError | Mapping[str, Any]) -> dict[str, Any]:
    d = e.model_dump(exclude_none=True) if isinstance(e, BaseModel) else {k: v for k, v in e.items() if v is not None}
    if isinstance(d.get("pointer"), str):
        d["pointer"] = safe_pointer(d["pointer"])
    return d


def problem_body(
    status: int,
    code: str | None = None,
    title: str | None = None,
    detail: str | None = None,
    errors: Sequence[ProblemError | Mapping[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The problem document as a dict (fields that are None are left out)."""
    code = code or STATUS_CODES.get(status, "error")
    body: dict[str, Any] = {"type": type_uri(code), "title": title or _title(status), "status": status}
    if detail is not None:
        body["detail"] = _clip(detail)
    body["code"] = code
    if errors:
        body["errors"] = [_error_dict(e) for e in errors]
    for k, v in extra.items():
        if v is not None and k not in body:
            body[k] = v
    return body


def _encode(body: Mapping[str, Any]) -> bytes:
    # "replace": a stray lone surrogate can never turn an error response into a 500
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=str).encode(
        "utf-8", "replace"
    )


def problem_response(
    status: int,
    code: str | None = None,
    title: str | None = None,
    detail: str | None = None,
    errors: Sequence[ProblemError | Mapping[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> Response:
    """A ``Response`` with media type ``application/problem+json``."""
    body = problem_body(status, code, title, detail, errors, **extra)
    return Response(_encode(body), status_code=status, headers=dict(headers or {}), media_type=PROBLEM_MEDIA_TYPE)


async def send_problem(
    send: Send,
    status: int,
    code: str | None = None,
    title: str | None = None,
    detail: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> None:
    """Send a problem response from pure ASGI code (middleware), without Starlette objects."""
    payload = _encode(problem_body(status, code, title, detail, None, **extra))
    raw_headers = [
        (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
        (b"content-length", str(len(payload)).encode()),
    ]
    raw_headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": payload})


class ProblemException(Exception):
    """Raise to answer with a problem document. ``extra`` become extension members."""

    def __init__(
        self,
        status: int,
        code: str | None = None,
        title: str | None = None,
        detail: str | None = None,
        errors: Sequence[ProblemError | Mapping[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or code or str(status))
        self.status = status
        self.code = code or STATUS_CODES.get(status, "error")
        self.title = title
        self.detail = detail
        self.errors = list(errors) if errors else None
        self.headers = dict(headers) if headers else None
        self.extra = extra

    def response(self) -> Response:
        return problem_response(
            self.status, self.code, self.title, self.detail, self.errors, self.headers, **self.extra
        )


def problem_responses(*statuses: int, descriptions: Mapping[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a FastAPI route, e.g. ``responses=problem_responses(401, 404, 409, 422)``.

    Each entry registers :class:`Problem` in the OpenAPI components and documents it under
    ``application/problem+json`` (FastAPI also lists it under the route's default media type).
    """
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        desc = (descriptions or {}).get(status) or _title(status)
        out[status] = {
            "model": Problem,
            "description": desc,
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
    return out


#: Every status of the §7.3 status map, ready to pick from: ``{k: PROBLEM_RESPONSES[k] for k in (401, 404)}``.
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = problem_responses(
    400, 401, 403, 404, 405, 409, 413, 415, 422, 429, 500, 503
)


# --------------------------------------------------------------------------------------------
# validation errors


def _pointer_from_loc(loc: Iterable[Any]) -> str:
    parts = []
    for token in loc:
        s = str(token)
        parts.append(s.replace("~", "~0").replace("/", "~1"))
    return "/" + "/".join(parts) if parts else ""


def _safe_message(err: Mapping[str, Any]) -> str:
    msg = str(err.get("msg") or "invalid value")
    inp = err.get("input")
    # pydantic's own messages never contain the input; custom validators might -- never echo it
    if isinstance(inp, str) and len(inp) >= 4 and inp in msg:
        return "invalid value"
    if isinstance(inp, (int, float)) and not isinstance(inp, bool) and len(str(inp)) >= 4 and str(inp) in msg:
        return "invalid value"
    return _clip(msg)


def validation_errors(errors: Sequence[Mapping[str, Any]], *, body_prefix: bool) -> list[dict[str, Any]]:
    """Pydantic errors -> ``ProblemError`` dicts. With ``body_prefix`` (FastAPI request
    validation), ``loc`` starts with ``body``/``query``/``path``/``header``/``cookie``."""
    out: list[dict[str, Any]] = []
    for err in errors:
        loc = list(err.get("loc") or ())
        code = str(err.get("type") or "invalid")
        item: dict[str, Any] = {"code": code, "message": _safe_message(err)}
        if body_prefix and loc and loc[0] in ("query", "path", "header", "cookie"):
            item["parameter"] = ".".join(str(x) for x in loc)
        else:
            if body_prefix and loc and loc[0] == "body":
                loc = loc[1:]
            if code == "json_invalid":  # loc holds a character offset, not a path
                loc = []
            item["pointer"] = safe_pointer(_pointer_from_loc(loc))
        out.append(item)
    return out


# --------------------------------------------------------------------------------------------
# handlers


async def _handle_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProblemException)
    return exc.response()


async def _handle_bad_json(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BadJSON)
    err: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if exc.pointer is not None:
        err["pointer"] = exc.pointer
    return problem_response(422, exc.code, detail=exc.message, errors=[err])


async def _handle_request_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = validation_errors(exc.errors(), body_prefix=True)
    return problem_response(422, "validation_error", detail="The request is not valid", errors=errors)


async def _handle_pydantic_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, pydantic.ValidationError)
    errors = validation_errors(exc.errors(include_url=False, include_input=True), body_prefix=False)
    return problem_response(422, "validation_error", detail="The request is not valid", errors=errors)


async def _handle_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    detail = exc.detail if isinstance(exc.detail, str) else None
    if detail == _title(status):
        detail = None
    headers = dict(exc.headers) if exc.headers else None
    if status == 405:
        allowed = _allowed_methods(request)
        if allowed:
            headers = {**(headers or {}), "Allow": ", ".join(allowed)}
    if status in (204, 304) or status < 400:  # no body allowed / not an error
        return Response(status_code=status, headers=headers)
    return problem_response(status, STATUS_CODES.get(status, "http_error"), detail=detail, headers=headers)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> list[str]:
    """Every method the app serves at the request's path. Starlette's 405 lists only the methods
    of the first route whose path matched (``OPTIONS /v1/webhooks`` said ``Allow: POST``, not
    GET), but RFC 9110 §15.5.6 wants the target resource's methods: those of every route. Each
    method is probed against the app's routes (included routers too) with a scope of its own."""
    allowed = []
    for method in _METHODS:
        probe = {"type": "http", "method": method, "path": request.scope.get("path", ""),
                 "root_path": request.scope.get("root_path", ""), "headers": [], "query_string": b""}
        if any(route.matches(probe)[0] is Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return allowed


async def _handle_unexpected(request: Request, exc: Exception) -> Response:
    error_id = uuid.uuid4().hex
    log.error(
        "unhandled exception error_id=%s method=%s path=%s",
        error_id,
        request.method,
        request.url.path,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    return problem_response(
        500, "internal_error", detail=f"Internal error; quote error id {error_id}", error_id=error_id
    )


def install_problem_handlers(app: FastAPI) -> None:
    """Register the problem+json exception handlers on ``app`` (idempotent)."""
    app.add_exception_handler(ProblemException, _handle_problem)
    app.add_exception_handler(BadJSON, _handle_bad_json)
    app.add_exception_handler(RequestValidationError, _handle_request_validation)
    app.add_exception_handler(pydantic.ValidationError, _handle_pydantic_validation)
    app.add_exception_handler(StarletteHTTPException, _handle_http)
    app.add_exception_handler(Exception, _handle_unexpected)

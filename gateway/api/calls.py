"""``/v1/calls``: the agent-facing decision API.

Bodies are parsed by our strict JSON parser (never FastAPI's, which accepts NaN, duplicate keys,
lone surrogates and NUL — security.md §7), validated by pydantic in strict mode, and written
through the group commit. Responses are plain JSON bytes: this is the hot path of every tool call.
"""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from gateway.calls import CallView, Submission, claim_call, prepare_call, read_call, record_outcome, submit_calls
from gateway.errors import NotFound, Unauthorized
from gateway.keys import parse_bearer
from gateway.problems import problem_responses
from gateway.runtime import Runtime
from gateway.notify import wait_event
from gateway.schemas import UUID_PATTERN, CallCreate, CallDecision, CallPublic, ClaimPublic, OutcomeCreate
from gateway.strict_json import parse_strict
from gateway.errors import DomainError

router = APIRouter(prefix="/v1", tags=["calls"])
MAX_WAIT_SECONDS = 30.0
WAITING_STATUSES = frozenset({"pending"})


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(
        json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode(), status, media_type="application/json"
    )


class UnsupportedMediaType(DomainError):
    status, code, title = 415, "unsupported_media_type", "Unsupported media type"


def _require_json(request: Request) -> None:
    content_type = request.headers.get("content-type", "")
    media, _, params = content_type.partition(";")
    charset = params.strip().lower().removeprefix("charset=").strip('"') if params.strip() else "utf-8"
    if media.strip().lower() != "application/json" or charset not in ("utf-8", "utf8"):
        raise UnsupportedMediaType("send Content-Type: application/json (UTF-8)")


async def _strict_body(request: Request, model: type[BaseModel]) -> dict[str, Any]:
    _require_json(request)
    data = parse_strict(await request.body())
    try:
        model.model_validate(data, strict=True)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_input=False, include_url=False)]
        raise RequestValidationError(errors) from None
    if not isinstance(data, dict):  # model_validate already refused non-objects; keeps typing honest
        raise RequestValidationError([])
    return data


def _body_schema(model: type[BaseModel]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


def _runtime(request: Request) -> Runtime:
    return request.app.state.runtime  # type: ignore[no-any-return]


@router.post(
    "/calls",
    summary="Submit a tool call for a decision",
    response_model=CallDecision,
    status_code=201,
    openapi_extra=_body_schema(CallCreate),
    responses={200: {"model": CallDecision, "description": "Replay of an earlier identical request"},
               **problem_responses(401, 403, 413, 415, 422, 503)},
)
async def create_call(request: Request) -> Response:
    """Decide a tool call: ``allow``, ``block`` (with the reason the agent sees) or
    ``require_approval`` (a pending call a human decides). Retrying with the same ``id`` and body
    answers the current state of the same call; the same ``id`` with another body is a 422."""
    key = parse_bearer(request.headers.get("authorization"))
    if key is None:
        raise Unauthorized("missing or malformed API key", code="invalid_api_key")
    rt = _runtime(request)
    started = time.perf_counter()
    body = await _strict_body(request, CallCreate)
    incoming = prepare_call(body, secret=rt.secret, max_args_bytes=rt.settings.max_args_bytes)
    policy = rt.policy
    view: CallView = await rt.commit_queue.run_batched(submit_calls, Submission(incoming, key, rt.secret, policy))
    if view.created:
        rt.metrics.decisions.labels(incoming.tool, view.row["decision"]).inc()
        rt.metrics.decision_seconds.observe(time.perf_counter() - started)
    return _json(view.decision_body(), 201 if view.created else 200)


@router.get(
    "/calls/{call_id}",
    summary="Read a call (optionally waiting for its decision)",
    response_model=CallPublic,
    responses=problem_responses(401, 404, 422, 503),
)
async def read_call_route(
    request: Request,
    call_id: str,
    wait: float = Query(0, ge=0, le=MAX_WAIT_SECONDS, description="Hold up to this many seconds while pending."),
) -> Response:
    """The call as recorded. With ``wait``, a pending call is held until it is decided or the wait
    ends (a long-poll), so an agent resumes the moment a reviewer decides."""
    key = parse_bearer(request.headers.get("authorization"))
    if key is None:
        raise Unauthorized("missing or malformed API key", code="invalid_api_key")
    call_id = _check_call_id(call_id)
    rt = _runtime(request)

    def load() -> CallView:
        with rt.reader.begin() as conn:
            return read_call(conn, call_id=call_id, key=key, pepper=rt.secret)

    deadline = time.monotonic() + wait
    # Watch before the first read, so a decision committed between the read and the wait still wakes us.
    with rt.notifier.watch(call_id) as woken:
        view = await run_in_threadpool(load)
        while view.decision_body()["status"] in WAITING_STATUSES and (remaining := deadline - time.monotonic()) > 0:
            # Wake on a push (decision, expiry sweep), at the call's own expiry, or at the DB re-check.
            timeout = min(remaining, rt.recheck_seconds, _until(view.row["expires_at"]))
            await wait_event(woken, timeout)
            woken.clear()  # before the re-read: a publish after this point makes the next wait return at once
            view = await run_in_threadpool(load)
    return _json(view.detail_body())


@router.post(
    "/calls/{call_id}/claim",
    summary="Claim an approved call for execution (once)",
    response_model=ClaimPublic,
    responses=problem_responses(401, 403, 404, 409, 503),
)
async def claim(request: Request, call_id: str) -> Response:
    """The one-shot execution claim: the first claim of an approved call answers 200
    ``{claimed: true, ...}`` and the call becomes ``running``; every later claim (a retry, another
    process) is 409 ``already_claimed``, so an approved call runs at most once. Allowed calls are
    claimed by their ``POST /v1/calls`` answer and need no claim."""
    key = parse_bearer(request.headers.get("authorization"))
    if key is None:
        raise Unauthorized("missing or malformed API key", code="invalid_api_key")
    call_id = _check_call_id(call_id)
    rt = _runtime(request)
    view: CallView = await rt.commit_queue.run(
        lambda conn, audit: claim_call(conn, audit, call_id=call_id, key=key, pepper=rt.secret)
    )
    return _json({"claimed": True, **view.detail_body()})


@router.post(
    "/calls/{call_id}/outcome",
    summary="Report how the tool run ended",
    response_model=CallPublic,
    openapi_extra=_body_schema(OutcomeCreate),
    responses=problem_responses(401, 403, 404, 409, 413, 415, 422, 503),
)
async def create_outcome(request: Request, call_id: str) -> Response:
    """Record ``succeeded`` or ``failed`` with the error text and duration. Idempotent: the same
    report twice answers 200; a different report for the same call is a 409."""
    key = parse_bearer(request.headers.get("authorization"))
    if key is None:
        raise Unauthorized("missing or malformed API key", code="invalid_api_key")
    call_id = _check_call_id(call_id)
    rt = _runtime(request)
    body = await _strict_body(request, OutcomeCreate)
    view: CallView = await rt.commit_queue.run(
        lambda conn, audit: record_outcome(conn, audit, call_id=call_id, body=body, key=key, pepper=rt.secret)
    )
    rt.metrics.outcomes.labels(view.row["tool"], body["status"]).inc()
    return _json(view.detail_body())


def _until(expires_at: Any) -> float:
    """Seconds until ``expires_at`` (a little after, so the re-read sees it expired); inf if none."""
    if expires_at is None:
        return float("inf")
    if expires_at.tzinfo is None:
        expires_at = expires_at.replace(tzinfo=UTC)
    return max(0.0, (expires_at - datetime.now(UTC)).total_seconds()) + 0.005


def _check_call_id(call_id: str) -> str:
    if not re.fullmatch(UUID_PATTERN, call_id):
        raise NotFound(f"no call {call_id[:64]}")
    return call_id.lower()


__all__ = ["router"]

"""``/v1/calls``: the agent-facing decision API.

Bodies are parsed by our strict JSON parser (never FastAPI's, which accepts NaN, duplicate keys,
lone surrogates and NUL — security.md §7), validated by pydantic in strict mode, and written
through the group commit. Responses are plain JSON bytes: this is the hot path of every tool call.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Query, Request, Response

from gateway.calls import (
    CallView,
    ClaimAttempt,
    Submission,
    attempt_claim,
    claim_call,
    prepare_call,
    record_outcome,
    submit_calls,
)
from gateway.errors import NotFound, Unauthorized
from gateway.keys import parse_bearer
from gateway.notify import wait_event
from gateway.long_polls import LongPolls
from gateway.api.wire import body_schema, json_response, runtime_of, strict_body
from gateway.problems import problem_responses
from gateway.schemas import UUID_PATTERN, CallCreate, CallDecision, CallPublic, ClaimPublic, OutcomeCreate

router = APIRouter(prefix="/v1", tags=["calls"])
MAX_WAIT_SECONDS = 30.0
WAITING_STATUSES = frozenset({"pending"})
#: Statuses a ``claim=1`` long-poll answers as they are, without trying to claim (never runnable,
#: or not yet decided). Every other status is claimed, or refused as ``already_claimed``.
UNCLAIMABLE_STATUSES = frozenset({"pending", "denied", "expired", "blocked"})
NO_STORE = {"cache-control": "no-store"}  # state that changes (and one-time claims): never cached


def _claimed(view: CallView) -> Response:
    """The answer of a won claim (the claim endpoint's and a ``claim=1`` long-poll's)."""
    return json_response({"claimed": True, **view.detail_body()}, headers=NO_STORE)


@router.post(
    "/calls",
    summary="Submit a tool call for a decision",
    response_model=CallDecision,
    status_code=201,
    openapi_extra=body_schema(CallCreate),
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
    rt = runtime_of(request)
    started = time.perf_counter()
    body = await strict_body(request, CallCreate)
    incoming = prepare_call(body, secret=rt.secret, max_args_bytes=rt.settings.max_args_bytes)
    policy = rt.policy
    view: CallView = await rt.commit_queue.run_batched(submit_calls, Submission(incoming, key, rt.secret, policy))
    if view.created:
        rt.metrics.decisions.labels(incoming.tool, view.row["decision"]).inc()
        rt.metrics.decision_seconds.observe(time.perf_counter() - started)
    return json_response(view.decision_body(), 201 if view.created else 200)


@router.get(
    "/calls/{call_id}",
    summary="Read a call (optionally waiting for its decision, and claiming it once approved)",
    response_model=CallPublic,
    responses=problem_responses(
        401, 403, 404, 409, 422, 503,
        descriptions={409: "``claim=1`` and the call was already claimed (``already_claimed``)"}),
)
async def read_call_route(
    request: Request,
    call_id: str,
    wait: float = Query(0, ge=0, le=MAX_WAIT_SECONDS, description="Hold up to this many seconds while pending."),
    claim: bool = Query(False, description="Once the call is approved, claim it for execution in this same "
                        "request (exactly as POST /v1/calls/{id}/claim does) and answer the claim."),
) -> Response:
    """The call as recorded. With ``wait``, a pending call is held until it is decided or the wait
    ends (a long-poll), so an agent resumes the moment a reviewer decides.

    With ``claim=1`` an approved call is claimed in the same request that learns of the approval:
    the answer is then the claim's (``{"claimed": true, ...}``, status ``running``; 409
    ``already_claimed`` if anyone claimed it before), saving the agent a second round trip and
    the gateway a re-read between the wake-up and the claim. The claim itself is the claim
    endpoint's: one conditional update, audited as ``execution.claimed``, won by exactly one
    request. Denied, expired and still-pending calls are answered as without ``claim``."""
    key = parse_bearer(request.headers.get("authorization"))
    if key is None:
        raise Unauthorized("missing or malformed API key", code="invalid_api_key")
    call_id = _check_call_id(call_id)
    rt = runtime_of(request)
    polls = _long_polls(request)

    async def claim_it() -> ClaimAttempt:
        return await rt.commit_queue.run(
            lambda conn, audit: attempt_claim(conn, audit, call_id=call_id, key=key, pepper=rt.secret))

    deadline = time.monotonic() + wait
    # Watch before the first read, so a decision committed between the read and the wait still wakes us.
    with rt.notifier.watch(call_id) as woken:
        view = await polls.read(call_id, key)
        while True:
            status = view.status
            if claim and status not in UNCLAIMABLE_STATUSES:
                attempt = await claim_it()  # approved: claim; already claimed: 409 already_claimed
                if attempt.claimed:
                    return _claimed(attempt.view)
                view, status = attempt.view, attempt.view.status
            if status not in WAITING_STATUSES or (remaining := deadline - time.monotonic()) <= 0:
                break
            # Wake on a push (a decision, an expiry sweep, the worker's DB re-check) or at the
            # call's expiry. Without a push nothing changed that this worker could know of: the
            # view still holds (its status is recomputed against the clock, so an expiry shows),
            # and the end of the wait answers it without another read. A change the re-check has
            # not caught yet reaches the agent at its next poll, which reads first.
            if not await wait_event(woken, min(remaining, _until(view.row["expires_at"]))):
                continue
            woken.clear()  # before the re-read: a publish after this point makes the next wait return at once
            if claim:
                # A push means the call changed, almost always to approved: go straight to the
                # claim (it reads the row in its own transaction) instead of reading first.
                attempt = await claim_it()
                if attempt.claimed:
                    return _claimed(attempt.view)
                view = attempt.view
            else:
                view = await polls.read(call_id, key)
    return json_response(view.detail_body(), headers=NO_STORE)


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
    rt = runtime_of(request)
    view: CallView = await rt.commit_queue.run(
        lambda conn, audit: claim_call(conn, audit, call_id=call_id, key=key, pepper=rt.secret)
    )
    return _claimed(view)


@router.post(
    "/calls/{call_id}/outcome",
    summary="Report how the tool run ended",
    response_model=CallPublic,
    openapi_extra=body_schema(OutcomeCreate),
    responses=problem_responses(401, 403, 404, 409, 413, 415, 422, 503),
)
async def create_outcome(request: Request, call_id: str) -> Response:
    """Record ``succeeded`` or ``failed`` with the error text and duration. Idempotent: the same
    report twice answers 200; a different report for the same call is a 409."""
    key = parse_bearer(request.headers.get("authorization"))
    if key is None:
        raise Unauthorized("missing or malformed API key", code="invalid_api_key")
    call_id = _check_call_id(call_id)
    rt = runtime_of(request)
    body = await strict_body(request, OutcomeCreate)
    view: CallView = await rt.commit_queue.run(
        lambda conn, audit: record_outcome(conn, audit, call_id=call_id, body=body, key=key, pepper=rt.secret)
    )
    rt.metrics.outcomes.labels(view.row["tool"], body["status"]).inc()
    return json_response(view.detail_body())


def _long_polls(request: Request) -> LongPolls:
    """This worker's long-poll reads; the re-check follows ``recheck_seconds`` if it changed."""
    rt = runtime_of(request)
    rt.notifier.recheck_with(rt.long_polls.settled, rt.recheck_seconds)  # cheap and idempotent
    return rt.long_polls


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

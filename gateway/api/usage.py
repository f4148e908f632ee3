"""``POST /v1/usage`` (LLM token usage from the SDK) and ``GET /v1/sessions/{id}``.

Usage bodies go through the same strict ingress as tool calls (our JSON parser, pydantic in
strict mode, problem+json errors that name the field), are priced in the request thread pool
and stored through the group commit by the set-based unit ``gateway.usage.submit_usage``.
"""

from __future__ import annotations

import re

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from gateway.api.wire import body_schema, json_response, require_json, runtime_of
from gateway.errors import NotFound, Unauthorized
from gateway.keys import ParsedKey, parse_bearer
from gateway.problems import problem_responses
from gateway.schemas import MAX_USAGE_EVENTS, SessionPublic, UsageAccepted, UsageBatchIn
from gateway.sessions import DEFAULT_LIMIT, MAX_LIMIT, read_session
from gateway.strict_json import parse_strict
from gateway.usage import UsageReceipt, UsageSubmission, parse_usage_batch, prepare_usage, submit_usage

router = APIRouter(prefix="/v1", tags=["usage"])

#: Object members a valid batch can hold: the envelope plus 11 fields per event (extra members
#: are refused by validation anyway); far below this, the body size limit usually applies first.
MAX_BATCH_MEMBERS = 1 + 12 * MAX_USAGE_EVENTS
_SESSION_ID = re.compile(r"[\x21-\x7e]{1,128}")


def _key(request: Request) -> ParsedKey:
    key = parse_bearer(request.headers.get("authorization"))
    if key is None:
        raise Unauthorized("missing or malformed API key", code="invalid_api_key")
    return key


@router.post(
    "/usage",
    summary="Record LLM token usage",
    response_model=UsageAccepted,
    openapi_extra=body_schema(UsageBatchIn),
    responses=problem_responses(401, 403, 413, 415, 422, 503),
)
async def create_usage(request: Request) -> Response:
    """Store a batch of LLM calls (at most 1000, within the body size limit) for the key's agent
    and price each with genai-prices' bundled table. Idempotent on each event ``id``: a retried
    batch answers 200 with ``duplicates`` and stores nothing twice."""
    key = _key(request)
    rt = runtime_of(request)
    require_json(request)
    events = parse_usage_batch(parse_strict(await request.body(), max_members=MAX_BATCH_MEMBERS))
    priced = await run_in_threadpool(prepare_usage, events)
    receipt: UsageReceipt = await rt.commit_queue.run_batched(submit_usage, UsageSubmission(priced, key, rt.secret))
    return json_response(receipt.body())


@router.get(
    "/sessions/{session_id}",
    summary="A session's tool calls, LLM calls and cost",
    response_model=SessionPublic,
    tags=["sessions"],
    responses=problem_responses(401, 404, 422, 503),
)
async def read_session_route(
    request: Request,
    session_id: str,
    limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="Most entries per list (oldest first)."),
) -> Response:
    """Tool calls and LLM calls of one session with token and cost totals by model. An agent key
    sees its own agent's data only; an admin key sees every agent's."""
    key = _key(request)
    if not _SESSION_ID.fullmatch(session_id):
        raise NotFound("no such session (session ids are 1-128 printable ASCII characters)")
    rt = runtime_of(request)

    def load() -> dict[str, object]:
        with rt.reader.begin() as conn:
            return read_session(conn, session_id=session_id, key=key, pepper=rt.secret, limit=limit)

    return json_response(await run_in_threadpool(load))


__all__ = ["router"]

"""``/v1/webhooks``: the admin API for webhook endpoints, their secrets and their delivery log.

Admin API keys only (an agent key is 403: an agent must not redirect its own decision events).
Bodies go through the strict ingress of ``/v1/calls`` (our JSON parser, pydantic strict mode,
problem+json that names the field). The SSRF guard resolves DNS, so it runs in the thread pool
*before* the unit of work, never inside the writer's transaction, and only for an authenticated
admin (a stranger cannot make the gateway look names up). Secrets appear in exactly two answers,
once each: registration and rotation; the database only ever holds them sealed.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import Connection
from starlette.concurrency import run_in_threadpool

from gateway.api.wire import body_schema, json_response, runtime_of, strict_body
from gateway.audit import Actor, AuditBatch
from gateway.auth import authenticate
from gateway.errors import Forbidden, NotFound, Unauthorized
from gateway.keys import ParsedKey, Principal, parse_bearer
from gateway.problems import problem_responses
from gateway.runtime import Runtime
from gateway.schemas import Identifier
from gateway.webhooks.endpoints import (
    Registered,
    check_url,
    disable_endpoint,
    get_endpoint,
    list_endpoints,
    register_endpoint,
    rotate_secret,
)
from gateway.webhooks.history import list_messages
from gateway.webhooks.outbox import DECIDED
from gateway.webhooks.replay import replay_message
from gateway.webhooks.secrets import SecretBox

router = APIRouter(prefix="/v1", tags=["webhooks"])
_ENDPOINT_ID = re.compile(r"ep_[0-9a-f]{16}")
_MESSAGE_ID = re.compile(r"msg_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

EventType = Literal["approval.decided"]


class WebhookCreate(BaseModel):
    """A URL to POST an agent's decision events to (Standard Webhooks, signed per endpoint)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    agent: Identifier = Field(description="The agent whose calls' decisions are sent.")
    url: Annotated[str, StringConstraints(min_length=1, max_length=2048)] = Field(
        description="https URL on a public address (http only where CALLGATE_WEBHOOK_ALLOW_HTTP is set: tests, "
        "local development); checked against SSRF at registration and before every attempt.")
    event_types: list[EventType] | None = Field(
        default=None, min_length=1, description=f"Events to send (default: [{DECIDED!r}]).")
    include_args: bool = Field(
        default=False, description="Put the call's (redacted) arguments in data.args. Off by default: thin "
        "payloads. The SDK's event.run(fn, **event.args) needs it; webhooks.dispatch does not.")


class WebhookPublic(BaseModel):
    id: str
    agent: str
    url: str
    event_types: list[str]
    include_args: bool
    enabled: bool
    created_at: str
    disabled_at: str | None
    disabled_reason: str | None = Field(description="Why it was disabled (by an admin, 410 Gone, failing for days).")
    rotated_at: str | None
    previous_secret_expires_at: str | None = Field(
        description="Until then the previous secret signs too (a second signature); in the past: no longer.")
    last_success_at: str | None
    first_failure_at: str | None = Field(description="Failing since (no successful delivery after it).")


class WebhookCreated(WebhookPublic):
    secret: str = Field(description="whsec_... signing secret. Shown once: store it now.")


class WebhookList(BaseModel):
    webhooks: list[WebhookPublic]


class DeliveryAttempt(BaseModel):
    attempt: int
    started_at: str
    duration_ms: int
    status_code: int | None
    result: Literal["delivered", "retry", "failed"]
    error: str | None
    response_excerpt: str | None
    resolved_ip: str | None


class DeliveryMessage(BaseModel):
    message_id: str = Field(description="The webhook-id header, identical on every attempt.")
    endpoint_id: str
    event_type: str
    call_id: str | None
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    next_attempt_at: str | None
    created_at: str
    delivered_at: str | None
    last_error: str | None
    replayed_at: str | None = Field(description="When an admin last replayed it (same webhook-id, fresh budget).")
    log: list[DeliveryAttempt]


class DeliveryList(BaseModel):
    deliveries: list[DeliveryMessage]


def _key(request: Request) -> ParsedKey:
    key = parse_bearer(request.headers.get("authorization"))
    if key is None:
        raise Unauthorized("missing or malformed API key", code="invalid_api_key")
    return key


def _require_admin(principal: Principal) -> Actor:
    if principal.kind != "admin":
        raise Forbidden("managing webhooks needs an admin API key", code="admin_key_required")
    return Actor("admin_key", principal.key_id)


async def _admin(rt: Runtime, key: ParsedKey) -> Actor:
    """Authenticate on the reader (no write): reads, and the check before any DNS work."""

    def check() -> Actor:
        with rt.reader.begin() as conn:
            return _require_admin(authenticate(conn, key, pepper=rt.secret, touch=False))

    return await run_in_threadpool(check)


def _admin_in_unit(conn: Connection, key: ParsedKey, rt: Runtime) -> Actor:
    """Authenticate again inside the unit of work (records the key's use; sees a revocation)."""
    return _require_admin(authenticate(conn, key, pepper=rt.secret))


def _check_endpoint_id(endpoint_id: str) -> str:
    if not _ENDPOINT_ID.fullmatch(endpoint_id):
        raise NotFound(f"no webhook endpoint {endpoint_id[:64]}")
    return endpoint_id


def _check_message_id(message_id: str) -> str:
    if not _MESSAGE_ID.fullmatch(message_id):
        raise NotFound(f"no webhook message {message_id[:64]}")
    return message_id


@router.post(
    "/webhooks",
    summary="Register a webhook endpoint for an agent",
    response_model=WebhookCreated,
    status_code=201,
    openapi_extra=body_schema(WebhookCreate),
    responses=problem_responses(401, 403, 409, 413, 415, 422, 503),
)
async def create_webhook(request: Request) -> Response:
    """Register ``url`` for ``agent``'s decision events. The answer carries the endpoint's signing
    secret, once. URLs on loopback, private, link-local (cloud metadata) and other non-public
    addresses are refused with 422 ``webhook_url_forbidden``, and so is plain http unless
    ``CALLGATE_WEBHOOK_ALLOW_HTTP`` is set."""
    key = _key(request)
    rt = runtime_of(request)
    await _admin(rt, key)
    body = await strict_body(request, WebhookCreate)
    destination = await run_in_threadpool(check_url, body["url"], allow_private=rt.settings.webhook_allow_private,
                                          allow_http=rt.settings.webhook_allow_http)
    box = SecretBox(rt.secret)

    def register(conn: Connection, audit: AuditBatch) -> Registered:
        actor = _admin_in_unit(conn, key, rt)
        return register_endpoint(conn, audit, agent=body["agent"], destination=destination, actor=actor, box=box,
                                 event_types=body.get("event_types"), include_args=body.get("include_args", False))

    registered: Registered = await rt.commit_queue.run(register)
    return json_response({**registered.endpoint, "secret": registered.secret}, 201)


@router.get(
    "/webhooks",
    summary="List webhook endpoints",
    response_model=WebhookList,
    responses=problem_responses(401, 403, 422, 503),
)
async def list_webhooks(
    request: Request,
    agent: str | None = Query(None, max_length=128, description="Only this agent's endpoints."),
    enabled: bool | None = Query(None, description="Only enabled (true) or disabled (false) endpoints."),
) -> Response:
    """Every endpoint (never its secret), oldest first."""
    key = _key(request)
    rt = runtime_of(request)
    await _admin(rt, key)

    def load() -> list[dict[str, Any]]:
        with rt.reader.begin() as conn:
            return list_endpoints(conn, agent=agent)

    rows = await run_in_threadpool(load)
    if enabled is not None:
        rows = [r for r in rows if r["enabled"] is enabled]
    return json_response({"webhooks": rows})


@router.delete(
    "/webhooks/{endpoint_id}",
    summary="Disable a webhook endpoint",
    response_model=WebhookPublic,
    responses=problem_responses(401, 403, 404, 409, 503),
)
async def delete_webhook(request: Request, endpoint_id: str) -> Response:
    """Disable the endpoint: nothing more is sent to it, and its undelivered messages end as
    ``failed``. Kept (disabled) for the delivery history; 409 ``already_disabled`` the second time."""
    key = _key(request)
    rt = runtime_of(request)
    await _admin(rt, key)
    endpoint_id = _check_endpoint_id(endpoint_id)

    def disable(conn: Connection, audit: AuditBatch) -> dict[str, Any]:
        actor = _admin_in_unit(conn, key, rt)
        return disable_endpoint(conn, audit, endpoint_id=endpoint_id, actor=actor)

    return json_response(await rt.commit_queue.run(disable))


@router.post(
    "/webhooks/{endpoint_id}/rotate",
    summary="Rotate a webhook endpoint's signing secret",
    response_model=WebhookCreated,
    responses=problem_responses(401, 403, 404, 409, 503),
)
async def rotate_webhook_secret(request: Request, endpoint_id: str) -> Response:
    """A new secret, shown once in the answer and active at once. The previous one keeps signing
    next to it (a second ``v1,`` signature in ``webhook-signature``) for
    ``CALLGATE_WEBHOOK_ROTATION_OVERLAP_SECONDS`` (24 h by default), so the receiver can switch
    without rejecting a delivery. 409 ``endpoint_disabled`` for a disabled endpoint."""
    key = _key(request)
    rt = runtime_of(request)
    await _admin(rt, key)
    endpoint_id = _check_endpoint_id(endpoint_id)
    box = SecretBox(rt.secret)

    def rotate(conn: Connection, audit: AuditBatch) -> Registered:
        actor = _admin_in_unit(conn, key, rt)
        return rotate_secret(conn, audit, endpoint_id=endpoint_id, actor=actor, box=box,
                             overlap_seconds=rt.settings.webhook_rotation_overlap_seconds)

    rotated: Registered = await rt.commit_queue.run(rotate)
    return json_response({**rotated.endpoint, "secret": rotated.secret})


@router.post(
    "/webhooks/messages/{message_id}/replay",
    summary="Replay a webhook message",
    response_model=DeliveryMessage,
    status_code=202,
    responses=problem_responses(401, 403, 404, 409, 503),
)
async def replay_webhook_message(request: Request, message_id: str) -> Response:
    """Send a delivered or failed message again: the same ``webhook-id`` and body (receivers
    deduplicate on the id), a fresh attempt budget, due now. 409 ``still_pending`` while it is
    still being delivered, ``endpoint_disabled`` if its endpoint is disabled."""
    key = _key(request)
    rt = runtime_of(request)
    await _admin(rt, key)
    message_id = _check_message_id(message_id)

    def replay(conn: Connection, audit: AuditBatch) -> dict[str, Any]:
        actor = _admin_in_unit(conn, key, rt)
        return replay_message(conn, audit, message_id=message_id, actor=actor)

    message = await rt.commit_queue.run(replay)
    if rt.webhooks is not None:
        rt.webhooks.kick()  # committed: deliver it now rather than at the next tick
    return json_response(message, 202)


@router.get(
    "/webhooks/{endpoint_id}/deliveries",
    summary="An endpoint's messages and delivery attempts",
    response_model=DeliveryList,
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def list_deliveries(
    request: Request,
    endpoint_id: str,
    status: Literal["pending", "delivered", "failed"] | None = Query(None, description="Only messages in this state."),
    limit: int = Query(100, ge=1, le=1000, description="Most messages (newest first)."),
) -> Response:
    """Messages sent (or to be sent) to the endpoint, newest first, each with every attempt:
    when, how long, the status code or error, and the first bytes of the answer."""
    key = _key(request)
    rt = runtime_of(request)
    await _admin(rt, key)
    endpoint_id = _check_endpoint_id(endpoint_id)

    def load() -> list[dict[str, Any]]:
        with rt.reader.begin() as conn:
            if get_endpoint(conn, endpoint_id) is None:
                raise NotFound(f"no webhook endpoint {endpoint_id}")
            return list_messages(conn, endpoint_id=endpoint_id, status=status, limit=limit)

    return json_response({"deliveries": await run_in_threadpool(load)})


__all__ = ["router"]

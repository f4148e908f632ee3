"""The reviewer console: login/logout, the approval queue, a call's detail, approve and deny.

Every page is server-rendered; htmx only swaps named blocks of the same templates (the queue
polls ``GET /`` every second, a pending call's status polls ``GET /calls/{id}`` every two). All
state changes are POSTs behind the session, CSRF (``console.csrf``) and role checks; API keys of
any scope are refused on decision routes (security.md §3.10).
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import anyio
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from gateway.calls import CallView
from gateway.errors import Forbidden, NotFound, PayloadTooLarge, Unauthorized, UnsupportedMediaType, Unprocessable
from gateway.runtime import Runtime
from gateway.schemas import UUID_PATTERN

from console import auth, csrf
from console.auth import Session
from console.htmx import HtmxDetails, client_redirect
from console.ratelimit import Attempt, LoginThrottled
from console.state import ConsoleState

router = APIRouter(include_in_schema=False)

MAX_FORM_BYTES = 64 * 1024
MAX_COMMENT = 2000
QUEUE_LIMIT = 100
LOGIN_FAILED = "Invalid username or password."


def _state(request: Request) -> ConsoleState:
    return request.app.state.console  # type: ignore[no-any-return]


def _runtime(request: Request) -> Runtime:
    return request.app.state.runtime  # type: ignore[no-any-return]


def _client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def _read(request: Request, query: Callable[[Any], Any]) -> Any:
    """Run ``query(conn)`` on the reader engine in a worker thread."""
    rt = _runtime(request)

    def run() -> Any:
        with rt.reader.begin() as conn:
            return query(conn)

    return await run_in_threadpool(run)


async def read_form(request: Request) -> dict[str, str]:
    """A URL-encoded body (htmx and plain forms both send one), bounded and strictly UTF-8."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise PayloadTooLarge(f"form bodies are limited to {MAX_FORM_BYTES} bytes")
    if not body:
        return {}
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        raise UnsupportedMediaType("send application/x-www-form-urlencoded")
    try:
        pairs = parse_qsl(body.decode("ascii"), keep_blank_values=True, max_num_fields=16, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise Unprocessable("the form is not valid URL-encoded UTF-8", code="invalid_form") from None
    form: dict[str, str] = {}
    for key, value in pairs:
        form.setdefault(key, value)
    return form


# -- sessions --------------------------------------------------------------------------------


async def current_session(request: Request) -> Session | None:
    """The live session of this request's cookie; user activity pushes its idle deadline."""
    token = request.cookies.get(auth.SESSION_COOKIE)
    if not token:
        return None
    state = _state(request)
    now = state.now()
    session: Session | None = await _read(request, lambda conn: auth.load_session(conn, token, now))
    if session is not None and not HtmxDetails.of(request).background and auth.needs_touch(session, now):
        await _runtime(request).commit_queue.run(auth.touch_session(session, now))
    return session


def _login_redirect(request: Request) -> Response:
    htmx = HtmxDetails.of(request)
    if htmx:
        # A poll or a click after the session ended: come back to the page that was open.
        target = urlsplit(htmx.current_url or "/").path or "/"
    else:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    target = _safe_next(target)
    location = "/login" if target == "/" else f"/login?next={quote(target, safe='/')}"
    if htmx:
        # htmx swaps nothing on a 401; HX-Redirect sends the whole page to the login form.
        return client_redirect(Response(status_code=401), location)
    return RedirectResponse(location, status_code=303)


def _safe_next(value: str | None) -> str:
    """Only same-site paths: never ``//host``, ``/\\host`` or a scheme (open redirect)."""
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")) or len(value) > 512:
        return "/"
    if any(c in value for c in "\\\r\n\t") or not value.isprintable():
        return "/"
    return value


def _page(request: Request, session: Session, **context: Any) -> dict[str, Any]:
    return {"user": session.user, "csrf_token": session.csrf_token, "now": _state(request).now(), **context}


# -- login / logout --------------------------------------------------------------------------


def _login_page(
    request: Request, *, nonce: str, next_path: str, error: str | None = None, status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    state = _state(request)
    token = auth.prelogin_token(_runtime(request).secret, nonce)
    return state.templates.render(
        request, "login.html", {"login_token": token, "next": next_path, "error": error},
        status_code=status_code, headers=headers,
    )


def _prelogin_nonce(request: Request) -> tuple[str, bool]:
    """The login form's nonce from its cookie, or a new one (True: the cookie must be set)."""
    nonce = request.cookies.get(auth.PRELOGIN_COOKIE)
    if auth.valid_nonce(nonce):
        return nonce, False  # type: ignore[return-value]
    return auth.new_token(), True


@router.get("/login")
async def read_login(request: Request, next: str | None = None) -> Response:
    # Shown even with a live session (signing in as someone else); login rotates the session.
    nonce, fresh = _prelogin_nonce(request)
    response = _login_page(request, nonce=nonce, next_path=_safe_next(next))
    if fresh:
        response.headers.append("set-cookie", auth.prelogin_cookie(nonce))
    return response


@router.post("/login")
async def create_login(request: Request) -> Response:
    state, rt = _state(request), _runtime(request)
    csrf.check_origin(request, state.public_url)
    form = await read_form(request)
    next_path = _safe_next(form.get("next"))
    nonce = request.cookies.get(auth.PRELOGIN_COOKIE)
    token = form.get(csrf.TOKEN_FIELD, "")
    if not auth.valid_nonce(nonce) or not token or not _same(token, auth.prelogin_token(rt.secret, nonce or "")):
        # Most likely an expired or cookie-less login page: show a fresh one rather than a bare error.
        fresh = auth.new_token()
        response = _login_page(request, nonce=fresh, next_path=next_path, status_code=403,
                               error="Your login form expired. Please sign in again.")
        response.headers.append("set-cookie", auth.prelogin_cookie(fresh))
        return response
    assert nonce is not None
    username = form.get("username", "")[: auth.MAX_FIELD]
    password = form.get("password", "")[: auth.MAX_FIELD]
    ip = _client_ip(request)

    # Reserve before verifying: a burst of guesses cannot all pass a check that only counts
    # finished failures. The limiter may ask Redis, so it runs off the event loop.
    try:
        attempt = await anyio.to_thread.run_sync(state.limiter.reserve, username, ip)
    except LoginThrottled as exc:
        minutes = max(1, -(-exc.retry_after // 60))
        return _login_page(
            request, nonce=nonce, next_path=next_path, status_code=429,
            headers={"Retry-After": str(exc.retry_after)},
            error=f"Too many failed sign-ins. Try again in {minutes} minute{'s' if minutes != 1 else ''}.",
        )

    verified = await _verify_login(request, attempt, username, password)
    if verified is None:  # the attempt's provisional failure stands
        await rt.commit_queue.run(auth.record_failed_login(digest=auth.username_digest(rt.secret, username), ip=ip))
        return _login_page(request, nonce=nonce, next_path=next_path, status_code=401, error=LOGIN_FAILED)

    await anyio.to_thread.run_sync(state.limiter.succeeded, attempt)
    old = request.cookies.get(auth.SESSION_COOKIE)
    session_token, csrf_token = auth.new_token(), auth.new_token()
    await rt.commit_queue.run(auth.start_session(
        verified=verified, token=session_token, csrf_token=csrf_token, now=state.now(), ip=ip,
        user_agent=request.headers.get("user-agent"), replaces=auth.token_sha256(old) if old else None,
    ))
    response = RedirectResponse(next_path, status_code=303)
    response.headers.append("set-cookie", auth.session_cookie(session_token))
    response.headers.append("set-cookie", auth.cleared_prelogin_cookie())
    return response


async def _verify_login(request: Request, attempt: Attempt, username: str, password: str) -> auth.Verified | None:
    """The argon2 verify for an admitted attempt. If no hash slot was reached (the database failed,
    or the client left while queued) the attempt is released: no password was checked, and a
    database outage must not lock reviewers out. From the slot on, the attempt counts whatever
    happens to this request: the verify runs to its end in its thread."""
    state, rt = _state(request), _runtime(request)
    started = False
    try:
        row = await _read(request, lambda conn: auth.find_user(conn, username))
        async with state.hash_slots:
            started = True
            return await anyio.to_thread.run_sync(auth.verify_password, rt.settings.env, row, password)
    except BaseException:
        if not started:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(state.limiter.release, attempt)
        raise


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


@router.post("/logout")
async def delete_login(request: Request) -> Response:
    state = _state(request)
    csrf.check_origin(request, state.public_url)
    form = await read_form(request)
    session = await current_session(request)
    if session is not None:
        csrf.check_token(csrf.presented_token(request, form), session.csrf_token)
        await _runtime(request).commit_queue.run(auth.end_session(session))
    response: Response = RedirectResponse("/login", status_code=303)
    if HtmxDetails.of(request):
        response = client_redirect(Response(status_code=204), "/login")
    response.headers.append("set-cookie", auth.cleared_session_cookie())
    return response


# -- queue and detail ------------------------------------------------------------------------


@router.get("/")
async def read_queue(request: Request) -> Response:
    session = await current_session(request)
    if session is None:
        return _login_redirect(request)
    from gateway import approvals

    rows = await _read(request, lambda conn: approvals.list_calls(conn, status="pending", limit=QUEUE_LIMIT))
    calls = [present(row) for row in rows]
    htmx = HtmxDetails.of(request)
    context = _page(request, session, calls=calls, limit=QUEUE_LIMIT)
    block = "queue" if htmx and htmx.target == "queue" else None
    return _state(request).templates.render(request, "queue.html", context, block=block)


def _check_call_id(call_id: str) -> str:
    if not re.fullmatch(UUID_PATTERN, call_id):
        raise NotFound(f"no call {call_id[:64]}")
    return call_id.lower()


def present(row: dict[str, Any]) -> dict[str, Any]:
    """A call as the templates show it: ``gateway.approvals`` answers the operator view of a call
    (``call_id``, effective ``status``, parsed ``args``); a raw ``tool_call`` row is converted."""
    if "call_id" in row:
        return row
    body = CallView(row).detail_body()
    try:
        body["metadata"] = json.loads(row.get("metadata") or "{}")
    except ValueError:
        body["metadata"] = {}
    return body


async def _load_call(request: Request, call_id: str) -> dict[str, Any] | None:
    from gateway import approvals

    row = await _read(request, lambda conn: approvals.get_call(conn, call_id))
    return None if row is None else present(row)


async def _session_usage(request: Request, call: dict[str, Any]) -> dict[str, Any] | None:
    """LLM tokens and cost of the call's session (its agent's share), for the detail page."""
    if not call.get("session_id"):
        return None
    from gateway.sessions import session_usage

    return await _read(request, lambda conn: session_usage(conn, session_id=call["session_id"], agent=call["agent"]))


@router.get("/calls/{call_id}")
async def read_call_detail(request: Request, call_id: str) -> Response:
    session = await current_session(request)
    if session is None:
        return _login_redirect(request)
    templates = _state(request).templates
    call = None
    if re.fullmatch(UUID_PATTERN, call_id):
        call = await _load_call(request, call_id.lower())
    if call is None:
        return templates.render(request, "detail.html", _page(request, session, call=None, error=None),
                                status_code=404)
    context = _page(request, session, call=call, error=None, oob=False, decision_oob=False)
    htmx = HtmxDetails.of(request)
    if not (htmx and htmx.target == "call-status"):
        context["usage"] = await _session_usage(request, call)
        return templates.render(request, "detail.html", context)
    # The status poll. Once the call is no longer pending (decided elsewhere: another reviewer,
    # Slack, the CLI, or expired), also replace the decision form, out of band.
    html = templates.render_text("detail.html", {"request": request, **context}, "status")
    if call["status"] != "pending":
        html += templates.render_text("detail.html", {"request": request, **context, "decision_oob": True},
                                      "decision")
    return Response(html, media_type="text/html; charset=utf-8")


async def _decide(request: Request, call_id: str, *, approve: bool) -> Response:
    # Hard rule (security.md §3.10): only humans decide. A bearer key of any scope is refused
    # before anything else, even alongside a valid session cookie.
    if request.headers.get("authorization"):
        raise Forbidden("API keys cannot approve or deny calls; a reviewer must use the console",
                        code="api_keys_cannot_decide")
    state = _state(request)
    session = await current_session(request)
    if session is None:
        if HtmxDetails.of(request):
            return _login_redirect(request)  # the session ended while the page was open
        raise Unauthorized("sign in to the console first", code="login_required")
    csrf.check_origin(request, state.public_url)
    form = await read_form(request)
    csrf.check_token(csrf.presented_token(request, form), session.csrf_token)
    if not session.user.can_decide:
        raise Forbidden(f"role {session.user.role!r} can view calls but not decide them", code="role_forbidden")
    call_id = _check_call_id(call_id)
    comment = form.get("comment", "").strip() or None
    if comment is not None and ("\x00" in comment or len(comment) > MAX_COMMENT):
        raise Unprocessable(f"a comment is at most {MAX_COMMENT} characters of text", code="invalid_comment")

    from gateway import approvals

    htmx = HtmxDetails.of(request)
    try:
        decision = await approvals.attempt_decision(_runtime(request), call_id=call_id, approve=approve,
                                                    actor=session.user.actor, channel="console", comment=comment)
    except Unprocessable as exc:
        if not htmx:
            raise
        return await _decision_fragment(request, session, call_id, error=exc.detail, status_code=exc.status)
    refusal = decision.refusal
    if refusal is not None:
        # Lost the race, too late, or no such call: the click is already on record (committed
        # approval.decision_rejected); now tell the reviewer why, with the call as it stands.
        if not htmx or decision.view is None:
            raise refusal
        return await _decision_fragment(request, session, call_id, error=refusal.detail, status_code=refusal.status)
    if not htmx:
        return RedirectResponse(f"/calls/{call_id}", status_code=303)
    return await _decision_fragment(request, session, call_id, error=None)


async def _decision_fragment(
    request: Request, session: Session, call_id: str, *, error: str | None, status_code: int = 200
) -> Response:
    """The decision block, plus the status block swapped out of band (htmx answers)."""
    call = await _load_call(request, call_id)
    if call is None:
        raise NotFound(f"no call {call_id}")
    templates = _state(request).templates
    context = {"request": request, **_page(request, session, call=call, error=error, oob=True, decision_oob=False)}
    html = templates.render_text("detail.html", context, "decision") + templates.render_text(
        "detail.html", context, "status")
    return Response(html, status_code=status_code, media_type="text/html; charset=utf-8")


@router.post("/calls/{call_id}/approve")
async def approve_call(request: Request, call_id: str) -> Response:
    return await _decide(request, call_id, approve=True)


@router.post("/calls/{call_id}/deny")
async def deny_call(request: Request, call_id: str) -> Response:
    return await _decide(request, call_id, approve=False)


__all__ = ["current_session", "read_form", "router"]

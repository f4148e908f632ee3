"""Liveness, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from gateway.problems import problem_responses

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: database reachable and policy loaded", responses=problem_responses(503))
async def readyz(request: Request) -> Response:
    rt = request.app.state.runtime

    def ping() -> None:
        with rt.reader.connect() as conn:
            conn.execute(text("SELECT 1"))

    try:
        await run_in_threadpool(ping)
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        from gateway.problems import problem_response

        return problem_response(503, "database_unavailable", "Service unavailable", f"database: {type(exc).__name__}")
    import json

    body = {"status": "ready", "policy_version": rt.policy.version, "policy_digest": rt.policy.compiled.digest}
    return Response(json.dumps(body), media_type="application/json")


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    return Response(request.app.state.runtime.metrics.render(), media_type="text/plain; version=0.0.4")

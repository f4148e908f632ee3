"""The FastAPI application factory. Everything is built in the lifespan from the settings given,
so each test (and each worker) gets its own engines, commit thread and policy."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import Response
from sqlalchemy.exc import DBAPIError, OperationalError

from gateway import policy_store
from gateway.api import calls, health
from gateway.api import webhooks as webhooks_api
from gateway.api import usage as usage_api
from gateway.approvals import announce
from gateway.body_limit import BodySizeLimitMiddleware
from gateway.commit_queue import CommitQueue
from gateway.config import Settings
from gateway.db import make_engine
from gateway.errors import DomainError
from gateway.expiry import sweep_expired
from gateway.long_polls import LongPolls
from gateway.metrics import Metrics
from gateway.notify import Notifier
from gateway.problems import install_problem_handlers, problem_response
from gateway.pubsub import RedisBridge
from gateway.runtime import Runtime
from gateway.webhooks import dispatch as webhook_dispatch

log = logging.getLogger("callgate.gateway")


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the gateway app. ``settings`` defaults to the ``CALLGATE_*`` environment."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = build_runtime(settings)
        runtime.notifier.bind(asyncio.get_running_loop())
        if settings.redis_url:
            # Production: decisions and sweeps made by other processes wake this worker's long-polls.
            runtime.pubsub = RedisBridge(settings.redis_url, runtime.notifier)
            await runtime.pubsub.start()
        app.state.runtime = runtime
        # Embedded mode sweeps in-process; with Redis, Celery beat runs the sweep (gateway.worker).
        sweeper = None if settings.redis_url else asyncio.create_task(_sweep_forever(runtime))
        # Webhooks: an in-process delivery worker (embedded), or Celery kicks (with Redis).
        runtime.webhooks = webhook_dispatch.start_for(runtime)
        try:
            yield
        finally:
            if sweeper is not None:
                sweeper.cancel()
            if runtime.webhooks is not None:
                runtime.webhooks.stop()  # before the commit queue: it writes through it
            if runtime.pubsub is not None:
                await runtime.pubsub.stop()
            runtime.commit_queue.stop()
            runtime.writer.dispose()
            runtime.reader.dispose()

    app = FastAPI(
        title="callgate gateway",
        version="0.1.0",
        summary="Policy decisions, human approvals and a tamper-evident audit log for AI agents' tool calls.",
        lifespan=lifespan,
    )
    install_problem_handlers(app)

    @app.exception_handler(DomainError)
    async def _domain_error(_request: Request, exc: DomainError) -> Response:
        return problem_response(exc.status, exc.code, exc.title, exc.detail, **exc.extra)

    @app.exception_handler(OperationalError)
    async def _database_down(_request: Request, exc: DBAPIError) -> Response:
        log.warning("database unavailable: %s", type(exc.orig).__name__ if exc.orig else exc)
        return problem_response(
            503, "database_unavailable", "Service unavailable", "the database is unreachable; retry later",
            headers={"Retry-After": "1"},
        )

    app.include_router(calls.router)
    app.include_router(usage_api.router)
    app.include_router(health.router)
    app.include_router(webhooks_api.router)
    from console import install as install_console  # the reviewer console: pages, static files, headers

    install_console(app, settings)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes, path_prefixes=("/v1/",))
    return app


async def _sweep_forever(runtime: Runtime, interval: float = 5.0) -> None:
    """Embedded mode's stand-in for Celery beat: expire overdue approvals in-process."""
    while True:
        try:
            await announce(runtime, await runtime.commit_queue.run(sweep_expired))
        except Exception:  # noqa: BLE001 - a failed sweep is retried on the next tick
            log.exception("expiry sweep failed")
        await asyncio.sleep(interval)


def build_runtime(settings: Settings) -> Runtime:
    url = settings.resolved_database_url()
    secret = settings.resolved_secret_key()
    writer = make_engine(url, writer=True)
    reader = make_engine(url)
    with writer.begin() as conn:
        policy = policy_store.load_active(conn, settings.policies)
    metrics = Metrics()
    queue = CommitQueue(
        writer,
        batch_max=settings.commit_batch_max,
        on_batch=lambda size, _seconds: metrics.commit_batch.observe(size),
    )
    queue.start()
    return Runtime(
        settings=settings, writer=writer, reader=reader, commit_queue=queue, policy=policy, secret=secret,
        metrics=metrics, notifier=Notifier(), long_polls=LongPolls(reader, secret),
        recheck_seconds=settings.resolved_recheck_seconds(),
    )

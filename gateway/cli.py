"""The ``callgate`` command: run the gateway and administer it from the server host."""

from __future__ import annotations

import getpass
import json
import os
import secrets
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

import click
from sqlalchemy import Engine, func, select

from gateway.config import Settings, settings_help

EXIT_OK, EXIT_TAMPERED, EXIT_USAGE = 0, 1, 2


def _operator() -> Any:
    from gateway.audit import Actor

    return Actor("operator", f"{getpass.getuser()}@{socket.gethostname()}")


def _settings(ctx: click.Context, **overrides: Any) -> Settings:
    base: Settings = ctx.obj
    values = {k: v for k, v in overrides.items() if v is not None}
    if not values:
        return base
    # Explicit options win over CALLGATE_* variables; everything else still comes from the environment.
    return Settings(**values)


def _engine(settings: Settings) -> Engine:
    from gateway.db import make_engine

    return make_engine(settings.resolved_database_url(), writer=True)


def _fail(message: str, code: int = EXIT_USAGE) -> None:
    click.echo(f"error: {message}", err=True)
    raise SystemExit(code)


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120},
    epilog="Configuration (environment variables):\n\n\b\n" + settings_help(),
)
@click.pass_context
def main(ctx: click.Context) -> None:
    """callgate: a self-hosted gateway between AI agents and their tools."""
    try:
        ctx.obj = Settings()
    except Exception as exc:  # pydantic ValidationError: name the variable
        _fail(f"invalid configuration: {exc}")


@main.command()
@click.option("--host", default=None, help="Bind address (CALLGATE_HOST, default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (CALLGATE_PORT, default 8080; 0 picks a free one).")
@click.option("--policies", type=click.Path(path_type=Path), default=None, help="Policy YAML file or folder.")
@click.option("--workers", type=int, default=None, help="Worker processes (CALLGATE_WORKERS, default 1).")
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None, policies: Path | None, workers: int | None) -> None:
    """Migrate the database, then run the gateway and console."""
    import uvicorn

    settings = _settings(ctx, host=host, port=port, policies=policies, workers=workers)
    _check_policies(settings)
    from gateway.migrate import upgrade

    upgrade(settings.resolved_database_url(), app_role=settings.db_app_role)
    _bootstrap(settings)
    # Workers build their settings from the environment, so hand them the command-line options.
    for name, value in {"host": host, "port": port, "workers": workers}.items():
        if value is not None:
            os.environ[f"CALLGATE_{name.upper()}"] = str(value)
    if settings.policies is not None:
        os.environ["CALLGATE_POLICIES"] = str(settings.policies.resolve())
    os.environ["CALLGATE_DATA_DIR"] = str(settings.data_dir.resolve())
    if settings.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="callgate-metrics-")
    click.echo(f"callgate gateway on http://{settings.host}:{settings.port} ({settings.workers} worker(s))", err=True)
    uvicorn.run(
        "gateway.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        access_log=False,
        loop="uvloop",
        http="httptools",
    )


def _check_policies(settings: Settings) -> None:
    import policies
    from gateway.policy_store import compile_sources, read_sources

    try:
        compile_sources(read_sources(settings.policies))
    except policies.PolicyError as exc:
        _fail(f"invalid policy:\n{exc}")
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"cannot read policies: {exc}")


def _bootstrap(settings: Settings) -> None:
    """First run: create an admin user and an agent key, and print them once."""
    from gateway.audit import SYSTEM
    from gateway.key_admin import create_key
    from gateway.models import ApiKey, User
    from gateway.users import create_user

    engine = _engine(settings)
    try:
        with engine.begin() as conn:
            if conn.execute(select(func.count()).select_from(User)).scalar() or conn.execute(
                select(func.count()).select_from(ApiKey)
            ).scalar():
                return
            password = secrets.token_urlsafe(18)
            create_user(conn, username="admin", password=password, role="admin", env=settings.env, actor=SYSTEM)
            key = create_key(conn, kind="agent", agent="default", name="first-run key",
                             pepper=settings.resolved_secret_key(), actor=SYSTEM)
    finally:
        engine.dispose()
    click.echo(
        "\nFirst run: created credentials. They are shown ONCE; store them now.\n"
        f"  console login : admin / {password}\n"
        f"  agent API key : {key.key}   (agent 'default')\n"
        f"  agent setup   : export CALLGATE_URL=http://{settings.host}:{settings.port} CALLGATE_API_KEY={key.key}\n",
        err=True,
    )


@main.command()
@click.pass_context
def migrate(ctx: click.Context) -> None:
    """Apply database migrations (idempotent)."""
    from gateway.migrate import upgrade

    settings = _settings(ctx)
    upgrade(settings.resolved_database_url(), app_role=settings.db_app_role)
    click.echo("database is at the newest schema", err=True)


# -- keys ------------------------------------------------------------------------------------


@main.group()
def keys() -> None:
    """Create, list and revoke API keys."""


@keys.command("create")
@click.option("--agent", help="Agent name the key acts as (required for agent keys).")
@click.option("--scope", type=click.Choice(["agent", "admin"]), default="agent", show_default=True)
@click.option("--name", default="", help="A label for the key.")
@click.pass_context
def keys_create(ctx: click.Context, agent: str | None, scope: str, name: str) -> None:
    """Create a key. The key is printed alone on the last line of stdout, once; only its hash is stored."""
    from gateway.errors import DomainError
    from gateway.key_admin import create_key

    settings = _settings(ctx)
    engine = _engine(settings)
    try:
        with engine.begin() as conn:
            created = create_key(conn, kind=scope, agent=agent, name=name, pepper=settings.resolved_secret_key(),  # type: ignore[arg-type]
                                 actor=_operator())
    except DomainError as exc:
        _fail(exc.detail)
    finally:
        engine.dispose()
    click.echo(f"created {created.kind} key {created.key_id}" + (f" for agent {created.agent}" if created.agent else ""),
               err=True)
    click.echo(created.key)


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table.")
@click.pass_context
def keys_list(ctx: click.Context, as_json: bool) -> None:
    """List keys (ids and metadata only; secrets are never shown again)."""
    from gateway.key_admin import list_keys

    engine = _engine(_settings(ctx))
    with engine.connect() as conn:
        rows = list_keys(conn)
    engine.dispose()
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, default=str))
        return
    click.echo(f"{'KEY ID':<14}{'KIND':<7}{'AGENT':<20}{'NAME':<24}{'CREATED':<22}{'REVOKED'}")
    for r in rows:
        click.echo(f"{r['key_id']:<14}{r['kind']:<7}{str(r['agent'] or '-'):<20}{str(r['name'])[:23]:<24}"
                   f"{str(r['created_at'])[:19]:<22}{str(r['revoked_at'])[:19] if r['revoked_at'] else '-'}")


@keys.command("revoke")
@click.argument("key_id")
@click.pass_context
def keys_revoke(ctx: click.Context, key_id: str) -> None:
    """Revoke a key by its id; it is refused from the next request on."""
    from gateway.errors import DomainError
    from gateway.key_admin import revoke_key

    engine = _engine(_settings(ctx))
    try:
        with engine.begin() as conn:
            revoke_key(conn, key_id=key_id, actor=_operator())
    except DomainError as exc:
        _fail(exc.detail)
    finally:
        engine.dispose()
    click.echo(f"revoked {key_id}", err=True)


# -- users -----------------------------------------------------------------------------------


@main.group()
def users() -> None:
    """Manage console users."""


@users.command("create")
@click.argument("username")
@click.option("--role", type=click.Choice(["admin", "reviewer", "viewer"]), default="reviewer", show_default=True)
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin instead of generating one.")
@click.pass_context
def users_create(ctx: click.Context, username: str, role: str, password_stdin: bool) -> None:
    """Create a console user; a generated password is printed once on stdout."""
    from gateway.errors import DomainError
    from gateway.users import create_user

    settings = _settings(ctx)
    password = sys.stdin.readline().rstrip("\n") if password_stdin else secrets.token_urlsafe(18)
    engine = _engine(settings)
    try:
        with engine.begin() as conn:
            create_user(conn, username=username, password=password, role=role, env=settings.env, actor=_operator())
    except DomainError as exc:
        _fail(exc.detail)
    finally:
        engine.dispose()
    click.echo(f"created {role} {username}", err=True)
    if not password_stdin:
        click.echo(password)


# -- audit -----------------------------------------------------------------------------------


@main.group()
def audit() -> None:
    """Verify and export the tamper-evident audit log."""


@audit.command("verify")
@click.option("--file", "export_file", type=click.File("r"), help="Verify an `audit export` file instead of the database.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result on stdout.")
@click.option("--batch", type=click.IntRange(100, 100_000), default=5000, show_default=True)
@click.pass_context
def audit_verify(ctx: click.Context, export_file: Any, as_json: bool, batch: int) -> None:
    """Check every event's hash and link. Exit 0 intact, 1 tampered (first bad row named), 2 usage/IO error."""
    from gateway.audit import rows_from_export, stream_rows, verify_rows

    try:
        if export_file is not None:
            result = verify_rows(rows_from_export(export_file))
        else:
            engine = _engine(_settings(ctx))
            try:
                with engine.connect() as conn:
                    result = verify_rows(stream_rows(conn, batch=batch))
            finally:
                engine.dispose()
    except (OSError, ValueError, KeyError) as exc:
        _fail(f"cannot read the audit log: {exc}")
    except Exception as exc:  # noqa: BLE001 - database errors are usage/IO errors here
        _fail(f"cannot read the audit log: {type(exc).__name__}: {exc}")
    if as_json:
        click.echo(json.dumps(result.as_dict()))
    elif result.ok:
        click.echo(f"audit log intact: {result.events} events, head seq {result.head_seq} hash {result.head_hash}")
    else:
        click.echo(f"audit log TAMPERED at seq {result.first_bad_seq}: {result.reason}: {result.detail}")
    raise SystemExit(EXIT_OK if result.ok else EXIT_TAMPERED)


@audit.command("export")
@click.option("--from-seq", type=click.IntRange(1), default=1, show_default=True)
@click.option("--to-seq", type=click.IntRange(1), default=None)
@click.option("--output", "-o", type=click.File("w"), default="-", help="File to write (default stdout).")
@click.pass_context
def audit_export(ctx: click.Context, from_seq: int, to_seq: int | None, output: Any) -> None:
    """Write events as JSON lines with their exact canonical text and hashes (verifiable offline)."""
    from gateway.audit import export_line, stream_rows

    engine = _engine(_settings(ctx))
    try:
        with engine.connect() as conn:
            for row in stream_rows(conn, from_seq=from_seq, to_seq=to_seq):
                output.write(export_line(row) + "\n")
    finally:
        engine.dispose()


# -- calls (approvals) -------------------------------------------------------------------------

EXIT_ALREADY_DECIDED = 1
LIST_CHOICES = ["pending", "approved", "denied", "expired", "allowed", "blocked", "running", "succeeded", "failed",
                "all"]


@main.group()
def calls() -> None:
    """List tool calls and approve or deny pending ones from the server host.

    \b
    A decision made here wakes waiting agents through Redis when CALLGATE_REDIS_URL is set
    (milliseconds). Without Redis (embedded mode) the running gateway notices it at its next
    database re-check: within CALLGATE_RECHECK_SECONDS (0.25 s by default in embedded mode).
    The decision's webhook events are sent by a Celery worker (kicked at once) with Redis, or by
    the running gateway within CALLGATE_WEBHOOK_POLL_SECONDS (1 s) without.
    """


@calls.command("list")
@click.option("--status", type=click.Choice(LIST_CHOICES), default="pending", show_default=True,
              help="Effective status: a pending call past its expiry is listed as expired.")
@click.option("--agent", default=None, help="Only this agent's calls.")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table.")
@click.pass_context
def calls_list(ctx: click.Context, status: str, agent: str | None, limit: int, as_json: bool) -> None:
    """List calls (pending ones oldest first: the review queue)."""
    from gateway.approvals import list_calls

    engine = _engine(_settings(ctx))
    try:
        with engine.connect() as conn:
            rows = list_calls(conn, status=None if status == "all" else status, limit=limit, agent=agent)
    finally:
        engine.dispose()
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, ensure_ascii=False))
        return
    if not rows:
        click.echo(f"no {status if status != 'all' else ''} calls".replace("  ", " "), err=True)
        return
    click.echo(f"{'CALL ID':<38}{'STATUS':<11}{'AGENT':<18}{'TOOL':<26}{'CREATED':<21}{'EXPIRES / DECIDED BY'}")
    for r in rows:
        tail = r["expires_at"] if r["status"] == "pending" else (r["decided_by"] or "-")
        click.echo(f"{r['call_id']:<38}{r['status']:<11}{str(r['agent'])[:17]:<18}{str(r['tool'])[:25]:<26}"
                   f"{str(r['created_at'])[:19]:<21}{str(tail)[:24]}")


def _decide_command(ctx: click.Context, call_id: str, approve: bool, name: str, comment: str | None,
                    break_glass: bool) -> None:
    """Decide as the console user ``--as`` names (an active reviewer or admin), or, with
    ``--break-glass``, as a self-declared operator; either way the OS account running the command
    is recorded with the decision (or the refusal) in the audit log."""
    from gateway.approvals import decide_call, decider, refuse_unauthorized
    from gateway.audit import Actor, AuditBatch
    from gateway.errors import Conflict, DomainError

    name = name.strip()
    if not name or len(name) > 128:
        _fail("--as needs the name of the person deciding (1-128 characters)")
    if break_glass and not (comment or "").strip():
        _fail("--break-glass needs --comment saying why the decision cannot wait for a reviewer")
    operator = _operator()  # who really ran this, whatever --as says
    context = {"os_user": operator.id, "break_glass": break_glass}
    settings = _settings(ctx)
    publisher = None
    if settings.redis_url:  # ready before the decision, so the wake-up leaves right after the commit
        from gateway.pubsub import SyncPublisher

        publisher = SyncPublisher(settings.redis_url)
        publisher.connect()
    engine = _engine(settings)
    try:
        # One transaction: the identity check, the decision (or the recorded refusal) and its events.
        with engine.connect() as conn, conn.begin():
            audit = AuditBatch()
            actor = Actor("operator", name) if break_glass else decider(conn, name)
            if actor is None:
                decision = refuse_unauthorized(audit, call_id=call_id, approve=approve, actor=operator, claimed=name,
                                               channel="cli", context=context)
            else:
                decision = decide_call(conn, audit, call_id=call_id, approve=approve, actor=actor, channel="cli",
                                       comment=comment, context=context)
            audit.flush(conn)
        view = decision.result()  # committed: a refused click is on record before we say so
        # Wake the agents waiting on it in every gateway worker.
        if publisher is not None and not publisher.publish([view.row["id"]]):
            click.echo("warning: Redis unreachable; waiting agents resume at the gateway's next DB re-check",
                       err=True)
        if settings.redis_url:  # its webhook events are in the outbox: have a Celery worker send them now
            from gateway.webhooks.dispatch import send_delivery_task

            send_delivery_task(settings.redis_url, settings.celery_queue)
    except Conflict as exc:
        _fail(exc.detail, EXIT_ALREADY_DECIDED)
    except DomainError as exc:
        _fail(exc.detail)
    finally:
        engine.dispose()
        if publisher is not None:
            publisher.close()
    row = view.row
    how = f" (BREAK-GLASS, recorded with OS user {operator.id})" if break_glass else ""
    click.echo(f"{row['status']} {row['id']} ({row['tool']} for agent {row['agent']}) as {name}{how}")


_AS_HELP = ("The console user deciding: an active reviewer or admin (`callgate users create NAME --role reviewer`). "
            "The OS account running the command is recorded too.")
_BREAK_GLASS_HELP = ("Emergency only: accept --as without a matching reviewer account. Needs --comment; recorded "
                     "as a break-glass decision by operator NAME, with the OS account, in the audit log.")


@calls.command("approve")
@click.argument("call_id")
@click.option("--as", "name", required=True, help=_AS_HELP)
@click.option("--comment", default=None, help="Why (up to 2000 characters).")
@click.option("--break-glass", is_flag=True, help=_BREAK_GLASS_HELP)
@click.pass_context
def calls_approve(ctx: click.Context, call_id: str, name: str, comment: str | None, break_glass: bool) -> None:
    """Approve a pending call. Exit 0 done, 1 already decided or expired, 2 usage error / unknown call /
    --as is not a reviewer."""
    _decide_command(ctx, call_id, True, name, comment, break_glass)


@calls.command("deny")
@click.argument("call_id")
@click.option("--as", "name", required=True, help=_AS_HELP)
@click.option("--comment", default=None, help="The reason the agent is told (up to 2000 characters).")
@click.option("--break-glass", is_flag=True, help=_BREAK_GLASS_HELP)
@click.pass_context
def calls_deny(ctx: click.Context, call_id: str, name: str, comment: str | None, break_glass: bool) -> None:
    """Deny a pending call. Exit 0 done, 1 already decided or expired, 2 usage error / unknown call /
    --as is not a reviewer."""
    _decide_command(ctx, call_id, False, name, comment, break_glass)


# -- webhooks --------------------------------------------------------------------------------


@main.group()
def webhooks() -> None:
    """Register signed webhook endpoints for agents' approval decisions, rotate their secrets,
    and inspect and replay deliveries.

    \b
    When a call is approved, denied or expires, every enabled endpoint of its agent gets a
    Standard-Webhooks-signed POST (type approval.decided), retried with backoff for about 75 h
    until a 2xx. Secrets are stored sealed (AES-GCM under CALLGATE_SECRET_KEY) and shown once.
    """


@webhooks.command("add")
@click.option("--agent", required=True, help="The agent whose decisions are sent.")
@click.option("--url", required=True,
              help="https URL on a public address (http only with CALLGATE_WEBHOOK_ALLOW_HTTP, for tests).")
@click.option("--include-args", is_flag=True,
              help="Put the call's (redacted) arguments in the payload (data.args). Default: thin payloads.")
@click.pass_context
def webhooks_add(ctx: click.Context, agent: str, url: str, include_args: bool) -> None:
    """Register an endpoint. Its signing secret is printed alone on the last line of stdout, once."""
    from gateway.audit import AuditBatch
    from gateway.errors import DomainError
    from gateway.webhooks.endpoints import check_url, register_endpoint
    from gateway.webhooks.secrets import SecretBox

    settings = _settings(ctx)
    try:
        destination = check_url(url, allow_private=settings.webhook_allow_private,
                                allow_http=settings.webhook_allow_http)
    except DomainError as exc:
        _fail(exc.detail)
    box = SecretBox.from_settings(settings)
    engine = _engine(settings)
    try:
        with engine.connect() as conn, conn.begin():
            audit = AuditBatch()
            registered = register_endpoint(conn, audit, agent=agent, destination=destination, actor=_operator(),
                                           box=box, include_args=include_args)
            audit.flush(conn)
    except DomainError as exc:
        _fail(exc.detail)
    finally:
        engine.dispose()
    endpoint = registered.endpoint
    click.echo(f"registered webhook {endpoint['id']} for agent {endpoint['agent']}: {endpoint['url']}\n"
               "signing secret (shown once; verify deliveries with it):", err=True)
    click.echo(registered.secret)


@webhooks.command("list")
@click.option("--agent", default=None, help="Only this agent's endpoints.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table.")
@click.pass_context
def webhooks_list(ctx: click.Context, agent: str | None, as_json: bool) -> None:
    """List endpoints (secrets are never shown again)."""
    from gateway.webhooks.endpoints import list_endpoints

    engine = _engine(_settings(ctx))
    try:
        with engine.connect() as conn:
            rows = list_endpoints(conn, agent=agent)
    finally:
        engine.dispose()
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    if not rows:
        click.echo("no webhook endpoints", err=True)
        return
    click.echo(f"{'ENDPOINT ID':<21}{'AGENT':<20}{'STATE':<10}{'CREATED':<21}URL")
    for r in rows:
        state = "enabled" if r["enabled"] else "disabled"
        click.echo(f"{r['id']:<21}{str(r['agent'])[:19]:<20}{state:<10}{str(r['created_at'])[:19]:<21}{r['url']}")


@webhooks.command("disable")
@click.argument("endpoint_id")
@click.pass_context
def webhooks_disable(ctx: click.Context, endpoint_id: str) -> None:
    """Disable an endpoint; its undelivered messages end as failed. Exit 1 if already disabled."""
    from gateway.audit import AuditBatch
    from gateway.errors import Conflict, DomainError
    from gateway.webhooks.endpoints import disable_endpoint

    engine = _engine(_settings(ctx))
    try:
        with engine.connect() as conn, conn.begin():
            audit = AuditBatch()
            disable_endpoint(conn, audit, endpoint_id=endpoint_id.strip(), actor=_operator())
            audit.flush(conn)
    except Conflict as exc:
        _fail(exc.detail, 1)
    except DomainError as exc:
        _fail(exc.detail)
    finally:
        engine.dispose()
    click.echo(f"disabled {endpoint_id}", err=True)


@webhooks.command("rotate")
@click.argument("endpoint_id")
@click.pass_context
def webhooks_rotate(ctx: click.Context, endpoint_id: str) -> None:
    """Give an endpoint a new signing secret, active at once; printed alone on the last line of
    stdout, once. The previous secret keeps signing too (two signatures per delivery) for
    CALLGATE_WEBHOOK_ROTATION_OVERLAP_SECONDS (24 h), so the receiver can switch without losing
    deliveries. Exit 1 if the endpoint is disabled, 2 if unknown."""
    from gateway.audit import AuditBatch
    from gateway.errors import Conflict, DomainError
    from gateway.webhooks.endpoints import rotate_secret
    from gateway.webhooks.secrets import SecretBox

    settings = _settings(ctx)
    box = SecretBox.from_settings(settings)
    engine = _engine(settings)
    try:
        with engine.connect() as conn, conn.begin():
            audit = AuditBatch()
            rotated = rotate_secret(conn, audit, endpoint_id=endpoint_id.strip(), actor=_operator(), box=box,
                                    overlap_seconds=settings.webhook_rotation_overlap_seconds)
            audit.flush(conn)
    except Conflict as exc:
        _fail(exc.detail, 1)
    except DomainError as exc:
        _fail(exc.detail)
    finally:
        engine.dispose()
    until = rotated.endpoint["previous_secret_expires_at"]
    click.echo(f"rotated the secret of webhook {rotated.endpoint['id']}; "
               + (f"the previous one also signs until {until}" if until else "the previous one no longer signs")
               + "\nnew signing secret (shown once; verify deliveries with it):", err=True)
    click.echo(rotated.secret)


@webhooks.command("replay")
@click.argument("message_id")
@click.pass_context
def webhooks_replay(ctx: click.Context, message_id: str) -> None:
    """Send a delivered or failed message again: the same webhook-id and body, a fresh attempt
    budget. Exit 1 if it is still pending or its endpoint is disabled, 2 if unknown."""
    from gateway.audit import AuditBatch
    from gateway.errors import Conflict, DomainError
    from gateway.webhooks.replay import replay_message

    settings = _settings(ctx)
    engine = _engine(settings)
    try:
        with engine.connect() as conn, conn.begin():
            audit = AuditBatch()
            message = replay_message(conn, audit, message_id=message_id.strip(), actor=_operator())
            audit.flush(conn)
    except Conflict as exc:
        _fail(exc.detail, 1)
    except DomainError as exc:
        _fail(exc.detail)
    finally:
        engine.dispose()
    if settings.redis_url:  # have a Celery worker send it now (beat would within CALLGATE_WEBHOOK_POLL_SECONDS)
        from gateway.webhooks.dispatch import send_delivery_task

        send_delivery_task(settings.redis_url, settings.celery_queue)
    click.echo(f"replaying {message['message_id']} to endpoint {message['endpoint_id']} (same webhook-id; "
               f"{message['attempts']} earlier attempt(s))", err=True)


@webhooks.command("deliveries")
@click.option("--endpoint", "endpoint_id", default=None, help="Only this endpoint's messages.")
@click.option("--status", type=click.Choice(["pending", "delivered", "failed"]), default=None,
              help="Only messages in this state.")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="JSON lines (each message with its attempts).")
@click.pass_context
def webhooks_deliveries(ctx: click.Context, endpoint_id: str | None, status: str | None, limit: int,
                        as_json: bool) -> None:
    """Messages, newest first, with their state, attempts and last error."""
    from gateway.webhooks.endpoints import get_endpoint
    from gateway.webhooks.history import list_messages

    engine = _engine(_settings(ctx))
    try:
        with engine.connect() as conn:
            if endpoint_id is not None and get_endpoint(conn, endpoint_id) is None:
                _fail(f"no webhook endpoint {endpoint_id}")
            rows = list_messages(conn, endpoint_id=endpoint_id, status=status, limit=limit)
    finally:
        engine.dispose()
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, ensure_ascii=False))
        return
    if not rows:
        click.echo("no webhook messages", err=True)
        return
    click.echo(f"{'MESSAGE ID':<42}{'ENDPOINT':<21}{'STATUS':<11}{'TRIES':<7}{'CALL ID':<38}LAST ERROR / DELIVERED")
    for r in rows:
        tail = r["delivered_at"] if r["status"] == "delivered" else (r["last_error"] or "-")
        click.echo(f"{r['message_id']:<42}{r['endpoint_id']:<21}{r['status']:<11}{r['attempts']:<7}"
                   f"{str(r['call_id'] or '-'):<38}{str(tail)[:80]}")


# -- policies --------------------------------------------------------------------------------


@main.group("policies")
def policies_group() -> None:
    """Validate and test policy files."""


@policies_group.command("check")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
def policies_check(path: Path) -> None:
    """Validate policy files and run their `tests:` section. Exit 0 ok, 1 test failures, 2 invalid."""
    import policies
    from gateway.policy_store import read_sources

    try:
        policy_set = policies.load_policy_sources(read_sources(path))
        compiled = policies.compile_policy(policy_set)
    except policies.PolicyError as exc:
        _fail(f"invalid policy:\n{exc}")
    failures = policies.run_policy_tests(policy_set)
    for failure in failures:
        click.echo(f"FAIL {failure}")
    click.echo(f"policy {compiled.digest[:12]}: {len(failures)} failing test(s)", err=True)
    raise SystemExit(1 if failures else 0)


if __name__ == "__main__":
    main()

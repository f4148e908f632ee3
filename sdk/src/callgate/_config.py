"""Process-wide configuration and its lifecycle: ``configure()``, ``is_configured()``,
``reset()``, ``flush()``.

One private runtime object holds everything built at configure time (the origin with
its pre-built headers and SSLContext, the pooled client, the circuit breaker, the spool,
the reporter), so no request ever builds a client. ``configure()`` is idempotent:
calling it again with the same options is a no-op; with different options it closes
the old runtime (flushing its reporter briefly) and builds a new one.
"""

from __future__ import annotations

import atexit
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ._circuit import breaker_for
from ._client import GatewayClient
from ._context import install_thread_propagation, uninstall_thread_propagation
from ._reporter import Reporter
from ._spool import Spool, default_spool_dir
from ._transport import Origin
from .errors import ConfigurationError

if TYPE_CHECKING:
    import ssl

__all__ = ["APPROVAL_MODES", "ApprovalMode", "Config", "Runtime", "check_approval_mode", "configure", "flush",
           "is_configured", "reset", "runtime"]

FailMode = Literal["closed", "open"]
ApprovalMode = Literal["wait", "async", "webhook"]
#: ``wait`` blocks until a human decides; ``async`` returns a pending handle at once and long-polls
#: for the decision in the background; ``webhook`` returns a handle and lets the gateway's signed
#: webhook (``callgate.webhooks``) deliver the decision.
APPROVAL_MODES: tuple[ApprovalMode, ...] = ("wait", "async", "webhook")


def check_approval_mode(mode: object) -> ApprovalMode:
    """``mode`` if it is one of :data:`APPROVAL_MODES`, else :class:`ConfigurationError` (never ignored)."""
    if mode not in APPROVAL_MODES:
        raise ConfigurationError(f"approval_mode must be one of {', '.join(map(repr, APPROVAL_MODES))}, "
                                 f"not {mode!r}")
    return mode  # type: ignore[return-value]


class Config:
    """Immutable snapshot of configure()'s options (a plain class: ``dataclasses`` would
    import ``inspect``, ~5-8 ms of import time every agent process would pay)."""

    __slots__ = ("url", "api_key", "agent", "timeout", "connect_timeout", "read_timeout", "fail_mode",
                 "approval_mode", "approval_timeout", "poll_wait", "raise_on_block", "redact", "max_connections",
                 "spool_dir", "exit_flush_timeout", "circuit_threshold", "circuit_reset", "ssl_context",
                 "integrations")

    url: str
    api_key: str | None
    agent: str | None
    timeout: float
    connect_timeout: float
    read_timeout: float
    fail_mode: FailMode
    approval_mode: ApprovalMode
    approval_timeout: float
    poll_wait: int
    raise_on_block: bool | None
    redact: bool
    max_connections: int
    spool_dir: Path
    exit_flush_timeout: float
    circuit_threshold: int
    circuit_reset: float
    ssl_context: ssl.SSLContext | None
    integrations: bool

    def __init__(self, url: str, api_key: str | None, agent: str | None, **options: Any) -> None:
        values = {
            "timeout": 15.0, "connect_timeout": 2.0, "read_timeout": 10.0, "fail_mode": "closed",
            "approval_mode": "wait", "approval_timeout": 900.0, "poll_wait": 25, "raise_on_block": None,
            "redact": True, "max_connections": 32, "spool_dir": None, "exit_flush_timeout": 2.0,
            "circuit_threshold": 5, "circuit_reset": 30.0, "ssl_context": None, "integrations": True,
        }
        unknown = set(options) - set(values)
        if unknown:
            raise TypeError(f"unknown options {sorted(unknown)}")
        values.update(options)
        if values["spool_dir"] is None:
            values["spool_dir"] = default_spool_dir()
        object.__setattr__(self, "url", url)
        object.__setattr__(self, "api_key", api_key)
        object.__setattr__(self, "agent", agent)
        for k, v in values.items():
            object.__setattr__(self, k, v)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Config is immutable; call callgate.configure() again")

    def _astuple(self) -> tuple[Any, ...]:
        return tuple(getattr(self, k) for k in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Config) and self._astuple() == other._astuple()

    def __hash__(self) -> int:
        return hash(self._astuple())

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={'***' if k == 'api_key' and self.api_key else repr(getattr(self, k))}"
                          for k in self.__slots__)
        return f"Config({shown})"


class Runtime:
    """Everything built once per configure()."""

    def __init__(self, config: Config) -> None:
        self.config = config
        try:
            self.origin = Origin(config.url, config.api_key, config.ssl_context)
        except ValueError as e:
            raise ConfigurationError(str(e)) from None
        self.breaker = breaker_for(self.origin.url, config.circuit_threshold, config.circuit_reset)
        self.client = GatewayClient(self.origin, self.breaker, connect_timeout=config.connect_timeout,
                                    read_timeout=config.read_timeout, max_connections=config.max_connections)
        self.spool = Spool(config.spool_dir, config.agent)
        self.reporter = Reporter(self.client, self.spool)

    def close(self, flush_timeout: float) -> None:
        from . import _pending

        _pending.runtime_closed(self)  # handles waiting through this runtime can no longer resolve
        self.reporter.close(flush_timeout)
        self.client.close()
        import sys

        if "callgate._aio" in sys.modules:
            sys.modules["callgate._aio"].close_all()


_lock = threading.RLock()
_runtime: Runtime | None = None
_atexit_registered = False



def configure(
    url: str | None = None,
    api_key: str | None = None,
    agent: str | None = None,
    *,
    timeout: float = 15.0,
    connect_timeout: float = 2.0,
    read_timeout: float = 10.0,
    fail_mode: FailMode = "closed",
    approval_mode: ApprovalMode = "wait",
    approval_timeout: float = 900.0,
    raise_on_block: bool | None = None,
    redact: bool = True,
    max_connections: int = 32,
    spool_dir: str | os.PathLike[str] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    integrations: bool = True,
) -> None:
    """Point this process at a callgate gateway. Cheap (no network), idempotent.

    ``url``/``api_key``/``agent`` fall back to ``CALLGATE_URL``, ``CALLGATE_API_KEY``,
    ``CALLGATE_AGENT``. ``timeout`` is the decision deadline for an automatic decision,
    retries included. ``fail_mode="closed"`` (default) never runs a tool without a
    decision; per-guard ``fail_open=True`` is the opt-in for read-only tools, and
    ``CALLGATE_SDK_FORCE_FAIL_CLOSED=1`` overrides every opt-in. ``approval_timeout``
    bounds how long a call waits for a human before it is treated as expired (denied).
    ``approval_mode`` is what a call that needs a human does (per call: ``guard(approval_mode=)``,
    ``check_call(approval_mode=)``): ``"wait"`` blocks until decided; ``"async"`` returns a
    :class:`callgate.PendingApproval` at once and waits in the background; ``"webhook"`` returns
    one that the gateway's signed webhook resolves (see :mod:`callgate.webhooks`).
    ``raise_on_block``: by default (``None``) a blocked/denied *guarded function* raises, while a
    framework tool call (LangChain, CrewAI, Agents SDK) returns the reason to the model in the
    framework's own tool-error shape so the run continues. ``True`` makes both raise; ``False``
    makes a guarded function return the reason as a string too.
    """
    url = url or os.environ.get("CALLGATE_URL")
    if not url:
        raise ConfigurationError("no gateway url: pass configure(url=...) or set CALLGATE_URL")
    api_key = api_key or os.environ.get("CALLGATE_API_KEY") or None
    agent = agent or os.environ.get("CALLGATE_AGENT") or None
    if fail_mode not in ("closed", "open"):
        raise ConfigurationError(f"fail_mode must be 'closed' or 'open', not {fail_mode!r}")
    check_approval_mode(approval_mode)
    for name, value in (("timeout", timeout), ("connect_timeout", connect_timeout),
                        ("read_timeout", read_timeout), ("approval_timeout", approval_timeout)):
        if not value > 0:
            raise ConfigurationError(f"{name} must be > 0, not {value!r}")
    if max_connections < 1:
        raise ConfigurationError("max_connections must be >= 1")
    config = Config(
        url=url, api_key=api_key, agent=agent, timeout=float(timeout), connect_timeout=float(connect_timeout),
        read_timeout=float(read_timeout), fail_mode=fail_mode, approval_mode=approval_mode,
        approval_timeout=float(approval_timeout), raise_on_block=raise_on_block, redact=redact,
        max_connections=max_connections,
        spool_dir=Path(spool_dir) if spool_dir is not None else default_spool_dir(),
        ssl_context=ssl_context, integrations=integrations,
    )
    global _runtime, _atexit_registered
    with _lock:
        old = _runtime
        if old is not None and old.config == config:
            return
        new = Runtime(config)  # may raise ConfigurationError: the old runtime stays in place
        _runtime = new
        if old is not None:
            old.close(flush_timeout=1.0)
        install_thread_propagation()
        if integrations:
            from . import integrations as _integrations

            _integrations.install_all()
        if not _atexit_registered:
            atexit.register(_at_exit)
            _atexit_registered = True
        if new.reporter.spool_dirty:
            new.reporter.wake()  # upload what a previous process spooled


def is_configured() -> bool:
    return _runtime is not None


def runtime() -> Runtime:
    rt = _runtime
    if rt is None:
        raise ConfigurationError("callgate is not configured: call callgate.configure() (or set CALLGATE_URL "
                                 "and call it with no arguments)")
    return rt


def flush(timeout: float | None = 5.0) -> bool:
    """Deliver queued outcome reports, LLM usage and the spool now; True if all went out."""
    rt = _runtime
    return True if rt is None else rt.reporter.flush(timeout)


def reset() -> None:
    """Forget the configuration and undo every patch (for tests). Pending reports are
    flushed briefly, then spooled."""
    global _runtime
    with _lock:
        old, _runtime = _runtime, None
        if old is not None:
            old.close(flush_timeout=1.0)
            if old.config.integrations:
                from . import integrations as _integrations

                _integrations.uninstall_all()
        uninstall_thread_propagation()
        from ._circuit import reset_breakers

        reset_breakers()


def _at_exit() -> None:
    rt = _runtime
    if rt is not None:
        try:
            rt.reporter.close(rt.config.exit_flush_timeout)
        except Exception:  # noqa: BLE001 - never fail interpreter shutdown
            pass

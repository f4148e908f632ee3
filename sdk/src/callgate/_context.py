"""Session context: ``callgate.session(id)`` and its propagation into tasks and threads.

The session id lives in a ContextVar, so asyncio tasks inherit it for free. Threads do
not inherit context in Python < 3.14, so ``configure()`` installs (and ``reset()``
removes) a light wrapt patch on ``threading.Thread.start/run`` and
``ThreadPoolExecutor.submit`` that carries the *creating* context into the new thread
or work item -- the approach of OpenTelemetry's threading instrumentation. Frameworks
that run sync tools on thread pools (LangChain, CrewAI) therefore see the session.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["current_session", "install_thread_propagation", "session", "uninstall_thread_propagation"]

F = TypeVar("F", bound=Callable[..., Any])

_SESSION: contextvars.ContextVar[str | None] = contextvars.ContextVar("callgate_session", default=None)


def current_session() -> str | None:
    """The session id calls made here are grouped under (None outside any session)."""
    return _SESSION.get()


class session:  # noqa: N801 - used like a function: `with callgate.session("s1"):`
    """Group calls under a session id: a context manager and a decorator (sync and async).

    Nestable: the innermost session wins and the outer one is restored on exit. As a
    decorator the session is entered each time the function runs (for a coroutine
    function: when the coroutine runs, not when it is created).
    """

    __slots__ = ("session_id", "_tokens")

    def __init__(self, session_id: str) -> None:
        if not isinstance(session_id, str) or not session_id:
            raise ValueError("session id must be a non-empty string")
        self.session_id = session_id
        self._tokens: list[contextvars.Token[str | None]] = []

    def __enter__(self) -> str:
        self._tokens.append(_SESSION.set(self.session_id))
        return self.session_id

    def __exit__(self, *exc: object) -> None:
        _SESSION.reset(self._tokens.pop())

    async def __aenter__(self) -> str:
        return self.__enter__()

    async def __aexit__(self, *exc: object) -> None:
        self.__exit__()

    def __call__(self, fn: F) -> F:
        import inspect

        import wrapt

        sid = self.session_id
        if inspect.iscoroutinefunction(fn):

            async def _arun(wrapped: Any, args: Any, kwargs: Any) -> Any:
                token = _SESSION.set(sid)
                try:
                    return await wrapped(*args, **kwargs)
                finally:
                    _SESSION.reset(token)

            @wrapt.decorator
            def _awrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
                return _arun(wrapped, args, kwargs)

            return _awrapper(fn)  # type: ignore[no-any-return]

        @wrapt.decorator
        def _wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            token = _SESSION.set(sid)
            try:
                return wrapped(*args, **kwargs)
            finally:
                _SESSION.reset(token)

        return _wrapper(fn)  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"callgate.session({self.session_id!r})"


# -- thread propagation ------------------------------------------------------------------
_installed = False
_install_lock = threading.Lock()
_CTX_ATTR = "_callgate_context"


def _thread_start(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    ctx = contextvars.copy_context()
    try:
        owner = next(c for c in type(instance).__mro__ if "run" in c.__dict__)
        if owner is threading.Thread:
            setattr(instance, _CTX_ATTR, ctx)  # plain Thread(target=...): the patched run() enters it
        else:
            # A subclass overrides run(): shadow it on the instance so it runs in the context.
            own_run = instance.run
            instance.run = lambda: ctx.run(own_run)
    except Exception:  # noqa: BLE001 - never break thread creation (e.g. __slots__ subclasses)
        pass
    return wrapped(*args, **kwargs)


def _thread_run(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    ctx = getattr(instance, _CTX_ATTR, None)
    if ctx is None:
        return wrapped(*args, **kwargs)
    try:
        delattr(instance, _CTX_ATTR)  # one context, one run
    except AttributeError:  # pragma: no cover
        pass
    return ctx.run(wrapped, *args, **kwargs)


def _executor_submit(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    def _bind(fn: Callable[..., Any], *a: Any, **kw: Any) -> Any:
        ctx = contextvars.copy_context()
        return wrapped(ctx.run, fn, *a, **kw)

    return _bind(*args, **kwargs)


def install_thread_propagation() -> None:
    """Idempotent: wrap Thread.start/run and ThreadPoolExecutor.submit."""
    global _installed
    with _install_lock:
        if _installed:
            return
        import concurrent.futures.thread

        import wrapt

        wrapt.wrap_function_wrapper(threading.Thread, "start", _thread_start)
        wrapt.wrap_function_wrapper(threading.Thread, "run", _thread_run)
        wrapt.wrap_function_wrapper(concurrent.futures.thread.ThreadPoolExecutor, "submit", _executor_submit)
        _installed = True


def uninstall_thread_propagation() -> None:
    """Undo :func:`install_thread_propagation` (paired, same order)."""
    global _installed
    with _install_lock:
        if not _installed:
            return
        import concurrent.futures.thread

        _unwrap(threading.Thread, "start")
        _unwrap(threading.Thread, "run")
        _unwrap(concurrent.futures.thread.ThreadPoolExecutor, "submit")
        _installed = False


def _unwrap(owner: Any, attr: str) -> None:
    current = owner.__dict__.get(attr)
    original = getattr(current, "__wrapped__", None)
    if original is not None:
        setattr(owner, attr, original)

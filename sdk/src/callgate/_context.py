"""Session context: ``callgate.session(id)`` and its propagation into tasks and threads.

The session id lives in a ContextVar, so asyncio tasks inherit it for free. Threads do
not inherit context in Python < 3.14, so ``configure()`` installs (and ``reset()``
removes) a light patch on ``threading.Thread.start/run`` and
``ThreadPoolExecutor.submit`` that carries the *creating* context into the new thread
or work item -- the approach of OpenTelemetry's threading instrumentation. Frameworks
that run sync tools on thread pools (LangChain, CrewAI) therefore see the session.

The patch is three plain functions, not wrapt: ``configure()`` runs in every agent process
at start-up and importing wrapt costs ~60 ms there (it imports asyncio), more than the rest
of callgate. Plain functions are enough for methods of two stdlib classes.
"""

from __future__ import annotations

import contextvars
import functools
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
_install_lock = threading.Lock()
_active = False  # read by the patched methods: False makes them call straight through
_CTX_ATTR = "_callgate_context"
#: (owner class, method name) -> our replacement, kept for the life of the process (see _unpatch)
_patches: dict[tuple[type, str], Callable[..., Any]] = {}


def _make_start(original: Callable[..., Any]) -> Callable[..., Any]:
    def start(self: threading.Thread, *args: Any, **kwargs: Any) -> Any:
        if _active:
            _capture_context(self)
        return original(self, *args, **kwargs)

    return start


def _capture_context(thread: threading.Thread) -> None:
    ctx = contextvars.copy_context()
    try:
        owner = next(c for c in type(thread).__mro__ if "run" in c.__dict__)
        if owner is threading.Thread:
            setattr(thread, _CTX_ATTR, ctx)  # plain Thread(target=...): the patched run() enters it
        else:
            # A subclass overrides run(): shadow it on the instance so it runs in the context.
            own_run = thread.run
            thread.run = lambda: ctx.run(own_run)  # type: ignore[method-assign]
    except Exception:  # noqa: BLE001 - never break thread creation (e.g. __slots__ subclasses)
        pass


def _make_run(original: Callable[..., Any]) -> Callable[..., Any]:
    def run(self: threading.Thread, *args: Any, **kwargs: Any) -> Any:
        ctx = getattr(self, _CTX_ATTR, None)
        if ctx is None:
            return original(self, *args, **kwargs)
        try:
            delattr(self, _CTX_ATTR)  # one context, one run
        except AttributeError:  # pragma: no cover
            pass
        return ctx.run(original, self, *args, **kwargs)

    return run


def _make_submit(original: Callable[..., Any]) -> Callable[..., Any]:
    def submit(self: Any, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        if not _active:
            return original(self, fn, *args, **kwargs)
        return original(self, contextvars.copy_context().run, fn, *args, **kwargs)

    return submit


def install_thread_propagation() -> None:
    """Idempotent: patch Thread.start/run and ThreadPoolExecutor.submit (imports no third-party module)."""
    global _active
    with _install_lock:
        if _active:
            return
        import concurrent.futures.thread

        _patch(threading.Thread, "start", _make_start)
        _patch(threading.Thread, "run", _make_run)
        _patch(concurrent.futures.thread.ThreadPoolExecutor, "submit", _make_submit)
        _active = True


def uninstall_thread_propagation() -> None:
    """Undo :func:`install_thread_propagation` (paired, same order)."""
    global _active
    with _install_lock:
        if not _active:
            return
        _active = False
        import concurrent.futures.thread

        _unpatch(threading.Thread, "start")
        _unpatch(threading.Thread, "run")
        _unpatch(concurrent.futures.thread.ThreadPoolExecutor, "submit")


def _chain(owner: type, name: str) -> list[Any]:
    """The method and what it wraps, outermost first (through ``__wrapped__``, bounded)."""
    found: list[Any] = [owner.__dict__.get(name)]
    while len(found) < 16 and getattr(found[-1], "__wrapped__", None) is not None:
        found.append(found[-1].__wrapped__)
    return found


def _patch(owner: type, name: str, make: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    ours = _patches.get((owner, name))
    if ours is not None and any(f is ours for f in _chain(owner, name)):
        return  # still in place (under another library's wrapper): reactivated by _active
    original = owner.__dict__[name]
    replacement = functools.update_wrapper(make(original), original)  # __wrapped__, name, doc, signature
    _patches[(owner, name)] = replacement
    setattr(owner, name, replacement)


def _unpatch(owner: type, name: str) -> None:
    """Restore the original when ours is the outermost layer. When another library wrapped over
    ours since (OpenTelemetry's threading instrumentation, say), removing ours from the middle
    would break theirs: it stays, calling straight through while inactive."""
    ours = _patches.get((owner, name))
    if ours is not None and owner.__dict__.get(name) is ours:
        setattr(owner, name, getattr(ours, "__wrapped__"))  # set by functools.update_wrapper in _patch
        del _patches[(owner, name)]

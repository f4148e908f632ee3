"""LLM token usage capture: :func:`record_usage` (public alias ``callgate.log_usage``).

Framework integrations call :func:`record_usage` once for every LLM call they observe; a
custom agent loop calls ``callgate.log_usage`` itself. The gateway prices each event with
genai-prices' bundled snapshot and stores it next to the session's tool calls.

Why it is built this way (performance.md P8: nothing on the LLM call's path beyond an
in-memory append):

* The caller's thread does only ``time.time()``, one ContextVar read and a
  ``deque.append`` of the raw arguments. Validation, id assignment, batching, the HTTP
  upload and the spool all happen on the reporter's background thread
  (:mod:`callgate._reporter`), so the cost of a call is a microsecond or two and it can
  never block, do I/O or raise.
* Each event gets a UUIDv7 when the background thread first puts it into a batch; the id
  then travels with the batch through retries and the spool, and the gateway is idempotent
  on it, so a retried or re-uploaded batch never double counts.

Token semantics (the same as OpenAI, LangChain ``usage_metadata`` and genai-prices):

* ``input_tokens`` is the **total** prompt size: it *includes* ``cache_read_tokens`` and
  ``cache_write_tokens``. Anthropic's raw API reports ``input_tokens`` *excluding* both, so
  for a raw Anthropic response pass
  ``input_tokens=u.input_tokens + u.cache_read_input_tokens + u.cache_creation_input_tokens``
  (LangChain's ``ChatAnthropic`` already reports the total).
* ``output_tokens`` is the total completion size: it *includes* ``reasoning_tokens``
  (as OpenAI's ``completion_tokens`` and LangChain's ``output_tokens`` do).

Bad values (decided once, applied on the background thread, logged at WARNING the first
time each kind of problem is seen and at DEBUG afterwards; see :func:`normalize`):

* a token count of ``None`` means "not reported" and counts as 0; an integral ``float``
  (``12.0``) is accepted as ``12``;
* an event is **dropped** when its model is not a usable string or a count is negative,
  fractional, not a number, a ``bool``, larger than :data:`MAX_TOKENS`, or inconsistent
  (cache reads + writes > input, reasoning > output): there is no right number to guess,
  and the gateway would reject the whole batch for it;
* a session id the gateway cannot accept (longer than 128 characters or not printable
  ASCII) is dropped from the event, which is still recorded for the agent; an invalid
  ``provider`` or ``framework`` is likewise recorded as unknown.

When callgate is not configured, :func:`record_usage` does nothing (usage without a
gateway has nowhere to go). Events still in memory when the process exits are flushed by
the at-exit hook, or written to the spool and uploaded by the next process.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from . import _config
from ._context import _SESSION

__all__ = ["MAX_EVENTS_PER_BATCH", "MAX_TOKENS", "UsageEvent", "log_usage", "normalize", "record_usage"]

log = logging.getLogger("callgate")

#: Upper bound of every token count of one LLM call (the gateway enforces the same bound).
MAX_TOKENS = 1_000_000_000
#: The most events ``POST /v1/usage`` accepts in one request.
MAX_EVENTS_PER_BATCH = 1000

# The gateway's patterns (gateway/schemas.py), so that a batch the SDK sends is never rejected.
_MODEL_RE = re.compile(r"[^\x00-\x1f\x7f]{1,256}")
_PROVIDER_RE = re.compile(r"[\x21-\x7e]{1,64}")
_FRAMEWORK_RE = re.compile(r"[a-z0-9_.-]{1,64}")
_SESSION_RE = re.compile(r"[\x21-\x7e]{1,128}")

# Bound once: each saves an attribute lookup on every LLM call.
_now = time.time
_current_session = _SESSION.get

#: The raw arguments of one record_usage() call, as appended on the caller's thread:
#: (unix time, agent-side session, model, provider, framework, input, output, cache_read,
#: cache_write, reasoning). Kept a plain tuple: the cheapest thing to build and append.
RawUsage = tuple[float, Any, Any, Any, Any, Any, Any, Any, Any, Any]
#: A validated event without id/ts (the background thread adds those): the wire fields.
UsageEvent = dict[str, Any]


def record_usage(
    model: str,
    input_tokens: int,
    output_tokens: int,
    *,
    cache_read_tokens: int = 0,
    cache_write_tokens: int = 0,
    reasoning_tokens: int = 0,
    provider: str | None = None,
    framework: str | None = None,
    session_id: str | None = None,
) -> None:
    """Record the token usage of one LLM call; the gateway prices and stores it.

    ``input_tokens`` includes cache reads and writes, ``output_tokens`` includes reasoning
    tokens (see the module docstring). ``session_id`` defaults to the current
    ``callgate.session``; the agent is always the configured one (the API key's agent).

    Cheap and safe on any thread or event loop: an in-memory append, no I/O, never
    raises. A no-op when callgate is not configured.
    """
    try:
        rt = _config._runtime
        if rt is None:
            return
        rt.reporter.submit_usage((
            _now(), _current_session() if session_id is None else session_id, model, provider, framework,
            input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens,
        ))
    except Exception:  # noqa: BLE001 - usage capture must never break the agent
        log.debug("callgate: record_usage failed", exc_info=True)


#: Public name for custom agent loops: ``callgate.log_usage(model, input_tokens, output_tokens, ...)``.
log_usage = record_usage


def _count(value: Any) -> int | str:
    """A token count as an int, or the reason it is unusable."""
    if value is None:
        return 0
    if isinstance(value, bool):
        return "is a bool"
    if isinstance(value, int):
        n = value
    elif isinstance(value, float):
        if not value.is_integer():
            return "is not a whole number"
        n = int(value)
    else:
        return f"is a {type(value).__name__}, not an int"
    if n < 0:
        return "is negative"
    if n > MAX_TOKENS:
        return f"exceeds {MAX_TOKENS}"
    return n


def _label(value: Any, pattern: re.Pattern[str]) -> str | None:
    """An optional label (provider, framework, session) if the gateway accepts it, else None."""
    if isinstance(value, str) and pattern.fullmatch(value):
        return value
    return None


_warned: set[str] = set()


def _drop(kind: str, message: str) -> None:
    if kind in _warned:
        log.debug("callgate: usage event dropped: %s", message)
    else:
        _warned.add(kind)
        log.warning("callgate: usage event dropped: %s (further drops of this kind are logged at DEBUG)", message)


def _note(kind: str, message: str) -> None:
    if kind in _warned:
        log.debug("callgate: usage event: %s", message)
    else:
        _warned.add(kind)
        log.warning("callgate: usage event: %s (further notes of this kind are logged at DEBUG)", message)


def normalize(raw: RawUsage) -> UsageEvent | None:
    """Validate and coerce one raw record (background thread). None when it is dropped."""
    _ts, session, model, provider, framework, *counts = raw
    if isinstance(model, str):
        model = model.strip()
    if not isinstance(model, str) or not _MODEL_RE.fullmatch(model):
        _drop("model", f"model must be a non-empty string of at most 256 printable characters, got {model!r:.80}")
        return None
    names = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens")
    values: list[int] = []
    for name, value in zip(names, counts, strict=True):
        n = _count(value)
        if isinstance(n, str):
            _drop(f"count:{n}", f"{name} {n} (model {model!r})")
            return None
        values.append(n)
    inp, out, cache_read, cache_write, reasoning = values
    if cache_read + cache_write > inp:
        _drop("cache>input", f"cache_read_tokens + cache_write_tokens ({cache_read + cache_write}) exceed "
                             f"input_tokens ({inp}) for model {model!r}; input_tokens must include cached tokens")
        return None
    if reasoning > out:
        _drop("reasoning>output", f"reasoning_tokens ({reasoning}) exceed output_tokens ({out}) for model "
                                  f"{model!r}; output_tokens must include reasoning tokens")
        return None
    sid = _label(session, _SESSION_RE)
    if sid is None and session is not None:
        _note("session", f"session id {session!r:.80} is not 1-128 printable ASCII characters; recorded without it")
    prov = _label(provider.strip().lower() if isinstance(provider, str) else provider, _PROVIDER_RE)
    if prov is None and provider not in (None, ""):
        _note("provider", f"provider {provider!r:.80} is not 1-64 printable ASCII characters; recorded as unknown")
    fw = _label(framework, _FRAMEWORK_RE)
    if fw is None and framework not in (None, ""):
        _note("framework", f"framework {framework!r:.80} does not match [a-z0-9_.-]{{1,64}}; recorded as unknown")
    return {
        "session_id": sid, "model": model, "provider": prov, "framework": fw,
        "input_tokens": inp, "output_tokens": out, "cache_read_tokens": cache_read,
        "cache_write_tokens": cache_write, "reasoning_tokens": reasoning,
    }

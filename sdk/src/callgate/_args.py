"""Turn a Python call into the JSON ``args`` object the gateway sees.

Policies address arguments by parameter name (``arg: customer_id``), so positional
arguments are bound to names through the function's signature. Values are made
JSON-safe without ever raising: unknown objects become a short ``repr``-like string,
NaN/inf become strings (the gateway rejects them), cycles and depth > 32 are cut.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import inspect

__all__ = ["bind_arguments", "to_jsonable"]

_MAX_DEPTH = 32
_MAX_REPR = 1000


def to_jsonable(value: Any, _depth: int = 0, _seen: frozenset[int] = frozenset()) -> Any:
    """A JSON-compatible copy of ``value`` (never raises)."""
    if value is None or value is True or value is False or type(value) is str:
        return value
    if type(value) is int:
        return value
    if type(value) is float:
        return value if math.isfinite(value) else repr(value)
    if _depth >= _MAX_DEPTH:
        return "[max depth]"
    try:
        if isinstance(value, Mapping):
            if id(value) in _seen:
                return "[cycle]"
            seen = _seen | {id(value)}
            return {k if isinstance(k, str) else _key(k): to_jsonable(v, _depth + 1, seen) for k, v in value.items()}
        if isinstance(value, (list, tuple, set, frozenset)):
            if id(value) in _seen:
                return "[cycle]"
            seen = _seen | {id(value)}
            items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
            return [to_jsonable(v, _depth + 1, seen) for v in items]
        if isinstance(value, bool):
            return bool(value)
        if isinstance(value, int):
            return int(value)
        if isinstance(value, float):
            return float(value) if math.isfinite(value) else repr(float(value))
        if isinstance(value, str):
            return str(value)
        if isinstance(value, (bytes, bytearray, memoryview)):
            return _short(repr(bytes(value)))
        dump = getattr(value, "model_dump", None)  # pydantic v2 models, duck-typed (no import)
        if callable(dump) and not isinstance(value, type):
            return to_jsonable(dump(mode="json"), _depth + 1, _seen | {id(value)})
        fields = getattr(value, "__dataclass_fields__", None)
        if fields is not None and not isinstance(value, type):
            return {name: to_jsonable(getattr(value, name, None), _depth + 1, _seen | {id(value)})
                    for name in fields}
        iso = getattr(value, "isoformat", None)  # datetime/date/time
        if callable(iso):
            return str(iso())
        return _short(repr(value))
    except Exception:  # noqa: BLE001 - a hostile __repr__/__iter__ must not break the call
        try:
            return f"<{type(value).__qualname__}>"
        except Exception:  # noqa: BLE001  # pragma: no cover
            return "<unrepresentable>"


def _key(k: Any) -> str:
    if isinstance(k, (int, float, bool)) or k is None:
        return str(k).lower() if isinstance(k, bool) or k is None else str(k)
    return _short(repr(k))


def _short(s: str) -> str:
    return s if len(s) <= _MAX_REPR else s[:_MAX_REPR] + "...[repr truncated]"


def bind_arguments(sig: inspect.Signature | None, args: tuple[Any, ...], kwargs: dict[str, Any],
                   *, drop_first: bool = False) -> dict[str, Any]:
    """Map a call's arguments to parameter names.

    ``*args`` become a list under the parameter's name, ``**kwargs`` are merged in
    (declared names win), ``drop_first`` drops the bound ``self``/``cls``. Calls that do
    not bind (the function will raise TypeError itself) are sent as ``{"args", "kwargs"}``.
    """
    import inspect  # lazy: keeps `import callgate` light; a dict lookup once loaded

    if sig is None:
        return {"args": list(args), "kwargs": dict(kwargs)} if args else dict(kwargs)
    try:
        bound = sig.bind(*args, **kwargs)
    except TypeError:
        return {"args": list(args[1:] if drop_first else args), "kwargs": dict(kwargs)}
    out: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    params = sig.parameters
    for i, (name, value) in enumerate(bound.arguments.items()):
        if i == 0 and drop_first:
            continue
        kind = params[name].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            extra = dict(value)
        elif kind is inspect.Parameter.VAR_POSITIONAL:
            out[name] = list(value)
        else:
            out[name] = value
    for k, v in extra.items():
        out.setdefault(k, v)
    return out

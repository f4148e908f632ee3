"""Reading provider responses without importing the provider SDKs.

openai's and anthropic's response objects are pydantic models; a compatible client (a proxy, a
test double, ``with_raw_response`` parsed by hand) may hand back plain dicts. Both are read the
same way here, so the loops work with either and import neither SDK.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["field", "to_dict", "token_count"]


def field(obj: Any, name: str, default: Any = None) -> Any:
    """``obj.name`` or ``obj[name]``; ``default`` when absent or None."""
    if obj is None:
        return default
    if isinstance(obj, Mapping):
        value = obj.get(name)
    else:
        value = getattr(obj, name, None)
    return default if value is None else value


def to_dict(obj: Any) -> dict[str, Any]:
    """A response part as the JSON-able dict the provider accepts back in a request: only the
    fields the provider actually sent (``exclude_unset``), under their wire names."""
    if isinstance(obj, Mapping):
        return dict(obj)
    # Serializer warnings are off: the part is what the provider sent (the SDKs build response
    # models without validation), and a model's malformed output is the loop's to answer, not to warn about.
    to = getattr(obj, "to_dict", None)  # openai/anthropic BaseModel: exclude_unset, API names
    if callable(to):
        return dict(to(mode="json", warnings=False))
    dump = getattr(obj, "model_dump", None)
    if callable(dump):
        return dict(dump(mode="json", by_alias=True, exclude_unset=True, warnings=False))
    raise TypeError(f"cannot read a {type(obj).__name__} as a message part")


def token_count(value: Any) -> int | None:
    """A token count as the provider reported it: an int (never a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value

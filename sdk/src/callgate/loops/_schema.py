"""JSON Schema for a Python function's parameters, so a plain function can be offered to a model.

Deliberately small: the types a tool signature actually uses (``str``, ``int``, ``float``, ``bool``,
``None``, ``list[X]``, ``dict[str, X]``, ``X | None``, ``Literal[...]``, ``Enum``s,
``Annotated[X, "description"]``, and pydantic models through their own ``model_json_schema()``).
Anything else becomes ``{}`` ("any value"): the model is then told nothing about it, which is
honest, where guessing would be wrong. A tool that needs a precise schema passes one explicitly
(``tools={"name": (schema, fn)}``).
"""

from __future__ import annotations

import collections.abc
import enum
import inspect
import types
import typing
from collections.abc import Callable
from typing import Any

__all__ = ["annotation_schema", "parameters_schema"]

_ARRAYS = (
    list,
    set,
    frozenset,
    tuple,
    collections.abc.Sequence,
    collections.abc.Set,
    collections.abc.MutableSequence,
    collections.abc.MutableSet,
    collections.abc.Iterable,
)
_OBJECTS = (dict, collections.abc.Mapping, collections.abc.MutableMapping)
_JSON_PRIMITIVES = (str, int, float, bool, type(None))


def annotation_schema(annotation: Any) -> dict[str, Any]:
    """The JSON Schema of one parameter annotation (``{}`` when it cannot be told)."""
    if annotation is inspect.Parameter.empty or annotation is Any or isinstance(annotation, str):
        return {}
    if annotation is None or annotation is type(None):
        return {"type": "null"}
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        inner = annotation_schema(args[0])
        notes = [a for a in args[1:] if isinstance(a, str)]
        return {**inner, "description": notes[0]} if notes else inner
    if origin is typing.Union or origin is types.UnionType:
        options = [annotation_schema(a) for a in args]
        return options[0] if len(options) == 1 else {"anyOf": options}
    if origin is typing.Literal:
        values = list(args)
        kinds = {_primitive_type(v) for v in values}
        schema: dict[str, Any] = {"enum": values}
        if len(kinds) == 1 and None not in kinds:
            schema["type"] = kinds.pop()
        return schema
    if origin is not None:
        if origin in _OBJECTS:
            return {
                "type": "object",
                **({"additionalProperties": annotation_schema(args[1])} if len(args) == 2 else {}),
            }
        if origin in _ARRAYS:
            if origin is tuple:  # only tuple[X, ...] has one item type
                item = args[0] if len(args) == 2 and args[1] is Ellipsis else None
            else:
                item = args[0] if args else None
            return {"type": "array", **({"items": annotation_schema(item)} if item is not None else {})}
        return {}
    if isinstance(annotation, type):
        return _class_schema(annotation)
    return {}


def _class_schema(cls: type) -> dict[str, Any]:
    if issubclass(cls, enum.Enum):
        return {"enum": [member.value for member in cls]}
    if issubclass(cls, bool):  # before int: bool is an int
        return {"type": "boolean"}
    if issubclass(cls, int):
        return {"type": "integer"}
    if issubclass(cls, float):
        return {"type": "number"}
    if issubclass(cls, str):
        return {"type": "string"}
    if issubclass(cls, _OBJECTS):
        return {"type": "object"}
    if issubclass(cls, (list, set, frozenset, tuple)):
        return {"type": "array"}
    model_schema = getattr(cls, "model_json_schema", None)  # a pydantic model, duck-typed
    if callable(model_schema):
        try:
            return dict(model_schema())
        except Exception:  # noqa: BLE001 - an unschemable model is "any value", not a crash
            return {}
    return {}


def _primitive_type(value: Any) -> str | None:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return None


def parameters_schema(signature: inspect.Signature | None) -> dict[str, Any]:
    """The ``{"type": "object", ...}`` schema of a signature's keyword-passable parameters.

    Tools are called with keyword arguments (the model sends an object), so positional-only
    parameters and ``*args`` are not offered; ``**kwargs`` allows extra properties.
    """
    properties: dict[str, Any] = {}
    required: list[str] = []
    extra = False
    for param in signature.parameters.values() if signature is not None else ():
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            extra = True
            continue
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.POSITIONAL_ONLY):
            continue
        schema = annotation_schema(param.annotation)
        if param.default is inspect.Parameter.empty:
            required.append(param.name)
        elif isinstance(param.default, _JSON_PRIMITIVES):
            schema = {**schema, "default": param.default}
        properties[param.name] = schema
    schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    if signature is None or extra:
        schema["additionalProperties"] = True
    return schema


def signature_of(fn: Callable[..., Any]) -> inspect.Signature | None:
    """``fn``'s signature with string annotations resolved where possible; None when it has none
    that Python can tell (some builtins)."""
    try:
        return inspect.signature(fn, eval_str=True)
    except (NameError, TypeError, SyntaxError):
        pass  # an annotation that does not evaluate: keep the strings (schema {}), not the failure
    except ValueError:
        return None
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):
        return None

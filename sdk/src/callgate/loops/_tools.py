"""The tools a loop offers the model: name -> Python function, with the schema the model is shown.

``tools`` is a mapping. A value is either the function itself (its parameters' JSON Schema is
derived from its signature and its docstring becomes the description) or ``(schema, function)``
where ``schema`` is the parameters' JSON Schema, or a complete tool definition in the provider's
own format (OpenAI ``{"type": "function", "function": {...}}`` or Anthropic
``{"name", "description", "input_schema"}``), used as given.

The mapping's key is the tool's name everywhere: in what the model is shown, in the gateway's
policy lookup, and in the audit log.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeAlias

from ._schema import parameters_schema, signature_of

__all__ = ["Tool", "ToolSpec", "build_tools"]

#: What a ``tools`` mapping value may be: a function, or ``(schema, function)``.
ToolSpec: TypeAlias = "Callable[..., Any] | tuple[Mapping[str, Any], Callable[..., Any]]"


class Tool:
    """One tool: the function the loop runs once the gateway permits it, and how it is described."""

    __slots__ = ("name", "fn", "description", "parameters", "signature", "is_async")

    def __init__(
        self, name: str, fn: Callable[..., Any], description: str | None, parameters: Mapping[str, Any]
    ) -> None:
        self.name = name
        self.fn = fn
        self.description = description
        self.parameters = dict(parameters)
        self.signature = signature_of(fn)
        # a coroutine function, or an object whose class defines ``async def __call__``
        self.is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(type(fn), "__call__", None)
        )

    def bind_error(self, arguments: Mapping[str, Any]) -> str | None:
        """Why ``fn(**arguments)`` cannot be called (missing or unexpected arguments), or None.

        Checked before the gateway is asked, so a malformed call is answered to the model at once
        and never recorded as a call that could have run."""
        if self.signature is None:
            return None
        try:
            self.signature.bind(**arguments)
        except TypeError as e:
            return str(e)
        return None

    def __repr__(self) -> str:
        return f"Tool({self.name!r}, {getattr(self.fn, '__qualname__', self.fn)!r})"


def build_tools(tools: Mapping[str, Any] | None) -> dict[str, Tool]:
    """Validate a ``tools`` mapping once, before the first model call (a mistake here is the
    developer's, so it raises ``TypeError``/``ValueError`` instead of reaching the model)."""
    if tools is None:
        return {}
    if not isinstance(tools, Mapping):
        raise TypeError(
            f"tools must be a mapping of name -> function or (schema, function), not {type(tools).__name__}"
        )
    out: dict[str, Tool] = {}
    for name, spec in tools.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"tool names must be non-empty strings, got {name!r}")
        out[name] = _tool(name, spec)
    return out


def _tool(name: str, spec: Any) -> Tool:
    if isinstance(spec, tuple):
        if len(spec) != 2 or not isinstance(spec[0], Mapping) or not callable(spec[1]):
            raise TypeError(f"tool {name!r}: expected (schema: dict, function), got {spec!r:.200}")
        schema, fn = spec
        description, parameters = _explicit_schema(name, schema)
        return Tool(name, fn, description if description is not None else _doc(fn), parameters)
    if not callable(spec):
        raise TypeError(
            f"tool {name!r}: expected a function or (schema, function), got {type(spec).__name__}"
        )
    return Tool(name, spec, _doc(spec), parameters_schema(signature_of(spec)))


def _explicit_schema(name: str, schema: Mapping[str, Any]) -> tuple[str | None, Mapping[str, Any]]:
    """(description, parameters) from a parameters schema or a provider's complete tool definition."""
    function = schema.get("function")
    if isinstance(function, Mapping) and schema.get("type", "function") == "function":  # OpenAI
        _same_name(name, function.get("name"))
        return function.get("description"), function.get("parameters") or {"type": "object", "properties": {}}
    if isinstance(schema.get("input_schema"), Mapping):  # Anthropic
        _same_name(name, schema.get("name"))
        return schema.get("description"), schema["input_schema"]
    if schema.get("type", "object") != "object":
        raise ValueError(
            f"tool {name!r}: the parameters schema must describe an object (the model sends "
            f"keyword arguments), got type {schema.get('type')!r}"
        )
    return None, schema


def _same_name(name: str, declared: Any) -> None:
    if declared is not None and declared != name:
        raise ValueError(
            f"tool {name!r}: its definition is named {declared!r}; the mapping key is the name "
            "the model calls and the gateway checks, so they must agree"
        )


def _doc(fn: Callable[..., Any]) -> str | None:
    doc = inspect.getdoc(fn)
    return doc.strip() or None if doc else None

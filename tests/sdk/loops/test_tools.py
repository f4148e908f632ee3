"""The ``tools`` mapping: what schema a plain function is offered with, and what is refused early."""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel

import callgate
from callgate.loops._execute import ParsedCall
from callgate.loops._schema import annotation_schema
from callgate.loops._tools import build_tools


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Address(BaseModel):
    street: str


@pytest.mark.parametrize(
    ("annotation", "schema"),
    [
        (str, {"type": "string"}),
        (int, {"type": "integer"}),
        (float, {"type": "number"}),
        (bool, {"type": "boolean"}),
        (None, {"type": "null"}),
        (Any, {}),
        (list[int], {"type": "array", "items": {"type": "integer"}}),
        (tuple[str, ...], {"type": "array", "items": {"type": "string"}}),
        (tuple[str, int], {"type": "array"}),
        (dict[str, float], {"type": "object", "additionalProperties": {"type": "number"}}),
        (dict, {"type": "object"}),
        (str | None, {"anyOf": [{"type": "string"}, {"type": "null"}]}),
        (Literal["a", "b"], {"enum": ["a", "b"], "type": "string"}),
        (Literal[1, "x"], {"enum": [1, "x"]}),
        (Color, {"enum": ["red", "blue"]}),
        (Annotated[int, "how many"], {"type": "integer", "description": "how many"}),
        (Address, Address.model_json_schema()),
        (object, {}),
    ],
)
def test_annotation_schema(annotation: Any, schema: dict[str, Any]) -> None:
    assert annotation_schema(annotation) == schema


def test_a_plain_function_is_described_by_its_signature_and_docstring() -> None:
    def book(
        city: str, nights: int = 1, /, *, pets: bool = False, note: str | None = None, **extra: Any
    ) -> str:
        """Book a hotel.

        Prices are per night."""
        return city

    def plain(city: str, nights: int = 2, tags: list[str] | None = None) -> None:
        pass

    tools = build_tools({"book": book, "plain": plain})
    assert tools["book"].description == "Book a hotel.\n\nPrices are per night."
    # positional-only parameters cannot be sent by keyword: not offered; **extra allows more
    assert tools["book"].parameters == {
        "type": "object",
        "properties": {
            "pets": {"type": "boolean", "default": False},
            "note": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
        },
        "additionalProperties": True,
    }
    assert tools["plain"].parameters == {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "nights": {"type": "integer", "default": 2},
            "tags": {
                "anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}],
                "default": None,
            },
        },
        "required": ["city"],
    }
    assert tools["plain"].description is None


def test_a_guarded_function_keeps_its_schema() -> None:
    @callgate.guard
    def refund(customer_id: str, amount: int) -> str:
        """Refund a customer."""
        return "ok"

    tool = build_tools({"refund": refund})["refund"]
    assert (
        tool.parameters["required"] == ["customer_id", "amount"] and tool.description == "Refund a customer."
    )


@pytest.mark.parametrize(
    "schema",
    [
        {
            "type": "function",
            "function": {"name": "s", "description": "Search.", "parameters": {"type": "object"}},
        },
        {"name": "s", "description": "Search.", "input_schema": {"type": "object"}},
        {"type": "object"},
    ],
)
def test_explicit_schemas(schema: dict[str, Any]) -> None:
    def search(**kwargs: Any) -> None:
        """Docstring, used only when the schema has no description."""

    tool = build_tools({"s": (schema, search)})["s"]
    assert tool.parameters == {"type": "object"}
    expected = (
        "Docstring, used only when the schema has no description."
        if schema.get("type") == "object"
        else "Search."
    )
    assert tool.description == expected


@pytest.mark.parametrize(
    ("tools", "error"),
    [
        ({"t": 42}, TypeError),
        ({"t": ({"type": "object"},)}, TypeError),
        ({"t": ("not a dict", print)}, TypeError),
        ({"": print}, ValueError),
        ({"t": ({"type": "string"}, print)}, ValueError),
        ({"t": ({"type": "function", "function": {"name": "u"}}, print)}, ValueError),
        ([("t", print)], TypeError),
    ],
)
def test_mistakes_in_the_mapping_raise_before_anything_is_sent(tools: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        build_tools(tools)


def test_bind_errors_and_async_detection() -> None:
    async def fetch(url: str) -> str:
        return url

    class Caller:
        async def __call__(self, q: str) -> str:
            return q

    tools = build_tools({"fetch": fetch, "caller": Caller(), "len": len})
    assert tools["fetch"].is_async and tools["caller"].is_async and not tools["len"].is_async
    assert tools["fetch"].bind_error({"url": "x"}) is None
    assert "missing a required argument: 'url'" in str(tools["fetch"].bind_error({}))
    assert "unexpected keyword argument 'u'" in str(tools["fetch"].bind_error({"url": "x", "u": 1}))


@pytest.mark.parametrize(
    ("raw", "arguments", "problem"),
    [
        ('{"a": 1}', {"a": 1}, None),
        ("", {}, None),
        (None, {}, None),
        ({"a": 1}, {"a": 1}, None),
        ("{", None, "not valid JSON"),
        ("[1]", None, "not an array"),
        ("3", None, "not a number"),
        ("null", None, "not null"),
    ],
)
def test_parsing_arguments(raw: Any, arguments: Any, problem: str | None) -> None:
    call = ParsedCall.from_json("id", "t", raw)
    assert call.arguments == arguments
    assert (problem is None and call.problem is None) or (
        problem is not None and problem in str(call.problem)
    )


def test_the_loops_import_no_provider_sdk() -> None:
    """Both SDKs are installed here, and still neither is imported: the clients are duck-typed."""
    import json
    import subprocess
    import sys

    code = (
        "import sys, json; import callgate.loops.openai_chat, callgate.loops.anthropic_messages; "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    loaded = set(
        json.loads(
            subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
            ).stdout
        )
    )
    assert not loaded & {"openai", "anthropic", "httpx", "httpx2", "pydantic", "wrapt"}, loaded

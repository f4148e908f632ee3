"""Tests for callgate._args: binding and JSON-safety."""

from __future__ import annotations

import dataclasses
import datetime
import inspect
import json
from typing import Any

from callgate._args import bind_arguments, to_jsonable


def f(a: int, b: int = 2, *rest: int, c: int = 3, **kw: Any) -> None: ...


class TestBindArguments:
    def test_positional_to_named(self) -> None:
        """Positional args get their parameter names; *args is a list; **kwargs merge in."""
        assert bind_arguments(inspect.signature(f), (1, 5, 6, 7), {"c": 9, "z": 1}) == {
            "a": 1, "b": 5, "rest": [6, 7], "c": 9, "z": 1}

    def test_unbindable_fallback(self) -> None:
        """A call that does not bind is still described (the function will raise itself)."""
        assert bind_arguments(inspect.signature(f), (), {"nope": 1}) == {"args": [], "kwargs": {"nope": 1}}


class TestToJsonable:
    def test_never_crashes_and_is_json(self) -> None:
        """Non-JSON values become strings; NaN, cycles, sets, bytes, dataclasses are handled."""

        @dataclasses.dataclass
        class P:
            x: int

        class Bad:
            def __repr__(self) -> str:
                raise RuntimeError

        cyc: list[Any] = []
        cyc.append(cyc)
        v = to_jsonable({"n": float("nan"), "s": {2, 1}, "b": b"\x00", "p": P(1), "bad": Bad(), "c": cyc,
                         1: "int key", "d": datetime.date(2024, 1, 2), "t": (1, "x")})
        json.dumps(v, allow_nan=False)
        assert v["n"] == "nan" and v["s"] == [1, 2] and v["p"] == {"x": 1} and v["1"] == "int key"
        assert v["d"] == "2024-01-02" and v["t"] == [1, "x"] and v["c"] == ["[cycle]"]

"""The operator registry: how each operator's operand is validated, and its test compiled.

Each operator is two functions. ``normalize`` runs at load time: it checks the operand
(raising ``InvalidValueError`` with the message the policy author sees) and returns the canonical
form that goes into the spec and its digest. ``make_test`` runs at compile time and returns
a closure ``value -> bool`` with everything precomputed (regexes compiled, sets built).

Semantics shared by all operators, because a guard must be predictable:

- A MISSING value never matches a comparison; only ``exists: false`` (and ``not: ...``)
  turn absence into a match.
- JSON types are strict: a boolean is not a number (``eq: 1`` does not match ``true``),
  ``gt`` & co. only compare numbers, string operators only look at strings. A type mismatch
  is "no match", never an exception.
- ``ne`` and ``not_in`` are the negations of ``eq`` and ``in`` for a *present* value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from .errors import InvalidValueError
from .subjects import MISSING, Test

__all__ = ["NUMBER_TYPES", "OPERATORS", "Operator", "describe_value"]

NUMBER_TYPES: Final = frozenset({int, float})


def describe_value(value: object) -> str:
    """Name a YAML/JSON value for error messages: ``string 'abc'``, ``number 5``, ``list``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"number {value!r}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__  # pragma: no cover - the YAML loader produces only the above


def _is_scalar(value: object) -> bool:
    return value is None or isinstance(value, (str, bool, int, float))


# --- operand validation ------------------------------------------------------------------------


def _scalar(op: str) -> Callable[[object], Any]:
    def normalize(operand: object) -> Any:
        if not _is_scalar(operand):
            raise InvalidValueError(
                f"'{op}' needs a string, number, boolean or null, got {describe_value(operand)}"
            )
        if isinstance(operand, float) and math.isnan(operand):
            raise InvalidValueError(f"'{op}' cannot compare with NaN")
        return operand

    return normalize


def _number(op: str) -> Callable[[object], Any]:
    def normalize(operand: object) -> Any:
        if isinstance(operand, bool) or not isinstance(operand, (int, float)):
            raise InvalidValueError(f"'{op}' needs a number, got {describe_value(operand)}")
        if math.isnan(operand):
            raise InvalidValueError(f"'{op}' cannot compare with NaN")
        return operand

    return normalize


def _scalar_list(op: str) -> Callable[[object], Any]:
    def normalize(operand: object) -> Any:
        if not isinstance(operand, list) or not operand:
            raise InvalidValueError(f"'{op}' needs a non-empty list of values, got {describe_value(operand)}")
        for item in operand:
            if not _is_scalar(item):
                raise InvalidValueError(
                    f"'{op}' list items must be strings, numbers, booleans or null, got {describe_value(item)}"
                )
        return tuple(operand)

    return normalize


def _strings(op: str) -> Callable[[object], Any]:
    def normalize(operand: object) -> Any:
        if isinstance(operand, str):
            return operand
        if isinstance(operand, list) and operand and all(isinstance(item, str) for item in operand):
            return tuple(operand)
        raise InvalidValueError(
            f"'{op}' needs a string or a non-empty list of strings, got {describe_value(operand)}"
        )

    return normalize


def _normalize_regex(operand: object) -> Any:
    if not isinstance(operand, str):
        raise InvalidValueError(f"'matches' needs a regular expression string, got {describe_value(operand)}")
    try:
        re.compile(operand)
    except re.error as exc:
        raise InvalidValueError(f"invalid regular expression {operand!r}: {exc}") from None
    return operand


def _normalize_bool(operand: object) -> Any:
    if not isinstance(operand, bool):
        raise InvalidValueError(f"'exists' needs true or false, got {describe_value(operand)}")
    return operand


_DOMAIN_LABEL = re.compile(r"[^\s@.*]+")


def _normalize_domains(operand: object) -> Any:
    if not isinstance(operand, list) or not operand:
        raise InvalidValueError(
            f"'email_domain_in' needs a non-empty list of domains, got {describe_value(operand)}"
        )
    domains: list[str] = []
    for item in operand:
        if not isinstance(item, str):
            raise InvalidValueError(f"'email_domain_in' domains must be strings, got {describe_value(item)}")
        domain = item.lower()
        labels = domain[2:].split(".") if domain.startswith("*.") else domain.split(".")
        if not all(_DOMAIN_LABEL.fullmatch(label) for label in labels):
            raise InvalidValueError(
                f"invalid domain {item!r}: write 'example.com', or '*.example.com' for any subdomain"
            )
        domains.append(domain)
    return tuple(domains)


# --- tests -----------------------------------------------------------------------------------


def _make_eq(operand: Any) -> Test:
    if operand is None:
        return lambda value: value is None
    if isinstance(operand, bool):
        return lambda value: value is operand
    if isinstance(operand, str):
        return lambda value: isinstance(value, str) and value == operand
    numbers = NUMBER_TYPES
    return lambda value: type(value) in numbers and value == operand


def _make_ne(operand: Any) -> Test:
    eq = _make_eq(operand)
    missing = MISSING
    return lambda value: value is not missing and not eq(value)


def _make_gt(operand: Any) -> Test:
    numbers = NUMBER_TYPES
    return lambda value: type(value) in numbers and value > operand


def _make_gte(operand: Any) -> Test:
    numbers = NUMBER_TYPES
    return lambda value: type(value) in numbers and value >= operand


def _make_lt(operand: Any) -> Test:
    numbers = NUMBER_TYPES
    return lambda value: type(value) in numbers and value < operand


def _make_lte(operand: Any) -> Test:
    numbers = NUMBER_TYPES
    return lambda value: type(value) in numbers and value <= operand


def _make_in(operand: Any) -> Test:
    # Separate buckets keep JSON types strict: True must not match 1, "1" must not match 1.
    strings = frozenset(item for item in operand if isinstance(item, str))
    numbers = frozenset(item for item in operand if type(item) in NUMBER_TYPES)
    booleans = frozenset(item for item in operand if isinstance(item, bool))
    has_null = any(item is None for item in operand)
    number_types = NUMBER_TYPES

    def test_in(value: Any) -> bool:
        if isinstance(value, str):
            return value in strings
        kind = type(value)
        if kind in number_types:
            return value in numbers
        if kind is bool:
            return value in booleans
        return value is None and has_null

    return test_in


def _make_not_in(operand: Any) -> Test:
    test_in = _make_in(operand)
    missing = MISSING
    return lambda value: value is not missing and not test_in(value)


def _make_contains(operand: Any) -> Test:
    if isinstance(operand, str):
        # A str never equals a non-str, so plain ``in`` is already strict for lists.
        return lambda value: isinstance(value, (str, list, tuple)) and operand in value
    eq = _make_eq(operand)

    def test_contains(value: Any) -> bool:
        if isinstance(value, (list, tuple)):
            for item in value:
                if eq(item):
                    return True
        return False

    return test_contains


def _make_startswith(operand: Any) -> Test:
    return lambda value: isinstance(value, str) and value.startswith(operand)


def _make_endswith(operand: Any) -> Test:
    return lambda value: isinstance(value, str) and value.endswith(operand)


def _make_matches(operand: Any) -> Test:
    search = re.compile(operand).search
    return lambda value: isinstance(value, str) and search(value) is not None


def _make_exists(operand: Any) -> Test:
    missing = MISSING
    if operand:
        return lambda value: value is not missing
    return lambda value: value is missing


def _make_email_domain_in(operand: Any) -> Test:
    exact = frozenset(domain for domain in operand if not domain.startswith("*."))
    suffixes = tuple(domain[1:] for domain in operand if domain.startswith("*."))  # ".example.com"

    def test_email_domain(value: Any) -> bool:
        if not isinstance(value, str):
            return False
        at = value.rfind("@")
        if at < 1:  # no "@", or nothing before it
            return False
        domain = value[at + 1 :].lower()
        if domain in exact:
            return True
        if not suffixes or not domain.endswith(suffixes) or ".." in domain or domain.startswith("."):
            return False
        # "*.example.com" needs at least one label before ".example.com".
        for suffix in suffixes:
            if domain.endswith(suffix) and len(domain) > len(suffix):
                return True
        return False

    return test_email_domain


# --- inline expressions for policies.codegen -----------------------------------------------
#
# Each returns Python source for "the value matches", given ``first`` (an expression that
# evaluates and binds the value; it must be evaluated first and exactly once), ``var`` (the
# bound name, for later uses) and ``const`` (registers a constant, returns its name). User
# data only ever travels through ``const``, never into the source text. They must agree
# with the make_* closures above; tests compare the two on random inputs.

Const = Callable[[Any], str]


def _expr_eq(operand: Any, first: str, var: str, const: Const) -> str:
    if operand is None:
        return f"{first} is None"
    if isinstance(operand, bool):
        return f"{first} is {operand}"
    if isinstance(operand, str):
        return f"isinstance({first}, str) and {var} == {const(operand)}"
    return f"type({first}) in NUM and {var} == {const(operand)}"


def _expr_compare(symbol: str) -> Callable[[Any, str, str, Const], str]:
    def expr(operand: Any, first: str, var: str, const: Const) -> str:
        return f"type({first}) in NUM and {var} {symbol} {const(operand)}"

    return expr


def _expr_in(operand: Any, first: str, var: str, const: Const) -> str:
    if all(isinstance(item, str) for item in operand):
        return f"isinstance({first}, str) and {var} in {const(frozenset(operand))}"
    return f"{const(_make_in(operand))}({first})"


def _expr_affix(method: str) -> Callable[[Any, str, str, Const], str]:
    def expr(operand: Any, first: str, var: str, const: Const) -> str:
        return f"isinstance({first}, str) and {var}.{method}({const(operand)})"

    return expr


def _expr_matches(operand: Any, first: str, var: str, const: Const) -> str:
    return f"isinstance({first}, str) and {const(re.compile(operand).search)}({var}) is not None"


def _expr_contains(operand: Any, first: str, var: str, const: Const) -> str:
    if isinstance(operand, str):
        return f"(type({first}) is list or isinstance({var}, str)) and {const(operand)} in {var}"
    return f"{const(_make_contains(operand))}({first})"


def _expr_exists(operand: Any, first: str, var: str, const: Const) -> str:
    return f"{first} is not M" if operand else f"{first} is M"


@dataclass(frozen=True, slots=True)
class Operator:
    """One operator.

    ``normalize`` validates the operand at load time, ``make_test`` compiles it to a closure,
    and the optional ``expr`` inlines it into generated code (without one, generated code
    calls the closure).
    """

    name: str
    normalize: Callable[[object], Any]
    make_test: Callable[[Any], Test]
    expr: Callable[[Any, str, str, Const], str] | None = None


def _registry(*operators: Operator) -> Mapping[str, Operator]:
    return {operator.name: operator for operator in operators}


OPERATORS: Final[Mapping[str, Operator]] = _registry(
    Operator("eq", _scalar("eq"), _make_eq, _expr_eq),
    Operator("ne", _scalar("ne"), _make_ne),
    Operator("gt", _number("gt"), _make_gt, _expr_compare(">")),
    Operator("gte", _number("gte"), _make_gte, _expr_compare(">=")),
    Operator("lt", _number("lt"), _make_lt, _expr_compare("<")),
    Operator("lte", _number("lte"), _make_lte, _expr_compare("<=")),
    Operator("in", _scalar_list("in"), _make_in, _expr_in),
    Operator("not_in", _scalar_list("not_in"), _make_not_in),
    Operator("contains", _scalar("contains"), _make_contains, _expr_contains),
    Operator("startswith", _strings("startswith"), _make_startswith, _expr_affix("startswith")),
    Operator("endswith", _strings("endswith"), _make_endswith, _expr_affix("endswith")),
    Operator("matches", _normalize_regex, _make_matches, _expr_matches),
    Operator("exists", _normalize_bool, _make_exists, _expr_exists),
    Operator("email_domain_in", _normalize_domains, _make_email_domain_in),
)

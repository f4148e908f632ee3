"""The condition language: raw ``when:`` mappings -> validated AST -> compiled predicates.

Grammar (one of, per mapping)::

    {all: [cond, ...]}          every item matches
    {any: [cond, ...]}          at least one matches
    {not: cond}                 the item does not match
    {<subject>: <path>, <op>: <operand>}   exactly one subject and exactly one operator

Subjects live in :mod:`policies.subjects`, operators in :mod:`policies.operators`; this
module only knows the shape, so adding either needs no change here.

Compilation turns the AST into nested closures once per policy version, so a decision
never walks a tree or looks at a dict of rule text.
"""

from __future__ import annotations

from typing import Any

from .errors import InvalidValueError, PathKey, Reporter, suggest
from .model import AllOf, AnyOf, Compare, Condition, Not
from .operators import OPERATORS, describe_value
from .subjects import SUBJECTS, Predicate

__all__ = ["COMBINATORS", "compile_condition", "parse_condition"]

COMBINATORS = ("all", "any", "not")

# Spellings people bring from other policy languages, for "did you mean" hints only.
_SYNONYMS = {
    "equals": "eq",
    "equal": "eq",
    "==": "eq",
    "is": "eq",
    "not_equal": "ne",
    "neq": "ne",
    "!=": "ne",
    "greater_than": "gt",
    ">": "gt",
    "greater_or_equal": "gte",
    "ge": "gte",
    ">=": "gte",
    "less_than": "lt",
    "<": "lt",
    "less_or_equal": "lte",
    "le": "lte",
    "<=": "lte",
    "one_of": "in",
    "any_of": "in",
    "none_of": "not_in",
    "nin": "not_in",
    "regex": "matches",
    "match": "matches",
    "pattern": "matches",
    "prefix": "startswith",
    "suffix": "endswith",
    "includes": "contains",
    "has": "exists",
    "and": "all",
    "or": "any",
}
_EXAMPLE = "{arg: amount, gt: 100}"


def parse_condition(raw: Any, path: PathKey, report: Reporter) -> Condition | None:
    """Validate one condition; report every problem and return None if there was any."""
    if not isinstance(raw, dict):
        report.add(path, f"condition must be a mapping like {_EXAMPLE}, got {describe_value(raw)}")
        return None
    if not raw:
        report.add(path, f"empty condition: write something like {_EXAMPLE}")
        return None
    combinators = [key for key in raw if key in COMBINATORS]
    if combinators:
        return _parse_combinator(raw, combinators, path, report)
    return _parse_compare(raw, path, report)


def _parse_combinator(
    raw: dict[str, Any], combinators: list[str], path: PathKey, report: Reporter
) -> Condition | None:
    if len(raw) > 1:
        others = ", ".join(f"'{key}'" for key in raw if key != combinators[0])
        report.add(
            path,
            f"'{combinators[0]}' must be the only key of its condition (also found {others}); "
            "nest the other condition inside it",
        )
        return None
    key = combinators[0]
    value = raw[key]
    if key == "not":
        item = parse_condition(value, (*path, "not"), report)
        return None if item is None else Not(item)
    if not isinstance(value, list) or not value:
        report.add((*path, key), f"'{key}' needs a non-empty list of conditions, got {describe_value(value)}")
        return None
    items = [parse_condition(item, (*path, key, index), report) for index, item in enumerate(value)]
    if any(item is None for item in items):
        return None
    parsed: tuple[Condition, ...] = tuple(item for item in items if item is not None)
    return AllOf(parsed) if key == "all" else AnyOf(parsed)


def _parse_compare(raw: dict[str, Any], path: PathKey, report: Reporter) -> Condition | None:
    subjects = [key for key in raw if key in SUBJECTS]
    operators = [key for key in raw if key in OPERATORS]
    unknown = [key for key in raw if key not in SUBJECTS and key not in OPERATORS]
    before = len(report.issues)
    vocabulary = [*OPERATORS, *SUBJECTS, *COMBINATORS]
    for key in unknown:
        hint = f" (did you mean '{_SYNONYMS[key]}'?)" if key in _SYNONYMS else suggest(key, vocabulary)
        report.add((*path, key), f"unknown operator '{key}'{hint}")
    if len(subjects) > 1:
        names = ", ".join(f"'{key}'" for key in subjects)
        report.add(path, f"more than one subject in one condition ({names}); combine them with all: [...]")
    elif not subjects:
        report.add(path, f"condition has no subject: add 'arg: <path>' (or 'agent: name'), e.g. {_EXAMPLE}")
    if len(operators) > 1:
        names = ", ".join(f"'{key}'" for key in operators)
        report.add(path, f"more than one operator in one condition ({names}); combine them with all: [...]")
    elif not operators and not unknown:
        report.add(path, f"condition has no operator; use one of: {', '.join(OPERATORS)}")
    if len(report.issues) > before:
        return None

    subject, op = subjects[0], operators[0]
    ok = True
    try:
        subject_path = SUBJECTS[subject].parse_path(raw[subject])
    except InvalidValueError as exc:
        report.add((*path, subject), str(exc))
        ok = False
    try:
        operand = OPERATORS[op].normalize(raw[op])
    except InvalidValueError as exc:
        report.add((*path, op), str(exc))
        ok = False
    return Compare(subject, subject_path, op, operand) if ok else None


def compile_condition(condition: Condition) -> Predicate:
    """Build the closure for a validated condition. Called once per policy version."""
    if isinstance(condition, Compare):
        test = OPERATORS[condition.op].make_test(condition.operand)
        return SUBJECTS[condition.subject].bind(condition.path, test)
    if isinstance(condition, Not):
        inner = compile_condition(condition.item)
        return lambda ctx: not inner(ctx)
    predicates = tuple(compile_condition(item) for item in condition.items)
    if len(predicates) == 1:
        return predicates[0]
    if isinstance(condition, AllOf):
        if len(predicates) == 2:
            first, second = predicates
            return lambda ctx: first(ctx) and second(ctx)

        def all_of(ctx: tuple[Any, ...]) -> bool:
            for predicate in predicates:
                if not predicate(ctx):
                    return False
            return True

        return all_of
    if len(predicates) == 2:
        first, second = predicates
        return lambda ctx: first(ctx) or second(ctx)

    def any_of(ctx: tuple[Any, ...]) -> bool:
        for predicate in predicates:
            if predicate(ctx):
                return True
        return False

    return any_of

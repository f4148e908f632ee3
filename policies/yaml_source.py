"""YAML text -> plain data plus a line for every path, rejecting duplicate keys.

``yaml.safe_load`` silently keeps the last of two equal keys (a rule whose second ``action:``
quietly wins) and throws line numbers away. Here we compose the node graph ourselves so that
every duplicate key is reported, every value's path maps to its line, and all problems are
collected instead of stopping at the first.

The scalar schema is YAML 1.2 "core" rather than PyYAML's YAML 1.1 default: only
``true``/``false`` are booleans (``no``, ``on``, ``NO`` stay strings: think country codes),
``012`` is twelve (not octal), ``1:30`` is a string (not 90), dates stay strings, and
merge keys (``<<``) are not special. Explicit tags other than the plain JSON-like ones are
rejected, so no Python objects, sets or binary blobs can enter a policy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from .errors import Issue, PathKey, format_path

__all__ = ["LoadedYaml", "load_yaml"]

MAX_NODES = 200_000
MAX_DEPTH = 64

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_SCALAR_TAGS = frozenset({_STR, _INT, _FLOAT, _BOOL, _NULL})


# libyaml's parser is ~8x faster than the pure-Python one (a 10,000-entry policy loads in
# about a second instead of seven); both give the same nodes and marks.
_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[valid-type,misc]
    """SafeLoader with the YAML 1.2 core schema's implicit scalar resolution."""


_Loader.yaml_implicit_resolvers = {}
_Loader.add_implicit_resolver(_NULL, re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""])
_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Loader.add_implicit_resolver(
    _INT, re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789")
)
_Loader.add_implicit_resolver(
    _FLOAT,
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = str(loader.construct_scalar(node))
    if text.startswith(("0x", "0o")):
        return int(text, 0)
    return int(text, 10)  # base 10 explicitly: "012" is twelve, not octal


_Loader.add_constructor(_INT, _construct_int)


@dataclass(slots=True)
class LoadedYaml:
    """A parsed document: ``data`` (None for an empty text), the line of each path, and issues."""

    data: Any
    lines: dict[PathKey, int] = field(default_factory=dict)
    issues: list[Issue] = field(default_factory=list)


def load_yaml(text: str, source: str) -> LoadedYaml:
    """Parse one YAML document. Never raises for bad input: problems land in ``issues``."""
    result = LoadedYaml(data=None)
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = " ".join(part for part in (exc.context, exc.problem) if part) or "syntax error"
        result.issues.append(Issue(source, "", line, f"invalid YAML: {problem}"))
        return result
    except yaml.YAMLError as exc:
        result.issues.append(Issue(source, "", None, f"invalid YAML: {exc}"))
        return result
    finally:
        loader.dispose()
    if node is None:
        return result
    walker = _Walker(loader, source, result)
    result.data = walker.convert(node, (), 0)
    return result


class _Walker:
    """Converts a composed node graph to plain dict/list/scalars, recording lines and issues."""

    def __init__(self, loader: _Loader, source: str, result: LoadedYaml) -> None:
        self.loader = loader
        self.source = source
        self.result = result
        self.count = 0
        self.too_big = False

    def issue(self, path: PathKey, line: int, message: str) -> None:
        self.result.issues.append(Issue(self.source, format_path(path), line, message))

    def convert(self, node: yaml.Node, path: PathKey, depth: int) -> Any:
        line = node.start_mark.line + 1
        self.result.lines.setdefault(path, line)
        self.count += 1
        if self.count > MAX_NODES or depth > MAX_DEPTH:
            if not self.too_big:
                self.too_big = True
                self.issue(
                    path, line, f"document too large or too deep (max {MAX_NODES} values, depth {MAX_DEPTH})"
                )
            return None
        if isinstance(node, yaml.ScalarNode):
            if node.tag not in _SCALAR_TAGS:
                self.issue(path, line, f"unsupported YAML tag {node.tag!r}")
                return None
            try:
                return self.loader.construct_object(node)
            except (yaml.YAMLError, ValueError) as exc:
                self.issue(path, line, f"invalid scalar {node.value!r}: {exc}")
                return None
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _SEQ:
                self.issue(path, line, f"unsupported YAML tag {node.tag!r}")
                return None
            return [self.convert(item, (*path, index), depth + 1) for index, item in enumerate(node.value)]
        if isinstance(node, yaml.MappingNode):
            if node.tag != _MAP:
                self.issue(path, line, f"unsupported YAML tag {node.tag!r}")
                return None
            return self.convert_mapping(node, path, depth)
        self.issue(
            path, line, "unsupported YAML node"
        )  # pragma: no cover - composer makes only the three kinds
        return None

    def convert_mapping(self, node: yaml.MappingNode, path: PathKey, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _STR:
                shown = key_node.value if isinstance(key_node, yaml.ScalarNode) else "(complex key)"
                self.issue(path, key_line, f"mapping keys must be strings, got {shown!r}")
                continue
            key = str(key_node.value)
            if key in first_line:
                self.issue(
                    (*path, key), key_line, f"duplicate key '{key}' (first defined on line {first_line[key]})"
                )
                continue
            first_line[key] = key_line
            self.result.lines[(*path, key)] = key_line
            out[key] = self.convert(value_node, (*path, key), depth + 1)
        return out

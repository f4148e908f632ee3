"""The YAML loader: duplicate keys, line numbers, and a JSON-like YAML 1.2 scalar schema."""

from __future__ import annotations

import pytest

from policies.yaml_source import load_yaml


class TestLoadYaml:
    def test_duplicate_keys_are_reported(self) -> None:
        """A repeated key is an issue naming both lines, not a silent overwrite."""
        loaded = load_yaml("a: 1\nb:\n  c: 1\n  c: 2\na: 3\n", "x.yaml")
        assert [str(issue) for issue in loaded.issues] == [
            "x.yaml:4: b.c: duplicate key 'c' (first defined on line 3)",
            "x.yaml:5: a: duplicate key 'a' (first defined on line 1)",
        ]

    def test_lines_for_paths(self) -> None:
        """Every key and list item maps to its line."""
        loaded = load_yaml("policies:\n  - tool: x\n    rules:\n      - action: block\n", "x.yaml")
        assert loaded.lines[("policies",)] == 1
        assert loaded.lines[("policies", 0)] == 2
        assert loaded.lines[("policies", 0, "rules", 0, "action")] == 4

    @pytest.mark.parametrize(
        ("text", "value"),
        [
            ("no", "no"),
            ("NO", "NO"),
            ("on", "on"),
            ("yes", "yes"),
            ("true", True),
            ("False", False),
            ("012", 12),
            ("0x1f", 31),
            ("0o17", 15),
            ("1_000", "1_000"),
            ("1:30", "1:30"),
            ("2024-01-01", "2024-01-01"),
            ("1.5", 1.5),
            ("1e3", 1000.0),
            ("~", None),
            ("null", None),
            ("'5'", "5"),
        ],
    )
    def test_core_schema_scalars(self, text: str, value: object) -> None:
        """Only JSON-like scalars are implicit: no YAML 1.1 surprises (no: False, 012: 10, 1:30: 90)."""
        loaded = load_yaml(f"v: {text}\n", "x.yaml")
        assert loaded.issues == []
        assert loaded.data["v"] == value
        assert type(loaded.data["v"]) is type(value)

    def test_python_tags_are_rejected(self) -> None:
        """Explicit non-JSON tags never construct objects."""
        loaded = load_yaml("a: !!python/object:os.system {}\nb: !!binary aGk=\nc: !!set {x}\n", "x.yaml")
        assert [issue.message for issue in loaded.issues] == [
            "unsupported YAML tag 'tag:yaml.org,2002:python/object:os.system'",
            "unsupported YAML tag 'tag:yaml.org,2002:binary'",
            "unsupported YAML tag 'tag:yaml.org,2002:set'",
        ]

    def test_non_string_keys_are_rejected(self) -> None:
        """Keys must be strings, as in JSON."""
        loaded = load_yaml("1: a\n", "x.yaml")
        assert [issue.message for issue in loaded.issues] == ["mapping keys must be strings, got '1'"]

    def test_syntax_error_has_a_line(self) -> None:
        """Broken YAML is one issue with the line of the problem."""
        loaded = load_yaml("a: 1\nb: [1, 2\n", "x.yaml")
        assert len(loaded.issues) == 1
        assert loaded.issues[0].line == 3
        assert loaded.issues[0].message.startswith("invalid YAML: ")

    def test_multiple_documents_are_rejected(self) -> None:
        """One source is one document."""
        loaded = load_yaml("a: 1\n---\nb: 2\n", "x.yaml")
        assert [issue.message for issue in loaded.issues] == [
            "invalid YAML: expected a single document in the stream but found another document"
        ]

    def test_recursive_alias_is_bounded(self) -> None:
        """A self-referencing alias cannot recurse forever."""
        loaded = load_yaml("a: &x [*x]\n", "x.yaml")
        assert len(loaded.issues) == 1
        assert "too large or too deep" in loaded.issues[0].message

    def test_empty_text(self) -> None:
        """An empty source is no data and no issues."""
        loaded = load_yaml("", "x.yaml")
        assert (loaded.data, loaded.issues) == (None, [])

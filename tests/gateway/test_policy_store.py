"""Policy versions: one numbered, audited version per distinct policy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

import policies
from gateway.db import make_engine
from gateway.models import AuditEvent
from gateway.policy_store import load_active, read_sources

A = "policies:\n  - tool: t\n    default: block\n"
B = "policies:\n  - tool: t\n    default: allow\n"


def test_versions_follow_the_policy_content(database_url: str, tmp_path: Path) -> None:
    """The same policy keeps its version across restarts; a changed one gets the next version and an event."""
    path = tmp_path / "p.yaml"
    engine = make_engine(database_url, writer=True)
    path.write_text(A)
    with engine.begin() as conn:
        v1 = load_active(conn, path).version
    path.write_text("# a comment changes nothing\n" + A)
    with engine.begin() as conn:
        assert load_active(conn, path).version == v1
    path.write_text(B)
    with engine.begin() as conn:
        active = load_active(conn, path)
    assert active.version == v1 + 1
    assert active.compiled.decide("t", {}).action == "allow"
    with engine.connect() as conn:
        events = [json.loads(c) for (c,) in conn.execute(select(AuditEvent.canonical).where(AuditEvent.event_type == "policy.changed"))]
    engine.dispose()
    assert [e["data"]["version"] for e in events] == [v1, v1 + 1]


def test_folder_sources_are_read_in_name_order(tmp_path: Path) -> None:
    """A folder contributes every .yaml/.yml file, sorted, and nothing else."""
    (tmp_path / "b.yaml").write_text(B)
    (tmp_path / "a.yml").write_text("policies: []\n")
    (tmp_path / "notes.txt").write_text("ignored")
    assert [Path(name).name for name, _ in read_sources(tmp_path)] == ["a.yml", "b.yaml"]
    assert read_sources(None) == []
    with pytest.raises(FileNotFoundError):
        read_sources(tmp_path / "missing.yaml")


def test_invalid_policy_names_file_and_line(tmp_path: Path) -> None:
    """Validation errors carry the file name, the path inside it and the line."""
    with pytest.raises(policies.PolicyValidationError) as err:
        policies.load_policy_sources([("bad.yaml", "policies:\n  - tool: t\n    rules:\n      - action: maybe\n")])
    assert "bad.yaml:4" in str(err.value) and "action" in str(err.value)

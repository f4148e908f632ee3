"""Tests for callgate._reporter and callgate._spool."""

from __future__ import annotations

import json
from typing import Any

import callgate
from callgate._config import runtime
from callgate._spool import Spool

from .conftest import API_KEY, FakeGateway


class TestReporter:
    def test_outcome_retried_after_5xx(self, configured: FakeGateway) -> None:
        """A failed outcome delivery is retried in the background; flush() forces it out."""
        configured.inject.append(("/v1/calls/", 503))
        permit = callgate.check_call("t", {})
        permit.report("failed", error=ValueError("bad"), duration_ms=7)
        assert callgate.flush(5)
        assert configured.outcomes[permit.call_id] == {"status": "failed", "error": "ValueError: bad",
                                                       "duration_ms": 7}
        assert len(configured.of("POST", f"/v1/calls/{permit.call_id}/outcome")) == 2

    def test_report_once(self, configured: FakeGateway) -> None:
        """A permit reports at most once."""
        permit = callgate.check_call("t", {})
        permit.report()
        permit.report("failed")
        callgate.flush(5)
        assert len(configured.of("POST", f"/v1/calls/{permit.call_id}/outcome")) == 1

    def test_undelivered_outcomes_spooled_on_close(self, configured: FakeGateway, tmp_path: Any) -> None:
        """Outcomes that cannot be delivered before shutdown are kept in the spool, not lost."""
        configured.inject += [("/v1/calls/", 503)] * 10
        permit = callgate.check_call("t", {})
        permit.report()
        rt = runtime()
        rt.reporter.close(0.2)
        lines = [json.loads(x) for x in rt.spool.path.read_text().splitlines()]
        assert lines == [{"kind": "outcome", "id": permit.call_id,
                          "outcome": {"status": "succeeded", "error": None, "duration_ms": lines[0]["outcome"]["duration_ms"]}}]

    def test_previous_spool_uploaded_at_configure(self, gateway: FakeGateway, tmp_path: Any) -> None:
        """A spool left by an earlier process is uploaded once the gateway answers."""
        spool = Spool(tmp_path, "agent-1")
        spool.append({"kind": "fail_open", "id": "0190a0a0-0000-7000-8000-000000000001", "tool": "search",
                      "args": {}, "agent": "agent-1", "session_id": None, "framework": "guard",
                      "started_at": "2026-01-01T00:00:00.000Z", "reason": "down"})
        callgate.configure(gateway.url, API_KEY, "agent-1", spool_dir=tmp_path)
        assert callgate.flush(5)
        (up,) = gateway.of("POST", "/v1/calls")
        assert up.body["fail_open"] is True and up.body["metadata"]["callgate_fail_open"]["reason"] == "down"
        assert not spool.has_records()


class TestSpool:
    def test_remove_keeps_new_lines_and_dead_letters(self, tmp_path: Any) -> None:
        """remove() drops acknowledged lines, moves rejected ones aside and keeps later appends."""
        s = Spool(tmp_path, "a/b")
        for i in range(3):
            s.append({"kind": "outcome", "id": str(i), "outcome": {}})
        (l0, _), (l1, _), _ = s.read()
        s.append({"kind": "outcome", "id": "3", "outcome": {}})
        s.remove({l0}, {l1})
        assert [r["id"] for _, r in s.read()] == ["2", "3"]
        assert s.path.name == "a_b.jsonl" and json.loads(s.rejected_path.read_text())["id"] == "1"

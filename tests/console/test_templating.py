"""Template helpers and block rendering."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from console.templating import Templates, duration, pretty_json, time_left

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


class TestFilters:
    @pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (59.9, "59s"), (61, "1m 01s"), (3 * 3600 + 120, "3h 02m")])
    def test_duration_is_compact(self, seconds: float, text: str) -> None:
        """Durations read as 59s, 1m 01s, 3h 02m."""
        assert duration(seconds) == text

    def test_time_left_handles_naive_past_and_missing(self) -> None:
        """Naive datetimes are UTC, past deadlines read 'expired', no deadline reads empty."""
        assert time_left((NOW + timedelta(minutes=5)).replace(tzinfo=None), NOW) == "5m 00s"
        assert time_left("2026-11-21T11:59:00.000000Z", NOW) == "expired"
        assert time_left(None, NOW) == ""

    def test_pretty_json_keeps_unicode_and_sorts(self) -> None:
        """Arguments are shown indented, key-sorted, with non-ASCII text as is."""
        assert pretty_json({"b": 1, "a": "café"}) == '{\n  "a": "café",\n  "b": 1\n}'


class TestBlocks:
    def test_block_renders_alone_and_is_escaped(self) -> None:
        """A named block renders without its layout, autoescaped, from the same template."""
        templates = Templates()
        calls = [{"call_id": "c1", "tool": "<b>x</b>", "agent": "a", "session_id": None, "rule": None,
                  "reason": None, "created_at": NOW, "expires_at": NOW + timedelta(minutes=1)}]
        html = templates.render_text("queue.html", {"calls": calls, "limit": 100, "now": NOW}, "queue")
        assert html.lstrip().startswith('<section id="queue"') and "<html" not in html
        assert "&lt;b&gt;x&lt;/b&gt;" in html and "1m 00s" in html

    def test_unknown_block_is_an_error(self) -> None:
        """Asking for a block the template lacks fails loudly."""
        with pytest.raises(LookupError):
            Templates().render_text("queue.html", {}, "nope")

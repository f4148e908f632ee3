"""Tests for callgate.ids."""

from __future__ import annotations

import time
import uuid

from callgate.ids import uuid7


class TestUuid7:
    def test_format_version_variant(self) -> None:
        """Ids are canonical RFC 9562 version-7 UUID strings with the current timestamp."""
        s = uuid7()
        u = uuid.UUID(s)
        assert str(u) == s and u.version == 7 and u.variant == uuid.RFC_4122
        assert abs((u.int >> 80) - time.time() * 1000) < 5000

    def test_monotonic_and_unique(self) -> None:
        """Ids made in one process sort in creation order and never repeat."""
        ids = [uuid7() for _ in range(20000)]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)

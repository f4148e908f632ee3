"""Tool patterns: glob detection and the specificity order."""

from __future__ import annotations

import pytest

from policies.patterns import compile_glob, glob_rank, is_glob


class TestPatterns:
    @pytest.mark.parametrize(
        ("pattern", "expected"),
        [("stripe.*", True), ("a?", True), ("f[ab]", True), ("plain.name", False), ("odd[name", False)],
    )
    def test_is_glob(self, pattern: str, expected: bool) -> None:
        """Wildcards make a glob; an unclosed bracket is a literal, as in fnmatch."""
        assert is_glob(pattern) is expected

    def test_rank_orders_by_prefix_then_literals_then_order(self) -> None:
        """Longest literal prefix first, then most literal characters, then file order."""
        patterns = ["*", "stripe.*", "stripe.*_refund", "stripe.issue_*", "stripe.?"]
        ranked = sorted(patterns, key=lambda pattern: glob_rank(pattern, patterns.index(pattern)))
        assert ranked == ["stripe.issue_*", "stripe.*_refund", "stripe.*", "stripe.?", "*"]

    def test_glob_is_case_sensitive_and_crosses_dots(self) -> None:
        """Matching is fnmatchcase: case-sensitive, and * spans dots."""
        matcher = compile_glob("stripe.*")
        assert matcher("stripe.refunds.create")
        assert not matcher("Stripe.refund")

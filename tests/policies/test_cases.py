"""Table-driven conformance cases from tests/policies/cases/*.yaml.

Each file holds one policy and a list of calls with the expected action (and, when given,
the rule that decided; null means a default applied). Every case runs against the
generated-code fast path and the closure reference implementation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from policies import CompiledPolicy, compile_policy, load_policy_text

CASES_DIR = Path(__file__).parent / "cases"


def _load_cases() -> list[Any]:
    params = []
    for path in sorted(CASES_DIR.glob("*.yaml")):
        document = yaml.safe_load(path.read_text())
        for case in document["cases"]:
            params.append(
                pytest.param(path.name, document["policy"], case, id=f"{path.stem}: {case['desc']}")
            )
    return params


_COMPILED: dict[tuple[str, bool], CompiledPolicy] = {}


def _policy(name: str, text: str, inline: bool) -> CompiledPolicy:
    key = (name, inline)
    if key not in _COMPILED:
        _COMPILED[key] = compile_policy(load_policy_text(text, name), inline=inline)
    return _COMPILED[key]


class TestConformanceCases:
    @pytest.mark.parametrize("inline", [True, False], ids=["inline", "closures"])
    @pytest.mark.parametrize(("source", "policy_text", "case"), _load_cases())
    def test_case_decides_as_expected(
        self, source: str, policy_text: str, case: dict[str, Any], inline: bool
    ) -> None:
        """The call in the case gets the expected action and deciding rule."""
        policy = _policy(source, policy_text, inline)
        decision = policy.decide(case["tool"], case.get("args", {}), agent=case.get("agent"))
        assert decision.action == case["expect"], decision.reason
        if "rule" in case:
            assert decision.rule == case["rule"], decision.reason

    def test_every_operator_has_cases(self) -> None:
        """The operators file exercises every registered operator."""
        from policies.operators import OPERATORS

        text = (CASES_DIR / "operators.yaml").read_text() + (CASES_DIR / "email.yaml").read_text()
        for name in OPERATORS:
            assert f"{name}:" in text, name

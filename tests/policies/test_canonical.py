"""The version digest: same meaning, same digest; different meaning, different digest."""

from __future__ import annotations

import json
import random
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from policies import compile_policy, load_policy_sources, load_policy_text
from policies.canonical import to_canonical

DOC: dict[str, Any] = {
    "defaults": {"action": "allow", "approval_timeout": "15m"},
    "policies": [
        {
            "tool": "stripe.issue_refund",
            "default": "allow",
            "rules": [
                {
                    "name": "big",
                    "when": {
                        "all": [{"arg": "amount", "gt": 200}, {"arg": "currency", "in": ["usd", "eur"]}]
                    },
                    "action": "require_approval",
                    "approval_timeout": "2h",
                    "reason": "Big refund",
                },
                {"when": {"arg": "to", "email_domain_in": ["Example.com"]}, "action": "block"},
            ],
        },
        {"tool": "shell.*", "default": "block"},
    ],
    "tests": [{"call": {"tool": "shell.rm", "args": {"path": "/", "force": True}}, "expect": "block"}],
}


def digest_of_doc(document: Any) -> str:
    return compile_policy(load_policy_text(yaml.safe_dump(document, sort_keys=False))).digest


def shuffled(value: Any, rng: random.Random) -> Any:
    """The same data with every mapping's keys in a random order."""
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {key: shuffled(item, rng) for key, item in items}
    if isinstance(value, list):
        return [shuffled(item, rng) for item in value]
    return value


class TestDigest:
    @settings(max_examples=50, deadline=None)
    @given(seed=st.integers())
    def test_stable_across_key_order(self, seed: int) -> None:
        """Reordering mapping keys anywhere does not change the digest."""
        assert digest_of_doc(shuffled(DOC, random.Random(seed))) == digest_of_doc(DOC)

    def test_stable_across_formatting_and_equivalent_durations(self) -> None:
        """Comments, flow style and 2h vs 7200 are not changes."""
        flow = json.loads(json.dumps(DOC))
        flow["defaults"]["approval_timeout"] = 900
        flow["policies"][0]["rules"][0]["approval_timeout"] = 7200
        text = "# header comment\n" + yaml.safe_dump(flow, default_flow_style=True)
        assert compile_policy(load_policy_text(text)).digest == digest_of_doc(DOC)

    def test_implicit_defaults_equal_explicit(self) -> None:
        """An empty policy and the explicit built-in defaults are the same version."""
        empty = compile_policy(load_policy_sources([])).digest
        explicit = compile_policy(
            load_policy_text("defaults: {action: allow, approval_timeout: 15m}\n")
        ).digest
        assert empty == explicit

    def test_split_over_files_is_the_same_version(self) -> None:
        """Splitting entries over files in the same order keeps the digest."""
        one = "policies:\n  - {tool: a, default: block}\n  - {tool: b, default: allow}\n"
        split = [
            ("1.yaml", "policies:\n  - {tool: a, default: block}\n"),
            ("2.yaml", "policies:\n  - {tool: b, default: allow}\n"),
        ]
        assert (
            compile_policy(load_policy_text(one)).digest == compile_policy(load_policy_sources(split)).digest
        )

    def test_changes_with_meaning(self) -> None:
        """Changing an operand, the rule order, or a test changes the digest."""
        base = digest_of_doc(DOC)
        changed = json.loads(json.dumps(DOC))
        changed["policies"][0]["rules"][0]["when"]["all"][0]["gt"] = 201
        reordered = json.loads(json.dumps(DOC))
        reordered["policies"][0]["rules"].reverse()
        retested = json.loads(json.dumps(DOC))
        retested["tests"][0]["expect"] = "allow"
        assert len({base, digest_of_doc(changed), digest_of_doc(reordered), digest_of_doc(retested)}) == 4

    def test_digest_is_sha256_of_canonical_json(self) -> None:
        """The digest covers the canonical JSON the policy exposes for storage."""
        import hashlib

        policy = compile_policy(load_policy_text(yaml.safe_dump(DOC)))
        assert policy.digest == hashlib.sha256(policy.canonical_json.encode()).hexdigest()
        assert json.loads(policy.canonical_json) == to_canonical(policy.policy_set)

    def test_canonical_form_is_normalized(self) -> None:
        """Durations become seconds, domains lower case, unnamed rules get ids."""
        canonical = to_canonical(load_policy_text(yaml.safe_dump(DOC)))
        rules = canonical["policies"][0]["rules"]
        assert canonical["defaults"] == {"action": "allow", "approval_timeout_s": 900}
        assert rules[0]["approval_timeout_s"] == 7200
        assert rules[1]["id"] == "stripe.issue_refund#1"
        assert rules[1]["when"] == {"arg": "to", "email_domain_in": ["example.com"]}

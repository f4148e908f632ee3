"""PolicySet -> CompiledPolicy: entries indexed by tool name, decided in about a microsecond.

Compilation happens once per policy version. Every rule's condition becomes a closure
(:mod:`policies.conditions`) and its :class:`Decision` is built up front; each entry's rules
are then fused into one generated function (:mod:`policies.codegen`) with the closures as
fallback. So ``decide`` allocates nothing but the context tuple and returns a shared
immutable Decision. Tool lookup is one dict probe: exact
names are preloaded; a glob-matched (or unmatched) name is resolved once and cached in a
bounded dict, so cost stays flat however many tool names the agents use.

``decide`` is thread-safe: the only mutable state is that cache, and dict get/set are
atomic under the GIL; a lost or duplicate insert just costs one re-resolution. It never
raises: an unexpected error while evaluating (impossible for JSON arguments, but a caller
could pass anything) fails closed with a ``block`` decision.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

from .canonical import canonical_json
from .codegen import EntryFunction, generate_entry
from .conditions import compile_condition
from .model import Action, Decision, PolicySet, RuleSpec, ToolPolicySpec
from .patterns import compile_glob, glob_rank, is_glob
from .subjects import Predicate

__all__ = ["MAX_CACHED_TOOLS", "CompiledPolicy", "compile_policy"]

MAX_CACHED_TOOLS = 65_536

_Entry = EntryFunction

_VERB = {
    Action.ALLOW: "allowed",
    Action.BLOCK: "blocked",
    Action.REQUIRE_APPROVAL: "approval required",
}


def _always(ctx: tuple[Any, ...]) -> bool:
    return True


class CompiledPolicy:
    """An immutable, thread-safe, compiled policy version. Build with :func:`compile_policy`.

    Attributes:
        digest: sha256 hex of the normalized spec; the version identity.
        policy_set: the validated spec it was compiled from.
        canonical_json: the normalized spec the digest covers (JSON text).
        sources: the ``(name, text)`` pairs it was loaded from.
        source_text: those texts as one string (one source: its text verbatim).
    """

    __slots__ = (
        "_exact",
        "_globs",
        "_lookup",
        "_patterns",
        "_unmatched",
        "canonical_json",
        "digest",
        "policy_set",
        "sources",
    )

    def __init__(self, policy_set: PolicySet, *, inline: bool = True) -> None:
        self.policy_set = policy_set
        self.sources = policy_set.sources
        self.canonical_json = canonical_json(policy_set)
        self.digest = hashlib.sha256(self.canonical_json.encode("utf-8")).hexdigest()  # == digest_of()
        self._unmatched: _Entry = _closure_entry((), _global_default(policy_set, None))
        self._exact: dict[str, _Entry] = {}
        globs: list[tuple[tuple[int, int, int], str, Callable[[str], object], _Entry]] = []
        for order, entry in enumerate(policy_set.policies):
            compiled = _compile_entry(entry, policy_set, inline=inline)
            if is_glob(entry.tool):
                globs.append((glob_rank(entry.tool, order), entry.tool, compile_glob(entry.tool), compiled))
            else:
                self._exact[entry.tool] = compiled
        globs.sort(key=lambda item: item[0])
        self._globs: tuple[tuple[Callable[[str], object], _Entry], ...] = tuple(
            (matcher, compiled) for _, _, matcher, compiled in globs
        )
        self._patterns = tuple(pattern for _, pattern, _, _ in globs)
        self._lookup: dict[str, _Entry] = dict(self._exact)

    @property
    def source_text(self) -> str:
        """What was applied, for storing next to the digest."""
        if len(self.sources) == 1:
            return self.sources[0][1]
        return "".join(f"# --- source: {name} ---\n{text.rstrip()}\n" for name, text in self.sources)

    def _resolve(self, tool: str) -> _Entry:
        """Find the entry for a name with no exact entry (best glob, else defaults) and cache it."""
        found = self._unmatched
        for matcher, compiled in self._globs:
            if matcher(tool):
                found = compiled
                break
        lookup = self._lookup
        if len(lookup) >= MAX_CACHED_TOOLS + len(self._exact):
            self._lookup = lookup = dict(self._exact)
        lookup[tool] = found
        return found

    def decide(self, tool: str, args: Mapping[str, Any], *, agent: str | None = None) -> Decision:
        """The decision for one call: first matching rule, else the entry's default, else the global one."""
        try:
            entry = self._lookup.get(tool)
            if entry is None:
                entry = self._resolve(tool)
            return entry((args, agent))
        except Exception as exc:  # noqa: BLE001 - decide must never raise; fail closed
            return Decision(
                Action.BLOCK, None, f"blocked: policy evaluation failed ({type(exc).__name__})", 0
            )

    def tool_pattern(self, tool: str) -> str | None:
        """The ``tool`` pattern of the entry that governs ``tool``, or None (defaults only)."""
        if tool in self._exact:
            return tool
        for pattern, (matcher, _) in zip(self._patterns, self._globs, strict=True):
            if matcher(tool):
                return pattern
        return None

    def __repr__(self) -> str:
        return f"<CompiledPolicy {self.digest[:12]} entries={len(self.policy_set.policies)}>"


def compile_policy(policy_set: PolicySet, *, inline: bool = True) -> CompiledPolicy:
    """Compile a validated PolicySet. Cheap enough to run on every apply; do it once per version.

    ``inline=False`` skips code generation (policies.codegen) and evaluates with closures
    only: same decisions, about twice as slow; useful to cross-check the generated code.
    """
    return CompiledPolicy(policy_set, inline=inline)


def _timeout(action: Action, *candidates: int | None) -> int:
    if action is not Action.REQUIRE_APPROVAL:
        return 0
    return next(value for value in candidates if value is not None)


def _rule_decision(rule: RuleSpec, entry: ToolPolicySpec, policy_set: PolicySet) -> Decision:
    reason = rule.reason or f"{_VERB[rule.action]} by rule '{rule.id}' of the policy for '{entry.tool}'"
    timeout = _timeout(
        rule.action, rule.approval_timeout_s, entry.approval_timeout_s, policy_set.defaults.approval_timeout_s
    )
    return Decision(rule.action, rule.id, reason, timeout)


def _global_default(policy_set: PolicySet, entry: ToolPolicySpec | None) -> Decision:
    action = policy_set.defaults.action
    if entry is None:
        reason = f"{_VERB[action]} by the global default (no policy for this tool)"
    elif entry.rules:
        reason = f"{_VERB[action]} by the global default (no rule of the policy for '{entry.tool}' matched)"
    else:
        reason = f"{_VERB[action]} by the global default (the policy for '{entry.tool}' has no rules)"
    timeout = _timeout(
        action, entry.approval_timeout_s if entry else None, policy_set.defaults.approval_timeout_s
    )
    return Decision(action, None, reason, timeout)


def _closure_entry(rules: tuple[tuple[Predicate, Decision], ...], default: Decision) -> _Entry:
    """The reference evaluator: first rule whose predicate matches, else the default."""

    def entry(ctx: tuple[Any, ...]) -> Decision:
        for predicate, decision in rules:
            if predicate(ctx):
                return decision
        return default

    return entry


def _compile_entry(entry: ToolPolicySpec, policy_set: PolicySet, *, inline: bool) -> _Entry:
    decisions = [_rule_decision(rule, entry, policy_set) for rule in entry.rules]
    closures = tuple(
        (_always if rule.when is None else compile_condition(rule.when), decision)
        for rule, decision in zip(entry.rules, decisions, strict=True)
    )
    if entry.default is None:
        default = _global_default(policy_set, entry)
    else:
        reason = f"{_VERB[entry.default]} by the default of the policy for '{entry.tool}'"
        timeout = _timeout(entry.default, entry.approval_timeout_s, policy_set.defaults.approval_timeout_s)
        default = Decision(entry.default, None, reason, timeout)
    fallback = _closure_entry(closures, default)
    if not inline:
        return fallback
    conditions = [(rule.when, decision) for rule, decision in zip(entry.rules, decisions, strict=True)]
    return generate_entry(conditions, default, fallback, label=f"for {entry.tool!r}")

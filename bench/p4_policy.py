"""P4: policy evaluation per decision: a 20-rule entry inside policies of 10, 1,000 and 10,000 tools.

The policy has N tool entries: ``target.send`` with 20 rules (every operator family, combinators,
a dotted path), a glob entry ``glob.*`` with the same 20 rules, and N-2 one-rule filler tools.
Variants, each for N in 10 / 1,000 / 10,000, interleaved in rounds:

  fallthrough  target.send with arguments no rule matches: all 20 rules run, then the default
  first        target.send with arguments the first rule matches
  glob         glob.send (resolved through the glob, then cached) falling through all 20 rules
  closure      the hand-written closure floor: dict lookup + the same 20 checks written by hand

Each call is timed alone with perf_counter_ns minus the timer's own cost (measured in the same
run); ``batch p50`` is the median over 100-call batches (no per-call timer), as a cross-check.

    uv run python bench/p4_policy.py [--rounds 15] [--per-round 2000]
"""

from __future__ import annotations

import argparse
import gc
import re
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

DOC_CLOSURE_FLOOR_US = 0.25  # performance.md: hand-written closure, p50

RULES = [
    ("to-competitors", "{arg: to, email_domain_in: [evil.example, competitor.example]}", "block"),
    ("huge-amount", "{arg: amount, gt: 10000}", "block"),
    ("sanctioned-currency", "{arg: currency, in: [kpw, irr, xyz]}", "block"),
    ("test-customers", "{arg: customer_id, startswith: cus_test_}", "block"),
    ("prod-env", "{arg: env, eq: prod}", "require_approval"),
    ("etc-paths", "{arg: path, startswith: /etc/}", "block"),
    ("pem-files", "{arg: path, endswith: .pem}", "block"),
    ("secret-tag", "{arg: tags, contains: secret}", "block"),
    ("big-amount", "{arg: amount, gte: 5000}", "require_approval"),
    ("eur-over-200", "{all: [{arg: amount, gt: 200}, {arg: currency, eq: eur}]}", "require_approval"),
    ("staging-or-cn", "{any: [{arg: env, eq: staging}, {arg: region, eq: cn}]}", "require_approval"),
    ("no-recipient", "{not: {arg: to, exists: true}}", "block"),
    ("vip-customers", "{arg: customer_id, matches: '^cus_vip_[0-9]+$'}", "require_approval"),
    ("negative-amount", "{arg: amount, lt: 0}", "block"),
    ("non-usd", "{arg: currency, ne: usd}", "require_approval"),
    ("forbidden-sku", "{arg: items.0.sku, eq: forbidden}", "block"),
    ("urgent-subject", "{arg: subject, startswith: URGENT}", "require_approval"),
    ("unknown-env", "{arg: env, not_in: [dev, staging, prod]}", "block"),
    ("many-attachments", "{arg: attachments, gt: 10}", "require_approval"),
    ("magic-amount", "{arg: amount, eq: 1234}", "require_approval"),
]
FALLTHROUGH = {"to": "bob@example.com", "amount": 50, "currency": "usd", "customer_id": "cus_123", "env": "dev",
               "path": "/tmp/report.csv", "tags": ["finance"], "region": "eu", "items": [{"sku": "A-1"}],
               "subject": "Quarterly report", "attachments": 1}
FIRST = {**FALLTHROUGH, "to": "mallory@evil.example"}


def policy_yaml(n_tools: int) -> str:
    def entry(tool: str, suffix: str) -> list[str]:
        out = [f"  - tool: {tool!r}", "    rules:"]
        for name, when, action in RULES:
            out += [f"      - name: {name}{suffix}", f"        when: {when}", f"        action: {action}"]
        return out

    lines = ["defaults: {action: allow}", "policies:"]
    lines += entry("target.send", "")
    lines += entry("glob.*", "-glob")
    for i in range(max(0, n_tools - 2)):
        lines += [f"  - tool: filler.tool_{i}",
                  f"    rules: [{{name: filler-{i}, when: {{arg: x, eq: {i}}}, action: block}}]"]
    return "\n".join(lines) + "\n"


def closure_floor() -> Any:
    """The same 20 checks, written by hand as one closure per tool (the floor)."""
    competitor = frozenset({"evil.example", "competitor.example"})
    sanctioned = frozenset({"kpw", "irr", "xyz"})
    known_env = frozenset({"dev", "staging", "prod"})
    vip = re.compile(r"^cus_vip_[0-9]+$").search
    allow, block, approve = ("allow", None), ("block", "r"), ("require_approval", "r")

    def target(a: dict) -> tuple:
        to, amount, cur, cid, env, path = (a.get("to"), a.get("amount"), a.get("currency"), a.get("customer_id"),
                                           a.get("env"), a.get("path"))
        if isinstance(to, str) and "@" in to and to.rpartition("@")[2].lower() in competitor:
            return block
        num = isinstance(amount, (int, float)) and not isinstance(amount, bool)
        if num and amount > 10000:
            return block
        if cur in sanctioned:
            return block
        if isinstance(cid, str) and cid.startswith("cus_test_"):
            return block
        if env == "prod":
            return approve
        if isinstance(path, str) and (path.startswith("/etc/") or path.endswith(".pem")):
            return block
        tags = a.get("tags")
        if isinstance(tags, list) and "secret" in tags:
            return block
        if num and amount >= 5000:
            return approve
        if num and amount > 200 and cur == "eur":
            return approve
        if env == "staging" or a.get("region") == "cn":
            return approve
        if "to" not in a:
            return block
        if isinstance(cid, str) and vip(cid):
            return approve
        if num and amount < 0:
            return block
        if cur is not None and cur != "usd":
            return approve
        items = a.get("items")
        if isinstance(items, list) and items and isinstance(items[0], dict) and items[0].get("sku") == "forbidden":
            return block
        subject = a.get("subject")
        if isinstance(subject, str) and subject.startswith("URGENT"):
            return block
        if env is not None and env not in known_env:
            return block
        att = a.get("attachments")
        if isinstance(att, int) and att > 10:
            return approve
        if num and amount == 1234:
            return approve
        return allow

    table = {"target.send": target}

    def decide(tool: str, args: dict) -> tuple:
        fn = table.get(tool)
        return fn(args) if fn is not None else allow

    return decide


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--per-round", type=int, default=2000)
    ap.add_argument("--sizes", default="10,1000,10000")
    ap.add_argument("--max-seconds", type=float, default=120)
    opts = ap.parse_args()

    import policies

    sizes = [int(x) for x in opts.sizes.split(",")]
    compiled = {}
    compile_s = {}
    for n in sizes:
        t0 = time.perf_counter()
        compiled[n] = policies.compile_policy(policies.load_policy_text(policy_yaml(n), f"p4-{n}.yaml"))
        compile_s[n] = time.perf_counter() - t0
        d1 = compiled[n].decide("target.send", FALLTHROUGH, agent="bench")
        d2 = compiled[n].decide("target.send", FIRST, agent="bench")
        d3 = compiled[n].decide("glob.send", FALLTHROUGH, agent="bench")
        assert str(getattr(d1.action, "value", d1.action)) == "allow" and d1.rule is None, d1
        assert d2.rule == "to-competitors", d2
        assert str(getattr(d3.action, "value", d3.action)) == "allow" and d3.rule is None, d3
    floor = closure_floor()
    assert floor("target.send", FALLTHROUGH)[0] == "allow" and floor("target.send", FIRST)[0] == "block"

    variants: dict[str, Any] = {}
    for n in sizes:
        p = compiled[n]
        variants[f"fallthrough/{n}"] = (lambda p=p: p.decide("target.send", FALLTHROUGH, agent="bench"))
        variants[f"first/{n}"] = (lambda p=p: p.decide("target.send", FIRST, agent="bench"))
        variants[f"glob/{n}"] = (lambda p=p: p.decide("glob.send", FALLTHROUGH, agent="bench"))
    variants["closure"] = lambda: floor("target.send", FALLTHROUGH)

    ns = time.perf_counter_ns
    # the timer's own cost: the median of timing nothing
    empty = []
    for _ in range(20000):
        t0 = ns()
        empty.append(ns() - t0)
    timer_ns = C.pct(empty, 50)

    single: dict[str, list[float]] = {k: [] for k in variants}
    batch: dict[str, list[float]] = {k: [] for k in variants}
    names = list(variants)
    t_start = time.monotonic()
    rounds = 0
    gc_was = gc.isenabled()
    for r in range(opts.rounds):
        if time.monotonic() - t_start > opts.max_seconds:
            break
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            fn = variants[name]
            out = single[name]
            for _ in range(opts.per_round):
                t0 = ns()
                fn()
                out.append((ns() - t0 - timer_ns) / 1000)
            bo = batch[name]
            for _ in range(opts.per_round // 100):
                t0 = ns()
                for _ in range(100):
                    fn()
                bo.append((ns() - t0) / 100 / 1000)
        rounds += 1
    if gc_was:
        gc.enable()

    s = {k: C.summary(v) for k, v in single.items()}
    b = {k: C.summary(v) for k, v in batch.items()}
    floor50 = s["closure"]["p50"]
    rows = []
    for name in names:
        rows.append([name, s[name]["p50"], s[name]["p99"], b[name]["p50"], C.ratio(s[name]["p50"], floor50),
                     C.ratio(s[name]["p50"], DOC_CLOSURE_FLOOR_US)])
    table = C.print_table(
        f"\nP4 policy decision time (µs; {rounds} interleaved rounds x {opts.per_round} calls; timer cost "
        f"{timer_ns:.0f} ns subtracted)",
        ["variant/tools", "p50", "p99", "batch p50", "x closure", "x 0.25µs doc"], rows)
    flat = []
    for kind in ("fallthrough", "first", "glob"):
        vals = [s[f"{kind}/{n}"]["p50"] for n in sizes]
        flat.append([kind, *vals, C.ratio(max(vals), min(vals))])
    flat_table = C.print_table("\nP4 flatness in the number of tools (p50 µs)",
                               ["variant", *[f"{n} tools" for n in sizes], "max/min"], flat)
    big = max(sizes)
    worst50 = max(s[f"{k}/{big}"]["p50"] for k in ("fallthrough", "first", "glob"))
    worst99 = max(s[f"{k}/{big}"]["p99"] for k in ("fallthrough", "first", "glob"))
    flat_ratio = max(r[-1] for r in flat)
    checks = [
        [f"p50 <= 2 µs ({big} tools, worst variant)", f"{worst50:.2f} µs", worst50 <= 2],
        [f"p99 <= 10 µs ({big} tools, worst variant)", f"{worst99:.2f} µs", worst99 <= 10],
        ["flat in tools (max/min p50 <= 1.3)", f"{flat_ratio:.2f}x", flat_ratio <= 1.3],
        ["ambitious p50 <= 1 µs", f"{worst50:.2f} µs", worst50 <= 1],
    ]
    check_table = C.print_table("\nP4 targets", ["target", "measured", "met"], [[a, m, str(c)] for a, m, c in checks])
    compile_table = C.print_table("\nP4 compile time (info)", ["tools", "load+compile s"],
                                  [[n, compile_s[n]] for n in sizes])
    C.write_json("p4_policy", {"options": vars(opts), "rounds": rounds, "timer_ns": timer_ns, "single_us": s,
                               "batch_us": b, "compile_s": compile_s, "targets": checks,
                               "tables": [table, flat_table, check_table, compile_table]})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Per-call overhead a framework integration adds on top of the SDK: one LangChain tool call.

The same ``StructuredTool`` (created before ``configure()``, as agents do) is invoked with a
``ToolCall`` (the shape LangGraph's ``ToolNode`` passes) against bench/_stub.py, a do-nothing
gateway that answers "allowed" at once, so what is measured is client-side cost only:

  unpatched    tool.invoke(call), callgate not configured                        (the floor)
  by_hand      permit = callgate.check_call(...); with permit: tool.invoke(call)  (integrations off)
  integration  tool.invoke(call) with configure(): BaseTool.run is patched       (the figure)
  check_only   callgate.check_call(...) alone                                    (information)

``integration - by_hand`` is what the integration itself costs per call beyond the SDK check it
makes (argument extraction, the wrapt dispatch, the re-entrancy pass, the outcome report); the
ratios put both next to the unpatched tool. Variants are interleaved in rounds (rotating order),
each timed per call.

The measuring runs in the LangChain test environment (tests/envs/langchain, which has the
framework); this script starts the stub, runs itself there with ``--child``, and prints the table:

    uv sync --frozen --project tests/envs/langchain      # once
    uv run python bench/p6_integration_overhead.py [--rounds 10] [--per-round 300]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

HERE = Path(__file__).resolve().parent
LANGCHAIN_PY = HERE.parent / "tests" / "envs" / "langchain" / ".venv" / "bin" / "python"
VARIANTS = ("unpatched", "by_hand", "integration", "check_only")
KEY = "cg_agent_bench"


# -- the child: runs in the LangChain environment, imports nothing from bench/_common ------------------
def child(url: str, spool: str, rounds: int, per_round: int) -> dict[str, Any]:
    import callgate
    from langchain_core.tools import StructuredTool
    from langchain_core.tools.base import BaseTool

    def lookup(city: str) -> str:
        """Look up a city."""
        return f"{city}: 7 degrees"

    tool = StructuredTool.from_function(lookup)
    args = {"city": "Oslo"}
    call = {"name": "lookup", "args": args, "id": "call_1", "type": "tool_call"}

    def use(variant: str) -> None:
        callgate.flush(5.0)
        callgate.reset()  # also removes the integration's patches
        if variant == "integration":
            callgate.configure(url, KEY, spool_dir=spool)
        elif variant != "unpatched":
            callgate.configure(url, KEY, spool_dir=spool, integrations=False)
        patched = type(BaseTool.__dict__["run"]).__name__ == "FunctionWrapper"
        if patched != (variant == "integration"):
            raise SystemExit(f"{variant}: BaseTool.run patched={patched}")

    def invoke(_i: int) -> None:
        message = tool.invoke(call)
        if message.status != "success":
            raise SystemExit(f"tool call refused: {message.content}")

    def by_hand(_i: int) -> None:
        permit = callgate.check_call("lookup", args, framework="langchain")
        with permit:
            invoke(_i)

    def check_only(_i: int) -> None:
        callgate.check_call("lookup", args, framework="langchain")

    fns: dict[str, Callable[[int], None]] = {
        "unpatched": invoke,
        "by_hand": by_hand,
        "integration": invoke,
        "check_only": check_only,
    }
    perf = time.perf_counter
    samples: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for name in VARIANTS:  # warm-up
        use(name)
        for i in range(min(50, per_round)):
            fns[name](i)
    for r in range(rounds):
        for name in VARIANTS[r % len(VARIANTS) :] + VARIANTS[: r % len(VARIANTS)]:
            use(name)
            fn = fns[name]
            for i in range(per_round):
                t0 = perf()
                fn(i)
                samples[name].append(perf() - t0)
    callgate.flush(5.0)
    callgate.reset()
    import langchain_core

    return {
        "samples": samples,
        "langchain_core": langchain_core.__version__,
        "python": sys.version.split()[0],
    }


# -- the parent: main environment ----------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--per-round", type=int, default=300, help="calls per variant per round")
    ap.add_argument("--child", nargs=2, metavar=("URL", "SPOOL"), help=argparse.SUPPRESS)
    opts = ap.parse_args()
    if opts.child:
        print(json.dumps(child(opts.child[0], opts.child[1], opts.rounds, opts.per_round)))
        return 0

    sys.path.insert(0, str(HERE))
    import _common as C

    if not LANGCHAIN_PY.exists():
        print(f"missing {LANGCHAIN_PY}: run `uv sync --frozen --project tests/envs/langchain` first")
        return 1
    with C.tmpdir("p6-overhead") as tmp:
        stub = C.start_stub()
        try:
            out = subprocess.run(
                [
                    str(LANGCHAIN_PY),
                    __file__,
                    "--rounds",
                    str(opts.rounds),
                    "--per-round",
                    str(opts.per_round),
                    "--child",
                    stub.url,
                    str(Path(tmp) / "spool"),
                ],
                capture_output=True,
                text=True,
                timeout=1200,
                cwd=C.REPO,
                check=False,
            )
        finally:
            stub.stop()
    if out.returncode != 0:
        print(f"child failed ({out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
        return 1
    result = json.loads(out.stdout.strip().splitlines()[-1])
    s = {name: C.summary(v) for name, v in result["samples"].items()}
    us = lambda name, q="p50": s[name][q] * 1e6  # noqa: E731
    rows = [
        [
            name,
            s[name]["n"],
            us(name),
            us(name, "p90"),
            us(name, "p99"),
            C.ratio(us(name), us("unpatched")),
            C.ratio(us(name), us("by_hand")),
        ]
        for name in VARIANTS
    ]
    table = C.print_table(
        f"\nLangChain StructuredTool.invoke(ToolCall) against a do-nothing gateway (µs; "
        f"{opts.rounds} interleaved rounds; langchain-core {result['langchain_core']})",
        ["variant", "n", "p50", "p90", "p99", "x unpatched", "x by_hand"],
        rows,
    )
    own = us("integration") - us("by_hand")
    checks = [
        ["integration's own cost (integration - by_hand, p50)", f"{own:.1f} µs", "info"],
        ["integration / by_hand (p50)", f"{C.ratio(us('integration'), us('by_hand')):.2f}x", "info"],
        ["integration / unpatched (p50)", f"{C.ratio(us('integration'), us('unpatched')):.2f}x", "info"],
        ["SDK check alone (check_only, p50)", f"{us('check_only'):.0f} µs", "info"],
    ]
    checks_table = C.print_table("\nIntegration overhead", ["figure", "measured", ""], checks)
    print("\nThe machine is shared (2 cores, other work running): quote the ratios, not absolute times.")
    C.write_json(
        "p6_integration_overhead",
        {
            "options": vars(opts),
            "summary_seconds": s,
            "langchain_core": result["langchain_core"],
            "child_python": result["python"],
            "figures": checks,
            "tables": [table, checks_table],
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

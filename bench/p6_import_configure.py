"""P6: ``import callgate`` + ``configure()`` in a fresh process; P8: the cost of ``record_usage``.

P6 (docs/performance.md: <= 150 ms, ambitious <= 50 ms, and no agent framework imported).
Every sample is a fresh ``python -c`` process of the workspace venv; variants are interleaved in
rounds (order rotating) with a bare ``python -c pass`` baseline, so "added" is measured against
interpreter start-up in the same moment of a noisy machine:

  baseline          python -c pass
  import            import callgate
  configure         import callgate; callgate.configure(url, key)          <- the P6 figure
  configure_noint   ... configure(..., integrations=False)                  (information)
  eager             what configure() did before the lazy hooks: wrapt and every integration module
                    imported at configure time, then configure()            (the "before" figure)
  wrapt             import wrapt alone                                       (information)
  stdlib            the stdlib modules any agent process already has (logging, json, re, socket...)
  stdlib_configure  the same, then import + configure(): the marginal cost in a real agent process

Each variant runs under two bytecode regimes:

  pyc     .pyc files available (a PYTHONPYCACHEPREFIX in a temp dir, warmed first): an installed
          wheel (pip byte-compiles at install, as do UV_COMPILE_BYTECODE=1 images)  <- P6
  source  PYTHONDONTWRITEBYTECODE=1 and no .pyc for the venv's packages (uv installs without
          byte-compiling, and this machine sets the variable): every module compiled each start

Figures per variant: wall p50 of the whole process, ``added`` = median over rounds of (variant -
baseline of the same round), and ``in-process`` = the time the statement itself took, measured
inside the child. One more child lists ``sys.modules`` after configure() (frameworks, wrapt, asyncio,
callgate's integration modules) and one prints the top ``-X importtime`` self costs.

P8 (an in-memory append on the LLM call's path): ``callgate.log_usage(...)`` per call in this
process, configured against the do-nothing stub (bench/_stub.py), versus its floors measured in
the same rounds: building the same record tuple and appending it to a deque, and calling a no-op
function with the same arguments. The buffer is flushed between rounds (not timed), so the
measured path is the append, never the "buffer full" drop.

    uv run python bench/p6_import_configure.py [--rounds 21] [--p8-rounds 15] [--p8-calls 20000]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

FRAMEWORKS = ("langchain", "langchain_core", "langgraph", "agents", "crewai", "openai", "anthropic")
WATCH = ("wrapt", "asyncio", "ssl", "inspect", "dataclasses")
URL = "http://127.0.0.1:9"  # configure() does no I/O: nothing needs to listen
MODEL = "gpt-4o-2024-08-06"
#: Standard-library modules every real agent process has loaded anyway (any framework, httpx,
#: the app's own logging): callgate's marginal cost there is stdlib_configure - stdlib.
STDLIB = (
    "import logging, json, typing, re, socket, pathlib, threading, datetime, random, queue, "
    "urllib.parse, concurrent.futures"
)


def child_code(statement: str) -> str:
    return (
        "import time\n_t0 = time.perf_counter_ns()\n" + statement + "\nprint(time.perf_counter_ns() - _t0)\n"
    )


def variants(spool: Path) -> dict[str, str]:
    configure = f"import callgate\ncallgate.configure({URL!r}, 'cg_agent_bench', spool_dir={str(spool)!r}"
    return {
        "baseline": "pass",
        "import": "import callgate",
        "configure": configure + ")",
        "configure_noint": configure + ", integrations=False)",
        "eager": "import wrapt, callgate.integrations.langchain, callgate.integrations.openai_agents, "
        "callgate.integrations.crewai\n" + configure + ")",
        "wrapt": "import wrapt",
        "stdlib": STDLIB,
        "stdlib_configure": STDLIB + "\n" + configure + ")",
    }


def regime_env(regime: str, pyc_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
    if regime == "pyc":
        env["PYTHONPYCACHEPREFIX"] = str(pyc_dir)
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_child(code: str, env: dict[str, str]) -> tuple[float, float, float]:
    """(wall seconds of the whole process, seconds the statement took inside it, CPU seconds of
    the process). CPU time is the steadier figure on a shared machine: waiting for a core is not in it."""
    cpu0 = _children_cpu()
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=C.REPO,
        check=False,
    )
    wall = time.perf_counter() - t0
    cpu = _children_cpu() - cpu0
    if out.returncode != 0:
        raise RuntimeError(f"child failed ({out.returncode}):\n{code}\n{out.stderr}")
    return wall, int(out.stdout.strip().splitlines()[-1]) / 1e9, cpu


def loaded_modules(env: dict[str, str], statement: str) -> list[str]:
    code = statement + "\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))\n"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=C.REPO,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def import_costs(env: dict[str, str], statement: str, runs: int = 7, top: int = 12) -> list[list[Any]]:
    """The modules with the largest self import time (-X importtime, µs; median of ``runs``)."""
    seen: dict[str, list[tuple[int, int]]] = collections.defaultdict(list)
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", statement],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
            cwd=C.REPO,
        )
        for line in out.stderr.splitlines():
            if not line.startswith("import time:") or "self [us]" in line:
                continue
            self_us, cumulative, name = (part.strip() for part in line[len("import time:") :].split("|"))
            seen[name.strip()].append((int(self_us), int(cumulative)))
    rows = [
        [name, statistics.median(v[0] for v in got), statistics.median(v[1] for v in got)]
        for name, got in seen.items()
    ]
    rows.sort(key=lambda r: -r[1])
    return rows[:top]


def measure_p6(opts: argparse.Namespace, work: Path) -> dict[str, Any]:
    codes = variants(work / "spool")
    pyc_dir = work / "pyc"
    envs = {regime: regime_env(regime, pyc_dir) for regime in ("pyc", "source")}
    for name, statement in codes.items():  # warm the .pyc cache (and the OS page cache) first
        for _ in range(2):
            run_child(child_code(statement), envs["pyc"])
            run_child(child_code(statement), envs["source"])
    samples: dict[tuple[str, str], list[tuple[float, float]]] = collections.defaultdict(list)
    cells = [(regime, name) for regime in envs for name in codes]
    started = time.monotonic()
    rounds = 0
    for r in range(opts.rounds):
        if time.monotonic() - started > opts.max_seconds:
            break
        order = cells[r % len(cells) :] + cells[: r % len(cells)]
        for regime, name in order:
            samples[(regime, name)].append(run_child(child_code(codes[name]), envs[regime]))
        rounds += 1
    modules = loaded_modules(envs["pyc"], codes["configure"])
    costs = import_costs(envs["pyc"], codes["configure"])
    return {"samples": samples, "rounds": rounds, "modules": modules, "costs": costs, "codes": codes}


def report_p6(p6: dict[str, Any]) -> tuple[list[str], list[list[Any]], bool]:
    samples = p6["samples"]
    rows = []
    figures: dict[tuple[str, str], dict[str, float]] = {}
    for regime in ("pyc", "source"):
        base = samples[(regime, "baseline")]
        for name in p6["codes"]:
            got = samples[(regime, name)]
            paired = [v[0] - b[0] for v, b in zip(got, base)]
            paired_cpu = [v[2] - b[2] for v, b in zip(got, base)]
            fig = {
                "wall_p50": statistics.median(v[0] for v in got) * 1e3,
                "added_p50": statistics.median(paired) * 1e3,
                "inproc_p50": statistics.median(v[1] for v in got) * 1e3,
                "inproc_p90": C.pct([v[1] for v in got], 90) * 1e3,
                "cpu_p50": statistics.median(v[2] for v in got) * 1e3,
                "added_cpu_p50": statistics.median(paired_cpu) * 1e3,
            }
            figures[(regime, name)] = fig
            rows.append(
                [
                    f"{regime}:{name}",
                    len(got),
                    fig["wall_p50"],
                    fig["added_p50"],
                    fig["inproc_p50"],
                    fig["inproc_p90"],
                    fig["cpu_p50"],
                    fig["added_cpu_p50"],
                ]
            )
    tables = [
        C.print_table(
            f"\nP6 fresh processes (ms; {p6['rounds']} interleaved rounds; wall = whole process, "
            "added = minus `python -c pass` of the same round, in-process = the statement, "
            "cpu = the process's user+sys time)",
            [
                "variant",
                "n",
                "wall p50",
                "added p50",
                "in-process p50",
                "in-process p90",
                "cpu p50",
                "added cpu p50",
            ],
            rows,
        )
    ]

    modules = p6["modules"]
    tops = {m.split(".")[0] for m in modules}
    frameworks = sorted(tops & set(FRAMEWORKS))
    watched = {name: name in tops for name in WATCH}
    integration_modules = [m for m in modules if m.startswith("callgate.integrations.")]
    print(f"\nafter `import callgate; callgate.configure(...)`: {len(modules)} modules loaded")
    print(f"  agent frameworks / provider SDKs imported: {frameworks or 'none'}")
    print(
        "  " + ", ".join(f"{name} {'IMPORTED' if hit else 'not imported'}" for name, hit in watched.items())
    )
    shown = integration_modules or "none (loaded when a framework is)"
    print(f"  callgate integration modules imported: {shown}")
    tables.append(
        C.print_table(
            "\nP6 largest import costs of configure (pyc; -X importtime µs, median of 7 runs)",
            ["module", "self µs", "cumulative µs"],
            p6["costs"],
        )
    )

    main = figures[("pyc", "configure")]
    source = figures[("source", "configure")]
    wrapt_added = figures[("pyc", "wrapt")]["added_p50"]
    marginal = {
        key: figures[("pyc", "stdlib_configure")][key] - figures[("pyc", "stdlib")][key]
        for key in ("added_p50", "added_cpu_p50")
    }
    checks = [
        ["added p50 <= 150 ms (pyc)", f"{main['added_p50']:.1f} ms", main["added_p50"] <= 150],
        ["ambitious: added p50 <= 50 ms (pyc)", f"{main['added_p50']:.1f} ms", main["added_p50"] <= 50],
        ["in-process p50 (pyc)", f"{main['inproc_p50']:.1f} ms", "info"],
        [
            "added CPU time p50 (pyc): steadier on a busy machine",
            f"{main['added_cpu_p50']:.1f} ms",
            main["added_cpu_p50"] <= 150,
        ],
        ["added p50 without .pyc (source)", f"{source['added_p50']:.1f} ms", source["added_p50"] <= 150],
        [
            "configure / bare interpreter (pyc, wall)",
            f"{C.ratio(main['wall_p50'], figures[('pyc', 'baseline')]['wall_p50']):.2f}x",
            "info",
        ],
        [
            "before: eager / configure (pyc, added CPU)",
            f"{C.ratio(figures[('pyc', 'eager')]['added_cpu_p50'], main['added_cpu_p50']):.2f}x",
            "info",
        ],
        [
            "before: eager / configure (pyc, added)",
            f"{C.ratio(figures[('pyc', 'eager')]['added_p50'], main['added_p50']):.2f}x "
            f"({figures[('pyc', 'eager')]['added_p50']:.1f} ms)",
            "info",
        ],
        [
            "before: eager / configure (source, added)",
            f"{C.ratio(figures[('source', 'eager')]['added_p50'], source['added_p50']):.2f}x "
            f"({figures[('source', 'eager')]['added_p50']:.1f} ms)",
            "info",
        ],
        ["import wrapt alone (pyc, added): no longer paid", f"{wrapt_added:.1f} ms", "info"],
        [
            "marginal in a process with the usual stdlib loaded (pyc, stdlib_configure - stdlib, wall)",
            f"{marginal['added_p50']:.1f} ms",
            "info",
        ],
        [
            "  the same in CPU time",
            f"{marginal['added_cpu_p50']:.1f} ms",
            "info",
        ],
        [
            "configure() itself (configure - import, in-process, pyc)",
            f"{main['inproc_p50'] - figures[('pyc', 'import')]['inproc_p50']:.1f} ms",
            "info",
        ],
        ["imports no agent framework", ", ".join(frameworks) or "none", not frameworks],
        [
            "imports no wrapt / asyncio",
            f"wrapt={watched['wrapt']}, asyncio={watched['asyncio']}",
            not watched["wrapt"] and not watched["asyncio"],
        ],
    ]
    tables.append(
        C.print_table("\nP6 targets", ["target", "measured", "met"], [[a, b, str(c)] for a, b, c in checks])
    )
    p6["figures"] = {f"{regime}:{name}": fig for (regime, name), fig in figures.items()}
    return tables, checks, not frameworks


# -- P8 ----------------------------------------------------------------------------------------------
def measure_p8(opts: argparse.Namespace, work: Path) -> tuple[list[str], dict[str, Any]]:
    import callgate
    from callgate import _config

    stub = C.start_stub()
    try:
        callgate.configure(stub.url, "cg_agent_bench", spool_dir=work / "p8-spool", integrations=False)
        reporter = _config.runtime().reporter
        log_usage = callgate.log_usage
        buffer: collections.deque[Any] = collections.deque()
        now = time.time

        def noop(
            model: str,
            input_tokens: int,
            output_tokens: int,
            *,
            cache_read_tokens: int = 0,
            reasoning_tokens: int = 0,
            provider: str | None = None,
            framework: str | None = None,
        ) -> None:
            return None

        def v_record(n: int) -> None:
            for _ in range(n):
                log_usage(
                    MODEL,
                    1234,
                    56,
                    cache_read_tokens=512,
                    reasoning_tokens=8,
                    provider="openai",
                    framework="openai-chat",
                )

        def v_append(n: int) -> None:
            append = buffer.append
            for _ in range(n):
                append((now(), None, MODEL, "openai", "openai-chat", 1234, 56, 512, 0, 8))
            buffer.clear()

        def v_noop(n: int) -> None:
            for _ in range(n):
                noop(
                    MODEL,
                    1234,
                    56,
                    cache_read_tokens=512,
                    reasoning_tokens=8,
                    provider="openai",
                    framework="openai-chat",
                )

        def v_loop(n: int) -> None:
            for _ in range(n):
                pass

        fns: dict[str, Callable[[int], None]] = {
            "record_usage": v_record,
            "deque_append": v_append,
            "noop_call": v_noop,
            "empty_loop": v_loop,
        }
        ns: dict[str, list[float]] = collections.defaultdict(list)
        n = opts.p8_calls
        for fn in fns.values():
            fn(1000)
        callgate.flush(10)
        names = list(fns)
        for r in range(opts.p8_rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                t0 = time.perf_counter_ns()
                fns[name](n)
                ns[name].append((time.perf_counter_ns() - t0) / n)
                if name == "record_usage":
                    callgate.flush(30)  # drain the buffer (not timed)
        dropped = reporter.usage_dropped
        callgate.reset()

        def v_unconfigured(count: int) -> None:
            for _ in range(count):
                log_usage(
                    MODEL,
                    1234,
                    56,
                    cache_read_tokens=512,
                    reasoning_tokens=8,
                    provider="openai",
                    framework="openai-chat",
                )

        for _ in range(opts.p8_rounds):
            t0 = time.perf_counter_ns()
            v_unconfigured(n)
            ns["record_usage_unconfigured"].append((time.perf_counter_ns() - t0) / n)
    finally:
        stub.stop()

    loop = statistics.median(ns["empty_loop"])
    p50 = {name: statistics.median(v) for name, v in ns.items()}
    rows = [
        [
            name,
            len(v),
            p50[name],
            C.pct(v, 90),
            p50[name] - loop,
            C.ratio(p50[name] - loop, p50["deque_append"] - loop),
        ]
        for name, v in ns.items()
    ]
    table = C.print_table(
        f"\nP8 usage capture on the LLM call's path (ns per call; {opts.p8_rounds} rounds of "
        f"{n} calls; minus loop = without the bench loop's own cost)",
        ["variant", "rounds", "p50", "p90", "p50 minus loop", "x deque_append"],
        rows,
    )
    print(f"usage records dropped during the run: {dropped} (must be 0: the append path was measured)")
    return [table], {"ns_per_call": dict(ns), "p50": p50, "dropped": dropped}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--rounds", type=int, default=21, help="P6 rounds (each runs every variant once per regime)"
    )
    ap.add_argument("--max-seconds", type=float, default=300, help="stop starting new P6 rounds after this")
    ap.add_argument("--p8-rounds", type=int, default=15)
    ap.add_argument("--p8-calls", type=int, default=20_000, help="calls per P8 variant per round")
    ap.add_argument("--skip-p8", action="store_true")
    opts = ap.parse_args()
    if opts.rounds < 1 or opts.p8_calls < 1:
        ap.error("--rounds and --p8-calls must be >= 1")

    with C.tmpdir("p6") as tmp:
        work = Path(tmp)
        print(f"P6: {opts.rounds} rounds of fresh processes, {sys.executable}", flush=True)
        p6 = measure_p6(opts, work)
        tables, checks, clean = report_p6(p6)
        p8: dict[str, Any] = {}
        if not opts.skip_p8:
            p8_tables, p8 = measure_p8(opts, work)
            tables += p8_tables
    print(
        "\nThe machine is shared (2 cores, other work running): quote the ratios and the paired 'added' "
        "figures, not absolute times."
    )
    C.write_json(
        "p6_import_configure",
        {
            "options": vars(opts),
            "p6": {
                "rounds": p6["rounds"],
                "figures": p6["figures"],
                "modules": p6["modules"],
                "import_costs": p6["costs"],
                "samples": {f"{r}:{n}": v for (r, n), v in p6["samples"].items()},
            },
            "targets": [[a, b, c] for a, b, c in checks],
            "p8": p8,
            "tables": tables,
        },
    )
    if p8 and p8.get("dropped"):
        return 1
    return 0 if clean else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Drive real Agents SDK runs the three ways a user can: ``Runner.run``, ``run_sync``, ``run_streamed``."""

from __future__ import annotations

import asyncio
from typing import Any

from agents import Agent, RunConfig, Runner

#: Every entry point of a run; tests parametrize over these.
MODES = ("run", "run_sync", "run_streamed")

RUN_CONFIG = RunConfig(tracing_disabled=True)


async def arun(agent: Agent[Any], input: Any, mode: str = "run") -> Any:
    """One run on the running loop (``run`` or ``run_streamed``, the stream read to its end)."""
    if mode == "run":
        return await Runner.run(agent, input, run_config=RUN_CONFIG)
    if mode == "run_streamed":
        result = Runner.run_streamed(agent, input, run_config=RUN_CONFIG)
        async for _ in result.stream_events():
            pass
        return result
    raise ValueError(f"no async mode {mode!r}")


def run(agent: Agent[Any], input: Any, mode: str) -> Any:
    """One run from synchronous code, the way ``mode`` names it; returns the run result."""
    if mode == "run_sync":
        return Runner.run_sync(agent, input, run_config=RUN_CONFIG)
    return asyncio.run(arun(agent, input, mode))

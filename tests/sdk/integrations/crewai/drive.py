"""One agent run on each of CrewAI's execution paths, the same way for every test.

A *path* is how the run is started and which tool-execution loop it gets:

* ``native-*`` -- the real OpenAI provider (mocked HTTP): native function calling, tools through
  ``tool.run``; ``stream-*`` the same with ``LLM(stream=True)`` (SSE);
* ``react-*`` -- :class:`~.scripted.ScriptedReActLLM`: the text ReAct loop, tools through
  ``CrewStructuredTool.invoke``;
* ``*-kickoff`` ``Crew(...).kickoff()``, ``*-akickoff`` ``await Crew(...).akickoff()``,
  ``agent-*`` a standalone ``Agent(...).kickoff(prompt)`` (no crew, no task).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from crewai import Agent, Crew, Task

from tests.sdk.integrations.crewai.scripted import REACT_USAGE, Script, ScriptedReActLLM, openai_llm
from tests.sdk.integrations.crewai.tools import ALL_TOOLS

__all__ = ["PATHS", "Outcome", "directive", "llm_for", "run", "script_for"]

PATHS = ("native-kickoff", "native-akickoff", "stream-kickoff", "stream-akickoff", "react-kickoff",
         "react-akickoff", "agent-native", "agent-react")


@dataclass
class Outcome:
    raw: str
    tool_failures: list[Any] = field(default_factory=list)
    token_usage: Any = None  # CrewAI's own UsageMetrics of the run (crews only)


def directive(tool: str, **args: Any) -> str:
    import json

    return f"TOOL={tool} ARGS={json.dumps(args)}"


def script_for(path: str) -> Script:
    return Script(REACT_USAGE) if "react" in path else Script()


def llm_for(path: str, script: Script) -> Any:
    if "react" in path:
        # A custom BaseLLM for a model genai-prices knows: its tokens get a price too.
        return ScriptedReActLLM(model="gpt-4o-mini", script=script)
    return openai_llm(script, stream=path.startswith("stream"))


def agent(llm: Any, tools: Sequence[Any] = ALL_TOOLS, **options: Any) -> Agent:
    return Agent(role="operator", goal="do what the task says", backstory="a careful operator", llm=llm,
                 tools=list(tools), max_iter=8, allow_delegation=False, verbose=False, **options)


def crew(llm: Any, prompt: str, tools: Sequence[Any] = ALL_TOOLS, *, agent_options: dict[str, Any] | None = None,
         **task_options: Any) -> Crew:
    worker = agent(llm, tools, **(agent_options or {}))
    task = Task(description=f"Do exactly this. {prompt}", expected_output="the tool results", agent=worker,
                **task_options)
    return Crew(agents=[worker], tasks=[task], verbose=False)


def run(path: str, script: Script, prompt: str, tools: Sequence[Any] = ALL_TOOLS, *,
        agent_options: dict[str, Any] | None = None, **task_options: Any) -> Outcome:
    """Run one agent on ``path`` with ``prompt``'s directives; returns what the run produced."""
    llm = llm_for(path, script)
    if path.startswith("agent-"):
        out = agent(llm, tools, **(agent_options or {})).kickoff(f"Do exactly this. {prompt}")
        return Outcome(out.raw, list(out.tool_failures))
    team = crew(llm, prompt, tools, agent_options=agent_options, **task_options)
    result = asyncio.run(team.akickoff()) if path.endswith("akickoff") else team.kickoff()
    return Outcome(result.raw, list(result.tasks_output[0].tool_failures), result.token_usage)

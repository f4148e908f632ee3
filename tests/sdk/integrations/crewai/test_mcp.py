"""MCP tools in CrewAI agents: a real local stdio server (``tests/sdk/integrations/mcp_server.py``)
attached with ``Agent(mcps=[MCPServerStdio(...)])``. CrewAI turns its tools into ``MCPNativeTool``s
(``BaseTool`` subclasses) named ``<server>_<tool>``, where ``<server>`` comes from the command
line (here shortened to a hash); the gateway sees the MCP tool's own name, which the policy names:
``rm_rf`` is blocked, ``list_dir`` allowed. The server journals every execution it performs.
"""

from __future__ import annotations

import json
from pathlib import Path
import pytest
from crewai.mcp import MCPServerStdio

from tests.sdk.integrations.crewai.checks import blocked, recorded
from tests.sdk.integrations.crewai.drive import directive, run, script_for
from tests.sdk.integrations.harness import Gateway
from tests.sdk.integrations.mcp_server import read_journal, stdio_params


@pytest.mark.parametrize("path", ["native-kickoff", "react-kickoff"])
def test_mcp_tools_are_checked_under_their_mcp_names(path: str, configured: Gateway, session_id: str,
                                                     tmp_path: Path) -> None:
    root, journal = tmp_path / "root", tmp_path / "journal.jsonl"
    (root / "junk").mkdir(parents=True)
    (root / "a.txt").write_text("a")
    server = MCPServerStdio(**stdio_params(root, journal))
    script = script_for(path)

    # The model picks MCP tools by what they do: CrewAI's aliases end in a hash of the command line.
    run(path, script, " ".join([directive("~recursively", path="/junk"), directive("~entries", path="/")]),
        tools=[], agent_options={"mcps": [server]})

    assert script.seen == [blocked("rm -rf is not allowed"), "/: a.txt junk"]
    assert read_journal(journal) == [{"tool": "list_dir", "path": "/"}]  # rm_rf never reached the server
    assert (root / "junk").is_dir()
    assert recorded(configured, session_id) == [("rm_rf", "blocked", {"path": "/junk"}),
                                                ("list_dir", "succeeded", {"path": "/"})]
    # The audit trail keeps what the model called and which server the tool came from.
    metadata = [json.loads(c["metadata"]) for c in configured.calls(session_id)]
    assert [m["crewai_tool"] for m in metadata] == script.called
    assert {m["mcp_server"] for m in metadata} == {server_name(server)}


def server_name(server: MCPServerStdio) -> str:
    """CrewAI's name for a stdio server: its command line (crewai/mcp/tool_resolver.py)."""
    return f"{server.command}_{'_'.join(server.args)}"

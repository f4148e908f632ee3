"""A real local MCP server (stdio) for the framework suites: ``list_dir`` and ``rm_rf``.

The default policy (``harness.DEFAULT_POLICY``) allows ``list_dir`` and blocks ``rm_rf``, so one
server shows both outcomes over a real MCP session. The tools do real work inside a sandbox
directory (``--root``) and append one JSON line per *execution* to a journal (``--journal``):
the MCP process is a separate process, so the journal is how a test proves that a blocked tool
never ran, or that an allowed one ran exactly once.

Works with mcp 1.x (``FastMCP``) and 2.x (renamed ``mcp.server.mcpserver.MCPServer``). The
``mcp`` import happens only when the server starts, so a test can import this module for
:func:`stdio_params` / :func:`read_journal` in an environment that has no ``mcp`` at all.

Run: ``python mcp_server.py --root DIR --journal FILE`` (stdio transport). Command-line arguments,
not environment variables: MCP's stdio clients start servers with a stripped environment.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

__all__ = ["build_server", "read_journal", "stdio_params"]

SERVER_NAME = "callgate-fs"


def stdio_params(root: os.PathLike[str] | str, journal: os.PathLike[str] | str) -> dict[str, Any]:
    """``command``/``args`` to start this server with the running interpreter (the shape both
    ``agents.mcp.MCPServerStdio(params=...)`` and ``mcp.StdioServerParameters(**...)`` accept)."""
    return {"command": sys.executable,
            "args": [str(Path(__file__).resolve()), "--root", str(root), "--journal", str(journal)]}


def read_journal(journal: os.PathLike[str] | str) -> list[dict[str, str]]:
    """The tool executions so far, oldest first: ``[{"tool": "list_dir", "path": "..."}, ...]``."""
    path = Path(journal)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class _Sandbox:
    """Resolves tool paths inside ``root`` (a model's "/" is the root) and journals executions."""

    def __init__(self, root: Path, journal: Path) -> None:
        self.root = root.resolve()
        self.journal = journal

    def resolve(self, path: str) -> Path | None:
        """The sandboxed path, or None when ``path`` escapes the root."""
        target = (self.root / path.lstrip("/")).resolve()
        if target != self.root and self.root not in target.parents:
            return None
        return target

    def record(self, tool: str, path: str) -> None:
        with self.journal.open("a") as f:
            f.write(json.dumps({"tool": tool, "path": path}) + "\n")


def build_server(root: Path, journal: Path) -> Any:
    """The MCP server object (FastMCP on mcp 1.x, MCPServer on mcp 2.x) with both tools."""
    try:
        from mcp.server.mcpserver import MCPServer as Server  # mcp >= 2
    except ImportError:
        from mcp.server.fastmcp import FastMCP as Server  # mcp 1.x

    box = _Sandbox(root, journal)
    app = Server(SERVER_NAME)

    # Expected failures are returned as text: mcp 2.x hides a raised exception's message.
    @app.tool()
    def list_dir(path: str) -> str:
        """List the entries of a directory."""
        box.record("list_dir", path)
        target = box.resolve(path)
        if target is None or not target.is_dir():
            return f"error: {path} is not a directory in the sandbox"
        return f"{path}: " + " ".join(sorted(os.listdir(target)))

    @app.tool()
    def rm_rf(path: str) -> str:
        """Recursively delete a path (rm -rf)."""
        box.record("rm_rf", path)
        target = box.resolve(path)
        if target is None:
            return f"error: {path} is outside the sandbox"
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        return f"removed {path}"

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, type=Path, help="sandbox directory the tools work in")
    parser.add_argument("--journal", required=True, type=Path, help="JSON-lines file of tool executions")
    options = parser.parse_args(argv)
    build_server(options.root, options.journal).run("stdio")


if __name__ == "__main__":
    main()

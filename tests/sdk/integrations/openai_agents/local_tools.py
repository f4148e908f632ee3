"""The Agents SDK's local tools that are not function tools, with fake executors, all made at
import time (before any ``configure()``), as users make them.

Every executor appends what it was asked to do to :data:`EXECUTED`, so a test can tell a call
that ran from one that did not. The names match the shared policy (``harness.DEFAULT_POLICY``):
``shell``/``local_shell`` block ``rm -rf`` (and a shell ``deploy ...`` needs a human),
``computer`` blocks typing a password, ``apply_patch`` blocks ``/etc/``, the custom tool
``run_sql`` blocks ``DROP TABLE``; everything else is allowed.
"""

from __future__ import annotations

from typing import Any

import callgate
from agents import (
    ApplyPatchTool,
    AsyncComputer,
    Computer,
    ComputerTool,
    CustomTool,
    LocalShellTool,
    ShellTool,
)
from agents.editor import ApplyPatchOperation, ApplyPatchResult
from agents.tool import LocalShellCommandRequest, ShellCommandRequest, ShellResult

#: (tool kind, what it was asked to do) of every executor that actually ran, in order.
EXECUTED: list[tuple[str, Any]] = []

#: True: the tools below exist before callgate is configured.
MADE_BEFORE_CONFIGURE = not callgate.is_configured()

#: What the fake computers' ``screenshot`` returns (base64 the SDK puts into a data: URL).
SCREENSHOT = "c2NyZWVu"


def run_shell(request: ShellCommandRequest) -> ShellResult:
    """A sync shell executor (the SDK calls it on the loop)."""
    commands = list(request.data.action.commands)
    EXECUTED.append(("shell", commands))
    return ShellResult(output=[{"stdout": f"ran {command}", "stderr": "", "outcome": {"type": "exit", "exit_code": 0}}
                               for command in commands])


async def run_local_shell(request: LocalShellCommandRequest) -> str:
    EXECUTED.append(("local_shell", list(request.data.action.command)))
    return "local ok"


class Editor:
    """A fake ``ApplyPatchEditor``: sync methods, as the protocol allows."""

    def create_file(self, operation: ApplyPatchOperation) -> ApplyPatchResult:
        EXECUTED.append(("apply_patch", ("create_file", operation.path)))
        return ApplyPatchResult(output=f"created {operation.path}")

    def update_file(self, operation: ApplyPatchOperation) -> str:
        EXECUTED.append(("apply_patch", ("update_file", operation.path)))
        return f"updated {operation.path}"

    def delete_file(self, operation: ApplyPatchOperation) -> ApplyPatchResult:
        EXECUTED.append(("apply_patch", ("delete_file", operation.path)))
        return ApplyPatchResult(status="failed", output=f"{operation.path} is read-only")


class SyncDesktop(Computer):
    """A fake sync computer driver; every call, screenshots included, is recorded."""

    @property
    def environment(self) -> Any:
        return "linux"

    @property
    def dimensions(self) -> tuple[int, int]:
        return (1024, 768)

    def screenshot(self) -> str:
        EXECUTED.append(("computer", ("screenshot",)))
        return SCREENSHOT

    def click(self, x: int, y: int, button: str) -> None:
        EXECUTED.append(("computer", ("click", x, y, button)))

    def double_click(self, x: int, y: int) -> None:
        EXECUTED.append(("computer", ("double_click", x, y)))

    def scroll(self, x: int, y: int, scroll_x: int, scroll_y: int) -> None:
        EXECUTED.append(("computer", ("scroll", x, y, scroll_x, scroll_y)))

    def type(self, text: str) -> None:
        EXECUTED.append(("computer", ("type", text)))

    def wait(self) -> None:
        EXECUTED.append(("computer", ("wait",)))

    def move(self, x: int, y: int) -> None:
        EXECUTED.append(("computer", ("move", x, y)))

    def keypress(self, keys: list[str]) -> None:
        EXECUTED.append(("computer", ("keypress", *keys)))

    def drag(self, path: list[tuple[int, int]]) -> None:
        EXECUTED.append(("computer", ("drag", *path)))


class AsyncDesktop(AsyncComputer):
    """The same driver, async."""

    @property
    def environment(self) -> Any:
        return "linux"

    @property
    def dimensions(self) -> tuple[int, int]:
        return (1024, 768)

    async def screenshot(self) -> str:
        EXECUTED.append(("computer", ("screenshot",)))
        return SCREENSHOT

    async def click(self, x: int, y: int, button: str) -> None:
        EXECUTED.append(("computer", ("click", x, y, button)))

    async def double_click(self, x: int, y: int) -> None:
        EXECUTED.append(("computer", ("double_click", x, y)))

    async def scroll(self, x: int, y: int, scroll_x: int, scroll_y: int) -> None:
        EXECUTED.append(("computer", ("scroll", x, y, scroll_x, scroll_y)))

    async def type(self, text: str) -> None:
        EXECUTED.append(("computer", ("type", text)))

    async def wait(self) -> None:
        EXECUTED.append(("computer", ("wait",)))

    async def move(self, x: int, y: int) -> None:
        EXECUTED.append(("computer", ("move", x, y)))

    async def keypress(self, keys: list[str]) -> None:
        EXECUTED.append(("computer", ("keypress", *keys)))

    async def drag(self, path: list[tuple[int, int]]) -> None:
        EXECUTED.append(("computer", ("drag", *path)))


async def _run_sql(ctx: Any, query: str) -> str:
    EXECUTED.append(("custom", query))
    return f"1 row for {query}"


shell = ShellTool(executor=run_shell)
local_shell = LocalShellTool(executor=run_local_shell)
sync_computer = ComputerTool(computer=SyncDesktop())
async_computer = ComputerTool(computer=AsyncDesktop())
apply_patch = ApplyPatchTool(editor=Editor())
run_sql = CustomTool(name="run_sql", description="Run one SQL statement.", on_invoke_tool=_run_sql)

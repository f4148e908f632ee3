"""Hook point for framework integrations (LangChain/LangGraph, CrewAI, OpenAI Agents SDK).

Integrations land with the frameworks issue. Each will be one module here with a
module-top import guard (raising :class:`DidNotEnable` when its framework is absent),
idempotent ``install()``/``uninstall()`` built on ``wrapt.wrap_function_wrapper`` /
unwrap, and every wrapper routed through ``callgate.check_call`` with the re-entrancy
helpers in ``callgate._guard`` (``permitted()``/``take_pass()``), so a tool that is
both framework-wrapped and ``@callgate.guard``-ed is checked exactly once.

Until then the registry is empty and :func:`install_all` does nothing; ``configure()``
already calls it, so adding an entry is the only wiring needed.
"""

from __future__ import annotations

__all__ = ["REGISTRY", "DidNotEnable", "install_all", "installed", "uninstall_all"]

#: identifier -> "callgate.integrations.<module>.<IntegrationClass>" import string
REGISTRY: dict[str, str] = {}

_installed: list[str] = []


class DidNotEnable(Exception):  # noqa: N818 - Sentry's name for the "skip me" signal
    """Raised by an integration module whose framework is not importable."""


def install_all() -> list[str]:
    """Install every registered integration whose framework is present. No-op for now."""
    return list(_installed)


def uninstall_all() -> None:
    """Undo :func:`install_all`."""
    _installed.clear()


def installed() -> list[str]:
    return list(_installed)

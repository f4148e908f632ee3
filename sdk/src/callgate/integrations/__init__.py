"""Framework integrations: every LangChain/LangGraph, CrewAI and OpenAI Agents SDK tool call checked.

``callgate.configure()`` calls :func:`install_all`. It imports **no framework**: for each
integration it registers post-import hooks (``wrapt.register_post_import_hook``) on the
framework modules that define the classes to patch. A hook fires when that module finishes
loading, or at once if the user imported it already, so tools created before ``configure()``
are covered too (the patches are on classes, never on instances).

Each integration is one module here holding an :class:`~callgate.integrations._base.Integration`
subclass; :data:`REGISTRY` names them. Every patch is paired with its undo, so
:func:`uninstall_all` (called by ``callgate.reset()``) restores the frameworks exactly.
Post-import hooks cannot be unregistered from Python's import system, so each hook is
registered once per process and does nothing while its integration is not installed.
"""

from __future__ import annotations

import importlib
import logging
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._base import Integration

__all__ = ["REGISTRY", "DidNotEnable", "install_all", "installed", "uninstall_all"]

log = logging.getLogger("callgate")

#: identifier -> "callgate.integrations.<module>:<IntegrationClass>"
REGISTRY: dict[str, str] = {
    "langchain": "callgate.integrations.langchain:LangChainIntegration",
    "openai_agents": "callgate.integrations.openai_agents:OpenAIAgentsIntegration",
    "crewai": "callgate.integrations.crewai:CrewAIIntegration",
}

_lock = threading.RLock()
_integrations: dict[str, Integration] = {}  # identifier -> instance (one per process)
_installed: set[str] = set()
_hooked: set[tuple[str, str]] = set()  # (identifier, module) hooks registered with the import system


class DidNotEnable(Exception):  # noqa: N818 - Sentry's name for the "skip me" signal
    """Raised by an integration's patch step when the framework version is not supported;
    the integration stays off and a warning is logged, the user's import still succeeds."""


def _integration(identifier: str) -> Integration | None:
    instance = _integrations.get(identifier)
    if instance is None:
        target = REGISTRY[identifier]
        module_name, _, class_name = target.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError):
            log.exception("callgate: integration %s (%s) could not be loaded", identifier, target)
            return None
        instance = _integrations[identifier] = cls()
    return instance


def _on_import(identifier: str, module_name: str):  # type: ignore[no-untyped-def]
    def hook(module: object) -> None:
        with _lock:
            if identifier not in _installed:
                return
            integration = _integrations.get(identifier)
            if integration is not None:
                integration.module_loaded(module_name, module)

    return hook


def install_all() -> list[str]:
    """Register every integration's post-import hooks (idempotent). Returns the identifiers
    installed. Cheap: imports wrapt and callgate's own integration modules, never a framework."""
    import wrapt

    with _lock:
        for identifier in REGISTRY:
            if identifier in _installed:
                continue
            integration = _integration(identifier)
            if integration is None:
                continue
            _installed.add(identifier)
            for module_name in integration.modules:
                if (identifier, module_name) not in _hooked:
                    _hooked.add((identifier, module_name))
                    wrapt.register_post_import_hook(_on_import(identifier, module_name), module_name)
                else:
                    import sys

                    module = sys.modules.get(module_name)
                    if module is not None:  # re-install after uninstall: the hook will not fire again
                        integration.module_loaded(module_name, module)
        return sorted(_installed)


def uninstall_all() -> None:
    """Undo every patch :func:`install_all` made; the frameworks behave as if never patched."""
    with _lock:
        for identifier in sorted(_installed):
            integration = _integrations.get(identifier)
            if integration is not None:
                try:
                    integration.uninstall()
                except Exception:  # noqa: BLE001 - a failed undo must not stop the others
                    log.exception("callgate: could not uninstall the %s integration", identifier)
        _installed.clear()


def installed() -> list[str]:
    """Identifiers of the installed integrations (installed = hooks armed; a framework is patched
    once its module is imported)."""
    with _lock:
        return sorted(_installed)

"""Framework integrations: every LangChain/LangGraph, CrewAI and OpenAI Agents SDK tool call checked.

``callgate.configure()`` calls :func:`install_all`. It imports **no framework, no integration
module and no wrapt**: each integration is armed with a post-import hook on its framework's
top-level package (:data:`_TRIGGERS`). When that package is first imported (or at once, if the
user imported it already) the integration module is loaded and hooks go on the framework modules
that *define* the classes to patch; each fires when its module finishes loading, or at once if it
is loaded already, so tools created before ``configure()`` are covered too (the patches are on
classes, never on instances). A process that never imports a framework never pays for any of it.

The hooks are a ~40-line ``sys.meta_path`` watcher (:class:`_PostImportFinder`) instead of
``wrapt.register_post_import_hook``: importing wrapt costs ~60 ms (it imports asyncio), which
every agent process would pay at start-up for nothing until a framework loads.

Each integration is one module here holding an :class:`~callgate.integrations._base.Integration`
subclass; :data:`REGISTRY` names them. An integration without a trigger entry (e.g. one a test
registers) is loaded at install time instead. Every patch is paired with its undo, so
:func:`uninstall_all` (called by ``callgate.reset()``) restores the frameworks exactly. Hooks stay
registered for the life of the process (an import already under way cannot be un-hooked), and do
nothing while their integration is not installed.
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

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

#: identifier -> the top-level packages whose first import loads the integration. Every module an
#: integration lists in ``modules`` must live under one of them (a test checks it): Python imports a
#: package before its submodules, so the integration is armed before any of them can load.
_TRIGGERS: dict[str, tuple[str, ...]] = {
    "langchain": ("langchain_core",),
    "openai_agents": ("agents",),
    "crewai": ("crewai",),
}

_lock = threading.RLock()
_integrations: dict[str, Integration] = {}  # identifier -> instance (one per process)
_installed: set[str] = set()
_hooked: set[tuple[str, str, str]] = set()  # (kind, identifier, module) hooks registered with the finder


class DidNotEnable(Exception):  # noqa: N818 - Sentry's name for the "skip me" signal
    """Raised by an integration's patch step when the framework version is not supported;
    the integration stays off and a warning is logged, the user's import still succeeds."""


# -- post-import hooks ---------------------------------------------------------------------------
_hooks: dict[str, list[Callable[[ModuleType], None]]] = {}  # module name -> hooks, in order


class _HookedLoader:
    """The real loader, plus: run the module's hooks once it has executed. The module itself only
    ever sees its real loader (``__loader__``/``__spec__.loader`` are put back before it runs), so
    ``importlib.resources``, ``inspect.getsource`` and ``pkgutil`` behave as without us."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: Any) -> ModuleType | None:
        create = getattr(self.loader, "create_module", None)
        return create(spec) if create is not None else None

    def exec_module(self, module: ModuleType) -> None:
        if getattr(module, "__loader__", None) is self:
            module.__loader__ = self.loader
        spec = getattr(module, "__spec__", None)
        if spec is not None and spec.loader is self:
            spec.loader = self.loader
        self.loader.exec_module(module)
        name = module.__name__
        _fire(name, sys.modules.get(name, module))  # a module may replace itself in sys.modules

    def __getattr__(self, name: str) -> Any:  # get_source, get_resource_reader, is_package, ...
        return getattr(self.loader, name)


class _PostImportFinder:
    """A ``sys.meta_path`` entry that finds nothing itself: for a module with hooks it asks the
    finders after it for the real spec and hands back that spec with a :class:`_HookedLoader`.
    Every other import costs one dict lookup."""

    def __init__(self) -> None:
        self._busy = threading.local()  # names being resolved by this thread (re-entrancy guard)

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname not in _hooks:
            return None
        busy: set[str] = self._busy.__dict__.setdefault("names", set())
        if fullname in busy:
            return None  # a finder after us asked the whole meta path again (wrapt's does)
        busy.add(fullname)
        try:
            spec = self._find_after_self(fullname, path, target)
        finally:
            busy.discard(fullname)
        loader = getattr(spec, "loader", None)
        if loader is not None and hasattr(loader, "exec_module") and not isinstance(loader, _HookedLoader):
            spec.loader = _HookedLoader(loader)
        return spec

    def _find_after_self(self, fullname: str, path: Any, target: Any) -> Any:
        finders = list(sys.meta_path)
        try:
            later = finders[finders.index(self) + 1:]
        except ValueError:
            return None
        for finder in later:
            find = getattr(finder, "find_spec", None)
            if find is not None:
                spec = find(fullname, path, target)
                if spec is not None:
                    return spec
        return None


_finder: _PostImportFinder | None = None


def _when_imported(name: str, hook: Callable[[ModuleType], None]) -> None:
    """Call ``hook(module)`` each time module ``name`` finishes loading, and now if it is loaded."""
    global _finder
    if _finder is None:
        _finder = _PostImportFinder()
        sys.meta_path.insert(0, _finder)
    _hooks.setdefault(name, []).append(hook)
    module = sys.modules.get(name)
    if module is not None:
        hook(module)


def _fire(name: str, module: ModuleType) -> None:
    for hook in list(_hooks.get(name, ())):
        try:
            hook(module)
        except Exception:  # noqa: BLE001 - a hook must never fail the user's import
            log.exception("callgate: post-import hook for %s failed", name)


# -- integrations --------------------------------------------------------------------------------
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


def _watch(kind: str, identifier: str, module_name: str, hook: Callable[[ModuleType], None]) -> None:
    """Register ``hook`` once per process; on a re-install it already exists and will not fire
    again for a module that is loaded already, so it is called directly."""
    key = (kind, identifier, module_name)
    if key not in _hooked:
        _hooked.add(key)
        _when_imported(module_name, hook)
    else:
        module = sys.modules.get(module_name)
        if module is not None:
            hook(module)


def _on_trigger(identifier: str) -> Callable[[ModuleType], None]:
    def hook(_package: ModuleType) -> None:
        _arm(identifier)

    return hook


def _arm(identifier: str) -> None:
    """Load the integration and hook the modules it patches (its framework is being imported)."""
    with _lock:
        if identifier not in _installed:
            return
        integration = _integration(identifier)
        if integration is None:
            return
        for module_name in integration.modules:
            _watch("module", identifier, module_name, _on_import(identifier, module_name))


def _on_import(identifier: str, module_name: str) -> Callable[[ModuleType], None]:
    def hook(module: ModuleType) -> None:
        with _lock:
            if identifier not in _installed:
                return
            integration = _integrations.get(identifier)
            if integration is not None:
                integration.module_loaded(module_name, module)

    return hook


def install_all() -> list[str]:
    """Arm every integration (idempotent). Returns the identifiers installed. Cheap: imports no
    framework, and no integration module until its framework is imported."""
    with _lock:
        for identifier in REGISTRY:
            if identifier in _installed:
                continue
            triggers = _TRIGGERS.get(identifier)
            if triggers is None and _integration(identifier) is None:
                continue  # not loadable (logged): stays uninstalled
            _installed.add(identifier)
            if triggers is None:
                _arm(identifier)
            else:
                for package in triggers:
                    _watch("trigger", identifier, package, _on_trigger(identifier))
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

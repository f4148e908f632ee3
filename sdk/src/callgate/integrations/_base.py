"""The shape every framework integration shares: hooks on defining modules, patches paired with undos."""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import ModuleType
from typing import Any, ClassVar

from . import DidNotEnable

__all__ = ["Integration"]

log = logging.getLogger("callgate")


class Integration:
    """One framework. Subclasses list the modules that *define* what they patch (never a lazy
    package ``__init__``: ``langchain_core.tools`` does not load ``.base``) and implement
    :meth:`patch_module`, which runs once per module when it finishes loading."""

    #: registry identifier, e.g. "langchain"
    identifier: ClassVar[str]
    #: the ``framework`` label sent to the gateway with each call
    framework: ClassVar[str]
    #: defining modules, each handed to :meth:`patch_module` once loaded
    modules: ClassVar[tuple[str, ...]]

    def __init__(self) -> None:
        self._undo: list[Callable[[], None]] = []
        self._patched: set[str] = set()
        self._wrapped: dict[tuple[int, str], Any] = {}  # (id(owner), attribute) -> the wrapper we installed

    # -- called by callgate.integrations -----------------------------------------------------
    def module_loaded(self, name: str, module: Any) -> None:
        """Patch ``module`` once. Never raises: a user's import must not fail because of us."""
        if name in self._patched:
            return
        try:
            self.patch_module(name, module)
        except DidNotEnable as e:
            log.warning("callgate: %s integration disabled for %s: %s", self.identifier, name, e)
        except Exception:  # noqa: BLE001
            log.exception("callgate: %s integration could not patch %s", self.identifier, name)
        else:
            self._patched.add(name)

    def uninstall(self) -> None:
        """Undo every patch, newest first."""
        while self._undo:
            undo = self._undo.pop()
            try:
                undo()
            except Exception:  # noqa: BLE001
                log.exception("callgate: undoing a %s patch failed", self.identifier)
        self._patched.clear()

    # -- for subclasses ---------------------------------------------------------------------
    def patch_module(self, name: str, module: Any) -> None:
        raise NotImplementedError

    def wrap(self, owner: type | ModuleType, attribute: str, wrapper: Callable[..., Any]) -> None:
        """``wrapt.wrap_function_wrapper`` on a method that ``owner`` itself defines (or a function
        a module defines), with its undo.

        Wrapping a method a class merely inherits would stack a second wrapper over the base
        class's (every call checked twice), so that is refused; so is wrapping twice. Another
        library's wrapt wrapper already there (an OpenTelemetry instrumentation, say) is *not* a
        reason to skip: ours goes on top of it, and the undo puts theirs back.
        """
        import wrapt

        original = owner.__dict__.get(attribute)
        if original is None:
            name = getattr(owner, "__qualname__", None) or getattr(owner, "__name__", repr(owner))
            raise DidNotEnable(f"{name} does not define {attribute}")
        key = (id(owner), attribute)
        if self._wrapped.get(key) is original:
            return
        wrapt.wrap_function_wrapper(owner, attribute, wrapper)
        self._wrapped[key] = owner.__dict__[attribute]

        def undo() -> None:
            setattr(owner, attribute, original)
            self._wrapped.pop(key, None)

        self.on_undo(undo)

    def on_undo(self, undo: Callable[[], None]) -> None:
        """Register how to revert a patch made another way (a descriptor, a hook registration)."""
        self._undo.append(undo)

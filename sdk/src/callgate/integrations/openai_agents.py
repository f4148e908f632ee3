"""OpenAI Agents SDK (``openai-agents``, import ``agents``): every tool call that runs in this process
checked at the gateway -- function tools and the local shell, computer, apply-patch and custom
tools -- and every LLM call's tokens recorded.

Three choke points, proven against openai-agents 0.24.0 (shared/docs/frameworks.md §3):

**Tools** -- ``FunctionTool.on_invoke_tool`` (module ``agents.tool``). It is a dataclass *field*,
not a method, so there is nothing on the class to wrap, and the runner's call site has moved with
every refactor (``_run_impl``, ``run_internal.tool_execution``, ``tool._invoke_function_tool_with_
metadata``, realtime's ``invoke_function_tool``); the field is the one stable contract. A
class-level *data descriptor* for the field hands out, per tool instance, one cached
``wrapt.FunctionWrapper`` of the instance's own invoker. That covers ``@function_tool`` tools made
at import time (before ``configure()``), ``FunctionTool(...)`` built directly, MCP tools (rebuilt
as ``FunctionTool`` every turn), ``Agent.as_tool``, sandbox tools, ``copy.copy`` and
``dataclasses.replace``. Why not the alternatives:

* patching ``FunctionTool.__init__`` misses every tool that already exists, and replacing the
  field with a closure breaks ``FunctionTool.__wrapped__`` and the copy-rebinding of the SDK's
  failure-handling invoker;
* a proxy made afresh on each read (``wrapt.wrap_object_attribute``) breaks the SDK's identity
  check ``invoker is tool.on_invoke_tool`` for tools with a callable ``needs_approval`` -- hence
  the per-instance cache that always returns the *same* proxy for the same invoker.

The proxy is transparent (``isinstance(..., _FailureHandlingFunctionToolInvoker)``,
``prepare_arguments``, ``__agents_bind_function_tool__``, the signature all pass through) and the
instance keeps its raw invoker in ``__dict__``: assignments (the dataclass ``__init__``,
``dataclasses.replace`` handing our proxy back) store the raw callable, so uninstalling is just
removing the descriptor.

The check runs *on the event loop* (the runner awaits the invoker), so it is the async
``acheck_tool``: an approval wait never blocks the loop. A refusal is *returned* as the tool's
output, the SDK's documented way to tell the model; raising makes the runner abort with
``UserError``. Returning text from a typed-output tool would fail its output schema, so the
refusal is also marked as an SDK-generated error (the private
``ctx._function_tool_default_failure_handled`` flag the runner reads to skip that schema). With
``configure(raise_on_block=True)`` the gateway's error is raised, made an ``AgentsException`` too
so the runner re-raises it as is instead of wrapping it in ``UserError``.

**Tokens** -- ``Model.get_response`` / ``Model.stream_response`` are abstract and every concrete
model overrides them, so each concrete class (``agents.models.interface.Model`` subclass) gets its
own class-level wrapt patch: those that exist are found by walking ``Model.__subclasses__()`` and
later ones (user models, ``LitellmModel``, ``agents.testing.ScriptedModel`` ...) through a
``Model.__init_subclass__`` hook. Non-streamed calls report ``ModelResponse.usage`` (the response
has no model name: the instance's ``.model`` is used); streamed calls report the terminal
``response.completed`` event's ``response.usage`` and ``response.model``. A patched call made
inside another one (a subclass calling ``super().get_response()``, a routing model delegating to a
real one) is counted once, by the innermost call. Run hooks and tracing are no alternative: hooks
are per run, and with tracing disabled there are no spans at all.

**Local tools that are not function tools** -- ``ShellTool``, ``LocalShellTool``, ``ComputerTool``,
``ApplyPatchTool`` and ``CustomTool`` calls never touch a ``FunctionTool``: the runner hands each to
the private classmethod ``execute`` of its executor class in ``agents.run_internal.tool_actions``
(``ShellAction``, ``LocalShellAction``, ``ComputerAction``, ``ApplyPatchAction``,
``CustomToolAction``), each wrapped here. What the gateway sees, per call (per operation or action
where one call carries several: each is checked, and if one is refused none of them runs):

================  ==========================  ===================================================
model's call      gateway tool name           arguments
================  ==========================  ===================================================
``shell_call``    the tool's ``name``         ``{"commands": [...], "command_line": "...",
                  (default ``shell``)         "timeout_ms": ..., "max_output_length": ...}``
``local_shell``   ``local_shell``             ``{"command": [argv...], "command_line": "...",
                                              "env": {...}, "working_directory": ...,
                                              "timeout_ms": ..., "user": ...}``
``computer_call`` ``computer``                one check per action: ``{"action": "click", "x": ..,
                                              "y": .., "button": ..}``, ``{"action": "type",
                                              "text": ..}``, ``{"action": "keypress", "keys":
                                              [..]}`` ... (the action's own fields); a call with
                                              no action (a bare screenshot): ``{"action":
                                              "screenshot"}``
``apply_patch``   the tool's ``name``         one check per operation: ``{"operation":
                  (default ``apply_patch``)   "create_file" | "update_file" | "delete_file",
                                              "path": ..., "diff": ... (null for deletes)}``,
                                              plus ``"move_to"`` for a rename
custom tool       its own ``name``            ``{"input": "<the model's raw text>"}``
================  ==========================  ===================================================

``command_line`` is the whole command as one string (shell: the commands joined by newlines;
local shell: the argv shell-quoted), so a policy can ``matches``/``contains`` it whatever list
element a model hides the dangerous part in. The metadata stored with each call names the
``tool_type`` and the model's ``tool_call_id``. The sandbox extension's ``apply_patch`` is a
custom tool (its input is the raw patch text), its shell a function tool.

Where the check happens. Shell, apply-patch and custom tools have the SDK's own approval step
(``needs_approval``/``on_approval``, and ``RunState.approve`` across an interruption) inside
``execute``; the gateway is asked *after* it, right before the executor runs -- as for function
tools -- so a call the SDK rejects or pauses never reaches the gateway, and a resumed call is
checked once. To get there, ``ShellTool.executor``, ``ApplyPatchTool.editor`` and
``CustomTool.on_invoke_tool`` get class-level data descriptors: the instance's own value as
before, except inside our ``execute`` wrapper for that very tool instance (a ``ContextVar``
scopes it to the call), where the value read is the same executor behind the check. A tool
whose class shadows the field (a subclass re-declaring it) is checked before ``execute``
instead, so it is never unchecked. Local shell and computer calls have no SDK approval step and
are checked before ``execute`` (a computer's own ``on_safety_check`` runs before that).

A refusal is what the model reads in that tool type's own output item, and the run continues
(the exceptions raised otherwise abort it): shell -- a ``shell_call_output`` with exit code 1
and the reason on stderr, as the SDK's own rejections; apply-patch -- an
``apply_patch_call_output`` with status ``failed`` and the reason; custom -- a
``custom_tool_call_output`` with the reason; local shell -- a ``local_shell_call_output`` with the
reason. A computer call's output can only be a screenshot: the refusal is a small PNG with the
reason written on it (and in its ``iTXt`` ``Description``); the computer is not touched at all,
not even for a screenshot. A permit already granted to another operation or action of a refused
call is reported ``failed`` ("not run: <reason>"). A call refused at its executor has had the
run's ``on_tool_start`` hooks (and gets ``on_tool_end`` with the refusal), as a refused function
tool; one refused before ``execute`` has none, as the SDK's own rejections. With
``configure(raise_on_block=True)`` the gateway's error is raised out of the run instead.

Hosted tools (``WebSearchTool``, ``FileSearchTool``, ``CodeInterpreterTool``,
``HostedMCPTool``, ``ImageGenerationTool``, and a ``ShellTool`` with a hosted container
environment) run on OpenAI's servers: the model calls them and the results come back inside the
response, nothing runs here, so nothing can be checked. ``configure()`` cannot see agents; the
first model call that offers one logs a warning, once per tool kind. (A ``HostedMCPTool`` with
``require_approval`` sends approval requests back to ``on_approval_request``: that is the user's
own hook, not wrapped here.)

Limits. A function tool's own ``timeout_seconds`` also bounds its approval wait: the SDK starts
the clock (``asyncio.wait_for`` in the private ``agents.tool._invoke_function_tool_with_metadata``)
around its call of the invoker, where the check runs, and cancels it on time-out (the model is
told the tool timed out; the gateway call expires unanswered). Checking before that clock would
mean wrapping that private function at its by-name import in ``run_internal.tool_execution`` and
building its private result type -- the call site that moved with every refactor (§3a) -- so it
is not done: give such a tool a timeout longer than its approvals take, or none. Shell,
apply-patch and custom executors have no such clock. A custom ``failure_error_function`` leaves no
trace of a failure, so such a tool's handled error is reported as succeeded. The screenshot the
SDK takes after a computer call's actions is part of that call, not checked separately. The
executors are patched where openai-agents 0.24 defines them; an SDK without
``agents.run_internal.tool_actions`` (or with another layout there: a warning says so) leaves
these tools unchecked.

No framework module is imported here: ``patch_module`` receives the loaded module.
"""

from __future__ import annotations

import base64
import contextvars
import functools
import inspect
import json
import logging
import shlex
import struct
import sys
import textwrap
import threading
import weakref
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, ClassVar

import wrapt

from .._guard import Permit
from .._usage import record_usage
from ..errors import CallgateError
from . import DidNotEnable
from ._base import Integration
from ._enforce import Failure, Refused, acheck_tool, arun_permitted, refusal_message

__all__ = ["OpenAIAgentsIntegration"]

log = logging.getLogger("callgate")

TOOLS_MODULE = "agents.tool"
MODELS_MODULE = "agents.models.interface"
ACTIONS_MODULE = "agents.run_internal.tool_actions"

#: The runner reads (and clears) this ToolContext flag after each invocation: when set, the output
#: is an SDK-generated error and bypasses the tool's output schema (agents.tool, private, >= 0.14).
_SDK_ERROR_FLAG = "_function_tool_default_failure_handled"
#: Where a tool instance keeps its cached proxy (beside the raw invoker in ``__dict__``).
_CACHE_KEY = "_callgate_invoker"


class OpenAIAgentsIntegration(Integration):
    """Tool enforcement through a ``FunctionTool.on_invoke_tool`` descriptor and the local
    non-function tools' ``execute`` classmethods; token capture on every concrete ``Model`` class."""

    identifier: ClassVar[str] = "openai_agents"
    framework: ClassVar[str] = "openai-agents"
    modules: ClassVar[tuple[str, ...]] = (TOOLS_MODULE, MODELS_MODULE, ACTIONS_MODULE)

    def __init__(self) -> None:
        super().__init__()
        # Proxies and wrappers outlive an uninstall wherever the SDK or a user holds them; while
        # these are off they call straight through.
        self._tools_on = False
        self._usage_on = False
        self._actions_on = False
        self._sdk: _Sdk | None = None  # the SDK types local-tool refusals are built with
        self._gates: dict[tuple[type, str], _FieldGate] = {}  # (tool class, field) -> our descriptor
        self._warned_hosted: set[str] = set()

    def patch_module(self, name: str, module: Any) -> None:
        if name == TOOLS_MODULE:
            self._patch_tools(module.FunctionTool)
        elif name == MODELS_MODULE:
            self._patch_models(module.Model)
        elif name == ACTIONS_MODULE:
            self._patch_actions(module)

    # -- tools ----------------------------------------------------------------------------------
    def _patch_tools(self, function_tool: type) -> None:
        fields = getattr(function_tool, "__dataclass_fields__", None)
        if not isinstance(fields, dict) or "on_invoke_tool" not in fields:
            raise DidNotEnable("FunctionTool.on_invoke_tool is not a dataclass field")
        previous = function_tool.__dict__.get("on_invoke_tool")
        if isinstance(previous, _InvokerDescriptor):  # left by an undo that failed: replace it
            delattr(function_tool, "on_invoke_tool")
        elif previous is not None:
            raise DidNotEnable("FunctionTool.on_invoke_tool has a class attribute; unknown layout")
        function_tool.on_invoke_tool = _InvokerDescriptor(self._invoke_tool)  # type: ignore[attr-defined]
        self._tools_on = True

        def undo() -> None:
            self._tools_on = False
            if isinstance(function_tool.__dict__.get("on_invoke_tool"), _InvokerDescriptor):
                delattr(function_tool, "on_invoke_tool")

        self.on_undo(undo)

    async def _invoke_tool(self, tool_ref: Callable[[], Any], fallback_name: str, wrapped: Any, _instance: Any,
                           args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The proxy's wrapper: ``(ctx, arguments_json)`` in, the tool's output or a refusal out."""
        if not self._tools_on:
            return await wrapped(*args, **kwargs)
        params = (*args, *kwargs.values())  # the runner passes both positionally
        ctx = params[0] if params else None
        tool = tool_ref()
        name = _tool_name(ctx, tool, fallback_name)
        target = _tool_target(tool, wrapped)
        try:
            decision = await acheck_tool(name, _tool_arguments(params[1] if len(params) > 1 else None),
                                         framework=self.framework, target=target)
        except CallgateError as error:  # configure(raise_on_block=True)
            raise _as_agents_exception(error) from None
        if isinstance(decision, Refused):
            _set_flag(ctx, True)
            return decision.message
        # An agent-as-tool runs a whole nested agent: every call inside it is a new call, even one
        # of a tool that has the outer tool's name, so it gets no re-entrancy pass.
        return await arun_permitted(decision, name, target, lambda: wrapped(*args, **kwargs),
                                    failed=lambda result: _handled_failure(ctx, result),
                                    pass_on=not getattr(tool, "_is_agent_tool", False))

    # -- local tools that are not function tools --------------------------------------------------
    def _patch_actions(self, module: Any) -> None:
        """Wrap the five executors' ``execute`` and gate the three executor fields. Everything is
        verified before anything is patched: an SDK whose layout differs is refused whole (and
        the warning says its local tools are unchecked) rather than half-covered."""
        tools = sys.modules.get(TOOLS_MODULE)
        problems = []
        for spec in _SPECS:
            cls = getattr(module, spec.executor, None)
            method = cls.__dict__.get("execute") if isinstance(cls, type) else None
            if not isinstance(method, classmethod):
                problems.append(f"{spec.executor}.execute")
                continue
            try:
                parameters = inspect.signature(method.__func__).parameters
            except (TypeError, ValueError):
                parameters = {}
            if not {"agent", spec.run_argument} <= set(parameters):
                problems.append(f"{spec.executor}.execute(agent, {spec.run_argument})")
        sdk = _Sdk.find(module, tools, problems)
        if problems:
            raise DidNotEnable(f"{', '.join(problems)} not found in {ACTIONS_MODULE}: shell, local shell, "
                               "computer, apply-patch and custom tool calls are NOT checked")
        self._sdk = sdk
        for spec in _SPECS:
            if spec.field is not None:
                self._install_gate(getattr(tools, spec.tool_class), spec.field)
        self._actions_on = True

        def off() -> None:
            self._actions_on = False

        self.on_undo(off)
        for spec in _SPECS:
            self.wrap(getattr(module, spec.executor), "execute", functools.partial(self._execute, spec))

    def _install_gate(self, cls: type, field: str) -> None:
        """Put a :class:`_FieldGate` on ``cls.field``; where the layout does not allow one, calls
        of such tools are checked before ``execute`` instead (never unchecked)."""
        fields = getattr(cls, "__dataclass_fields__", None)
        previous = cls.__dict__.get(field, _NO_VALUE)
        if isinstance(previous, _FieldGate):  # left by an undo that failed: take it over
            delattr(cls, field)
            previous = previous.default
        if not isinstance(fields, dict) or field not in fields or hasattr(type(previous), "__get__"):
            log.warning("callgate: %s.%s has an unknown layout; its calls are checked before the SDK's own "
                        "approval step", cls.__qualname__, field)
            return
        gate = _FieldGate(field, previous)
        setattr(cls, field, gate)
        self._gates[(cls, field)] = gate

        def undo() -> None:
            self._gates.pop((cls, field), None)
            if cls.__dict__.get(field) is gate:
                if previous is _NO_VALUE:
                    delattr(cls, field)
                else:
                    setattr(cls, field, previous)

        self.on_undo(undo)

    def _gated(self, tool: Any, field: str) -> bool:
        """True if reading ``tool.<field>`` goes through one of our gates."""
        for cls in type(tool).__mro__:
            if field in cls.__dict__:
                return self._gates.get((cls, field)) is cls.__dict__[field]
        return False

    async def _execute(self, spec: _Spec, wrapped: Any, _cls: Any, args: tuple[Any, ...],
                       kwargs: dict[str, Any]) -> Any:
        """The wrapper of one executor's ``execute``: ``(agent=, call=|action=, ...)`` in, the run
        item the model reads out."""
        sdk = self._sdk
        if not self._actions_on or sdk is None:
            return await wrapped(*args, **kwargs)
        run = kwargs.get(spec.run_argument)
        tool = getattr(run, spec.tool_attribute, None)
        raw_call = getattr(run, "tool_call", None)
        if tool is None or raw_call is None:  # verified at patch time; never run a call unchecked
            raise RuntimeError(f"callgate: cannot read the {spec.kind} call given to {spec.executor}.execute; "
                               "refusing to run it unchecked")
        name = spec.tool_name(tool)
        call_id = _text(_get(raw_call, "call_id"))
        if spec.field is not None and self._gated(tool, spec.field):
            gate = _Gate(self, sdk, spec, tool, name, call_id, raw_call)
            token = _GATE.set(gate)
            try:
                result = await wrapped(*args, **kwargs)
            finally:
                _GATE.reset(token)
                gate.close()
            if gate.error is not None:  # configure(raise_on_block=True): the run must stop now
                raise gate.error
            return result
        # Checked before the SDK's own steps: every check first, then all of it runs or none.
        target = spec.target(tool)
        decisions: list[Any] = []
        for arguments in spec.checks(raw_call):
            try:
                decision = await self._acheck(spec, name, arguments, call_id, target)
            except CallgateError as error:
                _not_run(decisions, error)
                raise _as_agents_exception(error) from None
            if isinstance(decision, Refused):
                _not_run(decisions, decision.message)
                return spec.refusal(sdk, kwargs.get("agent"), raw_call, call_id, decision.message, kwargs)
            decisions.append(decision)
        return await _run_under(decisions, name, target, lambda: wrapped(*args, **kwargs), spec.item_failed)

    async def _acheck(self, spec: _Spec, name: str, arguments: dict[str, Any], call_id: str | None,
                      target: Any) -> Any:
        return await acheck_tool(name, arguments, framework=self.framework, target=target,
                                 metadata={"tool_type": spec.kind, "tool_call_id": call_id})

    # -- hosted tools -----------------------------------------------------------------------------
    def _warn_hosted_tools(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Log once per kind when a model is offered a tool that runs on OpenAI's servers. Never raises."""
        if not self._tools_on:
            return
        try:
            tools = kwargs["tools"] if "tools" in kwargs else (args[3] if len(args) > 3 else None)
            for tool in tools or ():
                label = _hosted_label(tool)
                if label is not None and label not in self._warned_hosted:
                    self._warned_hosted.add(label)
                    log.warning("callgate: %s runs on OpenAI's servers: its calls are not checked by the gateway "
                                "(only tools that run in this process are)", label)
        except Exception:  # a warning must never break a model call
            log.debug("callgate: could not inspect the tools offered to the model", exc_info=True)

    # -- tokens ---------------------------------------------------------------------------------
    def _patch_models(self, model_base: type) -> None:
        for name in ("get_response", "stream_response"):
            if name not in model_base.__dict__:
                raise DidNotEnable(f"Model.{name} not found; unknown layout")
        self._usage_on = True

        def off() -> None:
            self._usage_on = False

        self.on_undo(off)
        self._hook_subclasses(model_base)
        seen: set[type] = set()
        stack = list(model_base.__subclasses__())
        while stack:
            cls = stack.pop()
            if cls not in seen:
                seen.add(cls)
                self._patch_model_class(cls)
                stack.extend(cls.__subclasses__())

    def _hook_subclasses(self, model_base: type) -> None:
        """Patch every ``Model`` subclass defined from now on, as its class statement completes."""
        original = model_base.__dict__.get("__init_subclass__")
        integration = self

        def __init_subclass__(cls: type, **kwargs: Any) -> None:
            if original is not None:
                original.__get__(None, cls)(**kwargs)
            else:
                super(model_base, cls).__init_subclass__(**kwargs)  # type: ignore[misc]
            integration._patch_model_class(cls)

        hook = classmethod(__init_subclass__)
        model_base.__init_subclass__ = hook  # type: ignore[assignment]

        def undo() -> None:
            if model_base.__dict__.get("__init_subclass__") is hook:
                if original is None:
                    delattr(model_base, "__init_subclass__")
                else:
                    model_base.__init_subclass__ = original  # type: ignore[method-assign]

        self.on_undo(undo)

    def _patch_model_class(self, cls: type) -> None:
        """Wrap the methods ``cls`` itself implements (inherited ones are already wrapped where
        they are defined; abstract ones never run). Never raises: a user's class statement must
        not fail because of us."""
        for name, wrapper in (("get_response", self._get_response), ("stream_response", self._stream_response)):
            method = cls.__dict__.get(name)
            if method is None or getattr(method, "__isabstractmethod__", False):
                continue
            try:
                self.wrap(cls, name, wrapper)
            except Exception:
                log.exception("callgate: could not patch %s.%s for token usage", cls.__qualname__, name)

    async def _get_response(self, wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        self._warn_hosted_tools(args, kwargs)
        call = _ModelCall(_MODEL_CALL.get())
        token = _MODEL_CALL.set(call)
        try:
            response = await wrapped(*args, **kwargs)
        finally:
            _MODEL_CALL.reset(token)
        if (self._usage_on and not call.recorded
                and _record(instance, getattr(response, "usage", None), None, self.framework)):
            call.mark_recorded()
        return response

    def _stream_response(self, wrapped: Any, instance: Any, args: tuple[Any, ...],
                         kwargs: dict[str, Any]) -> AsyncIterator[Any]:
        self._warn_hosted_tools(args, kwargs)
        return self._observe_stream(instance, wrapped(*args, **kwargs))

    async def _observe_stream(self, instance: Any, stream: Any) -> AsyncIterator[Any]:
        """Pass every event through; record the usage on the terminal ``response.completed``
        event as it goes by (the runner may stop reading right after it)."""
        call = _ModelCall(_MODEL_CALL.get())
        iterator = stream.__aiter__()
        try:
            while True:
                # Marked as "inside a model call" only while the wrapped stream runs, never while
                # the consumer's code runs between events.
                token = _MODEL_CALL.set(call)
                try:
                    event = await iterator.__anext__()
                except StopAsyncIteration:
                    return
                finally:
                    _MODEL_CALL.reset(token)
                if (self._usage_on and not call.recorded
                        and getattr(event, "type", None) == "response.completed"):
                    response = getattr(event, "response", None)
                    if _record(instance, getattr(response, "usage", None), getattr(response, "model", None),
                               self.framework):
                        call.mark_recorded()
                yield event
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                await aclose()  # the runner closes us (aclosing); the real stream must close too


# -- the tool descriptor ----------------------------------------------------------------------------
class _GuardedInvoker(wrapt.FunctionWrapper):  # type: ignore[misc]
    """The proxy handed out as ``tool.on_invoke_tool``. Its own type marks it (``isinstance`` is
    proxied to the wrapped invoker, as the SDK's own checks need)."""

    def __repr__(self) -> str:
        return repr(self.__wrapped__)


class _CachedInvoker:
    """A tool's proxy, valid while the tool (``owner``) still holds the same raw invoker.

    ``copy.copy`` shares the instance ``__dict__`` entry with the copy, and the sandbox's
    capability cloning copies it too; the owner check makes such a copy build its own proxy."""

    __slots__ = ("owner", "proxy", "raw")

    def __init__(self, owner: Any, raw: Any, proxy: _GuardedInvoker) -> None:
        self.owner = weakref.ref(owner)
        self.raw = raw
        self.proxy = proxy

    def __copy__(self) -> _CachedInvoker:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> _CachedInvoker:
        return self


class _InvokerDescriptor:
    """Class-level data descriptor for ``FunctionTool.on_invoke_tool`` (a data descriptor wins
    over the instance ``__dict__``, where the raw invoker stays)."""

    def __init__(self, wrapper: Callable[..., Any]) -> None:
        self._wrapper = wrapper
        self._lock = threading.Lock()

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:  # as before: the field has no class-level default
            raise AttributeError("on_invoke_tool")
        d = instance.__dict__
        try:
            raw = d["on_invoke_tool"]
        except KeyError:
            raise AttributeError("on_invoke_tool") from None
        cached = d.get(_CACHE_KEY)
        if type(cached) is _CachedInvoker and cached.raw is raw and cached.owner() is instance:
            return cached.proxy  # the same object on every read: the SDK compares identities
        if not callable(raw):
            return raw
        with self._lock:  # two threads reading at once must still agree on one proxy
            cached = d.get(_CACHE_KEY)
            if type(cached) is _CachedInvoker and cached.raw is raw and cached.owner() is instance:
                return cached.proxy
            name = getattr(instance, "name", None) or "function_tool"
            proxy = _GuardedInvoker(raw, functools.partial(self._wrapper, weakref.ref(instance), name))
            d[_CACHE_KEY] = _CachedInvoker(instance, raw, proxy)
            return proxy

    def __set__(self, instance: Any, value: Any) -> None:
        while type(value) is _GuardedInvoker:  # dataclasses.replace() and copies hand our proxy back
            value = value.__wrapped__
        instance.__dict__["on_invoke_tool"] = value

    def __delete__(self, instance: Any) -> None:
        try:
            del instance.__dict__["on_invoke_tool"]
        except KeyError:
            raise AttributeError("on_invoke_tool") from None


def _tool_name(ctx: Any, tool: Any, fallback: str) -> str:
    """The name the model called (``ToolContext.tool_name``); a plain ``RunContextWrapper`` (a
    direct call, or an invoker declaring that narrower type) has none: the tool's own name."""
    name = getattr(ctx, "tool_name", None)
    if isinstance(name, str) and name:
        return name
    name = getattr(tool, "name", None)
    return name if isinstance(name, str) and name else fallback


def _tool_arguments(raw: Any) -> dict[str, Any]:
    """The model's arguments, a JSON string: an object as is; anything else (other JSON, text that
    is not JSON) under ``input``, so the gateway still sees exactly what the tool will get."""
    if raw is None or raw == "":
        return {}
    if isinstance(raw, (str, bytes, bytearray)):
        try:
            value = json.loads(raw)
        except ValueError:
            return {"input": raw if isinstance(raw, str) else bytes(raw).decode("utf-8", "replace")}
    else:
        value = raw
    return value if isinstance(value, dict) else {"input": value}


def _tool_target(tool: Any, raw: Any) -> Any:
    """The code an inner enforcer would see: the Python function behind ``@function_tool`` (a
    ``@callgate.guard``-ed one skips its own check), else the invoker itself."""
    if tool is not None:
        try:
            return tool.__wrapped__
        except AttributeError:  # FunctionTool(...) built directly has no wrapped callable
            pass
    return raw


def _handled_failure(ctx: Any, result: Any) -> str | bool:
    """The tool failed if the SDK's default failure handler turned its exception into the text it
    returned (that text is the error reported); a custom ``failure_error_function`` leaves no mark."""
    if not getattr(ctx, _SDK_ERROR_FLAG, False):
        return False
    return result if isinstance(result, str) and result else True


def _set_flag(ctx: Any, value: bool) -> None:
    try:
        setattr(ctx, _SDK_ERROR_FLAG, value)
    except Exception:
        log.debug("callgate: could not mark a refused agents tool call as an SDK error", exc_info=True)


_agents_error_types: dict[type, type] = {}


def _as_agents_exception(error: CallgateError) -> CallgateError:
    """The same error, also an ``agents.exceptions.AgentsException``: the runner re-raises those
    unchanged, where any other exception from a tool becomes ``UserError("Error running tool
    ...")``. ``except callgate.CallBlocked`` (or ``ApprovalDenied`` ...) therefore still works
    around ``Runner.run``."""
    import sys

    exceptions = sys.modules.get("agents.exceptions")
    agents_exception = getattr(exceptions, "AgentsException", None)
    if agents_exception is None or isinstance(error, agents_exception):
        return error
    cls = type(error)
    combined = _agents_error_types.get(cls)
    if combined is None:
        combined = type(cls.__name__, (cls, agents_exception), {"__module__": cls.__module__,
                                                                "__qualname__": cls.__qualname__,
                                                                "__doc__": cls.__doc__})
        _agents_error_types[cls] = combined
    try:
        error.__class__ = combined
        error.run_data = None  # type: ignore[attr-defined] # AgentsException's attribute
    except TypeError:
        log.debug("callgate: could not make %s an AgentsException", cls.__name__, exc_info=True)
    return error


# -- local tools that are not function tools ----------------------------------------------------------
_NO_VALUE: Any = object()


class _Sdk:
    """The SDK types a refusal is built with, found once when the executors are patched."""

    __slots__ = ("ApplyPatchTool", "CustomTool", "ShellResult", "ShellTool", "ToolCallOutputItem",
                 "apply_patch_rejection_item", "shell_rejection_item")

    @classmethod
    def find(cls, actions: Any, tools: Any, problems: list[str]) -> _Sdk:
        sdk = cls()
        for name in cls.__slots__:
            source = tools if name.endswith("Tool") else actions
            value = getattr(source, name, None)
            if not callable(value):
                problems.append(name)
            setattr(sdk, name, value)
        return sdk

    def shell_result(self, message: str) -> Any:
        """What a shell executor returns for a refused call: the SDK's own rejection, exit code 1
        and the reason on stderr."""
        return self.ShellResult(output=[{"stdout": "", "stderr": message, "outcome": {"type": "exit", "exit_code": 1}}])


class _Spec:
    """One kind of local tool: where its ``execute`` finds the call, what the gateway is asked,
    what a refusal looks like. ``field`` names the tool's executor field for kinds whose SDK
    approval step runs inside ``execute`` (checked after it, through a :class:`_FieldGate`)."""

    kind: ClassVar[str]
    executor: ClassVar[str]  # the class in agents.run_internal.tool_actions
    run_argument: ClassVar[str] = "call"  # execute()'s keyword holding the run item
    tool_attribute: ClassVar[str]  # the tool on that run item
    tool_class: ClassVar[str | None] = None  # in agents.tool, for the field gate
    field: ClassVar[str | None] = None

    def tool_name(self, tool: Any) -> str:
        name = getattr(tool, "name", None)
        return name if isinstance(name, str) and name else self.kind

    def target(self, tool: Any) -> Any:
        """The code an inner enforcer (a ``@callgate.guard``-ed executor) would see, if any."""
        return None

    def checks(self, raw_call: Any) -> list[dict[str, Any]]:
        raise NotImplementedError

    def refusal(self, sdk: _Sdk, agent: Any, raw_call: Any, call_id: str | None, message: str,
                kwargs: dict[str, Any]) -> Any:
        raise NotImplementedError

    def item_failed(self, item: Any) -> Failure:
        """The run item a checked-first call produced: did the tool fail? (Exceptions are seen anyway.)"""
        if type(item).__name__ == "ToolApprovalItem":
            return "not run: the SDK paused the call for its own approval"
        if _get(getattr(item, "raw_item", None), "status") == "failed":
            output = getattr(item, "output", None)
            return output if isinstance(output, str) and output else True
        return False

    def guard(self, gate: _Gate, value: Any) -> Any:
        """``value`` (the tool's executor) behind the gateway check, for one call."""
        raise NotImplementedError


class _ShellSpec(_Spec):
    kind = "shell"
    executor = "ShellAction"
    tool_attribute = "shell_tool"
    tool_class = "ShellTool"
    field = "executor"

    def target(self, tool: Any) -> Any:
        return getattr(tool, "executor", None)

    def checks(self, raw_call: Any) -> list[dict[str, Any]]:
        return [_shell_arguments(_get(raw_call, "action"))]

    def refusal(self, sdk: _Sdk, agent: Any, raw_call: Any, call_id: str | None, message: str,
                kwargs: dict[str, Any]) -> Any:
        return sdk.shell_rejection_item(agent, call_id or "", tool_call=raw_call, rejection_message=message)

    def guard(self, gate: _Gate, value: Any) -> Any:
        executor = value

        async def guarded_shell_executor(request: Any, *args: Any, **kwargs: Any) -> Any:
            decision = await gate.check(_shell_arguments(_get(_get(request, "data"), "action")), executor)
            if isinstance(decision, Refused):
                return gate.sdk.shell_result(decision.message)
            return await arun_permitted(decision, gate.name, executor, lambda: _call(executor, request, *args, **kwargs))

        return guarded_shell_executor


class _LocalShellSpec(_Spec):
    kind = "local_shell"
    executor = "LocalShellAction"
    tool_attribute = "local_shell_tool"

    def tool_name(self, tool: Any) -> str:
        return "local_shell"  # LocalShellTool.name is fixed; so is the policy's name for it

    def target(self, tool: Any) -> Any:
        return getattr(tool, "executor", None)

    def checks(self, raw_call: Any) -> list[dict[str, Any]]:
        return [_local_shell_arguments(_get(raw_call, "action"))]

    def refusal(self, sdk: _Sdk, agent: Any, raw_call: Any, call_id: str | None, message: str,
                kwargs: dict[str, Any]) -> Any:
        return sdk.ToolCallOutputItem(agent=agent, output=message, raw_item={
            "type": "local_shell_call_output", "call_id": call_id, "output": message})


class _ComputerSpec(_Spec):
    kind = "computer"
    executor = "ComputerAction"
    run_argument = "action"
    tool_attribute = "computer_tool"

    def tool_name(self, tool: Any) -> str:
        return "computer"  # the GA tool's name (ComputerTool.name keeps the preview's, for state files)

    def checks(self, raw_call: Any) -> list[dict[str, Any]]:
        actions = _get(raw_call, "actions")
        if not actions:
            single = _get(raw_call, "action")
            actions = [single] if single is not None else []
        return [_computer_arguments(action) for action in actions] or [{"action": "screenshot"}]

    def refusal(self, sdk: _Sdk, agent: Any, raw_call: Any, call_id: str | None, message: str,
                kwargs: dict[str, Any]) -> Any:
        image_url = _notice_image_url(message)
        return sdk.ToolCallOutputItem(agent=agent, output=image_url, raw_item={
            "call_id": call_id, "output": {"type": "computer_screenshot", "image_url": image_url},
            "type": "computer_call_output", "acknowledged_safety_checks": kwargs.get("acknowledged_safety_checks")})


class _ApplyPatchSpec(_Spec):
    kind = "apply_patch"
    executor = "ApplyPatchAction"
    tool_attribute = "apply_patch_tool"
    tool_class = "ApplyPatchTool"
    field = "editor"

    def checks(self, raw_call: Any) -> list[dict[str, Any]]:
        return _patch_operations(raw_call) or [{}]

    def refusal(self, sdk: _Sdk, agent: Any, raw_call: Any, call_id: str | None, message: str,
                kwargs: dict[str, Any]) -> Any:
        return sdk.apply_patch_rejection_item(agent, call_id or "", tool_call=raw_call,
                                              output_type="apply_patch_call_output", rejection_message=message)

    def guard(self, gate: _Gate, value: Any) -> Any:
        return _GuardedEditor(value, gate)


class _CustomSpec(_Spec):
    kind = "custom"
    executor = "CustomToolAction"
    tool_attribute = "custom_tool"
    tool_class = "CustomTool"
    field = "on_invoke_tool"

    def target(self, tool: Any) -> Any:
        return getattr(tool, "on_invoke_tool", None)

    def checks(self, raw_call: Any) -> list[dict[str, Any]]:
        return [{"input": _get(raw_call, "input")}]

    def refusal(self, sdk: _Sdk, agent: Any, raw_call: Any, call_id: str | None, message: str,
                kwargs: dict[str, Any]) -> Any:
        # The SDK's own rejection of a custom tool call is this very item.
        return sdk.apply_patch_rejection_item(agent, call_id or "", tool_call=raw_call,
                                              output_type="custom_tool_call_output", rejection_message=message)

    def guard(self, gate: _Gate, value: Any) -> Any:
        invoke = value

        async def guarded_custom_tool(ctx: Any, tool_input: Any, *args: Any, **kwargs: Any) -> Any:
            decision = await gate.check({"input": tool_input}, invoke)
            if isinstance(decision, Refused):
                return decision.message
            return await arun_permitted(decision, gate.name, invoke,
                                        lambda: _call(invoke, ctx, tool_input, *args, **kwargs))

        return guarded_custom_tool


_SPECS: tuple[_Spec, ...] = (_ShellSpec(), _LocalShellSpec(), _ComputerSpec(), _ApplyPatchSpec(), _CustomSpec())


class _Gate:
    """One call of a shell, apply-patch or custom tool inside the SDK's ``execute``: while it is
    the current gate, reading the tool's executor field (on that very instance) gives the
    executor behind the gateway check, so the check runs when the SDK calls the executor -- after
    its own approval step."""

    __slots__ = ("_guarded", "call_id", "error", "integration", "name", "queue", "raw_call", "refused", "sdk",
                 "spec", "tool")

    def __init__(self, integration: OpenAIAgentsIntegration, sdk: _Sdk, spec: _Spec, tool: Any, name: str,
                 call_id: str | None, raw_call: Any) -> None:
        self.integration = integration
        self.sdk = sdk
        self.spec = spec
        self.tool = tool
        self.name = name
        self.call_id = call_id
        self.raw_call = raw_call
        self.error: BaseException | None = None  # raise_on_block: raised once the SDK is done
        self.refused: str | None = None
        self.queue: list[tuple[dict[str, Any], Any]] | None = None  # apply-patch: operations checked ahead
        self._guarded: tuple[Any, Any] | None = None

    def guarded(self, value: Any) -> Any:
        """The same guarded object for the same value, however often the field is read."""
        if value is None:
            return None
        cached = self._guarded
        if cached is not None and cached[0] is value:
            return cached[1]
        guarded = self.spec.guard(self, value)
        self._guarded = (value, guarded)
        return guarded

    async def check(self, arguments: dict[str, Any], target: Any) -> Any:
        """The gateway's decision; a raised error (``raise_on_block``) becomes a refusal here, the
        SDK would turn it into the tool's error output, and is raised after ``execute``."""
        try:
            decision = await self.integration._acheck(self.spec, self.name, arguments, self.call_id, target)
        except CallgateError as error:
            if self.error is None:
                self.error = _as_agents_exception(error)
            decision = Refused(error, refusal_message(error))
        if isinstance(decision, Refused) and self.refused is None:
            self.refused = decision.message
        return decision

    def close(self, why: str = "the SDK did not run it") -> None:
        """Report the permits of operations checked ahead that will not run."""
        if self.queue:
            _not_run([decision for _, decision in self.queue], why)
            self.queue.clear()


_GATE: contextvars.ContextVar[_Gate | None] = contextvars.ContextVar("callgate_agents_tool_gate", default=None)


class _FieldGate:
    """Class-level data descriptor for a local tool's executor field (``ShellTool.executor``,
    ``ApplyPatchTool.editor``, ``CustomTool.on_invoke_tool``): the value stays in the instance
    ``__dict__`` and reads return it, except while the current :class:`_Gate` is for this very
    instance. ``default`` is the dataclass default the class attribute held."""

    __slots__ = ("default", "name")

    def __init__(self, name: str, default: Any) -> None:
        self.name = name
        self.default = default

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            if self.default is _NO_VALUE:
                raise AttributeError(self.name)
            return self.default
        value = instance.__dict__.get(self.name, _NO_VALUE)
        if value is _NO_VALUE:
            if self.default is _NO_VALUE:
                raise AttributeError(self.name)
            value = self.default
        gate = _GATE.get()
        if gate is not None and gate.tool is instance and gate.spec.field == self.name:
            return gate.guarded(value)
        return value

    def __set__(self, instance: Any, value: Any) -> None:
        instance.__dict__[self.name] = value

    def __delete__(self, instance: Any) -> None:
        try:
            del instance.__dict__[self.name]
        except KeyError:
            raise AttributeError(self.name) from None


class _GuardedEditor:
    """An ``ApplyPatchEditor`` behind the gateway: at the first operation the whole patch is
    checked, operation by operation, and if one is refused none is applied; then each operation
    runs under its own permit. An operation that is not the one checked ahead is checked as is."""

    __slots__ = ("_editor", "_gate")

    def __init__(self, editor: Any, gate: _Gate) -> None:
        self._editor = editor
        self._gate = gate

    def __getattr__(self, name: str) -> Any:
        return getattr(self._editor, name)

    def __repr__(self) -> str:
        return repr(self._editor)

    def create_file(self, operation: Any) -> Awaitable[Any]:
        return self._apply("create_file", operation)

    def update_file(self, operation: Any) -> Awaitable[Any]:
        return self._apply("update_file", operation)

    def delete_file(self, operation: Any) -> Awaitable[Any]:
        return self._apply("delete_file", operation)

    async def _apply(self, method_name: str, operation: Any) -> Any:
        gate = self._gate
        method = getattr(self._editor, method_name)
        if gate.refused is not None:  # the refusal went out with an earlier operation
            return {"status": "failed"}
        arguments = _patch_arguments(operation)
        if gate.queue is None:
            gate.queue = []
            for planned in _patch_operations(gate.raw_call) or [arguments]:
                decision = await gate.check(planned, method)
                if isinstance(decision, Refused):
                    gate.close(decision.message)
                    return {"status": "failed", "output": decision.message}
                gate.queue.append((planned, decision))
        if gate.queue and gate.queue[0][0] == arguments:
            decision = gate.queue.pop(0)[1]
        else:
            decision = await gate.check(arguments, method)
            if isinstance(decision, Refused):
                gate.close(decision.message)
                return {"status": "failed", "output": decision.message}
        return await arun_permitted(decision, gate.name, method, lambda: _call(method, operation),
                                    failed=_patch_result_failed)


def _get(obj: Any, key: str) -> Any:
    """A field of an SDK/OpenAI model or of its dict form (the runner passes either)."""
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else (None if value is None else str(value))


def _plain(value: Any) -> Any:
    """JSON-ready arguments from a pydantic model, a mapping or a dataclass."""
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        try:
            return dump(mode="json", exclude_none=True)
        except Exception:  # fall through to a plainer form
            log.debug("callgate: model_dump failed", exc_info=True)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    fields = getattr(value, "__dataclass_fields__", None)
    if isinstance(fields, dict):
        return {name: _plain(getattr(value, name, None)) for name in fields if getattr(value, name, None) is not None}
    return str(value)


def _strings(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if v is not None]
    return [str(value)]


def _shell_arguments(action: Any) -> dict[str, Any]:
    commands = _strings(_get(action, "commands"))
    return {"commands": commands, "command_line": "\n".join(commands),
            "timeout_ms": _get(action, "timeout_ms"), "max_output_length": _get(action, "max_output_length")}


def _local_shell_arguments(action: Any) -> dict[str, Any]:
    argv = _strings(_get(action, "command"))
    return {"command": argv, "command_line": shlex.join(argv), "env": _plain(_get(action, "env")),
            "working_directory": _get(action, "working_directory"), "timeout_ms": _get(action, "timeout_ms"),
            "user": _get(action, "user")}


def _computer_arguments(action: Any) -> dict[str, Any]:
    data = _plain(action)
    if not isinstance(data, dict):
        return {"action": _text(data)}
    kind = data.pop("type", None)
    return {"action": kind, **data}


def _patch_arguments(operation: Any) -> dict[str, Any]:
    kind = _text(_get(operation, "type"))
    arguments = {"operation": kind, "path": _text(_get(operation, "path")),
                 "diff": None if kind == "delete_file" else _text(_get(operation, "diff"))}
    move_to = _get(operation, "move_to")
    if move_to is not None:
        arguments["move_to"] = _text(move_to)
    return arguments


def _patch_operations(raw_call: Any) -> list[dict[str, Any]]:
    """Every operation of an apply-patch call: the ``operations`` list, or the one ``operation``."""
    operations = _get(raw_call, "operations")
    if isinstance(operations, (list, tuple)):
        return [_patch_arguments(operation) for operation in operations]
    operation = _get(raw_call, "operation")
    return [_patch_arguments(operation)] if operation is not None else []


def _patch_result_failed(result: Any) -> Failure:
    """An editor's ``ApplyPatchResult`` (or its dict form) with status ``failed``."""
    if _get(result, "status") != "failed":
        return False
    output = _get(result, "output")
    return str(output) if output else True


async def _call(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a sync or async executor the way the SDK does: on the loop, awaited if awaitable."""
    result = function(*args, **kwargs)
    return await result if inspect.isawaitable(result) else result


def _not_run(decisions: list[Any], why: Any) -> None:
    """Report permits whose calls will not run: another part of the same call was refused."""
    text = why if isinstance(why, str) else refusal_message(why)
    for decision in decisions:
        if isinstance(decision, Permit):
            decision.report("failed", error=f"not run: {text}")


async def _run_under(decisions: list[Any], tool: str, target: Any, call: Callable[[], Awaitable[Any]],
                     failed: Callable[[Any], Failure]) -> Any:
    """Run ``call`` once under every permit (a computer call's actions, a patch's operations)."""
    if not decisions:
        return await call()
    first, rest = decisions[0], decisions[1:]
    inner = (lambda: _run_under(rest, tool, target, call, failed)) if rest else call
    return await arun_permitted(first, tool, target, inner, failed=failed)


#: Tools the model calls and OpenAI's servers run (agents.tool): nothing of them runs here.
_HOSTED_TOOLS = frozenset({"WebSearchTool", "FileSearchTool", "CodeInterpreterTool", "HostedMCPTool",
                           "ImageGenerationTool"})


def _hosted_label(tool: Any) -> str | None:
    for cls in type(tool).__mro__:
        if cls.__module__ != TOOLS_MODULE:
            continue
        if cls.__name__ in _HOSTED_TOOLS:
            return cls.__name__
        if cls.__name__ == "ShellTool" and _get(getattr(tool, "environment", None), "type") not in (None, "local"):
            return "ShellTool with a hosted environment"
    return None


# -- a refused computer call's "screenshot" ---------------------------------------------------------
#: 5x8 glyphs, one byte per column, bit 0 = top row (the classic 5x7 LCD font, with descenders).
_GLYPHS = {
    " ": "0000000000", "!": "00005f0000", '"': "0007000700", "#": "147f147f14", "$": "242a7f2a12",
    "%": "2313086462", "&": "3649552250", "'": "0005030000", "(": "001c224100", ")": "0041221c00",
    "*": "2a1c7f1c2a", "+": "08083e0808", ",": "0050300000", "-": "0808080808", ".": "0060600000",
    "/": "2010080402", "0": "3e5149453e", "1": "00427f4000", "2": "4261514946", "3": "2141454b31",
    "4": "1814127f10", "5": "2745454539", "6": "3c4a494930", "7": "0171090503", "8": "3649494936",
    "9": "064949291e", ":": "0036360000", ";": "0056360000", "<": "0814224100", "=": "1414141414",
    ">": "0041221408", "?": "0201510906", "@": "324979413e", "A": "7e1111117e", "B": "7f49494936",
    "C": "3e41414122", "D": "7f4141221c", "E": "7f49494941", "F": "7f09090901", "G": "3e4149497a",
    "H": "7f0808087f", "I": "00417f4100", "J": "2040413f01", "K": "7f08142241", "L": "7f40404040",
    "M": "7f020c027f", "N": "7f0408107f", "O": "3e4141413e", "P": "7f09090906", "Q": "3e4151215e",
    "R": "7f09192946", "S": "4649494931", "T": "01017f0101", "U": "3f4040403f", "V": "1f2040201f",
    "W": "3f4038403f", "X": "6314081463", "Y": "0708700807", "Z": "6151494543", "[": "007f414100",
    "\\": "0204081020", "]": "0041417f00", "^": "0402010204", "_": "4040404040", "`": "0001020400",
    "a": "2054545478", "b": "7f48444438", "c": "3844444420", "d": "384444487f", "e": "3854545418",
    "f": "087e090102", "g": "18a4a4a47c", "h": "7f08040478", "i": "00447d4000", "j": "4080847d00",
    "k": "7f10284400", "l": "00417f4000", "m": "7c04180478", "n": "7c08040478", "o": "3844444438",
    "p": "fc24242418", "q": "18242424fc", "r": "7c08040408", "s": "4854545420", "t": "043f444020",
    "u": "3c4040207c", "v": "1c2040201c", "w": "3c4030403c", "x": "4428102844", "y": "1ca0a0a07c",
    "z": "4464544c44", "{": "0008364100", "|": "00007f0000", "}": "0041360800", "~": "0804080408",
}
_NOTICE_COLUMNS = 64
_NOTICE_LINES = 12


def _notice_image_url(message: str) -> str:
    """A ``data:`` PNG with ``message`` written on it (black on white, wrapped; characters outside
    printable ASCII drawn as ``?``), and the exact text in an ``iTXt`` ``Description`` chunk."""
    lines = textwrap.wrap(message, _NOTICE_COLUMNS) or [""]
    if len(lines) > _NOTICE_LINES:
        lines = lines[:_NOTICE_LINES - 1] + ["..."]
    scale, pad = 2, 16
    width = (max(len(line) for line in lines) * 6 - 1) * scale + 2 * pad
    height = (len(lines) * 10 - 2) * scale + 2 * pad
    rows = [bytearray(b"\xff" * width) for _ in range(height)]
    ink = b"\x00" * scale
    for line_index, line in enumerate(lines):
        for char_index, char in enumerate(line):
            glyph = bytes.fromhex(_GLYPHS.get(char, _GLYPHS["?"]))
            for column_index, column in enumerate(glyph):
                x = pad + (char_index * 6 + column_index) * scale
                for row in range(8):
                    if column >> row & 1:
                        y = pad + (line_index * 10 + row) * scale
                        for dy in range(scale):
                            rows[y + dy][x:x + scale] = ink

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = b"".join((
        b"\x89PNG\r\n\x1a\n",
        chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)),  # 8-bit grayscale
        chunk(b"iTXt", b"Description\x00\x00\x00\x00\x00" + message.encode("utf-8")),
        chunk(b"IDAT", zlib.compress(b"".join(b"\x00" + bytes(row) for row in rows), 9)),
        chunk(b"IEND", b""),
    ))
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


# -- token usage ----------------------------------------------------------------------------------
class _ModelCall:
    """A patched model call in progress; ``parent`` is the patched call it runs inside, if any."""

    __slots__ = ("parent", "recorded")

    def __init__(self, parent: _ModelCall | None) -> None:
        self.parent = parent
        self.recorded = False

    def mark_recorded(self) -> None:
        """This call's usage is recorded: so is every enclosing call's (they return the same
        response, or delegated to this model)."""
        call: _ModelCall | None = self
        while call is not None and not call.recorded:
            call.recorded = True
            call = call.parent


_MODEL_CALL: contextvars.ContextVar[_ModelCall | None] = contextvars.ContextVar("callgate_agents_model_call",
                                                                                default=None)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _record(model: Any, usage: Any, served_model: Any, framework: str) -> bool:
    """Record one LLM call's usage (OpenAI semantics: input includes cached tokens, output includes
    reasoning). False when the model reported none. Never raises."""
    try:
        if usage is None:
            return False
        input_tokens = _count(getattr(usage, "input_tokens", 0))
        output_tokens = _count(getattr(usage, "output_tokens", 0))
        if not input_tokens and not output_tokens:  # the provider reported no usage
            return False
        inputs = getattr(usage, "input_tokens_details", None)
        outputs = getattr(usage, "output_tokens_details", None)
        record_usage(
            served_model if isinstance(served_model, str) and served_model else _model_name(model),
            input_tokens,
            output_tokens,
            cache_read_tokens=_count(getattr(inputs, "cached_tokens", 0)),
            cache_write_tokens=_count(getattr(inputs, "cache_write_tokens", 0)),
            reasoning_tokens=_count(getattr(outputs, "reasoning_tokens", 0)),
            provider=_provider(model),
            framework=framework,
        )
        return True
    except Exception:
        log.debug("callgate: could not record agents model usage", exc_info=True)
        return False


def _model_name(model: Any) -> str:
    """The SDK's model classes keep the requested model in ``.model``; the class name is the last
    resort, so tokens are never lost for want of a name (they are then simply unpriced)."""
    for attribute in ("model", "model_name"):
        value = getattr(model, attribute, None)
        if isinstance(value, str) and value:
            return value
    return type(model).__name__


def _provider(model: Any) -> str | None:
    """``openai``/``azure`` for the SDK's OpenAI models talking to those hosts; otherwise unknown
    (None), and the gateway prices by model name: an OpenAI-compatible server elsewhere (a proxy,
    OpenRouter, a local model) must not be priced as OpenAI by mistake."""
    client = getattr(model, "_client", None)
    host = getattr(getattr(client, "base_url", None), "host", None)
    if not isinstance(host, str):
        return None
    if host == "api.openai.com":
        return "openai"
    if host.endswith(".openai.azure.com"):
        return "azure"
    return None

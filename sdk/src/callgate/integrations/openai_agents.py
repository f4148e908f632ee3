"""OpenAI Agents SDK (``openai-agents``, import ``agents``): every function tool call checked at the
gateway, every LLM call's tokens recorded.

Two choke points, proven against openai-agents 0.24.0 (shared/docs/frameworks.md §3):

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

Limits. A tool's own ``timeout_seconds`` also bounds its approval wait: the SDK times the whole
invoker, and cancels it (the model is told the tool timed out; the gateway call expires unanswered).
A custom ``failure_error_function`` leaves no trace of a failure, so such a tool's handled error is
reported as succeeded. Hosted tools run at OpenAI, and the local shell, computer and apply-patch
tools are not function tools: none of them passes here.

No framework module is imported here: ``patch_module`` receives the loaded module.
"""

from __future__ import annotations

import contextvars
import functools
import json
import logging
import threading
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar

import wrapt

from .._usage import record_usage
from ..errors import CallgateError
from . import DidNotEnable
from ._base import Integration
from ._enforce import Refused, acheck_tool, arun_permitted

__all__ = ["OpenAIAgentsIntegration"]

log = logging.getLogger("callgate")

TOOLS_MODULE = "agents.tool"
MODELS_MODULE = "agents.models.interface"

#: The runner reads (and clears) this ToolContext flag after each invocation: when set, the output
#: is an SDK-generated error and bypasses the tool's output schema (agents.tool, private, >= 0.14).
_SDK_ERROR_FLAG = "_function_tool_default_failure_handled"
#: Where a tool instance keeps its cached proxy (beside the raw invoker in ``__dict__``).
_CACHE_KEY = "_callgate_invoker"


class OpenAIAgentsIntegration(Integration):
    """Tool enforcement through a ``FunctionTool.on_invoke_tool`` descriptor; token capture on
    every concrete ``Model`` class."""

    identifier: ClassVar[str] = "openai_agents"
    framework: ClassVar[str] = "openai-agents"
    modules: ClassVar[tuple[str, ...]] = (TOOLS_MODULE, MODELS_MODULE)

    def __init__(self) -> None:
        super().__init__()
        # Proxies and wrappers outlive an uninstall wherever the SDK or a user holds them; while
        # these are off they call straight through.
        self._tools_on = False
        self._usage_on = False

    def patch_module(self, name: str, module: Any) -> None:
        if name == TOOLS_MODULE:
            self._patch_tools(module.FunctionTool)
        elif name == MODELS_MODULE:
            self._patch_models(module.Model)

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

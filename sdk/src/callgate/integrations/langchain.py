"""LangChain / LangGraph: every tool call checked at the gateway, every LLM call's tokens recorded.

Two choke points, both proven against langchain-core 1.7.2, langchain 1.4.7 and langgraph 1.2.22
(shared/docs/frameworks.md §2):

**Tools** -- ``BaseTool.run`` / ``BaseTool.arun`` (module ``langchain_core.tools.base``), wrapped
on the class, so tools made before ``configure()`` are covered. Every invocation path ends there:
``tool.invoke``/``ainvoke``, LangGraph's ``ToolNode`` (hence ``create_agent`` and
``create_react_agent``), MCP tools (``StructuredTool(coroutine=...)``, async only). No class in
LangChain overrides ``run``/``arun`` (subclasses override ``_run``/``_arun``, which is why those
are never patched). A sync-only tool on an async path reaches the sync ``run`` on a worker thread,
so its approval wait blocks that thread and never the event loop; ``arun`` uses the async check.

A refusal is *returned*, shaped like ``run()``'s own handled tool error: a
``ToolMessage(status="error")`` when the call has a ``tool_call_id`` (agent loops), else the text.
Raising would crash ``create_agent``: ``ToolNode``'s default error handler re-raises everything
but argument-validation errors. Only ``configure(raise_on_block=True)`` raises.

**Tokens** -- one process-global callback handler, registered with LangChain's own
``register_configure_hook`` (the mechanism behind ``get_usage_metadata_callback``) through a
``ContextVar`` whose *default* is the handler, so every callback manager in every thread and task
gets it. It sees ``invoke``, ``ainvoke``, ``stream``, ``astream``, ``batch``, LCEL streaming and
graph streaming alike (patching ``invoke`` or ``_generate`` misses most of those). The hook
module is ``langchain_core.tracers.context`` -- the module that defines the hook list; LangChain
imports it lazily inside the first callback-manager configuration, so hooking it neither imports
LangSmith early nor comes too late.

No framework module is imported here at module level: ``patch_module`` receives the loaded module.
"""

from __future__ import annotations

import collections
import contextvars
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from .._usage import record_usage
from ..errors import CallgateError
from ._base import Integration
from ._enforce import Refused, acheck_tool, arun_permitted, check_tool, run_permitted

__all__ = ["LangChainIntegration"]

log = logging.getLogger("callgate")

TOOLS_MODULE = "langchain_core.tools.base"
CALLBACK_HOOKS_MODULE = "langchain_core.tracers.context"

#: What ``_filter_injected_args`` always strips, for a langchain-core that no longer has it.
_FALLBACK_FILTERED = frozenset({"callbacks", "run_manager", "config", "runtime"})


class LangChainIntegration(Integration):
    """Tool enforcement on ``BaseTool.run``/``arun`` and token capture through a global callback."""

    identifier: ClassVar[str] = "langchain"
    framework: ClassVar[str] = "langchain"
    modules: ClassVar[tuple[str, ...]] = (TOOLS_MODULE, CALLBACK_HOOKS_MODULE)

    def patch_module(self, name: str, module: Any) -> None:
        if name == TOOLS_MODULE:
            self._patch_tools(module)
        elif name == CALLBACK_HOOKS_MODULE:
            self._register_usage_handler(module)

    # -- tools ----------------------------------------------------------------------------------
    def _patch_tools(self, module: Any) -> None:
        base_tool = module.BaseTool
        if not hasattr(base_tool, "_filter_injected_args"):
            log.warning(
                "callgate: this langchain-core has no BaseTool._filter_injected_args; injected "
                "arguments are stripped by name only"
            )
        tools = _ToolEnforcer(self.framework, module.ToolMessage)
        self.wrap(base_tool, "run", tools.run)
        self.wrap(base_tool, "arun", tools.arun)
        # run()/arun() turn a tool's ToolException (with handle_tool_error) and a validation error
        # (with handle_validation_error) into a normal-looking result through these two helpers;
        # observing them is how such a result is reported as a failure, with its error. Optional:
        # without them the failure is still seen on an error ToolMessage, just not on plain text.
        for helper in ("_handle_tool_error", "_handle_validation_error"):
            if callable(module.__dict__.get(helper)):
                self.wrap(module, helper, _note_handled_error)

    # -- tokens ---------------------------------------------------------------------------------
    def _register_usage_handler(self, module: Any) -> None:
        from langchain_core.callbacks.base import BaseCallbackHandler  # loaded: the hook module needs it

        handler_class = type("CallgateUsageHandler", (_UsageCallbacks, BaseCallbackHandler), {})
        handler = handler_class(self.framework)
        # The default makes the handler global: every thread and task reads it, nobody has to set it.
        var: contextvars.ContextVar[Any] = contextvars.ContextVar("callgate_langchain_usage", default=handler)
        module.register_configure_hook(var, True)
        hooks = getattr(module, "_configure_hooks", None)

        def undo() -> None:
            # A ContextVar's default cannot be unset, and callback managers configured before
            # now still hold the handler: make it inert, then take the hook out of LangChain's list.
            handler.active = False
            if isinstance(hooks, list):
                for index, entry in enumerate(hooks):
                    if entry[0] is var:
                        del hooks[index]
                        break

        self.on_undo(undo)


# -- tool calls -----------------------------------------------------------------------------------
#: The errors run()/arun() handled (turned into a result) during the current tool run.
_HANDLED: contextvars.ContextVar[list[BaseException] | None] = contextvars.ContextVar(
    "callgate_langchain_handled", default=None
)


def _note_handled_error(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Wraps ``_handle_tool_error``/``_handle_validation_error``: remember the error for the outcome."""
    sink = _HANDLED.get()
    if sink is not None:
        error = args[0] if args else kwargs.get("e")
        if isinstance(error, BaseException):
            sink.append(error)
    return wrapped(*args, **kwargs)


class _ToolEnforcer:
    """The ``BaseTool.run``/``arun`` wrappers (wrapt signature: wrapped, instance, args, kwargs)."""

    def __init__(self, framework: str, tool_message: type) -> None:
        self.framework = framework
        self.tool_message = tool_message

    def run(
        self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        try:
            name, call_args, target = _describe(instance, args, kwargs, asynchronous=False)
            verdict = check_tool(name, call_args, framework=self.framework, target=target)
        except CallgateError:
            raise  # configure(raise_on_block=True): the caller asked for the exception
        except Exception as e:  # noqa: BLE001 - a bug of ours must not run the tool, nor crash the agent
            verdict = _internal_error(instance, e)
        if isinstance(verdict, Refused):
            return self._refusal(instance, verdict, kwargs.get("tool_call_id"))
        handled: list[BaseException] = []
        token = _HANDLED.set(handled)
        try:
            return run_permitted(
                verdict,
                name,
                target,
                lambda: wrapped(*args, **kwargs),
                failed=lambda result: _failure(result, handled, self.tool_message),
            )
        finally:
            _HANDLED.reset(token)

    async def arun(
        self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        try:
            name, call_args, target = _describe(instance, args, kwargs, asynchronous=True)
            verdict = await acheck_tool(name, call_args, framework=self.framework, target=target)
        except CallgateError:
            raise
        except Exception as e:  # noqa: BLE001
            verdict = _internal_error(instance, e)
        if isinstance(verdict, Refused):
            return self._refusal(instance, verdict, kwargs.get("tool_call_id"))
        handled: list[BaseException] = []
        token = _HANDLED.set(handled)
        try:
            return await arun_permitted(
                verdict,
                name,
                target,
                lambda: wrapped(*args, **kwargs),
                failed=lambda result: _failure(result, handled, self.tool_message),
            )
        finally:
            _HANDLED.reset(token)

    def _refusal(self, tool: Any, refused: Refused, tool_call_id: str | None) -> Any:
        """What ``run()`` itself returns for a handled tool error, so agent loops carry on."""
        if tool_call_id is not None:
            return self.tool_message(
                content=refused.message, tool_call_id=tool_call_id, name=tool.name, status="error"
            )
        return refused.message


def _describe(
    tool: Any, args: tuple[Any, ...], kwargs: dict[str, Any], *, asynchronous: bool
) -> tuple[str, dict[str, Any], Any]:
    """The gateway's view of one ``run``/``arun`` call: tool name, the model's arguments, the code."""
    tool_input = args[0] if args else kwargs.get("tool_input")
    return str(tool.name), _model_arguments(tool, tool_input), _code_of(tool, asynchronous=asynchronous)


def _model_arguments(tool: Any, tool_input: Any) -> dict[str, Any]:
    """The arguments the model chose. ``ToolNode`` adds injected values (``ToolRuntime``,
    ``InjectedState``/``InjectedStore``/``InjectedToolCallId``) to the same dict; they are not the
    model's and may be large or secret, so they are stripped the way ``run()`` strips them for
    its own callbacks. A string input is named as ``run()`` validates it (see :func:`_string_field`)."""
    if isinstance(tool_input, str):
        return {_string_field(tool): tool_input}
    if isinstance(tool_input, Mapping):
        values = dict(tool_input)
        try:
            return dict(tool._filter_injected_args(values))
        except Exception:  # noqa: BLE001 - private API: fall back to the names it always strips
            log.debug(
                "callgate: _filter_injected_args failed for %s", getattr(tool, "name", tool), exc_info=True
            )
            return {k: v for k, v in values.items() if k not in _FALLBACK_FILTERED}
    if tool_input is None:
        return {}
    return {"input": tool_input}


def _string_field(tool: Any) -> str:
    """The argument a plain-string input stands for. ``run()`` validates ``tool.run("/etc")`` as the
    first field of the tool's pydantic ``args_schema`` (``{"path": "/etc"}`` for
    ``delete_file(path)``), so the gateway must see that name too, or a policy on ``path`` could be
    side-stepped by passing a string; a schema-less single-input ``Tool`` has ``{"input": ...}``."""
    schema = getattr(tool, "args_schema", None)
    if isinstance(schema, type):
        fields = getattr(schema, "model_fields", None) or getattr(schema, "__fields__", None)
        if isinstance(fields, Mapping) and fields:
            return str(next(iter(fields)))
    return "input"


def _code_of(tool: Any, *, asynchronous: bool) -> Any:
    """The function the tool runs (``@tool``/``StructuredTool``/``Tool``), so that a
    ``@callgate.guard``-ed function used as a tool is recognised and not checked a second time."""
    code = getattr(tool, "coroutine", None) if asynchronous else None
    return code or getattr(tool, "func", None)


def _internal_error(tool: Any, error: Exception) -> Refused:
    """Fail closed on an unexpected error of ours: the tool does not run, the model is told, and
    the run goes on."""
    log.error(
        "callgate: could not check LangChain tool call %s; it does not run",
        getattr(tool, "name", "?"),
        exc_info=error,
    )
    return Refused(None, f"Tool call not run: callgate could not check it ({type(error).__name__}).")


def _failure(result: Any, handled: list[BaseException], tool_message: type) -> BaseException | str | bool:
    """Whether a returned result is really a failure: ``run()`` returns handled tool errors and
    validation errors (``handle_tool_error``/``handle_validation_error``, MCP tools' server errors)
    as results, and a tool may return its own error ``ToolMessage``."""
    if handled:
        return handled[-1]
    messages = result if isinstance(result, list) else [result]
    for message in messages:
        if isinstance(message, tool_message) and getattr(message, "status", None) == "error":
            return str(message.content) or True
    return False


# -- token usage ----------------------------------------------------------------------------------
class _Run:
    """What ``on_*_start`` knew about one LLM run, for its ``on_llm_end``."""

    __slots__ = ("model", "nested", "provider")

    def __init__(self, model: str | None, provider: str | None) -> None:
        self.model = model
        self.provider = provider
        self.nested = False  # it called another LLM run, which reports the tokens itself


class _UsageCallbacks:
    """The callback handler's behaviour; mixed into a ``BaseCallbackHandler`` subclass at patch time
    (the base class can only be imported once LangChain is loaded).

    One usage record per LLM call, never two:

    * a chat result's ``n`` choices all carry the call's usage: only the first is read (as
      LangChain's own ``UsageMetadataCallbackHandler`` does);
    * ``usage_metadata`` wins over the legacy ``llm_output["token_usage"]`` (chat models often
      report both); legacy completion models (``BaseLLM``) only have the latter, and LangChain
      keeps it on the first of a batch's flattened results only;
    * an LLM-cache hit re-reports the original call's ``usage_metadata`` with ``total_cost: 0``
      added (``BaseChatModel._convert_cached_generations``): no model was called, nothing was
      billed, and the original call was recorded when it happened, so it is skipped. (Legacy
      ``BaseLLM`` cache hits fire no ``on_llm_end`` at all.);
    * a chat model that calls another chat model (a router or wrapper model) returns the inner
      call's message, and so its usage, as its own: only the inner call, the real one, is recorded.
      It is recognised two ways: the inner run is a child of the outer one (callbacks handed
      down), or the outer result carries the very usage object already recorded for the inner
      run (no callbacks handed down, so both runs look like siblings).
    """

    run_inline = True  # async managers: call us on the loop (a deque append), not via an executor
    raise_error = False  # never break the user's run
    # Events we have no use for are not even dispatched to us.
    ignore_chain = True
    ignore_agent = True
    ignore_retriever = True
    ignore_retry = True
    ignore_custom_event = True

    #: Runs started and not ended (a stream abandoned half-way may never end) are capped.
    MAX_OPEN_RUNS = 10_000
    #: How many recorded usage objects are remembered to recognise an outer model re-reporting one.
    RECENT_USAGE = 256

    def __init__(self, framework: str) -> None:
        super().__init__()
        self.framework = framework
        self.active = True
        self._runs: dict[Any, _Run] = {}
        self._recent: collections.deque[Any] = collections.deque(maxlen=self.RECENT_USAGE)
        self._lock = threading.Lock()

    # starts -------------------------------------------------------------------------------
    def on_chat_model_start(
        self,
        serialized: Any,
        messages: Any,
        *,
        run_id: Any,
        parent_run_id: Any = None,
        metadata: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._started(run_id, parent_run_id, metadata, kwargs.get("invocation_params"))

    def on_llm_start(
        self,
        serialized: Any,
        prompts: Any,
        *,
        run_id: Any,
        parent_run_id: Any = None,
        metadata: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._started(run_id, parent_run_id, metadata, kwargs.get("invocation_params"))

    def _started(
        self, run_id: Any, parent_run_id: Any, metadata: Mapping[str, Any] | None, invocation_params: Any
    ) -> None:
        if not self.active:
            return
        try:
            run = _Run(*_requested_model(metadata, invocation_params))
            with self._lock:
                parent = self._runs.get(parent_run_id) if parent_run_id is not None else None
                if parent is not None:
                    parent.nested = True
                if len(self._runs) >= self.MAX_OPEN_RUNS:
                    del self._runs[next(iter(self._runs))]
                self._runs[run_id] = run
        except Exception:  # noqa: BLE001 - usage capture must never break the agent
            log.debug("callgate: LangChain usage start failed", exc_info=True)

    # ends ---------------------------------------------------------------------------------
    def on_llm_error(self, error: BaseException, *, run_id: Any, **kwargs: Any) -> None:
        with self._lock:
            self._runs.pop(run_id, None)

    def on_llm_end(self, response: Any, *, run_id: Any, **kwargs: Any) -> None:
        with self._lock:
            run = self._runs.pop(run_id, None)
        if not self.active or (run is not None and run.nested):
            return
        try:
            self._record(response, run or _Run(None, None))
        except Exception:  # noqa: BLE001
            log.debug("callgate: LangChain usage capture failed", exc_info=True)

    def _record(self, response: Any, run: _Run) -> None:
        found = False
        for choices in getattr(response, "generations", None) or ():
            for generation in choices:
                message = getattr(generation, "message", None)
                usage = getattr(message, "usage_metadata", None)
                if not usage:
                    continue
                found = True
                if usage.get("total_cost") != 0 and self._first_report(usage):  # 0: an LLM-cache replay
                    metadata = getattr(message, "response_metadata", None) or {}
                    model, provider = _served_model(metadata, run)
                    record_usage(
                        model, provider=provider, framework=self.framework, **_usage_metadata_counts(usage)
                    )
                break  # the other choices repeat the same call's usage
        if not found:
            legacy = _llm_output_usage(getattr(response, "llm_output", None), run)
            if legacy is not None:
                model, provider, counts = legacy
                record_usage(model, provider=provider, framework=self.framework, **counts)

    def _first_report(self, usage: Any) -> bool:
        """False if this very usage object was recorded already (an outer model passing on an inner
        model's message); identity, not equality: two real calls may well use equal token counts."""
        with self._lock:
            if any(seen is usage for seen in self._recent):
                return False
            self._recent.append(usage)
            return True


def _requested_model(
    metadata: Mapping[str, Any] | None, invocation_params: Any
) -> tuple[str | None, str | None]:
    """The model as requested (``ls_model_name`` normalises model/model_name/model_id across
    providers) and its provider, for responses that do not name the served model."""
    md = metadata or {}
    params = invocation_params if isinstance(invocation_params, Mapping) else {}
    model = (
        md.get("ls_model_name")
        or params.get("model")
        or params.get("model_name")
        or params.get("model_id")
        or params.get("_type")
    )
    provider = md.get("ls_provider")
    return (model if isinstance(model, str) else None), (provider if isinstance(provider, str) else None)


def _served_model(response_metadata: Mapping[str, Any], run: _Run) -> tuple[str, str | None]:
    """The served model (``response_metadata["model_name"]``, a dated snapshot) when the provider
    names it, else the requested one; never empty, so the tokens are recorded even if unpriced."""
    model = response_metadata.get("model_name") or response_metadata.get("model") or run.model
    provider = response_metadata.get("model_provider") or run.provider
    return (model if isinstance(model, str) and model else "unknown"), (
        provider if isinstance(provider, str) else None
    )


def _usage_metadata_counts(usage: Mapping[str, Any]) -> dict[str, Any]:
    """``record_usage``'s counts from a LangChain ``UsageMetadata``, whose semantics are callgate's:
    ``input_tokens`` includes cache reads and writes, ``output_tokens`` includes reasoning."""
    inputs = usage.get("input_token_details") or {}
    outputs = usage.get("output_token_details") or {}
    # langchain-anthropic moves cache writes to per-TTL keys ("ephemeral_5m_input_tokens", ...)
    # and then sets "cache_creation" to 0 so that they are not counted twice: add them up.
    parts = [
        v
        for k, v in inputs.items()
        if (k == "cache_creation" or k.startswith("ephemeral_")) and isinstance(v, int) and v > 0
    ]
    cache_write = sum(parts) if parts else inputs.get("cache_creation")
    return {
        "input_tokens": usage.get("input_tokens"),
        "output_tokens": usage.get("output_tokens"),
        "cache_read_tokens": inputs.get("cache_read"),
        "cache_write_tokens": cache_write,
        "reasoning_tokens": outputs.get("reasoning"),
    }


def _llm_output_usage(llm_output: Any, run: _Run) -> tuple[str, str | None, dict[str, Any]] | None:
    """Usage of a legacy completion model (``BaseLLM``): OpenAI-shaped ``llm_output["token_usage"]``."""
    if not isinstance(llm_output, Mapping):
        return None
    usage = llm_output.get("token_usage") or llm_output.get("usage")
    if not isinstance(usage, Mapping) or not usage:
        return None
    inputs = usage.get("prompt_tokens", usage.get("input_tokens"))
    outputs = usage.get("completion_tokens", usage.get("output_tokens"))
    if inputs is None and outputs is None:
        return None
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    model, provider = _served_model(llm_output, run)
    return (
        model,
        provider,
        {
            "input_tokens": inputs,
            "output_tokens": outputs,
            "cache_read_tokens": prompt_details.get("cached_tokens")
            if isinstance(prompt_details, Mapping)
            else None,
            "reasoning_tokens": (
                completion_details.get("reasoning_tokens")
                if isinstance(completion_details, Mapping)
                else None
            ),
        },
    )

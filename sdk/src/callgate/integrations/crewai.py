"""CrewAI: every tool call checked at the gateway, every LLM call's tokens recorded.

Proven against crewai 1.15.30 (shared/docs/frameworks.md §4). CrewAI 1.x has no LangChain; its
tools are its own pydantic classes and its LLMs are native provider classes.

**Tools** -- CrewAI runs a tool on one of two paths, and neither sees the other's method:

* native function calling (an LLM with ``supports_function_calling()``): the executor maps each
  tool's sanitized name to ``tool.run`` and calls ``tool.run(**model_args)``. That is
  ``BaseTool.run`` for ``BaseTool`` subclasses (MCP tools included) and ``Tool.run`` for ``@tool``
  tools: ``Tool`` *overrides* ``run``/``arun`` without calling ``super()``, so both are wrapped,
  each exactly once (``Tool`` only if it defines ``run`` itself: wrapping an inherited method
  would stack a second check over the base class's);
* the text ReAct loop (any other LLM): ``ToolUsage.use`` calls
  ``CrewStructuredTool.invoke(input=..., config=...)``, whose function is ``BaseTool._run`` --
  ``BaseTool.run`` is never called there, so ``invoke``/``ainvoke`` are wrapped too. ``input`` may
  be a JSON string.

A tool body that calls another enforced tool gets its own check; the same call is never checked
twice: every run hands a re-entrancy pass (by code and by tool name) to the next enforcer entered.

The wrappers sit on the classes, so tools created before ``configure()`` are covered, and so are
direct ``tool.run()`` / ``tool.to_structured_tool().invoke()`` calls. CrewAI's public
``before_tool_call`` hooks are not used: they miss direct calls and CrewAI's LangGraph/OpenAI-Agents
adapters, swallow a hook's exceptions (fail open), cannot be async, exist only since crewai 1.6,
and a hook block is not recorded as a tool failure (its reason needs a second, after-call hook).

The gateway sees the name the model called and policies are written against: CrewAI's
``sanitize_tool_name`` of ``tool.name`` (``"Delete File"`` -> ``"delete_file"``). An MCP tool is
named by the MCP server's own tool name (``rm_rf``), not by CrewAI's server-prefixed alias (built
from the server's command line or URL); the alias and the server go in the call's metadata.

A refusal is *returned* as ``crewai.tools.tool_failure.ToolFailure(message, code=...)``: the model
reads ``"<reason> (code: policy_blocked)"``, the block lands in ``TaskOutput.tool_failures``,
CrewAI never caches it, and ``tool_failure_policy="raise"`` (tool, task, agent or crew) turns it
into ``ToolExecutionFailedError`` -- CrewAI's way to stop a run on a failed tool. Raising instead
would make the ReAct loop retry the call up to six times. ``configure(raise_on_block=True)`` does
raise the ``CallgateError``: direct calls see it; inside a run CrewAI catches it like any tool
error (native path: the model reads ``"Error executing tool: ..."``; ReAct path: it retries, and
every retry is checked again and refused). CrewAI versions without ``ToolFailure`` (< 1.15) get
the message as a plain string.

Tools run on worker threads even under ``akickoff()`` (``asyncio.to_thread``), so the sync check
-- which may wait for a human -- never blocks an event loop there; ``arun``/``ainvoke`` use the
async check.

**Tokens** -- ``BaseLLM._track_token_usage_internal(usage)`` is wrapped (private, but it is the
single place every native provider -- OpenAI, Anthropic, Gemini, Azure, the LiteLLM ``LLM`` --
reports each API response's usage, streamed or not, and the source of CrewAI's own
``crew.usage_metrics``, so the gateway's numbers agree with CrewAI's). It was chosen over the
public event bus (``LLMCallCompletedEvent``) after comparing both on every path. Both see the
caller's ``callgate.session`` in crewai 1.15 (the bus runs handlers in a copy of the emitter's
context), but the wrapper

* runs synchronously, in the caller's own context: nothing depends on how CrewAI dispatches
  handlers, and usage is in callgate's queue when the LLM call returns (no bus flush needed before
  ``callgate.flush()`` or at exit);
* cannot be switched off by ``crewai_event_bus.scoped_handlers()``, which unregisters every global
  handler for its duration (CrewAI's own agent evaluator uses it);
* counts every billed response, including those no completed event is emitted for (a
  structured-output refusal retried, an error after the response arrived).

Counts are normalized with CrewAI's own ``UsageMetrics.from_provider_dict`` (the one behind its
totals: input includes cache reads and writes, output includes reasoning, as callgate expects).
``BedrockCompletion`` overrides the method with Bedrock's keys (``inputTokens``, which excludes
cached tokens), so it is wrapped separately when ``crewai[bedrock]`` is imported. A custom
``BaseLLM`` is counted when it reports usage the way CrewAI's own totals need it,
``self._track_token_usage_internal(usage)``.

No framework module is imported here at module level: ``patch_module`` receives the loaded module.
"""

from __future__ import annotations

import contextvars
import functools
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from .._usage import record_usage
from ..errors import (
    AlreadyClaimed,
    ApprovalDenied,
    ApprovalExpired,
    CallBlocked,
    CallgateError,
    GatewayRejected,
    GatewayUnavailable,
)
from ._base import Integration
from ._enforce import Refused, acheck_tool, arun_permitted, check_tool, run_permitted

__all__ = ["CrewAIIntegration"]

log = logging.getLogger("callgate")

TOOLS_MODULE = "crewai.tools.base_tool"
STRUCTURED_TOOL_MODULE = "crewai.tools.structured_tool"
LLM_MODULE = "crewai.llms.base_llm"
BEDROCK_MODULE = "crewai.llms.providers.bedrock.completion"
_PROVIDERS_PACKAGE = "crewai.llms.providers."
USAGE_METHOD = "_track_token_usage_internal"


class CrewAIIntegration(Integration):
    """Tool enforcement on ``BaseTool``/``Tool``/``CrewStructuredTool`` and token capture on
    ``BaseLLM._track_token_usage_internal``."""

    identifier: ClassVar[str] = "crewai"
    framework: ClassVar[str] = "crewai"
    modules: ClassVar[tuple[str, ...]] = (TOOLS_MODULE, STRUCTURED_TOOL_MODULE, LLM_MODULE, BEDROCK_MODULE)

    def patch_module(self, name: str, module: Any) -> None:
        tools = _ToolEnforcer(self.framework)
        if name == TOOLS_MODULE:
            self.wrap(module.BaseTool, "run", tools.run)
            self.wrap(module.BaseTool, "arun", tools.arun)
            tool_class = getattr(module, "Tool", None)
            # Tool overrides run/arun since ~1.10; before that it inherits them (already wrapped).
            if tool_class is not None and "run" in vars(tool_class):
                self.wrap(tool_class, "run", tools.run)
            if tool_class is not None and "arun" in vars(tool_class):
                self.wrap(tool_class, "arun", tools.arun)
        elif name == STRUCTURED_TOOL_MODULE:
            self.wrap(module.CrewStructuredTool, "invoke", tools.invoke)
            self.wrap(module.CrewStructuredTool, "ainvoke", tools.ainvoke)
        elif name == LLM_MODULE:
            self.wrap(module.BaseLLM, USAGE_METHOD, _usage_recorder(self.framework, _crewai_counts))
        elif name == BEDROCK_MODULE:
            bedrock = getattr(module, "BedrockCompletion", None)
            if bedrock is not None and USAGE_METHOD in vars(bedrock):
                self.wrap(bedrock, USAGE_METHOD, _usage_recorder(self.framework, _bedrock_counts))


# -- tools ----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Call:
    """The gateway's view of one tool invocation."""

    tool: str
    args: dict[str, Any]
    target: Any  # the code the invocation runs, for the re-entrancy pass
    metadata: dict[str, Any] | None


class _ToolEnforcer:
    """The wrapt wrappers (signature: wrapped, instance, args, kwargs) of the four tool entry points."""

    def __init__(self, framework: str) -> None:
        self.framework = framework

    # BaseTool.run / Tool.run: tool_func(**model_args) on the native path, or a direct call.
    def run(self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...],
            kwargs: dict[str, Any]) -> Any:
        return self._enforce(lambda: _run_call(instance, args, kwargs), wrapped, args, kwargs)

    async def arun(self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...],
                   kwargs: dict[str, Any]) -> Any:
        return await self._aenforce(lambda: _run_call(instance, args, kwargs), wrapped, args, kwargs)

    # CrewStructuredTool.invoke: the ReAct loop (ToolUsage.use), or a direct call.
    def invoke(self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...],
               kwargs: dict[str, Any]) -> Any:
        return self._enforce(lambda: _invoke_call(instance, args, kwargs), wrapped, args, kwargs)

    async def ainvoke(self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...],
                      kwargs: dict[str, Any]) -> Any:
        return await self._aenforce(lambda: _invoke_call(instance, args, kwargs), wrapped, args, kwargs)

    # ``describe`` runs inside the try: a call we cannot even describe is refused, never run.
    def _enforce(self, describe: Callable[[], _Call], wrapped: Callable[..., Any], args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> Any:
        try:
            call = describe()
            verdict = check_tool(call.tool, call.args, framework=self.framework, target=call.target,
                                 metadata=call.metadata)
        except CallgateError:
            raise  # configure(raise_on_block=True): the caller asked for the exception
        except Exception as e:  # noqa: BLE001 - a bug of ours must not run the tool, nor crash the agent
            return _refusal(_internal_error(e))
        if isinstance(verdict, Refused):
            return _refusal(verdict)
        return run_permitted(verdict, call.tool, call.target, lambda: wrapped(*args, **kwargs),
                             failed=_failure)

    async def _aenforce(self, describe: Callable[[], _Call], wrapped: Callable[..., Any],
                        args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            call = describe()
            verdict = await acheck_tool(call.tool, call.args, framework=self.framework, target=call.target,
                                        metadata=call.metadata)
        except CallgateError:
            raise
        except Exception as e:  # noqa: BLE001
            return _refusal(_internal_error(e))
        if isinstance(verdict, Refused):
            return _refusal(verdict)
        return await arun_permitted(verdict, call.tool, call.target, lambda: wrapped(*args, **kwargs),
                                    failed=_failure)


def _run_call(tool: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Call:
    """``run(*args, **kwargs)``: the model's keyword arguments as given (before CrewAI validates and
    coerces them); positional arguments of a direct call are named by the tool's ``args_schema``."""
    name, metadata = _identity(tool)
    call_args = dict(kwargs)
    if args:
        fields = _schema_fields(tool)
        if len(args) <= len(fields):
            call_args = {**dict(zip(fields, args, strict=False)), **call_args}
        else:
            call_args = {"args": list(args), **call_args}
    # Tool (@tool) runs self.func; a BaseTool subclass runs self._run.
    target = getattr(tool, "func", None) if "func" in _field_names(tool) else getattr(tool, "_run", None)
    return _Call(name, call_args, target, metadata)


def _invoke_call(tool: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Call:
    """``invoke(input, config=None, **kwargs)``: ``input`` is a dict or a JSON string (as the
    ReAct loop passes it, or a caller); extra keyword arguments reach the function too. A tool made
    by ``BaseTool.to_structured_tool()`` is named after that tool (an MCP tool by its MCP name)."""
    name, metadata = _identity(getattr(tool, "_original_tool", None) or tool)
    call_args = _parse_input(args[0] if args else kwargs.get("input"))
    call_args.update({k: v for k, v in kwargs.items() if k not in ("input", "config")})
    return _Call(name, call_args, getattr(tool, "func", None), metadata)


def _parse_input(raw: Any) -> dict[str, Any]:
    if isinstance(raw, str):
        try:
            parsed = json.loads(raw)
        except ValueError:
            return {"input": raw}  # CrewAI refuses it too ("Failed to parse arguments as JSON")
        return dict(parsed) if isinstance(parsed, dict) else {"input": parsed}
    if isinstance(raw, Mapping):
        return dict(raw)
    return {} if raw is None else {"input": raw}


def _identity(tool: Any) -> tuple[str, dict[str, Any] | None]:
    """The tool name the gateway sees, and metadata to store with the call."""
    raw_name = str(getattr(tool, "name", None) or type(tool).__name__)
    name = _sanitize(raw_name)
    mcp_name = getattr(tool, "original_tool_name", None)
    server = getattr(tool, "server_name", None)
    if isinstance(mcp_name, str) and mcp_name and isinstance(server, str):
        # MCPNativeTool / MCPToolWrapper: "<server>_<tool>" where <server> comes from the command line.
        return mcp_name, {"crewai_tool": name, "mcp_server": server}
    return name, None


def _schema_fields(tool: Any) -> list[str]:
    schema = getattr(tool, "args_schema", None)
    fields = getattr(schema, "model_fields", None) if isinstance(schema, type) else None
    return [str(f) for f in fields] if isinstance(fields, Mapping) else []


def _field_names(tool: Any) -> Mapping[str, Any]:
    fields = getattr(type(tool), "model_fields", None)
    return fields if isinstance(fields, Mapping) else {}


@functools.cache
def _sanitizer() -> Callable[[str], str]:
    try:
        from crewai.utilities.string_utils import sanitize_tool_name
    except ImportError:  # older CrewAI: the model calls tools by their raw name
        return lambda name: name
    return sanitize_tool_name  # type: ignore[no-any-return]


def _sanitize(name: str) -> str:
    try:
        return _sanitizer()(name) or name
    except Exception:  # noqa: BLE001 - CrewAI's helper, not ours: never let it stop the check
        return name


@functools.cache
def _tool_failure_class() -> type | None:
    try:
        from crewai.tools.tool_failure import ToolFailure
    except ImportError:  # CrewAI < 1.15: a refusal is returned as plain text
        return None
    return ToolFailure  # type: ignore[no-any-return]


def _code(error: CallgateError | None) -> tuple[str, bool]:
    """``ToolFailure.code`` (machine-readable, shown to the model) and ``retryable`` for a refusal."""
    if isinstance(error, CallBlocked):
        return "policy_blocked", False
    if isinstance(error, ApprovalDenied):
        return "approval_denied", False
    if isinstance(error, ApprovalExpired):
        return "approval_expired", False
    if isinstance(error, AlreadyClaimed):
        return "already_claimed", False
    if isinstance(error, GatewayUnavailable):
        return "gateway_unavailable", True
    if isinstance(error, GatewayRejected):
        return "gateway_rejected", False
    if error is None:
        return "not_run", False  # callgate could not check it, or the call is waiting for a human
    return "policy_blocked", False


def _refusal(refused: Refused) -> Any:
    """What a tool that did not do its job returns in CrewAI: a ``ToolFailure`` (text before 1.15)."""
    failure_class = _tool_failure_class()
    if failure_class is None:
        return refused.message
    code, retryable = _code(refused.error)
    call_id = getattr(refused.error, "call_id", None)
    return failure_class(message=refused.message, code=code, retryable=retryable,
                         details={"callgate_call_id": call_id} if call_id else {})


def _internal_error(error: Exception) -> Refused:
    log.error("callgate: could not check a CrewAI tool call; it does not run", exc_info=error)
    return Refused(None, f"Tool call not run: callgate could not check it ({type(error).__name__}).")


def _failure(result: Any) -> str | bool:
    """A tool that *returns* a ``ToolFailure`` (an MCP server's ``isError``, a spent usage limit,
    the tool's own report) did not succeed: report it as failed, with its message."""
    failure_class = _tool_failure_class()
    if failure_class is not None and isinstance(result, failure_class):
        return str(result.as_agent_message()) or True
    return False


# -- token usage ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Counts:
    """One LLM response's tokens in callgate's semantics (input incl. cache, output incl. reasoning)."""

    input_tokens: int
    output_tokens: int
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0


#: True inside a recorded ``_track_token_usage_internal``: an override that calls ``super()``
#: (both levels wrapped) is one response, recorded once.
_RECORDING: contextvars.ContextVar[bool] = contextvars.ContextVar("callgate_crewai_usage", default=False)


def _usage_recorder(framework: str, counts_of: Callable[[Any], _Counts | None]) -> Callable[..., Any]:
    def track(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...],
              kwargs: dict[str, Any]) -> Any:
        if _RECORDING.get():
            return wrapped(*args, **kwargs)
        try:
            usage = _usage_dict(args[0] if args else next(iter(kwargs.values()), None))
            counts = counts_of(usage) if usage is not None else None
            if counts is not None and (counts.input_tokens or counts.output_tokens):
                record_usage(str(getattr(instance, "model", "") or ""), counts.input_tokens,
                             counts.output_tokens, cache_read_tokens=counts.cache_read_tokens,
                             cache_write_tokens=counts.cache_write_tokens,
                             reasoning_tokens=counts.reasoning_tokens, provider=_provider(instance),
                             framework=framework)
        except Exception:  # noqa: BLE001 - usage capture must never break the LLM call
            _usage_failed()
        token = _RECORDING.set(True)
        try:
            return wrapped(*args, **kwargs)
        finally:
            _RECORDING.reset(token)

    return track


def _usage_dict(usage: Any) -> dict[str, Any] | None:
    """The usage as a plain dict: providers pass dicts, the LiteLLM ``LLM`` passes LiteLLM's pydantic
    ``Usage``. Reasoning nested in ``completion_tokens_details`` is lifted to the top level, where
    ``UsageMetrics.from_provider_dict`` looks for it."""
    if isinstance(usage, Mapping):
        data = dict(usage)
    elif callable(getattr(usage, "model_dump", None)):
        data = usage.model_dump()
    else:
        return None
    details = data.get("completion_tokens_details")
    if not data.get("reasoning_tokens") and isinstance(details, Mapping) and details.get("reasoning_tokens"):
        data["reasoning_tokens"] = details["reasoning_tokens"]
    return data


_usage_warned = False


def _usage_failed() -> None:
    """Log a failure to read usage loudly once (a CrewAI change to watch for), then quietly."""
    global _usage_warned
    log.log(logging.DEBUG if _usage_warned else logging.WARNING,
            "callgate: could not record CrewAI token usage", exc_info=True)
    _usage_warned = True


def _crewai_counts(usage: Mapping[str, Any]) -> _Counts | None:
    """Any provider's usage dict, normalized the way CrewAI normalizes it for its own totals
    (``UsageMetrics.from_provider_dict``: OpenAI, Anthropic, Gemini and LiteLLM key aliases)."""
    try:
        from crewai.types.usage_metrics import UsageMetrics

        normalize = UsageMetrics.from_provider_dict
    except (ImportError, AttributeError):  # an older CrewAI: its providers report OpenAI's keys
        return _Counts(_int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens")),
                       _int(usage.get("cached_prompt_tokens")))
    metrics = normalize(dict(usage))
    if metrics is None:
        return None
    return _Counts(metrics.prompt_tokens, metrics.completion_tokens, metrics.cached_prompt_tokens,
                   metrics.cache_creation_tokens, metrics.reasoning_tokens)


def _bedrock_counts(usage: Mapping[str, Any]) -> _Counts | None:
    """Bedrock Converse ``TokenUsage``: ``inputTokens`` excludes cache reads and writes
    (``totalTokens`` = input + output + both), so they are added back."""
    read = _int(usage.get("cacheReadInputTokens") or usage.get("cacheReadInputTokenCount"))
    write = _int(usage.get("cacheWriteInputTokens") or usage.get("cacheWriteInputTokenCount"))
    input_tokens = _int(usage.get("inputTokens")) + read + write
    return _Counts(input_tokens, _int(usage.get("outputTokens")), read, write)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _provider(llm: Any) -> str | None:
    """CrewAI's native providers name theirs (``openai``, ``anthropic``, ``bedrock``...); a custom
    ``BaseLLM`` inherits the field's default ``"openai"`` whatever it really is, so only the
    native classes are trusted and the gateway infers the rest from the model name."""
    if not type(llm).__module__.startswith(_PROVIDERS_PACKAGE):
        return None
    provider = getattr(llm, "provider", None)
    return provider if isinstance(provider, str) and provider else None

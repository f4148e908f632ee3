"""Wire models of the agent API (``/v1``). They validate requests and document the OpenAPI
schema; responses are serialized directly from the domain views for speed."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
ToolName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:/-]{1,200}$")]
Identifier = Annotated[str, StringConstraints(pattern=r"^[\x21-\x7e]{1,128}$")]
CallId = Annotated[str, StringConstraints(pattern=UUID_PATTERN)]
Decision = Literal["allow", "block", "require_approval"]
Status = Literal[
    "allowed", "blocked", "pending", "approved", "denied", "expired", "running", "succeeded", "failed", "fail_open"
]


class CallCreate(BaseModel):
    """A tool call the agent is about to make. ``id`` is made once per logical call and reused on
    every retry: the gateway is idempotent on it."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: CallId = Field(description="UUID (v7 recommended) made by the SDK once per logical call.")
    tool: ToolName = Field(description="Tool name, as policies match it.")
    args: dict[str, Any] = Field(description="The model's arguments for the tool, as a JSON object.")
    agent: Identifier | None = Field(default=None, description="Optional; must equal the API key's agent.")
    session_id: Identifier | None = Field(default=None, description="Groups the calls of one conversation.")
    framework: Annotated[str, StringConstraints(pattern=r"^[a-z0-9_.-]{1,64}$")] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict, description="Free-form context, redacted and stored.")
    fail_open: bool = Field(
        default=False, description="True when uploading a call that ran while the gateway was unreachable."
    )


class CallDecision(BaseModel):
    call_id: str
    decision: Decision
    status: Status
    reason: str | None
    rule: str | None
    policy_version: int
    expires_at: str | None = Field(description="When a pending approval expires (RFC 3339), else null.")


class OutcomePublic(BaseModel):
    status: Literal["succeeded", "failed"]
    error: str | None
    duration_ms: int | None
    recorded_at: str | None


class CallPublic(CallDecision):
    tool: str
    agent: str
    session_id: str | None
    framework: str | None
    args: dict[str, Any] = Field(description="Arguments with secrets redacted.")
    redactions: list[list[str]] = Field(description="[JSON pointer, rule] for every redacted value.")
    fail_open: bool
    created_at: str
    decided_at: str | None
    decided_by: str | None
    decided_channel: str | None = Field(description="Where the human decided: console, cli or slack.")
    comment: str | None
    outcome: OutcomePublic | None


class ClaimPublic(CallPublic):
    claimed: bool = Field(description="True: this request won the one-shot execution claim; run the tool now.")


class OutcomeCreate(BaseModel):
    """How the tool run ended, reported by the SDK after the tool returns or raises."""

    model_config = ConfigDict(extra="forbid", strict=True)

    status: Literal["succeeded", "failed"]
    error: Annotated[str, StringConstraints(max_length=8192)] | None = None
    duration_ms: Annotated[int, Field(ge=0, le=2**53 - 1)] | None = None


# -- LLM usage (``POST /v1/usage``, ``GET /v1/sessions/{id}``) -----------------------------------

#: Upper bound of every token count of one LLM call (the SDK enforces the same bound).
MAX_TOKENS = 1_000_000_000
#: The most events one ``POST /v1/usage`` may carry (the body size limit applies as well).
MAX_USAGE_EVENTS = 1000
RFC3339_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})$"
TokenCount = Annotated[int, Field(ge=0, le=MAX_TOKENS)]
ModelName = Annotated[str, StringConstraints(pattern=r"^[^\x00-\x1f\x7f]{1,256}$")]
ProviderName = Annotated[str, StringConstraints(pattern=r"^[\x21-\x7e]{1,64}$")]
FrameworkName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_.-]{1,64}$")]


class UsageEventIn(BaseModel):
    """One LLM call's tokens. ``input_tokens`` includes cache reads and writes; ``output_tokens``
    includes reasoning tokens (OpenAI's and genai-prices' convention)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: CallId = Field(description="UUID (v7) made by the SDK once per LLM call; ingest is idempotent on it.")
    ts: Annotated[str, StringConstraints(pattern=RFC3339_PATTERN)] = Field(
        description="When the LLM call finished, RFC 3339 (the agent's clock).")
    session_id: Identifier | None = None
    model: ModelName = Field(description="The model name as the framework reported it (served or requested).")
    provider: ProviderName | None = Field(default=None, description="e.g. openai, anthropic, azure, bedrock.")
    framework: FrameworkName | None = None
    input_tokens: TokenCount
    output_tokens: TokenCount
    cache_read_tokens: TokenCount = 0
    cache_write_tokens: TokenCount = 0
    reasoning_tokens: TokenCount = 0


class UsageBatchIn(BaseModel):
    """A batch of usage events; the agent is the API key's agent, never taken from the body."""

    model_config = ConfigDict(extra="forbid", strict=True)

    events: list[UsageEventIn] = Field(min_length=1, max_length=MAX_USAGE_EVENTS)


class UsageAccepted(BaseModel):
    accepted: int = Field(description="Events stored by this request.")
    duplicates: int = Field(description="Events whose id was already stored (a retried batch): not counted twice.")


class UsageTotals(BaseModel):
    calls: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    cost_usd: str = Field(description="Exact decimal string: the sum over priced calls only.")
    unpriced_calls: int = Field(description="Calls genai-prices has no price for (their cost is not in cost_usd).")


class UsageByModel(UsageTotals):
    model: str
    provider: str | None


class SessionUsage(BaseModel):
    by_model: list[UsageByModel]
    total: UsageTotals


class SessionCall(BaseModel):
    id: str
    tool: str
    agent: str
    status: Status
    decision: Decision
    rule: str | None
    reason: str | None
    created_at: str
    decided_at: str | None
    decided_by: str | None
    outcome: OutcomePublic | None


class LlmCallPublic(BaseModel):
    id: str
    agent: str
    ts: str
    recorded_at: str
    model: str
    provider: str | None
    framework: str | None
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    cost_usd: str | None = Field(description="Exact decimal string; null when unpriced.")
    price_status: Literal["priced", "unpriced"]
    priced_model: str | None = Field(description="genai-prices' model id the price came from.")
    priced_provider: str | None = Field(description="genai-prices' provider id the price came from.")


class SessionPublic(BaseModel):
    session_id: str
    calls: list[SessionCall]
    calls_truncated: bool = Field(description="More tool calls exist than the list holds (oldest first).")
    usage: SessionUsage = Field(description="Aggregates over every LLM call of the session (never truncated).")
    llm_calls: list[LlmCallPublic]
    llm_calls_truncated: bool = Field(description="More LLM calls exist than the list holds (oldest first).")
    truncated: bool = Field(description="True when either list was cut (calls_truncated or llm_calls_truncated).")

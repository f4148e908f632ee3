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

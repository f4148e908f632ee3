"""JSON in and out of the ``/v1`` API, shared by every router: strict bodies (our parser, never
FastAPI's, which accepts NaN, duplicate keys, lone surrogates and NUL — security.md §7), pydantic
validated in strict mode with errors naming the field, request schemas OpenAPI can resolve, and
plain JSON-bytes answers (the hot path of every tool call)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from gateway.errors import UnsupportedMediaType
from gateway.runtime import Runtime
from gateway.strict_json import parse_strict

__all__ = ["body_schema", "json_response", "require_json", "runtime_of", "strict_body"]


def json_response(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode(), status, headers=headers,
        media_type="application/json",
    )


def require_json(request: Request) -> None:
    content_type = request.headers.get("content-type", "")
    media, _, params = content_type.partition(";")
    charset = params.strip().lower().removeprefix("charset=").strip('"') if params.strip() else "utf-8"
    if media.strip().lower() != "application/json" or charset not in ("utf-8", "utf8"):
        raise UnsupportedMediaType("send Content-Type: application/json (UTF-8)")


async def strict_body(request: Request, model: type[BaseModel]) -> dict[str, Any]:
    require_json(request)
    data = parse_strict(await request.body())
    try:
        model.model_validate(data, strict=True)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_input=False, include_url=False)]
        raise RequestValidationError(errors) from None
    if not isinstance(data, dict):  # model_validate already refused non-objects; keeps typing honest
        raise RequestValidationError([])
    return data


def body_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = _inline_defs(model.model_json_schema())
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _inline_defs(schema: dict[str, Any]) -> dict[str, Any]:
    """The model's JSON Schema with its ``$defs`` inlined: inside an OpenAPI document a
    ``#/$defs/...`` reference resolves against the document root, where there is no ``$defs``
    (the nested ``UsageEventIn`` of ``POST /v1/usage`` was unresolvable for every client)."""
    defs: dict[str, Any] = schema.pop("$defs", {})

    def inline(node: Any, seen: tuple[str, ...]) -> Any:
        if isinstance(node, list):
            return [inline(item, seen) for item in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            name = ref.removeprefix("#/$defs/")
            if name in seen:
                raise ValueError(f"recursive model {name} cannot be inlined")
            siblings = {k: v for k, v in node.items() if k != "$ref"}
            return inline({**defs[name], **siblings}, (*seen, name))
        return {k: inline(v, seen) for k, v in node.items()}

    return inline(schema, ())  # type: ignore[no-any-return]


def runtime_of(request: Request) -> Runtime:
    return request.app.state.runtime  # type: ignore[no-any-return]

"""Jinja2 for the console: one template per page, whose named blocks double as htmx fragments.

``render(request, "queue.html", ctx)`` renders the whole page; ``render(..., block="queue")``
renders only that block with the same context -- the jinja2-fragments technique (style.md §7),
done with Jinja's own ``Template.blocks`` so no extra dependency is needed. One URL and one
template therefore serve both the page and the piece htmx polls.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

TEMPLATES_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"
HTMX_FILE = "htmx-2.0.11.min.js"  # vendored; see static/VENDORED.md


def pretty_json(value: Any) -> str:
    """Indented JSON for display (autoescaped by the template, never marked safe)."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


def parse_time(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:  # SQLite hands back naive datetimes; everything is stored in UTC
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def timestamp(value: Any) -> str:
    moment = parse_time(value)
    return "" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def time_left(value: Any, now: datetime | None = None) -> str:
    """``"14m 03s"`` until ``value``, ``"expired"`` once past, ``""`` without a deadline."""
    moment = parse_time(value)
    if moment is None:
        return ""
    remaining = (moment - (now or datetime.now(UTC))).total_seconds()
    return "expired" if remaining <= 0 else duration(remaining)


def time_ago(value: Any, now: datetime | None = None) -> str:
    moment = parse_time(value)
    if moment is None:
        return ""
    return duration(((now or datetime.now(UTC)) - moment).total_seconds()) + " ago"


def make_environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(["html"], default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(pretty_json=pretty_json, timestamp=timestamp, time_left=time_left, time_ago=time_ago)
    env.globals.update(htmx_file=HTMX_FILE)
    return env


class Templates:
    def __init__(self) -> None:
        self.env = make_environment()

    def render_text(self, name: str, context: dict[str, Any], block: str | None = None) -> str:
        template = self.env.get_template(name)
        if block is None:
            return template.render(context)
        render_block = template.blocks.get(block)
        if render_block is None:
            raise LookupError(f"template {name} has no block {block!r}")
        return "".join(render_block(template.new_context(context)))

    def render(
        self, request: Request, name: str, context: dict[str, Any], *, block: str | None = None,
        status_code: int = 200, headers: dict[str, str] | None = None,
    ) -> HTMLResponse:
        context = {"request": request, **context}
        return HTMLResponse(self.render_text(name, context, block), status_code=status_code, headers=headers)

"""htmx request headers, parsed once, and the few response helpers the console uses (htmx 2)."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

#: ids of elements that poll in the background; their requests are not user activity.
BACKGROUND_TRIGGERS = frozenset({"queue", "call-status"})


@dataclass(frozen=True, slots=True)
class HtmxDetails:
    request: bool  # HX-Request: true
    target: str | None  # HX-Target: id of the element being swapped
    trigger: str | None  # HX-Trigger: id of the element that triggered the request
    current_url: str | None  # HX-Current-URL

    @classmethod
    def of(cls, request: Request) -> HtmxDetails:
        h = request.headers
        return cls(
            request=h.get("hx-request") == "true",
            target=h.get("hx-target"),
            trigger=h.get("hx-trigger"),
            current_url=h.get("hx-current-url"),
        )

    def __bool__(self) -> bool:
        return self.request

    @property
    def background(self) -> bool:
        """A timer-driven poll: it must not keep an unattended session alive."""
        return self.request and self.trigger in BACKGROUND_TRIGGERS


def client_redirect(response: Response, url: str) -> Response:
    """Make htmx navigate the whole page (``HX-Redirect``) instead of swapping the answer in."""
    response.headers["HX-Redirect"] = url
    return response

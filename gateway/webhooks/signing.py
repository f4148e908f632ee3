"""Secrets and signed headers, exactly as Standard Webhooks defines them (security.md §2.1).

The signature covers ``"{webhook-id}.{webhook-timestamp}.{body}"``, so a receiver authenticates
the id it deduplicates on and the time it checks for replays, not only the body. Signing is
delegated to the ``standardwebhooks`` library itself, so what we send is by construction what
its (and every compatible) ``verify`` accepts.

During a secret rotation an attempt carries one signature per secret, space-separated (newest
first), as the spec defines: a receiver verifying with either the old or the new secret accepts
it, so it can switch at its own pace within the overlap.
"""

from __future__ import annotations

import base64
import math
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version

from standardwebhooks.webhooks import Webhook

__all__ = ["SECRET_BYTES", "SECRET_PREFIX", "USER_AGENT", "new_secret", "signed_headers"]

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32  # the spec allows 24..64


def _version() -> str:
    try:
        return version("callgate-server")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0"


USER_AGENT = f"callgate/{_version()}"


def new_secret() -> str:
    """A fresh endpoint secret: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def signed_headers(message_id: str, body: str, secret: str | Sequence[str], at: datetime) -> dict[str, str]:
    """The headers of one attempt: the stable ``webhook-id``, this attempt's timestamp and its
    signature(s), one per secret (the current one first, then one still in its rotation
    overlap). ``body`` must be the exact text sent (it is ASCII JSON, so bytes == text)."""
    if at.tzinfo is None:
        raise ValueError("the attempt time must be timezone-aware")
    keys = [secret] if isinstance(secret, str) else list(secret)
    if not keys:
        raise ValueError("at least one secret signs an attempt")
    at = at.astimezone(UTC)
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": message_id,
        "webhook-timestamp": str(math.floor(at.timestamp())),
        "webhook-signature": " ".join(Webhook(key).sign(message_id, at, body) for key in keys),
    }

"""Secrets and headers are Standard Webhooks, checked with the standardwebhooks library itself."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from gateway.webhooks.signing import USER_AGENT, new_secret, signed_headers

BODY = '{"type":"approval.decided","data":{"call_id":"c1"}}'


def test_secrets_are_whsec_base64_of_32_random_bytes() -> None:
    secrets = {new_secret() for _ in range(50)}
    assert len(secrets) == 50
    for secret in secrets:
        assert secret.startswith("whsec_")
        assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32


def test_headers_verify_with_the_reference_library() -> None:
    secret = new_secret()
    headers = signed_headers("msg_1", BODY, secret, datetime.now(UTC))
    assert Webhook(secret).verify(BODY.encode(), headers) == {"type": "approval.decided", "data": {"call_id": "c1"}}
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == USER_AGENT and USER_AGENT.startswith("callgate/")
    assert headers["webhook-id"] == "msg_1" and headers["webhook-timestamp"].isdigit()


@pytest.mark.parametrize("tamper", ["body", "id", "timestamp", "secret"])
def test_any_change_breaks_the_signature(tamper: str) -> None:
    secret = new_secret()
    headers = signed_headers("msg_1", BODY, secret, datetime.now(UTC))
    body = BODY
    if tamper == "body":
        body = BODY.replace("c1", "c2")
    elif tamper == "id":
        headers["webhook-id"] = "msg_2"  # the id is signed: a receiver's dedupe key cannot be swapped
    elif tamper == "timestamp":
        headers["webhook-timestamp"] = str(int(headers["webhook-timestamp"]) - 1)
    else:
        secret = new_secret()
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.encode(), headers)


def test_each_attempt_is_signed_for_its_own_time() -> None:
    secret = new_secret()
    now = datetime.now(UTC)
    first = signed_headers("msg_1", BODY, secret, now)
    later = signed_headers("msg_1", BODY, secret, now + timedelta(seconds=30))
    assert int(later["webhook-timestamp"]) - int(first["webhook-timestamp"]) == 30
    assert later["webhook-signature"] != first["webhook-signature"]
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(secret).verify(BODY.encode(), signed_headers("msg_1", BODY, secret, now - timedelta(minutes=10)))


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        signed_headers("msg_1", BODY, new_secret(), datetime.now())


def test_two_secrets_give_two_signatures_each_verifying_alone() -> None:
    """During a rotation both secrets sign: a receiver on either one accepts the delivery, the
    SDK's own verifier too; a third secret matches neither."""
    import callgate
    from callgate import webhooks
    from callgate.webhooks import MemoryReplayGuard

    new, old = new_secret(), new_secret()
    body = ('{"type":"approval.decided","timestamp":"2026-01-01T00:00:00.000000Z","data":{"call_id":'
            '"0190f3c2-0000-7000-8000-000000000001","tool":"t","status":"approved"}}')
    at = datetime.now(UTC)
    headers = signed_headers("msg_1", body, [new, old], at)
    signatures = headers["webhook-signature"].split(" ")
    assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures)
    assert signatures == [signed_headers("msg_1", body, s, at)["webhook-signature"] for s in (new, old)]  # newest first
    for secret in (new, old):
        Webhook(secret).verify(body.encode(), headers)
        assert webhooks.verify(body, headers, secret, replays=MemoryReplayGuard()).call_id.endswith("0001")
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body.encode(), headers)
    with pytest.raises(callgate.WebhookVerificationError):
        webhooks.verify(body, headers, new_secret(), replays=MemoryReplayGuard())
    with pytest.raises(ValueError, match="at least one secret"):
        signed_headers("msg_1", body, [], datetime.now(UTC))

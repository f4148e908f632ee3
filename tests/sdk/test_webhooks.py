"""callgate.webhooks.verify against deliveries signed by the reference `standardwebhooks` library:
signatures, timestamps, replays (in memory and in a shared SQLite file), malformed input; and the
parts of ApprovalEvent that must not touch the network."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

import callgate
from callgate import webhooks
from callgate.webhooks import ApprovalEvent, MemoryReplayGuard, SqliteReplayGuard, WebhookVerificationError

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
OTHER_SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()


def payload(**data: Any) -> bytes:
    """An approval.decided body in the gateway's exact shape (compact JSON, as the sender renders it)."""
    fields: dict[str, Any] = {
        "call_id": str(uuid.uuid4()), "tool": "stripe.refund", "agent": "billing-bot", "session_id": None,
        "status": "approved", "decided_by": "alice", "channel": "console", "comment": "ok, known customer",
        "decided_at": "2026-11-21T14:02:11.123456Z", "args": {"amount": 900, "customer_id": "cus_1"},
        "rule": "big-refunds-need-a-human", "reason": "refunds over 200 need a human",
    }
    fields.update(data)
    doc = {"type": "approval.decided", "timestamp": "2026-11-21T14:02:11.200000Z", "data": fields}
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def signed(body: bytes, *, secret: str = SECRET, msg_id: str | None = None, at: float | None = None) -> dict[str, str]:
    """Headers for ``body`` as a Standard Webhooks sender makes them (the reference library signs)."""
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    when = datetime.fromtimestamp(time.time() if at is None else at, tz=UTC)
    signature = Webhook(secret).sign(msg_id, when, body.decode())
    return {"Webhook-Id": msg_id, "Webhook-Timestamp": str(int(when.timestamp())), "Webhook-Signature": signature}


def hand_signed(body: bytes, *, secret: str = SECRET) -> dict[str, str]:
    """Headers per the Standard Webhooks algorithm, for bodies the reference library cannot sign
    (it decodes the body as UTF-8 first)."""
    import hashlib
    import hmac

    msg_id, stamp = f"msg_{uuid.uuid4().hex}", str(int(time.time()))
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    return {"webhook-id": msg_id, "webhook-timestamp": stamp, "webhook-signature": "v1," + base64.b64encode(mac).decode()}


def rejected(body: bytes, headers: dict[str, str], code: str, **kwargs: Any) -> WebhookVerificationError:
    kwargs.setdefault("replays", MemoryReplayGuard())
    with pytest.raises(WebhookVerificationError) as exc:
        webhooks.verify(body, headers, kwargs.pop("secret", SECRET), **kwargs)
    assert exc.value.code == code, exc.value
    return exc.value


class TestSignatures:
    def test_reference_signature_verifies_and_event_is_typed(self) -> None:
        """A delivery signed by `standardwebhooks` verifies; every field comes out typed."""
        call_id = str(uuid.uuid4()).upper()
        body = payload(call_id=call_id, comment="ünïcode ✓", session_id="sess-7")
        headers = signed(body)
        event = webhooks.verify(body, headers, SECRET, replays=MemoryReplayGuard())
        assert isinstance(event, ApprovalEvent)
        assert event.webhook_id == headers["Webhook-Id"]
        assert event.call_id == call_id.lower() and event.tool == "stripe.refund" and event.agent == "billing-bot"
        assert (event.status, event.approved, event.decided_by, event.channel) == ("approved", True, "alice", "console")
        assert event.comment == "ünïcode ✓" and event.session_id == "sess-7"
        assert event.args == {"amount": 900, "customer_id": "cus_1"}
        assert (event.rule, event.reason) == ("big-refunds-need-a-human", "refunds over 200 need a human")
        assert event.decided_at == datetime(2026, 11, 21, 14, 2, 11, 123456, tzinfo=UTC)
        assert event.timestamp.tzinfo is not None and event.type == "approval.decided"
        # and the reference library agrees this delivery is genuine
        assert Webhook(SECRET).verify(body, headers)["data"]["call_id"] == call_id

    def test_header_names_are_case_insensitive_and_body_may_be_str(self) -> None:
        body = payload()
        headers = {k.upper(): v for k, v in signed(body).items()}
        assert webhooks.verify(body.decode(), headers, SECRET, replays=MemoryReplayGuard()).status == "approved"

    def test_tampered_body_id_or_timestamp(self) -> None:
        """Every signed part is covered: body, webhook-id and webhook-timestamp."""
        body = payload(args={"amount": 900})
        headers = signed(body)
        rejected(body.replace(b"900", b"901"), headers, "bad_signature")
        rejected(body, {**headers, "Webhook-Id": headers["Webhook-Id"] + "x"}, "bad_signature")
        rejected(body, {**headers, "Webhook-Timestamp": str(int(headers["Webhook-Timestamp"]) + 1)}, "bad_signature")

    def test_wrong_secret(self) -> None:
        body = payload()
        rejected(body, signed(body, secret=OTHER_SECRET), "bad_signature")

    def test_several_signatures_rotation(self) -> None:
        """Space-separated signatures: one valid v1 is enough; other versions and junk are skipped,
        never an exception; the right bytes under another version label do not count."""
        body = payload()
        headers = signed(body)
        good = headers["Webhook-Signature"]
        old = signed(body, secret=OTHER_SECRET, msg_id=headers["Webhook-Id"])["Webhook-Signature"]
        for header in (f"{old} {good}", f"{good} {old}", f"v1a,AAAA garbage {good}", f"v1,%%% {good}"):
            event = webhooks.verify(body, {**headers, "webhook-signature": header}, SECRET,
                                    replays=MemoryReplayGuard())
            assert event.webhook_id == headers["Webhook-Id"]
        rejected(body, {**headers, "webhook-signature": good.replace("v1,", "v2,")}, "bad_signature")
        rejected(body, {**headers, "webhook-signature": "v1"}, "bad_signature")  # standardwebhooks: ValueError
        rejected(body, {**headers, "webhook-signature": "v1,ÿÿÿÿ"}, "bad_signature")  # non-ASCII

    def test_bad_secret_is_a_configuration_error(self) -> None:
        body = payload()
        for secret in ("whsec_", "whsec_not base64!", ""):
            with pytest.raises(callgate.ConfigurationError):
                webhooks.verify(body, signed(body), secret)

    def test_error_is_a_callgate_error_with_a_code(self) -> None:
        body = payload()
        err = rejected(body, signed(body, secret=OTHER_SECRET), "bad_signature")
        assert isinstance(err, callgate.CallgateError) and isinstance(err, callgate.WebhookVerificationError)
        assert err.webhook_id is not None and "bad_signature" in str(err)
        with pytest.raises(ValueError):
            WebhookVerificationError("nope", "x")


class TestTimestamps:
    def test_stale_and_future(self) -> None:
        body = payload()
        rejected(body, signed(body, at=time.time() - 301), "stale_timestamp")
        rejected(body, signed(body, at=time.time() + 301), "stale_timestamp")
        assert webhooks.verify(body, signed(body, at=time.time() - 200), SECRET, replays=MemoryReplayGuard())
        assert webhooks.verify(body, signed(body, at=time.time() + 200), SECRET, replays=MemoryReplayGuard())

    def test_custom_tolerance(self) -> None:
        body = payload()
        rejected(body, signed(body, at=time.time() - 40), "stale_timestamp", tolerance=30)
        assert webhooks.verify(body, signed(body, at=time.time() - 20), SECRET, tolerance=30,
                               replays=MemoryReplayGuard())
        with pytest.raises(ValueError):
            webhooks.verify(body, signed(body), SECRET, tolerance=0)

    @pytest.mark.parametrize("stamp", ["abc", "1.5e9", "-1", "1" * 5000, "", " 1767276131"])
    def test_unparsable_timestamp_is_malformed(self, stamp: str) -> None:
        body = payload()
        rejected(body, {**signed(body), "Webhook-Timestamp": stamp}, "malformed")


class TestReplays:
    def test_replayed_delivery_in_memory(self) -> None:
        body = payload()
        headers = signed(body)
        guard = MemoryReplayGuard()
        webhooks.verify(body, headers, SECRET, replays=guard)
        err = rejected(body, headers, "replayed", replays=guard)
        assert err.webhook_id == headers["Webhook-Id"]
        # a retry of the same event (same id, new timestamp and signature) is a duplicate too
        again = signed(body, msg_id=headers["Webhook-Id"], at=time.time() + 2)
        rejected(body, again, "replayed", replays=guard)

    def test_default_guard_is_process_wide(self) -> None:
        body = payload()
        headers = signed(body)
        webhooks.verify(body, headers, SECRET)
        with pytest.raises(WebhookVerificationError) as exc:
            webhooks.verify(body, headers, SECRET)
        assert exc.value.code == "replayed"

    def test_id_is_remembered_only_after_everything_verified(self) -> None:
        """A forged, stale or malformed delivery carrying an id never burns that id."""
        guard = MemoryReplayGuard()
        body = payload()
        headers = signed(body)
        rejected(body, signed(body, secret=OTHER_SECRET, msg_id=headers["Webhook-Id"]), "bad_signature", replays=guard)
        rejected(body, signed(body, msg_id=headers["Webhook-Id"], at=time.time() - 1000), "stale_timestamp",
                 replays=guard)
        rejected(b"not json", signed(b"not json", msg_id=headers["Webhook-Id"]), "malformed", replays=guard)
        assert len(guard) == 0
        assert webhooks.verify(body, headers, SECRET, replays=guard).webhook_id == headers["Webhook-Id"]
        assert len(guard) == 1

    def test_forget_lets_the_retry_through(self) -> None:
        guard = MemoryReplayGuard()
        body = payload()
        headers = signed(body)
        event = webhooks.verify(body, headers, SECRET, replays=guard)
        event.forget()
        assert webhooks.verify(body, headers, SECRET, replays=guard).webhook_id == event.webhook_id

    def test_memory_guard_expiry_and_bound(self) -> None:
        guard = MemoryReplayGuard(max_entries=3)
        assert guard.remember("a", time.time() - 1) is True
        assert guard.remember("a", time.time() + 60) is True  # the old entry had expired
        assert guard.remember("a", time.time() + 60) is False
        for name in "bcd":
            assert guard.remember(name, time.time() + 60)
        assert len(guard) == 3  # "a", the oldest, was evicted (with a warning)
        assert guard.remember("d", time.time() + 60) is False

    def test_sqlite_guard_shared_by_two_instances(self, tmp_path: Path) -> None:
        """Two guards (as two receiver processes would) on one file: a delivery is accepted once."""
        path = tmp_path / "seen.db"
        body = payload()
        headers = signed(body)
        with SqliteReplayGuard(path) as first, SqliteReplayGuard(path) as second:
            webhooks.verify(body, headers, SECRET, replays=first)
            rejected(body, headers, "replayed", replays=second)
            rejected(body, headers, "replayed", replays=first)
            webhooks.verify(body, signed(body), SECRET, replays=second)  # another delivery: fine
            # expiry: an id remembered until the past is accepted again
            assert second.remember("old", time.time() - 1) and first.remember("old", time.time() + 60)
            other = payload()
            event = webhooks.verify(other, signed(other), SECRET, replays=first)
            event.forget()
            assert second.remember(event.webhook_id, time.time() + 60)
        with SqliteReplayGuard(path) as reopened:  # durable: a restart does not forget
            rejected(body, headers, "replayed", replays=reopened)

    def test_sqlite_guard_across_processes(self, tmp_path: Path) -> None:
        path = tmp_path / "seen.db"
        body = payload()
        headers = signed(body)
        with SqliteReplayGuard(path) as guard:
            webhooks.verify(body, headers, SECRET, replays=guard)
        code = (
            "import json, sys\n"
            "from callgate import webhooks\n"
            "from callgate.webhooks import SqliteReplayGuard, WebhookVerificationError\n"
            "body, headers, secret, path = json.loads(sys.stdin.read())\n"
            "try:\n"
            "    webhooks.verify(body.encode(), headers, secret, replays=SqliteReplayGuard(path))\n"
            "    print('accepted')\n"
            "except WebhookVerificationError as e:\n"
            "    print(e.code)\n"
        )
        out = subprocess.run([sys.executable, "-c", code], input=json.dumps([body.decode(), headers, SECRET, str(path)]),
                             capture_output=True, text=True, check=True, timeout=60).stdout
        assert out.strip() == "replayed"

    def test_sqlite_guard_rejects_a_file_that_is_not_a_database(self, tmp_path: Path) -> None:
        import sqlite3

        path = tmp_path / "junk.db"
        path.write_bytes(b"this is not a sqlite database, not even close" * 100)
        with pytest.raises(sqlite3.DatabaseError):
            SqliteReplayGuard(path)


class TestMalformed:
    @pytest.mark.parametrize("missing", ["Webhook-Id", "Webhook-Timestamp", "Webhook-Signature"])
    def test_missing_header(self, missing: str) -> None:
        body = payload()
        headers = signed(body)
        del headers[missing]
        assert missing.lower() in str(rejected(body, headers, "malformed"))
        rejected(body, {**signed(body), missing: ""}, "malformed")

    def test_bad_webhook_id(self) -> None:
        body = payload()
        for msg_id in ("has space", "x" * 257, "ünï"):
            headers = signed(body)
            rejected(body, {**headers, "Webhook-Id": msg_id}, "malformed")

    @pytest.mark.parametrize("body", [
        b"{not json", b"[1, 2]", b'"a string"',
        json.dumps({"type": "approval.requested", "timestamp": "2026-11-21T14:02:11Z", "data": {}}).encode(),
        json.dumps({"type": "approval.decided", "timestamp": "2026-11-21T14:02:11Z", "data": []}).encode(),
        json.dumps({"type": "approval.decided", "timestamp": "yesterday",
                    "data": json.loads(payload())["data"]}).encode(),
        json.dumps({"type": "approval.decided", "timestamp": "2026-11-21T14:02:11",  # no time zone
                    "data": json.loads(payload())["data"]}).encode(),
        payload(status="maybe"), payload(call_id="not-a-uuid"), payload(call_id=None), payload(tool=""),
        payload(args=[1, 2]), payload(comment=42), payload(decided_by={"id": 1}), payload(decided_at="soon"),
    ])
    def test_signed_but_malformed_body(self, body: bytes) -> None:
        """A correctly signed body that is not an approval.decided event is malformed (after, and
        only after, the signature verified)."""
        rejected(body, signed(body), "malformed")
        rejected(body, signed(body, secret=OTHER_SECRET), "bad_signature")

    def test_non_utf8_body(self) -> None:
        body = b"\xff\xfe\x00garbage"
        rejected(body, hand_signed(body), "malformed")
        rejected(body, hand_signed(body, secret=OTHER_SECRET), "bad_signature")
        good = payload()
        assert webhooks.verify(good, hand_signed(good), SECRET, replays=MemoryReplayGuard())  # the helper is right

    def test_optional_fields_may_be_null_or_absent(self) -> None:
        body = payload(decided_at=None, comment=None, channel=None, decided_by=None, args=None, rule=None,
                       reason=None, agent=None)
        event = webhooks.verify(body, signed(body), SECRET, replays=MemoryReplayGuard())
        assert (event.decided_at, event.comment, event.args, event.channel) == (None, None, {}, None)


class TestEventWithoutGateway:
    """Denied and expired events refuse before any network call (callgate is not even configured)."""

    def verified(self, **data: Any) -> ApprovalEvent:
        body = payload(**data)
        return webhooks.verify(body, signed(body), SECRET, replays=MemoryReplayGuard())

    def test_denied_and_expired_never_run(self) -> None:
        ran: list[int] = []
        denied = self.verified(status="denied", comment="over the limit", decided_by="bob")
        with pytest.raises(callgate.ApprovalDenied) as exc:
            denied.run(ran.append, 1)
        assert (exc.value.comment, exc.value.decided_by, exc.value.call_id) == ("over the limit", "bob", denied.call_id)
        with pytest.raises(callgate.ApprovalExpired):
            self.verified(status="expired", comment=None).run(ran.append, 1)
        assert ran == []

    def test_async_denied(self) -> None:
        import asyncio

        async def tool() -> None:
            raise AssertionError("must not run")

        with pytest.raises(callgate.ApprovalDenied):
            asyncio.run(self.verified(status="denied").arun(tool))

    def test_coroutine_function_needs_arun(self) -> None:
        async def tool() -> None:
            raise AssertionError("must not run")

        with pytest.raises(TypeError, match="arun"):
            self.verified().run(tool)

    def test_approved_needs_a_configured_sdk(self) -> None:
        with pytest.raises(callgate.ConfigurationError):
            self.verified().run(print)

    def test_dispatch_without_a_handle(self) -> None:
        assert webhooks.dispatch(self.verified()) is False

"""Secret rotation (security.md §2.2): the new secret is active at once, the previous one keeps
signing next to it for the overlap (two ``v1,`` signatures, each verifying on its own with the
reference library), and after the overlap only the new one signs. Time moves through an injected
clock."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import Engine, update
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from gateway.audit import Actor
from gateway.errors import Conflict, NotFound
from gateway.models import AuditEvent, WebhookEndpoint
from gateway.webhooks.delivery import DeliveryConfig, RunUnit, deliver_due
from gateway.webhooks.endpoints import Registered, disable_endpoint, rotate_secret
from gateway.webhooks.outbox import rfc3339
from tests.gateway.webhooks.helpers import BOX, Calls, Clock, aware, audit_events, endpoint_row, register
from tests.gateway.webhooks.receiver import Receiver

OPS = Actor("operator", "ops")
DAY = 86400.0
pytestmark = pytest.mark.usefixtures("agent_key")  # agent billing-bot exists


def rotate(run: RunUnit, endpoint_id: str, *, overlap: float = DAY, clock: Clock | None = None) -> Registered:
    return run(lambda conn, audit: rotate_secret(conn, audit, endpoint_id=endpoint_id, actor=OPS, box=BOX,
                                                 overlap_seconds=overlap, now=clock() if clock else None))


def signatures(receiver: Receiver, index: int) -> list[str]:
    return receiver.requests[index].headers["webhook-signature"].split(" ")


def test_both_secrets_sign_during_the_overlap_and_only_the_new_one_after(
    calls: Calls, run: RunUnit, engine: Engine, receiver: Receiver, config: DeliveryConfig
) -> None:
    original = register(run, receiver.url)
    endpoint_id = original.endpoint["id"]
    clock = Clock()
    rotated = rotate(run, endpoint_id, clock=clock)
    assert rotated.secret.startswith("whsec_") and rotated.secret != original.secret
    assert rotated.endpoint["rotated_at"] == rfc3339(clock.now)
    assert rotated.endpoint["previous_secret_expires_at"] == rfc3339(clock.now + timedelta(days=1))
    row = endpoint_row(engine, endpoint_id)
    assert BOX.unseal(endpoint_id, row["secret"]) == rotated.secret  # both sealed, both for this endpoint
    assert BOX.unseal(endpoint_id, row["previous_secret"]) == original.secret

    calls.decide(calls.pending())
    clock.advance(DAY - 60)  # still inside the overlap
    assert [a.result for a in deliver_due(run, config, clock=clock)] == ["delivered"]
    (during,) = receiver.wait_for(1)
    assert len(signatures(receiver, 0)) == 2 and all(s.startswith("v1,") for s in signatures(receiver, 0))
    assert during.verify(rotated.secret) == during.verify(original.secret)  # each one alone verifies
    for secret in (rotated.secret, original.secret):  # and so does a receiver that keeps only one signature
        for signature in signatures(receiver, 0):
            one = {**during.headers, "webhook-signature": signature}
            try:
                Webhook(secret).verify(during.body, one)
                matched = True
            except WebhookVerificationError:
                matched = False
            assert matched == (signature == signatures(receiver, 0)[0 if secret == rotated.secret else 1])

    calls.decide(calls.pending())
    clock.advance(120)  # the overlap is over
    assert [a.result for a in deliver_due(run, config, clock=clock)] == ["delivered"]
    after = receiver.wait_for(2)[1]
    assert len(signatures(receiver, 1)) == 1
    after.verify(rotated.secret)
    with pytest.raises(WebhookVerificationError):
        after.verify(original.secret)
    row = endpoint_row(engine, endpoint_id)  # a secret that no longer signs is not kept, even sealed
    assert (row["previous_secret"], row["previous_secret_expires_at"]) == (None, None)
    assert BOX.unseal(endpoint_id, row["secret"]) == rotated.secret


def test_rotation_is_audited_without_any_secret(run: RunUnit, engine: Engine) -> None:
    registered = register(run, "http://127.0.0.1:9/hook")
    rotated = rotate(run, registered.endpoint["id"])
    events = audit_events(engine)
    assert [e["event_type"] for e in events] == ["webhook.registered", "webhook.rotated"]
    assert events[1]["actor"] == {"type": "operator", "id": "ops"}
    assert events[1]["data"] == {"endpoint_id": registered.endpoint["id"],
                                 "previous_secret_expires_at": rotated.endpoint["previous_secret_expires_at"]}
    with engine.connect() as conn:
        canonical = " ".join(conn.execute(AuditEvent.__table__.select().with_only_columns(AuditEvent.canonical))
                             .scalars())
    assert "whsec_" not in canonical and "sealed:" not in canonical


def test_no_overlap_retires_the_old_secret_at_once(calls: Calls, run: RunUnit, engine: Engine, receiver: Receiver,
                                                  config: DeliveryConfig) -> None:
    original = register(run, receiver.url)
    rotated = rotate(run, original.endpoint["id"], overlap=0)
    assert rotated.endpoint["previous_secret_expires_at"] is None
    assert endpoint_row(engine, original.endpoint["id"])["previous_secret"] is None
    calls.decide(calls.pending())
    deliver_due(run, config)
    (request,) = receiver.wait_for(1)
    assert len(signatures(receiver, 0)) == 1
    request.verify(rotated.secret)
    with pytest.raises(WebhookVerificationError):
        request.verify(original.secret)


def test_a_second_rotation_keeps_two_signatures_at_most(calls: Calls, run: RunUnit, receiver: Receiver,
                                                        config: DeliveryConfig) -> None:
    original = register(run, receiver.url)
    first = rotate(run, original.endpoint["id"])
    second = rotate(run, original.endpoint["id"])
    calls.decide(calls.pending())
    deliver_due(run, config)
    (request,) = receiver.wait_for(1)
    assert len(signatures(receiver, 0)) == 2
    request.verify(second.secret)
    request.verify(first.secret)
    with pytest.raises(WebhookVerificationError):
        request.verify(original.secret)


def test_a_previous_secret_that_does_not_open_costs_only_its_signature(
    calls: Calls, run: RunUnit, engine: Engine, receiver: Receiver, config: DeliveryConfig
) -> None:
    original = register(run, receiver.url)
    rotated = rotate(run, original.endpoint["id"])
    damaged = endpoint_row(engine, original.endpoint["id"])["previous_secret"][:-8] + "AAAAAAAA"
    with engine.begin() as conn:  # e.g. sealed under a server secret that has since changed
        conn.execute(update(WebhookEndpoint).where(WebhookEndpoint.id == original.endpoint["id"])
                     .values(previous_secret=damaged))
    calls.decide(calls.pending())
    assert [a.result for a in deliver_due(run, config)] == ["delivered"]
    (request,) = receiver.wait_for(1)
    assert len(signatures(receiver, 0)) == 1
    request.verify(rotated.secret)


def test_rotating_an_unknown_or_disabled_endpoint_is_refused(run: RunUnit, engine: Engine) -> None:
    with pytest.raises(NotFound):
        rotate(run, "ep_0000000000000000")
    registered = register(run, "http://127.0.0.1:9/hook")
    run(lambda conn, audit: disable_endpoint(conn, audit, endpoint_id=registered.endpoint["id"], actor=OPS))
    before = endpoint_row(engine, registered.endpoint["id"])
    with pytest.raises(Conflict) as exc:
        rotate(run, registered.endpoint["id"])
    assert exc.value.code == "endpoint_disabled"
    assert endpoint_row(engine, registered.endpoint["id"]) == before
    assert [e["event_type"] for e in audit_events(engine)].count("webhook.rotated") == 0
    with pytest.raises(ValueError):
        rotate(run, registered.endpoint["id"], overlap=-1)


def test_listings_show_the_rotation_state(run: RunUnit, engine: Engine) -> None:
    registered = register(run, "http://127.0.0.1:9/hook")
    assert (registered.endpoint["rotated_at"], registered.endpoint["previous_secret_expires_at"]) == (None, None)
    clock = Clock()
    rotated = rotate(run, registered.endpoint["id"], overlap=3600, clock=clock)
    until = aware(endpoint_row(engine, registered.endpoint["id"])["previous_secret_expires_at"])
    assert until == clock.now + timedelta(hours=1)
    assert json.dumps(rotated.endpoint) and "secret" not in rotated.endpoint

"""Endpoint secrets sealed at rest (security.md §2.2): AES-GCM under an HKDF-derived key, bound to
the endpoint id, versioned; and no plain secret anywhere in the database, on both engines."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import Engine, update

from gateway.audit import Actor
from gateway.config import Settings
from gateway.models import WebhookEndpoint
from gateway.webhooks.delivery import DeliveryConfig, RunUnit, deliver_due
from gateway.webhooks.endpoints import disable_endpoint, rotate_secret
from gateway.webhooks.secrets import HKDF_INFO, SEALED_PREFIX, SealedSecretError, SecretBox, is_sealed
from gateway.webhooks.signing import new_secret
from tests.gateway.conftest import TEST_SECRET
from tests.gateway.webhooks.helpers import BOX, Calls, delivery_log, dump, endpoint_row, register, sqlite_files
from tests.gateway.webhooks.receiver import Receiver

OPS = Actor("operator", "ops")
EP = "ep_0123456789abcdef"


class TestSealing:
    def test_roundtrip(self) -> None:
        secret = new_secret()
        sealed = BOX.seal(EP, secret)
        assert sealed.startswith(SEALED_PREFIX) and is_sealed(sealed) and not is_sealed(secret)
        assert BOX.unseal(EP, sealed) == secret
        assert SecretBox(TEST_SECRET.encode()).unseal(EP, sealed) == secret  # the key is derived, not random

    def test_a_fresh_nonce_every_time(self) -> None:
        secret = new_secret()
        sealed = {BOX.seal(EP, secret) for _ in range(100)}
        assert len(sealed) == 100
        nonces = {base64.b64decode(s.removeprefix(SEALED_PREFIX))[:12] for s in sealed}
        assert len(nonces) == 100

    def test_the_key_is_hkdf_sha256_of_the_server_secret_under_its_own_label(self) -> None:
        """The stored layout (nonce || ciphertext || tag) opened independently with the key the
        docs promise: this is the contract a future scheme version must still read."""
        secret = new_secret()
        raw = base64.b64decode(BOX.seal(EP, secret).removeprefix(SEALED_PREFIX))
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"callgate webhook secret v1").derive(
            TEST_SECRET.encode())
        assert HKDF_INFO == b"callgate webhook secret v1"
        assert AESGCM(key).decrypt(raw[:12], raw[12:], EP.encode()).decode() == secret
        raw_key = TEST_SECRET.encode().ljust(32, b"\0")[:32]  # the server secret itself is not the key
        with pytest.raises(Exception):  # noqa: B017, PT011 - cryptography's InvalidTag
            AESGCM(raw_key).decrypt(raw[:12], raw[12:], EP.encode())

    def test_the_wrong_key_does_not_open(self) -> None:
        sealed = BOX.seal(EP, new_secret())
        with pytest.raises(SealedSecretError, match="CALLGATE_SECRET_KEY changed"):
            SecretBox(b"another-server-secret").unseal(EP, sealed)

    def test_a_value_copied_to_another_endpoint_does_not_open(self) -> None:
        sealed = BOX.seal(EP, new_secret())
        with pytest.raises(SealedSecretError, match="copied from another endpoint"):
            BOX.unseal("ep_fedcba9876543210", sealed)

    @pytest.mark.parametrize("where", ["nonce", "ciphertext", "tag"])
    def test_any_tampering_is_detected(self, where: str) -> None:
        secret = new_secret()
        raw = bytearray(base64.b64decode(BOX.seal(EP, secret).removeprefix(SEALED_PREFIX)))
        index = {"nonce": 3, "ciphertext": 12 + 10, "tag": len(raw) - 2}[where]
        raw[index] ^= 0x01
        with pytest.raises(SealedSecretError) as exc:
            BOX.unseal(EP, SEALED_PREFIX + base64.b64encode(bytes(raw)).decode())
        assert secret not in str(exc.value)

    @pytest.mark.parametrize(("stored", "message"), [
        ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "not in a known sealed format"),  # a legacy plain value
        ("sealed:v2:AAAA", "not in a known sealed format"),  # a scheme this version does not know
        ("sealed:v1:%%%%", "not valid base64"),
        ("sealed:v1:" + base64.b64encode(b"short").decode(), "truncated"),
        ("", "not in a known sealed format"),
    ])
    def test_unknown_or_damaged_formats_are_refused(self, stored: str, message: str) -> None:
        with pytest.raises(SealedSecretError, match=message):
            BOX.unseal(EP, stored)

    def test_a_sealed_value_can_never_contain_the_whsec_marker(self) -> None:
        """Standard base64 has no '_': searching a dump for whsec_ is a sound leak check."""
        for _ in range(300):
            assert "whsec_" not in BOX.seal(EP, new_secret())

    def test_the_box_hides_its_key_and_refuses_an_empty_secret(self) -> None:
        assert TEST_SECRET not in repr(BOX) and "key hidden" in repr(BOX)
        assert TEST_SECRET not in repr(DeliveryConfig(BOX))
        with pytest.raises(ValueError):
            SecretBox(b"")
        with pytest.raises(ValueError):
            BOX.seal("", new_secret())

    def test_from_settings_uses_the_apps_secret_key(self, tmp_path: Path) -> None:
        sealed = SecretBox.from_settings(Settings(secret_key=TEST_SECRET)).seal(EP, "whsec_x")
        assert BOX.unseal(EP, sealed) == "whsec_x"
        embedded = Settings(data_dir=tmp_path)  # embedded mode: the generated key file, as the app uses it
        sealed = SecretBox.from_settings(embedded).seal(EP, "whsec_y")
        assert SecretBox(embedded.resolved_secret_key()).unseal(EP, sealed) == "whsec_y"
        assert (tmp_path / "secret_key").exists()


# -- the database --------------------------------------------------------------------------------


def test_no_plain_secret_anywhere_in_the_database(calls: Calls, run: RunUnit, engine: Engine, receiver: Receiver,
                                                  config: DeliveryConfig) -> None:
    """Register, rotate, decide, deliver, disable: the whole life of endpoints leaves no whsec_
    in any table (endpoints, outbox, delivery log, audit log, ...), nor in the SQLite file."""
    first = register(run, receiver.url)
    second = register(run, receiver.url + "-2", include_args=True)
    rotated = run(lambda conn, audit: rotate_secret(conn, audit, endpoint_id=first.endpoint["id"], actor=OPS,
                                                    box=BOX, overlap_seconds=86400))
    calls.decide(calls.pending())
    assert sorted(a.result for a in deliver_due(run, config)) == ["delivered", "delivered"]
    run(lambda conn, audit: disable_endpoint(conn, audit, endpoint_id=second.endpoint["id"], actor=OPS))
    assert len(delivery_log(engine)) == 2

    everything = dump(engine)
    assert "whsec_" not in everything
    for secret in (first.secret, second.secret, rotated.secret):
        assert secret.removeprefix("whsec_") not in everything  # not even without the prefix
    assert everything.count(SEALED_PREFIX) == 3  # two current secrets and one in its overlap
    if engine.dialect.name == "sqlite":
        files = sqlite_files(engine)
        assert SEALED_PREFIX.encode() in files and b"whsec_" not in files  # the right file, and clean

    # The check can fail: a plain value written anywhere is found.
    with engine.begin() as conn:
        conn.execute(update(WebhookEndpoint).where(WebhookEndpoint.id == second.endpoint["id"])
                     .values(disabled_reason=second.secret))
    assert "whsec_" in dump(engine)


def test_a_sealed_secret_copied_to_another_endpoint_does_not_sign(
    calls: Calls, run: RunUnit, engine: Engine, receiver: Receiver, config: DeliveryConfig, other_agent_key: str
) -> None:
    """Someone with write access to the table copies their endpoint's sealed secret (whose plain
    value they know) into another endpoint's row, to read or forge that endpoint's events: the
    value does not open there, and nothing is sent."""
    victim = register(run, receiver.url + "-victim")
    attacker = register(run, receiver.url + "-attacker", agent="other-bot")
    copied = endpoint_row(engine, attacker.endpoint["id"])["secret"]
    with engine.begin() as conn:
        conn.execute(update(WebhookEndpoint).where(WebhookEndpoint.id == victim.endpoint["id"]).values(secret=copied))
    calls.decide(calls.pending())
    (attempt,) = deliver_due(run, config)
    assert attempt.result == "retry" and attempt.verdict.reason.startswith("secret: ")
    assert receiver.requests == []

"""API key format and verification."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.keys import KEY_RE, check_stored_key, key_digest, new_key, parse_bearer, parse_key

PEPPER = b"pepper"


class TestFormat:
    def test_new_keys_are_well_formed_and_unique(self) -> None:
        """Keys match the documented format, carry a valid checksum and never repeat."""
        keys = {new_key("agent")[0] for _ in range(200)}
        assert len(keys) == 200
        for key in keys:
            assert KEY_RE.fullmatch(key)
            assert parse_key(key) is not None

    def test_key_id_is_embedded(self) -> None:
        """The public key id is the third field, so logs can name a key without its secret."""
        key, key_id = new_key("admin")
        parsed = parse_key(key)
        assert parsed is not None and (parsed.kind, parsed.key_id) == ("admin", key_id)

    def test_any_single_character_change_fails_the_checksum(self) -> None:
        """A typo anywhere in the secret is refused without a database query."""
        key, _ = new_key("agent")
        prefix = len("cg_agent_") + 13
        for i in range(prefix, len(key)):
            replacement = "a" if key[i] != "a" else "b"
            assert parse_key(key[:i] + replacement + key[i + 1 :]) is None

    def test_bearer_parsing(self) -> None:
        """Only 'Bearer <key>' is accepted; oversized headers are refused cheaply."""
        key, _ = new_key("agent")
        assert parse_bearer(f"Bearer {key}") is not None
        assert parse_bearer(f"bearer {key}") is not None
        for header in (None, "", key, f"Basic {key}", "Bearer " + "x" * 10_000, f"Bearer {key}x"):
            assert parse_bearer(header) is None


class TestVerification:
    def _row(self, key: str, **changes: object) -> tuple:
        row = {"kind": "agent", "agent": "a", "digest": key_digest(key, PEPPER), "expires_at": None, "revoked_at": None}
        row.update(changes)
        return tuple(row.values())

    def test_valid_key(self) -> None:
        """A stored digest of the same key under the same pepper authenticates."""
        key, _ = new_key("agent")
        principal = check_stored_key(parse_key(key), self._row(key), pepper=PEPPER, now=datetime.now(UTC))
        assert principal is not None and principal.agent == "a"

    def test_wrong_secret_pepper_revoked_expired_and_kind(self) -> None:
        """Every mismatch is refused the same way."""
        key, _ = new_key("agent")
        other, _ = new_key("agent")
        now = datetime.now(UTC)
        parsed = parse_key(key)
        assert check_stored_key(parsed, self._row(other), pepper=PEPPER, now=now) is None
        assert check_stored_key(parsed, self._row(key), pepper=b"other", now=now) is None
        assert check_stored_key(parsed, self._row(key, revoked_at=now), pepper=PEPPER, now=now) is None
        assert check_stored_key(parsed, self._row(key, expires_at=now - timedelta(seconds=1)), pepper=PEPPER, now=now) is None
        assert check_stored_key(parsed, self._row(key, kind="admin"), pepper=PEPPER, now=now) is None
        assert check_stored_key(parsed, None, pepper=PEPPER, now=now) is None
        assert check_stored_key(None, self._row(key), pepper=PEPPER, now=now) is None

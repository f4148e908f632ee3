"""Endpoint signing secrets sealed at rest (security.md §2.2).

The gateway signs every attempt with the endpoint's ``whsec_`` secret, so it must be able to
read it back: hashing it (as API keys are) is not an option. Instead the database only ever
holds it *sealed*:

* **AES-256-GCM** (``cryptography``'s ``AESGCM``): confidentiality and integrity in one step; a
  flipped bit in the stored value fails to open instead of signing with garbage.
* **The key is derived from ``CALLGATE_SECRET_KEY`` with HKDF-SHA256** under its own ``info``
  label, so it is independent of every other use of the server secret (argument fingerprints,
  key peppering): knowing one derived key says nothing about the others.
* **A fresh random 96-bit nonce per seal**: sealing the same secret twice gives unrelated values,
  and with random nonces GCM stays safe far beyond the number of secrets a gateway will ever seal.
* **The endpoint id is the associated data**: a sealed value copied into another endpoint's row
  (say, by someone with write access to the table who wants deliveries for *their* endpoint
  signed with a known secret) does not open there.
* **A version prefix** (``sealed:v1:``) names the scheme, so a future one can coexist with rows
  sealed under this one and be migrated lazily.

The stored text is ``sealed:v1:`` + standard base64 of ``nonce || ciphertext || tag``. Standard
base64 has no ``_`` in its alphabet, so the stored value can never contain ``whsec_`` by chance:
a database dump can be searched for that marker to prove no plain secret leaked into it.

Opening happens only in the delivery path (``delivery.send``), right before signing. A secret
is shown once in plain text when it is made (registration, rotation) and never again.
"""

from __future__ import annotations

import base64
import binascii
import os
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

if TYPE_CHECKING:
    from gateway.config import Settings

__all__ = ["HKDF_INFO", "NONCE_BYTES", "SEALED_PREFIX", "SealedSecretError", "SecretBox", "is_sealed"]

HKDF_INFO = b"callgate webhook secret v1"
SEALED_PREFIX = "sealed:v1:"
NONCE_BYTES = 12  # 96 bits: GCM's native nonce size
_TAG_BYTES = 16


class SealedSecretError(ValueError):
    """A stored secret that cannot be opened: not in a known format, sealed under another
    ``CALLGATE_SECRET_KEY``, altered, or copied from another endpoint's row."""


def is_sealed(value: str | None) -> bool:
    """Is ``value`` in the sealed format (as opposed to a legacy plain ``whsec_`` secret)?"""
    return isinstance(value, str) and value.startswith(SEALED_PREFIX)


class SecretBox:
    """Seals and opens endpoint secrets under the key derived from the server secret.

    Holds only the derived AES key (never the server secret itself); its ``repr`` shows
    neither, so it is safe inside configuration objects that end up in logs."""

    __slots__ = ("_aead",)

    def __init__(self, server_secret: bytes) -> None:
        if not isinstance(server_secret, bytes | bytearray) or not server_secret:
            raise ValueError("the server secret (CALLGATE_SECRET_KEY) must be non-empty bytes")
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=HKDF_INFO).derive(bytes(server_secret))
        self._aead = AESGCM(key)

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        """The box for this gateway: keyed from ``CALLGATE_SECRET_KEY`` (or, in embedded mode,
        the generated key file), exactly as every other use of the server secret."""
        return cls(settings.resolved_secret_key())

    def seal(self, endpoint_id: str, secret: str) -> str:
        """The stored form of ``secret`` for endpoint ``endpoint_id``."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, secret.encode("utf-8"), _associated_data(endpoint_id))
        return SEALED_PREFIX + base64.b64encode(nonce + sealed).decode("ascii")

    def unseal(self, endpoint_id: str, stored: str) -> str:
        """The plain secret of ``stored``, which must have been sealed for ``endpoint_id``
        under this key; ``SealedSecretError`` otherwise (the message never contains the value)."""
        if not is_sealed(stored):
            raise SealedSecretError(f"the stored secret of {endpoint_id} is not in a known sealed format")
        try:
            raw = base64.b64decode(stored[len(SEALED_PREFIX):], validate=True)
        except (binascii.Error, ValueError):
            raise SealedSecretError(f"the stored secret of {endpoint_id} is not valid base64") from None
        if len(raw) < NONCE_BYTES + _TAG_BYTES:
            raise SealedSecretError(f"the stored secret of {endpoint_id} is truncated")
        try:
            plain = self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], _associated_data(endpoint_id))
        except InvalidTag:
            raise SealedSecretError(
                f"the stored secret of {endpoint_id} does not open: CALLGATE_SECRET_KEY changed since it was "
                "sealed, or the value was altered or copied from another endpoint (rotate the endpoint's secret)"
            ) from None
        return plain.decode("utf-8")

    def __repr__(self) -> str:
        return "SecretBox(<derived key hidden>)"


def _associated_data(endpoint_id: str) -> bytes:
    if not isinstance(endpoint_id, str) or not endpoint_id:
        raise ValueError("a sealed secret is bound to a non-empty endpoint id")
    return endpoint_id.encode("utf-8")

"""Signing secrets of partner webhooks: made, sealed at rest, and used to sign (Standard Webhooks).

A secret is ``whsec_`` and the base64 of 32 random bytes, the format every Standard Webhooks
library reads. The hub keeps it only under AES-GCM with the keyring's data key; the associated
data binds the ciphertext to its partner (and to this use), so a sealed secret copied onto
another partner's row, or a sealed identifier digest, does not open as a secret.
"""

from __future__ import annotations

import base64
import os
import secrets
from datetime import datetime
from typing import Protocol
from uuid import UUID

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from standardwebhooks import Webhook

from partners.identifiers.crypto import NONCE_BYTES, IdentifierCrypto

SECRET_PREFIX = "whsec_"  # noqa: S105 (the format's prefix)
SECRET_BYTES = 32
PURPOSE = b"webhook-secret:"


class DataKeys(Protocol):
    """What sealing needs of the keyring (hub.core.keyring.Keyring)."""

    @property
    def data_version(self) -> int: ...

    def data_secret(self, version: int) -> bytes: ...


def data_keys(keys: DataKeys | IdentifierCrypto) -> DataKeys:
    """The keyring itself, or the one an :class:`IdentifierCrypto` holds."""
    return keys.keys if isinstance(keys, IdentifierCrypto) else keys


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


class SecretBox:
    """Seals and opens partners' webhook secrets under the keyring's data key."""

    def __init__(self, keys: DataKeys | IdentifierCrypto) -> None:
        self.keys = data_keys(keys)

    @staticmethod
    def associated_data(partner_id: UUID) -> bytes:
        return PURPOSE + partner_id.bytes

    def seal(self, secret: str, partner_id: UUID) -> tuple[int, bytes]:
        """(data-key version, nonce + ciphertext) of ``secret``."""
        version = self.keys.data_version
        nonce = os.urandom(NONCE_BYTES)
        aead = AESGCM(self.keys.data_secret(version))
        return version, nonce + aead.encrypt(
            nonce, secret.encode(), self.associated_data(partner_id)
        )

    def open(self, sealed: bytes, version: int, partner_id: UUID) -> str:
        aead = AESGCM(self.keys.data_secret(version))
        nonce, body = sealed[:NONCE_BYTES], sealed[NONCE_BYTES:]
        return aead.decrypt(nonce, body, self.associated_data(partner_id)).decode()


def signed_headers(secret: str, msg_id: str, timestamp: datetime, body: str) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt (the timestamp is the attempt's)."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, timestamp, body),
        "content-type": "application/json",
    }

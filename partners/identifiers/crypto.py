"""Match keys and digest encryption under the keyring's match and data keys."""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Protocol
from uuid import UUID

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12


class IdentifierKeys(Protocol):
    """What this module needs of the keyring (hub.core.keyring.Keyring)."""

    @property
    def match_version(self) -> int: ...

    @property
    def data_version(self) -> int: ...

    def match_secret(self, version: int) -> bytes: ...

    def data_secret(self, version: int) -> bytes: ...

    def live_match_versions(self) -> list[int]: ...


class IdentifierCrypto:
    def __init__(self, keys: IdentifierKeys) -> None:
        self.keys = keys
        self._macs: dict[tuple[int, bytes], hmac.HMAC] = {}
        self._aeads: dict[tuple[int, bytes], AESGCM] = {}

    def match_key(self, digest: bytes, version: int) -> bytes:
        secret = self.keys.match_secret(version)
        base = self._macs.get((version, secret))
        if base is None:
            base = self._macs[(version, secret)] = hmac.new(secret, digestmod=hashlib.sha256)
        mac = base.copy()
        mac.update(digest)
        return mac.digest()

    def _aead(self, version: int) -> AESGCM:
        secret = self.keys.data_secret(version)
        aead = self._aeads.get((version, secret))
        if aead is None:
            aead = self._aeads[(version, secret)] = AESGCM(secret)
        return aead

    @staticmethod
    def associated_data(partner_id: UUID, id_type: int) -> bytes:
        return partner_id.bytes + bytes([id_type])

    def encrypt(self, digest: bytes, partner_id: UUID, id_type: int) -> tuple[int, bytes]:
        version = self.keys.data_version
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead(version).encrypt(
            nonce, digest, self.associated_data(partner_id, id_type)
        )
        return version, nonce + sealed

    def decrypt(self, blob: bytes, version: int, partner_id: UUID, id_type: int) -> bytes:
        nonce, sealed = blob[:NONCE_BYTES], blob[NONCE_BYTES:]
        return self._aead(version).decrypt(nonce, sealed, self.associated_data(partner_id, id_type))

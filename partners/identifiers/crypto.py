"""Match keys and digest encryption under the keyring's match and data keys."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import Protocol
from uuid import UUID

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12
BLOCK_BYTES = 64  # SHA-256's block size
NONCES_PER_DRAW = 4096


class IdentifierKeys(Protocol):
    """What this module needs of the keyring (hub.core.keyring.Keyring)."""

    @property
    def match_version(self) -> int: ...

    @property
    def data_version(self) -> int: ...

    def match_secret(self, version: int) -> bytes: ...

    def data_secret(self, version: int) -> bytes: ...

    def live_match_versions(self) -> list[int]: ...


class _Hmac:
    """HMAC-SHA256 (RFC 2104) under one key, with the padded key's hash states computed once:
    the same result as ``hmac.new(key, msg, sha256)``, at half the cost per message."""

    def __init__(self, key: bytes) -> None:
        if len(key) > BLOCK_BYTES:
            key = hashlib.sha256(key).digest()
        key = key.ljust(BLOCK_BYTES, b"\0")
        self.inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self.outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))

    def __call__(self, message: bytes) -> bytes:
        inner = self.inner.copy()
        inner.update(message)
        outer = self.outer.copy()
        outer.update(inner.digest())
        return outer.digest()


class IdentifierCrypto:
    def __init__(self, keys: IdentifierKeys) -> None:
        self.keys = keys
        self._macs: dict[tuple[int, bytes], _Hmac] = {}
        self._aeads: dict[tuple[int, bytes], AESGCM] = {}

    def keyer(self, version: int) -> Callable[[bytes], bytes]:
        """``digest -> match key`` under one match-key version (for many digests)."""
        secret = self.keys.match_secret(version)
        mac = self._macs.get((version, secret))
        if mac is None:
            mac = self._macs[(version, secret)] = _Hmac(secret)
        return mac

    def match_key(self, digest: bytes, version: int) -> bytes:
        return self.keyer(version)(digest)

    def _aead(self, version: int) -> AESGCM:
        secret = self.keys.data_secret(version)
        aead = self._aeads.get((version, secret))
        if aead is None:
            aead = self._aeads[(version, secret)] = AESGCM(secret)
        return aead

    @staticmethod
    def associated_data(partner_id: UUID, id_type: int) -> bytes:
        return partner_id.bytes + bytes([id_type])

    def sealer(self, partner_id: UUID, id_type: int) -> tuple[int, Callable[[bytes], bytes]]:
        """(data-key version, ``digest -> nonce + ciphertext``) for many digests of one
        partner and id type, as :meth:`encrypt` seals them."""
        version = self.keys.data_version
        encrypt = self._aead(version).encrypt
        associated = self.associated_data(partner_id, id_type)

        # Random 96-bit nonces, drawn from the OS a few thousand at a time (one system call
        # instead of one per digest).
        pool = b""
        taken = 0

        def seal(digest: bytes) -> bytes:
            nonlocal pool, taken
            if taken == len(pool):
                pool, taken = os.urandom(NONCE_BYTES * NONCES_PER_DRAW), 0
            nonce = pool[taken : taken + NONCE_BYTES]
            taken += NONCE_BYTES
            return nonce + encrypt(nonce, digest, associated)

        return version, seal

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

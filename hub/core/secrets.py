"""Client secrets: generated with enough entropy, stored only as argon2id hashes, shown once."""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError


class SecretHasher:
    def __init__(self, time_cost: int = 3, memory_kib: int = 65536) -> None:
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=1)
        # Verified against when a client id is unknown, so that failure takes as long as a
        # wrong secret does and response times reveal no client ids.
        self.dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))

    def hash(self, secret: str) -> str:
        return self._hasher.hash(secret)

    def verify(self, stored_hash: str, secret: str) -> bool:
        try:
            return self._hasher.verify(stored_hash, secret)
        except (VerificationError, InvalidHashError):
            return False


def new_client_id() -> str:
    return "cl_" + secrets.token_urlsafe(16)


def new_client_secret() -> str:
    return "cs_" + secrets.token_urlsafe(32)

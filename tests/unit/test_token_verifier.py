"""The resource side verifies a token's signature once and trusts the cache until exp."""

from __future__ import annotations

import time
from pathlib import Path

import msgspec
import pytest

from hub.core.auth import TokenVerifier
from hub.core.errors import Unauthorized
from hub.core.keyring import load_keyring
from hub.core.revocations import TOKEN, RevocationCache
from hub.oauth.tokens import AccessTokenIssuer


@pytest.fixture
def parts(tmp_path: Path) -> tuple[AccessTokenIssuer, TokenVerifier, RevocationCache]:
    keyring = load_keyring(tmp_path / "keyring.json")
    revocations = RevocationCache()
    issuer = AccessTokenIssuer(
        keyring, issuer="https://hub.test", audience="urn:api", ttl_seconds=60
    )
    verifier = TokenVerifier(keyring, revocations, issuer="https://hub.test", audience="urn:api")
    return issuer, verifier, revocations


def test_the_signature_is_checked_once_per_token(
    parts: tuple[AccessTokenIssuer, TokenVerifier, RevocationCache], monkeypatch: pytest.MonkeyPatch
) -> None:
    issuer, verifier, _ = parts
    calls = []
    real = verifier._verify_signature_and_claims

    def counting(token: str):  # type: ignore[no-untyped-def]
        calls.append(token)
        return real(token)

    monkeypatch.setattr(verifier, "_verify_signature_and_claims", counting)
    token = issuer.issue("cl_a", "p1", "overlap:read")["access_token"]
    first = verifier.verify(token)
    second = verifier.verify(token)
    assert first == second
    assert first.partner_id == "p1"
    assert first.scopes == frozenset({"overlap:read"})
    assert len(calls) == 1


def test_a_cached_token_is_still_refused_once_revoked(
    parts: tuple[AccessTokenIssuer, TokenVerifier, RevocationCache],
) -> None:
    issuer, verifier, revocations = parts
    token = issuer.issue("cl_a", None, "admin")["access_token"]
    principal = verifier.verify(token)
    revocations.note(TOKEN, principal.jti)
    with pytest.raises(Unauthorized, match="revoked"):
        verifier.verify(token)


def test_a_cached_token_is_refused_after_it_expires(
    parts: tuple[AccessTokenIssuer, TokenVerifier, RevocationCache],
) -> None:
    issuer, verifier, _ = parts
    token = issuer.issue("cl_a", None, "admin")["access_token"]
    principal = verifier.verify(token)
    # Age the cached entry past exp (and the leeway) instead of sleeping.
    verifier._cache[token] = msgspec.structs.replace(principal, exp=int(time.time()) - 120)
    with pytest.raises(Unauthorized, match="expired"):
        verifier.verify(token)
    assert token not in verifier._cache

"""The kit reproduces UID2's published normalisation and hash examples, valid and invalid."""

from __future__ import annotations

import base64
import hashlib

import pytest

from partners.kit import (
    BASE64,
    HEX,
    InvalidIdentifier,
    hash_identifier,
    normalize_email,
    normalize_phone,
    parse_digest,
)
from tests.kit.uid2_vectors import (
    EMAIL_IMPLEMENTATION_DIVERGENT,
    EMAIL_INVALID,
    EMAIL_VALID,
    PHONE_INVALID,
    PHONE_VALID,
)


@pytest.mark.parametrize(("raw", "normalized", "hex_digest", "b64_digest", "source"), EMAIL_VALID)
def test_published_email_examples(
    raw: str, normalized: str, hex_digest: str | None, b64_digest: str | None, source: str
) -> None:
    assert normalize_email(raw) == normalized, source
    if hex_digest is not None:
        assert hash_identifier("email", raw, HEX) == hex_digest.lower(), source
    if b64_digest is not None:
        assert hash_identifier("email", raw, BASE64) == b64_digest, source


@pytest.mark.parametrize(("raw", "source"), EMAIL_INVALID)
def test_published_invalid_emails_are_refused(raw: str, source: str) -> None:
    with pytest.raises(InvalidIdentifier) as refused:
        normalize_email(raw)
    assert refused.value.reason, source
    if len(raw.strip()) > 3:
        assert raw.strip() not in refused.value.reason  # the reason never echoes the value


@pytest.mark.parametrize(
    ("raw", "js_result", "reference_result", "note"), EMAIL_IMPLEMENTATION_DIVERGENT
)
def test_where_implementations_differ_the_kit_follows_the_operator(
    raw: str, js_result: str | None, reference_result: str | None, note: str
) -> None:
    # The operator (the server side of UID2) and its Java/Python ports are the reference.
    assert normalize_email(raw) == reference_result, note


@pytest.mark.parametrize(("raw", "hex_digest", "b64_digest", "source"), PHONE_VALID)
def test_published_phone_examples(
    raw: str, hex_digest: str | None, b64_digest: str | None, source: str
) -> None:
    assert normalize_phone(raw) == raw, source
    if hex_digest is not None:
        assert hash_identifier("phone", raw, HEX) == hex_digest.lower(), source
    if b64_digest is not None:
        assert hash_identifier("phone", raw, BASE64) == b64_digest, source


@pytest.mark.parametrize(
    ("raw", "source"), [(raw, source) for raw, source in PHONE_INVALID if raw is not None]
)
def test_published_invalid_phones_are_refused(raw: str, source: str) -> None:
    with pytest.raises(InvalidIdentifier) as refused:
        normalize_phone(raw)
    assert "E.164" in refused.value.reason, source


def test_digest_encodings_are_of_the_raw_bytes() -> None:
    # UID2: base64 of the 32 digest bytes, never of the hex string.
    expected = hashlib.sha256(b"foo@bar.com").digest()
    assert hash_identifier("email", "foo@bar.com", BASE64) == base64.b64encode(expected).decode()
    assert hash_identifier("email", "foo@bar.com", BASE64) == (
        "DH5qQFhi5ALrdqcPiib8cy0Hwykx6frpqxWCkR0uijs="
    )
    assert parse_digest(expected.hex().upper()) == expected
    assert parse_digest("DH5qQFhi5ALrdqcPiib8cy0Hwykx6frpqxWCkR0uijs=") == expected


VALID_B64 = "DH5qQFhi5ALrdqcPiib8cy0Hwykx6frpqxWCkR0uijs="
VALID_HEX = hashlib.sha256(b"foo@bar.com").hexdigest()
SLASHED_B64 = "1hFzBkhe0OUK+rOshx6Y+BaZFR8wKBUn1j/18jNlbGk="  # janedoe@gmail.com
NOT_DIGESTS = [
    # The operator's own refused hash inputs (testInvalidHashNormalization).
    ("", "empty"),
    ("asdaksjdakfj", "base64"),
    (VALID_B64[:-1], "base64"),
    (VALID_B64[:30], "base64"),
    ("Z" + VALID_HEX[1:], "digest"),
    (VALID_HEX + "00", "64 hex characters, not 66"),
    ("00" + VALID_HEX, "64 hex characters, not 66"),
    # Raw identifiers: the reason says what it looks like.
    ("jane.doe@example.com", "raw email"),
    (" JANE@GMAIL.COM ", "raw email"),
    ("+14155550100", "raw phone"),
    ("14155550100", "raw phone"),
    ("(415) 555-0100", "raw phone"),
    ("+44 20 7946 0958", "raw phone"),
    # Broken digests.
    (VALID_HEX[:63], "64 hex characters, not 63"),
    (VALID_HEX[:32], "64 hex characters, not 32"),
    (VALID_HEX[:-1] + "g", "digest"),
    (SLASHED_B64.replace("/", "_"), "base64"),  # the URL-safe alphabet is not UID2's
    (VALID_B64[:-1] + "A", "base64"),  # 44 characters without padding: 33 bytes
    ("A" * 42 + "==", "base64"),  # 31 bytes
    (VALID_HEX[:60] + "ÿÿÿÿ", "digest"),
    ("ünïcödé@例え.jp", "raw email"),
    ("   ", "empty"),
    (" " + VALID_HEX, "digest"),
]


@pytest.mark.parametrize(("text", "reason"), NOT_DIGESTS)
def test_anything_but_a_digest_is_refused_with_its_reason(text: str, reason: str) -> None:
    with pytest.raises(InvalidIdentifier) as refused:
        parse_digest(text)
    assert reason in refused.value.reason
    if "@" in text or "raw phone" in reason:
        assert text.strip() not in refused.value.reason

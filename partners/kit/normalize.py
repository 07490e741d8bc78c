"""UID2 normalisation and hashing of emails and phone numbers (profile ``uid2``).

Email (as UID2's operator and client libraries do it): leading spaces are skipped and
trailing spaces dropped, ASCII letters are lower-cased, and for ``gmail.com`` the dots and any
``+suffix`` are removed from the local part. An address needs a non-empty local part, exactly
one ``@`` and a non-empty domain.

Phone: already in E.164 -- ``+`` then 10 to 15 digits and nothing else. The kit never guesses
a country code or strips punctuation: a number that is not E.164 is refused.

Digest: SHA-256 of the normalised UTF-8 string, as 44-character standard base64 (UID2's form)
or 64 hex characters.

No function here puts the raw value in an exception message: refusals say why, never what.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from typing import Literal

PROFILE = "uid2"
ID_TYPES = ("email", "phone")
BASE64: Literal["base64"] = "base64"
HEX: Literal["hex"] = "hex"
GMAIL = "gmail.com"
PHONE_MIN_DIGITS, PHONE_MAX_DIGITS = 10, 15
_HEX_DIGEST = re.compile(r"^[0-9A-Fa-f]{64}$")
_BASE64_DIGEST = re.compile(r"^[A-Za-z0-9+/]{43}=$")


class InvalidIdentifier(ValueError):
    """A value the kit refuses; ``reason`` never contains the value itself."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def normalize_email(raw: str) -> str:
    """UID2's email normalisation, as the operator's character-by-character parser does it
    (tests/kit/reference.py holds a line-by-line port; a property test checks they agree)."""
    text = raw.lstrip(" ")
    # Only ASCII letters are lower-cased (str.lower would also fold other scripts).
    text = text.lower() if text.isascii() else text.translate(_ASCII_LOWER)
    local, at, domain = text.partition("@")
    if not at:
        raise InvalidIdentifier("an email address needs an '@'")
    if "@" in domain:
        raise InvalidIdentifier("an email address has exactly one '@'")
    domain = domain.rstrip(" ")
    if not domain:
        raise InvalidIdentifier("an email address needs a domain after the '@'")
    if domain == GMAIL:
        local = local.partition("+")[0].replace(".", "")
    if not local:
        raise InvalidIdentifier("an email address needs a local part before the '@'")
    return f"{local}@{domain}"


def normalize_phone(raw: str) -> str:
    if not raw.startswith("+"):
        raise InvalidIdentifier("a phone number must be in E.164 form: '+' then 10 to 15 digits")
    digits = raw[1:]
    if not digits.isascii() or not digits.isdigit():
        raise InvalidIdentifier(
            "a phone number in E.164 form has only digits after the '+' "
            "(no spaces, dashes or brackets)"
        )
    if not PHONE_MIN_DIGITS <= len(digits) <= PHONE_MAX_DIGITS:
        raise InvalidIdentifier(
            f"a phone number in E.164 form has {PHONE_MIN_DIGITS} to {PHONE_MAX_DIGITS} "
            f"digits after the '+', not {len(digits)}"
        )
    return raw


def normalize(id_type: str, raw: str) -> str:
    if id_type == "email":
        return normalize_email(raw)
    if id_type == "phone":
        return normalize_phone(raw)
    raise InvalidIdentifier(f"the identifier type must be one of {', '.join(ID_TYPES)}")


def digest(normalized: str) -> bytes:
    return hashlib.sha256(normalized.encode("utf-8")).digest()


def encode_digest(raw_digest: bytes, encoding: str = BASE64) -> str:
    if encoding == BASE64:
        return base64.b64encode(raw_digest).decode("ascii")
    if encoding == HEX:
        return raw_digest.hex()
    raise ValueError(f"encoding must be {BASE64!r} or {HEX!r}")


def hash_identifier(id_type: str, raw: str, encoding: str = BASE64) -> str:
    """Normalise ``raw`` by the ``uid2`` rules for ``id_type`` and return its encoded digest."""
    return encode_digest(digest(normalize(id_type, raw)), encoding)


def parse_digest(text: str) -> bytes:
    """The 32 bytes of a digest sent as 64 hex characters or 44-character base64.

    Refuses anything else, and says what it looks like when it looks like a raw identifier.
    """
    if len(text) == 44 and text[43] == "=" and text.isascii():
        try:
            # strict: only the standard alphabet, padding only at the end.
            decoded = binascii.a2b_base64(text.encode(), strict_mode=True)
        except binascii.Error:
            decoded = b""
        if len(decoded) == 32:
            return decoded
    elif len(text) == 64 and _HEX_DIGEST.match(text):
        return bytes.fromhex(text)
    if _BASE64_DIGEST.match(text):
        raise InvalidIdentifier("a base64 digest must decode to exactly 32 bytes")
    raise InvalidIdentifier(_why_not_a_digest(text))


def _why_not_a_digest(text: str) -> str:
    fix = "hash it with the hub's kit (`hub hash`) and send the SHA-256 digest"
    stripped = text.strip()
    if not stripped:
        return "the digest is empty; " + fix
    if "@" in stripped:
        return "this looks like a raw email address, which the hub never accepts; " + fix
    if re.fullmatch(r"\+?[\d\s().-]{7,}", stripped):
        return "this looks like a raw phone number, which the hub never accepts; " + fix
    if re.fullmatch(r"[0-9A-Fa-f]+", stripped):
        return (
            f"a hex digest has exactly 64 hex characters, not {len(stripped)}; "
            "send the full SHA-256 digest"
        )
    if re.fullmatch(r"[A-Za-z0-9+/_-]+=*", stripped):
        return (
            "a base64 digest has exactly 44 characters of standard base64 "
            "(A-Z a-z 0-9 + /, ending in '=') encoding 32 bytes"
        )
    return "a digest is 64 hex characters or 44 characters of base64 (SHA-256); " + fix

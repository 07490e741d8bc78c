"""The partner hashing kit: normalise and hash emails and phone numbers on the brand's side.

Self-contained (the standard library only; ``rich`` for the optional progress bar of
:mod:`partners.kit.files`), so brands can vendor it. The rules are UID2's public ones
(profile ``uid2``); see :mod:`partners.kit.normalize`.

    >>> from partners.kit import hash_identifier
    >>> hash_identifier("email", " Jane.Doe+news@GMAIL.com ")
    '1hFzBkhe0OUK+rOshx6Y+BaZFR8wKBUn1j/18jNlbGk='
"""

from partners.kit.contact import looks_like_contact
from partners.kit.normalize import (
    BASE64,
    HEX,
    ID_TYPES,
    PROFILE,
    InvalidIdentifier,
    digest,
    encode_digest,
    hash_identifier,
    normalize,
    normalize_email,
    normalize_phone,
    parse_digest,
)

__all__ = [
    "BASE64",
    "HEX",
    "ID_TYPES",
    "PROFILE",
    "InvalidIdentifier",
    "digest",
    "encode_digest",
    "hash_identifier",
    "looks_like_contact",
    "normalize",
    "normalize_email",
    "normalize_phone",
    "parse_digest",
]

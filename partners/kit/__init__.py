"""The partner toolkit (distribution ``coalition-hub-kit``): normalise and hash emails and
phone numbers on the brand's side, and talk to the hub.

* :mod:`partners.kit.normalize` -- UID2's public rules (profile ``uid2``), standard library only;
  :mod:`partners.kit.files` hashes CSV/NDJSON files row by row, :mod:`partners.kit.contact`
  spots raw contact details.
* :func:`hash_frame` (:mod:`partners.kit.frames`, the ``pandas`` extra) hashes a DataFrame;
  :mod:`partners.kit.frame_files` reads customer files into frames and writes upload CSV.
* :class:`HubClient` (:mod:`partners.kit.client`) -- the API on authlib's OAuth 2.0 client,
  with typed errors (:mod:`partners.kit.errors`), uploads (:mod:`partners.kit.uploads`) and
  webhook verification (:mod:`partners.kit.webhooks`); ``hubkit`` is its command.

It imports nothing of the hub's. ``HubClient`` and ``hash_frame`` load on first use, so the
hashing functions import with the standard library alone.

    >>> from partners.kit import hash_identifier
    >>> hash_identifier("email", " Jane.Doe+news@GMAIL.com ")
    '1hFzBkhe0OUK+rOshx6Y+BaZFR8wKBUn1j/18jNlbGk='
"""

from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from partners.kit.client import HubClient
    from partners.kit.errors import HubError
    from partners.kit.frames import hash_frame
    from partners.kit.webhooks import verify_webhook

_LAZY = {
    "HubClient": "partners.kit.client",
    "HubError": "partners.kit.errors",
    "hash_frame": "partners.kit.frames",
    "verify_webhook": "partners.kit.webhooks",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'partners.kit' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    "BASE64",
    "HEX",
    "ID_TYPES",
    "PROFILE",
    "HubClient",
    "HubError",
    "InvalidIdentifier",
    "digest",
    "encode_digest",
    "hash_frame",
    "hash_identifier",
    "looks_like_contact",
    "normalize",
    "normalize_email",
    "normalize_phone",
    "parse_digest",
    "verify_webhook",
]

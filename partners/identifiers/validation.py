"""Checks of identifier records as partners send them (sync uploads, bulk rows, erasure).

Every bad field of every record is reported as ``{index, field, reason}``; a reason never
contains the value it refuses (it may be a raw email or phone number).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from partners.identifiers.models import CONSENT_BITS, ID_TYPE_CODES, MAX_ATTRIBUTES, consent_mask
from partners.kit import InvalidIdentifier, parse_digest
from partners.kit.contact import looks_like_contact
from partners.kit.files import shown_name

FIELDS = {"id_type", "id_hash", "customer_ref", "consents", "attributes"}
KNOWN = ", ".join(sorted(FIELDS))
MAX_REF = 200
ATTRIBUTE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}\Z")  # with match: the whole name
MAX_ATTRIBUTE_VALUE = 100


@dataclass(slots=True)
class ValidRecord:
    id_type: int
    digest: bytes
    customer_ref: str
    consents: int
    attributes: dict[str, str] | None


@dataclass(slots=True)
class RecordError:
    index: int
    field: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "field": self.field, "reason": self.reason}


def check_customer_ref(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("customer_ref is required: the brand's own id for the person")
    if len(value) > MAX_REF:
        raise ValueError(f"customer_ref is at most {MAX_REF} characters")
    if looks_like_contact(value):
        raise ValueError(
            "customer_ref looks like an email or phone number; use the brand's own "
            "pseudonymous customer id"
        )
    return value.strip()


def check_consents(value: Any) -> int:
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise ValueError("consents must be a list of purposes")
    unknown = [c for c in value if c not in CONSENT_BITS]
    if unknown:
        raise ValueError(f"unknown consent purpose; use {', '.join(CONSENT_BITS)}")
    return consent_mask(value)


def check_attributes(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError("attributes must be an object of short strings")
    if len(value) > MAX_ATTRIBUTES:
        raise ValueError(f"at most {MAX_ATTRIBUTES} attributes per record, not {len(value)}")
    clean: dict[str, str] = {}
    for name, item in value.items():
        if not ATTRIBUTE_NAME.match(name):
            raise ValueError(
                "attribute names start with a letter and hold up to 64 letters, digits, "
                "'_', '.' or '-'"
            )
        if looks_like_contact(name):  # not named: the name itself would be the leak
            raise ValueError(
                "an attribute name looks like an email or phone number; name attributes "
                "after what they hold (tier, city)"
            )
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            raise ValueError(f"attribute {name!r} must be a string")
        text = str(item)
        if len(text) > MAX_ATTRIBUTE_VALUE:
            raise ValueError(f"attribute {name!r} is at most {MAX_ATTRIBUTE_VALUE} characters")
        if looks_like_contact(text):
            raise ValueError(
                f"attribute {name!r} looks like an email or phone number; send segment tags, "
                "never contact details"
            )
        clean[name] = text
    return clean or None


def check_record(index: int, raw: Any, errors: list[RecordError]) -> ValidRecord | None:
    if not isinstance(raw, dict):
        errors.append(RecordError(index, "", "a record is a JSON object"))
        return None
    before = len(errors)
    for name in sorted(set(raw) - FIELDS):
        errors.append(
            RecordError(
                # A key may be a pasted address: it is named only when it looks like a name.
                index,
                shown_name(name)[:64],
                f"unknown field; a record has {', '.join(sorted(FIELDS))}",
            )
        )
    id_type = raw.get("id_type")
    if not isinstance(id_type, str) or id_type not in ID_TYPE_CODES:  # a dict is unhashable
        errors.append(RecordError(index, "id_type", "id_type must be 'email' or 'phone'"))
    digest = b""
    id_hash = raw.get("id_hash")
    if not isinstance(id_hash, str):
        errors.append(RecordError(index, "id_hash", "id_hash is required: a SHA-256 digest"))
    else:
        try:
            digest = parse_digest(id_hash)
        except InvalidIdentifier as exc:
            errors.append(RecordError(index, "id_hash", exc.reason))
    values: dict[str, Any] = {}
    for name, check, default in (
        ("customer_ref", check_customer_ref, None),
        ("consents", check_consents, []),
        ("attributes", check_attributes, None),
    ):
        try:
            values[name] = check(raw.get(name, default))
        except ValueError as exc:
            errors.append(RecordError(index, name, str(exc)))
    if len(errors) > before:
        return None
    return ValidRecord(
        id_type=ID_TYPE_CODES[str(id_type)],
        digest=digest,
        customer_ref=values["customer_ref"],
        consents=values["consents"],
        attributes=values["attributes"],
    )


def check_records(raw_records: list[Any]) -> tuple[list[ValidRecord], list[RecordError]]:
    """All records, or every error; duplicates of one (id_type, id_hash) are errors too."""
    errors: list[RecordError] = []
    valid: list[ValidRecord] = []
    seen: dict[tuple[int, bytes], int] = {}
    for index, raw in enumerate(raw_records):
        record = check_record(index, raw, errors)
        if record is None:
            continue
        first = seen.setdefault((record.id_type, record.digest), index)
        if first != index:
            errors.append(
                RecordError(
                    index, "id_hash", f"the same identifier as record {first}; send it once"
                )
            )
            continue
        valid.append(record)
    return valid, errors

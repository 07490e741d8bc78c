"""Wire shapes of the identifier endpoints (DESIGN.md "Wire shapes")."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

MAX_SYNC_RECORDS = 10_000
MAX_SYNC_BODY_BYTES = 16 * 1024 * 1024

# Documented shapes of the bodies that are decoded leniently (``list[Any]``) so that every bad
# item is reported with its index: the OpenAPI document shows these (route opt openapi_body).
# Each is as strict as the checks in validation.py or looser, never stricter.
EXAMPLE_DIGEST = "b4c9a289323b21a01c3e940f150eb9b8c542587f1abfd8f0e1cc1ffc5e475514"
IdType = Literal["email", "phone"]
Digest = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^([0-9A-Fa-f]{64}|[A-Za-z0-9+/]{43}=)$",
        description="SHA-256 of the normalised identifier (the kit: `hub hash`), as 64 hex or "
        "44 base64 characters. Never the raw email or phone number.",
        examples=[EXAMPLE_DIGEST],
    ),
]
CustomerRef = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=200,
        pattern=r"\S",
        description="The brand's own pseudonymous id for the person (not an email or phone).",
        examples=["cust-000123"],
    ),
]
Purpose = Literal["analytics", "joint_offers", "rewards_sharing"]
AttributeName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")]
AttributeValue = Annotated[str, msgspec.Meta(max_length=100)] | int | float


class IdentifierRecordIn(msgspec.Struct, forbid_unknown_fields=True):
    """One hashed identifier with its owner's consents and segment attributes."""

    id_type: IdType
    id_hash: Digest
    customer_ref: CustomerRef
    consents: list[Purpose] = []
    attributes: (
        Annotated[
            dict[AttributeName, AttributeValue],
            msgspec.Meta(max_length=20, examples=[{"tier": "gold", "city": "Lisbon"}]),
        ]
        | None
    ) = None


class IdentifierRecordsBody(msgspec.Struct, forbid_unknown_fields=True):
    """Up to 10,000 records, stored all or none (any bad record: 422 listing every one)."""

    records: Annotated[
        list[IdentifierRecordIn],
        msgspec.Meta(
            max_length=MAX_SYNC_RECORDS,
            examples=[
                [
                    {
                        "id_type": "email",
                        "id_hash": EXAMPLE_DIGEST,
                        "customer_ref": "cust-000123",
                        "consents": ["analytics", "joint_offers"],
                        "attributes": {"tier": "gold", "city": "Lisbon"},
                    }
                ]
            ],
        ),
    ]


class ConsentUpdateIn(msgspec.Struct, forbid_unknown_fields=True):
    """A person's consents, replacing those of all their records."""

    customer_ref: CustomerRef
    consents: Annotated[list[Purpose], msgspec.Meta(examples=[["analytics"]])]


class ConsentUpdatesBody(msgspec.Struct, forbid_unknown_fields=True):
    updates: Annotated[list[ConsentUpdateIn], msgspec.Meta(max_length=MAX_SYNC_RECORDS)]


class EraseIdentifiersBody(msgspec.Struct, forbid_unknown_fields=True):
    """Either customer_refs (erase people: every record of each) or id_hashes (erase single
    records by their digests), not both."""

    customer_refs: (
        Annotated[
            list[CustomerRef],
            msgspec.Meta(max_length=MAX_SYNC_RECORDS, examples=[["cust-000123"]]),
        ]
        | None
    ) = None
    id_hashes: Annotated[list[Digest], msgspec.Meta(max_length=MAX_SYNC_RECORDS)] | None = None


def _exactly_one_of(first: str, second: str) -> dict[str, Any]:
    def only(name: str, other: str) -> dict[str, Any]:
        return {
            "required": [name],
            "properties": {name: {"type": "array"}, other: {"type": "null"}},
        }

    return {"oneOf": [only(first, second), only(second, first)]}


EraseBody = Annotated[
    EraseIdentifiersBody,
    msgspec.Meta(extra_json_schema=_exactly_one_of("customer_refs", "id_hashes")),
]


class RecordsIn(msgspec.Struct, forbid_unknown_fields=True):
    # Each record is checked by hand (validation.check_records) so that every bad record is
    # reported, not only the first.
    records: list[Any]


class UploadOut(msgspec.Struct):
    accepted: int
    created: int
    # Known records that changed (customer_ref, consents or attributes), and those sent
    # again exactly as they were: a repeated upload is all `unchanged`.
    updated: int
    unchanged: int


class ConsentsIn(msgspec.Struct, forbid_unknown_fields=True):
    updates: list[Any]


class ConsentsOut(msgspec.Struct):
    people: int
    records: int
    unknown_customer_refs: list[str]


class EraseIn(msgspec.Struct, forbid_unknown_fields=True):
    customer_refs: list[Any] | None = None
    id_hashes: list[Any] | None = None


class EraseOut(msgspec.Struct):
    records_removed: int
    people: int


class CountsOut(msgspec.Struct):
    records: int
    people: int
    version: int

"""Wire shapes of the identifier endpoints (DESIGN.md "Wire shapes")."""

from __future__ import annotations

from typing import Any

import msgspec

MAX_SYNC_RECORDS = 10_000
MAX_SYNC_BODY_BYTES = 16 * 1024 * 1024


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

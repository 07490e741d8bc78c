"""Wire shapes of ``/v1/identifiers/uploads`` (DESIGN.md "Wire shapes")."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import msgspec


class UploadOut(msgspec.Struct):
    id: UUID
    status: str
    # While processing: "staging" (reading and checking rows), "applying" (writing a new
    # generation of the records, invisible until it is complete), then "tidying" (the new
    # records are current; the replaced ones are deleted and consent events published).
    phase: str | None
    mode: str
    format: str
    gzip: bool
    bytes: int
    rows_read: int
    # Accepted rows the apply has written so far (slice by slice): progress while "applying".
    applied: int
    accepted: int
    refused: int
    created: int
    # Accepted rows that met a record already there, whether or not it changed (a file sent
    # again is all `matched`): what the bulk apply counts. POST /v1/identifiers tells
    # `updated` from `unchanged`.
    matched: int
    removed: int
    # Accepted rows not applied: their person or identifier was erased after the upload.
    skipped: int
    # Lines that held no record (blank lines): not rows, and not applied.
    blank_lines: int
    error: str | None
    notice: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class UploadErrorOut(msgspec.Struct):
    row: int
    field: str
    reason: str

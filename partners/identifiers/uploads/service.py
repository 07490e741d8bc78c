"""Receiving bulk uploads: the body streamed to the spool, the upload row, reads of both.

Every read is scoped by the caller's partner: another partner's upload is "not found".
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import uuid_utils
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.core import audit
from hub.core.audit import Actor
from hub.core.errors import Conflict, NotFound
from hub.core.pagination import Page, paginate, parse_seq
from partners.identifiers.uploads.models import (
    PENDING,
    PROCESSING,
    IdentifierUpload,
    UploadError,
)
from partners.identifiers.uploads.schemas import UploadErrorOut, UploadOut
from partners.identifiers.uploads.spool import SpooledBody, spool_path


def _out(upload: IdentifierUpload) -> UploadOut:
    return UploadOut(
        id=upload.id,
        status=upload.status,
        phase=upload.phase,
        mode=upload.mode,
        format=upload.format,
        gzip=upload.gzip,
        bytes=upload.bytes,
        rows_read=upload.rows_read,
        applied=upload.applied,
        accepted=upload.accepted,
        refused=upload.refused,
        created=upload.created,
        matched=upload.updated,
        removed=upload.removed,
        skipped=upload.skipped,
        blank_lines=upload.blank_lines,
        error=upload.error,
        notice=upload.notice,
        created_at=upload.created_at,
        started_at=upload.started_at,
        finished_at=upload.finished_at,
    )


class UploadService:
    def __init__(self, session: AsyncSession, spool_dir: Path) -> None:
        self.session = session
        self.spool_dir = spool_dir

    async def spool_in_use(self, partner_id: UUID) -> int:
        """Bytes of the partner's uploads still waiting on disk."""
        used = await self.session.scalar(
            select(func.coalesce(func.sum(IdentifierUpload.bytes), 0)).where(
                IdentifierUpload.partner_id == partner_id,
                IdentifierUpload.status.in_((PENDING, PROCESSING)),
            )
        )
        return int(used or 0)

    async def by_idempotency_key(
        self, client_id: str, key: str, body_sha256: str
    ) -> UploadOut | None:
        """The upload an earlier request with this key made, if the body is the same."""
        upload = await self.session.scalar(
            select(IdentifierUpload).where(
                IdentifierUpload.client_id == client_id, IdentifierUpload.idempotency_key == key
            )
        )
        if upload is None:
            return None
        if upload.body_sha256 != body_sha256:
            raise Conflict(
                "This Idempotency-Key was used for an upload with a different body.",
                fix="Use a new key for a new upload; reuse a key only to retry the same one.",
            )
        return _out(upload)

    async def create(
        self,
        *,
        partner_id: UUID,
        client_id: str,
        mode: str,
        fmt: str,
        body: SpooledBody,
        compressed: bool,
        idempotency_key: str | None,
        actor: Actor,
        sent_at: datetime,
    ) -> UploadOut:
        upload = IdentifierUpload(
            id=UUID(bytes=uuid_utils.uuid7().bytes),  # time-ordered: lists page newest first
            partner_id=partner_id,
            client_id=client_id,
            mode=mode,
            format=fmt,
            gzip=compressed,
            status=PENDING,
            bytes=body.size,
            body_sha256=body.sha256,
            idempotency_key=idempotency_key,
            rows_read=0,
            accepted=0,
            refused=0,
            created=0,
            updated=0,
            removed=0,
            skipped=0,
            blank_lines=body.blank_lines,
            attempts=0,
            created_at=datetime.now(UTC),
            sent_at=sent_at,
        )
        self.session.add(upload)
        await self.session.flush()
        await audit.append(
            self.session,
            actor.event(
                "identifiers.upload_received",
                "identifier_upload",
                str(upload.id),
                mode=mode,
                format=fmt,
                gzip=compressed,
                bytes=body.size,
            ),
        )
        # The body takes its final name only once the row exists; the request's commit
        # follows. A failed commit leaves a spool file with no row, which is removed below.
        body.keep_as(spool_path(self.spool_dir, upload.id))
        return _out(upload)

    async def get(self, partner_id: UUID, upload_id: UUID) -> UploadOut:
        return _out(await self._own(partner_id, upload_id))

    async def _own(self, partner_id: UUID, upload_id: UUID) -> IdentifierUpload:
        upload = await self.session.scalar(
            select(IdentifierUpload).where(
                IdentifierUpload.id == upload_id, IdentifierUpload.partner_id == partner_id
            )
        )
        if upload is None:
            raise NotFound(f"No upload {upload_id} of yours.")
        return upload

    async def list(self, partner_id: UUID, *, cursor: str | None, limit: int) -> Page[UploadOut]:
        return await paginate(
            self.session,
            select(IdentifierUpload).where(IdentifierUpload.partner_id == partner_id),
            IdentifierUpload.id,
            cursor=cursor,
            limit=limit,
            to_item=_out,
            descending=True,
        )

    async def errors(
        self, partner_id: UUID, upload_id: UUID, *, cursor: str | None, limit: int
    ) -> Page[UploadErrorOut]:
        await self._own(partner_id, upload_id)

        def item(error: Any) -> UploadErrorOut:
            return UploadErrorOut(row=error.row, field=error.field, reason=error.reason)

        return await paginate(
            self.session,
            select(UploadError).where(UploadError.upload_id == upload_id),
            UploadError.id,
            cursor=cursor,
            limit=limit,
            to_item=item,
            parse_key=parse_seq,
        )

"""``/v1/identifiers/uploads``: bulk NDJSON or CSV uploads (scope ``identifiers:write``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from litestar import Controller, Request, Response, get, post
from litestar.background_tasks import BackgroundTask
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, QueryParameter
from sqlalchemy.ext.asyncio import AsyncSession

from hub.core.asgi import header
from hub.core.audit import Actor
from hub.core.auth import Principal, requires_partner, requires_scope
from hub.core.content_type import CONTENT_TYPES_OPT
from hub.core.errors import (
    BadRequest,
    ClientClosedRequest,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from hub.core.idempotency import HANDLED_OPT, KEY_PATTERN
from hub.core.pagination import CursorParameter, LimitParameter, Page
from partners.identifiers.uploads.measure import BlankLineCounter, InflateLimits
from partners.identifiers.uploads.models import CSV, NDJSON
from partners.identifiers.uploads.schemas import UploadErrorOut, UploadOut
from partners.identifiers.uploads.service import UploadService
from partners.identifiers.uploads.spool import spool

WRITE_SCOPE = "identifiers:write"
MEDIA_TYPES = {"application/x-ndjson": NDJSON, "text/csv": CSV}


def provide_upload_service(
    db_session: NamedDependency[AsyncSession], state: State
) -> UploadService:
    return UploadService(db_session, state.settings.spool_dir)


async def body_chunks(request: Request[Any, Any, Any]) -> AsyncIterator[bytes]:
    """The request body as it arrives. Unlike ``request.stream()`` (a 500 when the client
    goes away), a connection closed before the end is the client's 4xx."""
    while True:
        event = await request.receive()
        if event["type"] == "http.disconnect":
            raise ClientClosedRequest("The connection closed before the whole body arrived.")
        chunk = event.get("body", b"")
        if isinstance(chunk, bytes) and chunk:
            yield chunk
        if not event.get("more_body", False):
            return


def _body_format(request: Request[Any, Any, Any]) -> tuple[str, bool]:
    media_type = (header(request.scope, b"content-type") or "").split(";")[0].strip().lower()
    encoding = (header(request.scope, b"content-encoding") or "identity").strip().lower()
    if encoding not in ("gzip", "identity"):
        raise UnsupportedMediaType(
            f"This endpoint reads bodies with Content-Encoding gzip or none, not {encoding[:40]}.",
            fix="Compress the file with gzip and send 'Content-Encoding: gzip', or send it plain.",
        )
    fmt = MEDIA_TYPES.get(media_type)
    if fmt is None:  # the content-type check skips bodies it sees as empty: not this one
        sent = media_type[:60] or "an untyped body"
        raise UnsupportedMediaType(
            f"This endpoint reads {', '.join(MEDIA_TYPES)}, not {sent}.",
            fix="Send NDJSON as 'Content-Type: application/x-ndjson' or CSV as "
            "'Content-Type: text/csv'.",
        )
    return fmt, encoding == "gzip"


class UploadController(Controller):
    path = "/v1/identifiers/uploads"
    tags = ["identifiers"]
    guards = [requires_partner, requires_scope(WRITE_SCOPE)]
    dependencies = {"uploads": Provide(provide_upload_service, sync_to_thread=False)}

    @post(
        "/",
        status_code=202,
        request_max_body_size=None,  # limited per partner while streaming, below
        opt={CONTENT_TYPES_OPT: tuple(MEDIA_TYPES), HANDLED_OPT: True},
        summary="Upload NDJSON or CSV records (optionally gzip); processed in the background",
        description=(
            "The body is streamed to disk and answered at once with the upload's id; follow "
            "its progress at GET /v1/identifiers/uploads/{id}. mode=upsert creates and updates "
            "records; mode=replace also removes the caller's records of the id types present "
            "that the file no longer holds (a person whose row was refused keeps theirs). An "
            "upload is applied whole or not at all. Idempotency-Key: the same key with the "
            "same body returns the first upload."
        ),
    )
    async def create(
        self,
        request: Request[Any, Any, Any],
        state: State,
        uploads: NamedDependency[UploadService],
        principal: NamedDependency[Principal],
        actor: NamedDependency[Actor],
        mode: Annotated[
            Literal["upsert", "replace"],
            QueryParameter(description="upsert (default) or replace"),
        ] = "upsert",
    ) -> Response[UploadOut]:
        fmt, compressed = _body_format(request)
        key = header(request.scope, b"idempotency-key")
        if key is not None and not KEY_PATTERN.match(key):
            raise BadRequest(
                "The Idempotency-Key header must be 1 to 200 printable ASCII characters.",
                fix="Send a UUID as the Idempotency-Key.",
            )
        settings = state.settings.uploads
        partner_id = principal.partner
        async with state.session_maker() as session:  # short: the request's own waits
            in_use = await UploadService(session, uploads.spool_dir).spool_in_use(partner_id)
        room = settings.spool_bytes_per_partner - in_use
        limit = min(settings.max_bytes, room)
        reason = (
            f"An upload body is at most {settings.max_bytes:,} bytes."
            if limit == settings.max_bytes
            else f"Your uploads waiting to be processed hold {in_use:,} bytes of your "
            f"{settings.spool_bytes_per_partner:,}-byte spool space; this body does not fit."
        )
        announced = header(request.scope, b"content-length")
        if announced is not None and announced.isdigit() and int(announced) > limit:
            raise PayloadTooLarge(reason, fix="Split the file, or wait for earlier uploads.")
        sent_at = datetime.now(UTC)  # erasures from now on win over this upload
        body = await spool(
            body_chunks(request),
            uploads.spool_dir,
            limit=limit,
            gzip=(
                InflateLimits(settings.max_inflated_bytes, settings.max_compression_ratio)
                if compressed
                else None
            ),
            limit_reason=reason,
            receive_seconds=settings.erasure_hold_minutes * 60,
            lines=BlankLineCounter(fmt),
        )
        try:
            if key is not None:
                earlier = await uploads.by_idempotency_key(principal.client_id, key, body.sha256)
                if earlier is not None:
                    body.discard()
                    return Response(earlier, headers={"Idempotent-Replayed": "true"})
            created = await uploads.create(
                partner_id=partner_id,
                client_id=principal.client_id,
                mode=mode,
                fmt=fmt,
                body=body,
                compressed=compressed,
                idempotency_key=key,
                actor=actor,
                sent_at=sent_at,
            )
        except BaseException:
            body.discard()
            raise
        processor = getattr(state, "upload_processor", None)
        wake = BackgroundTask(processor.wake.set) if processor is not None else None
        return Response(
            created,
            headers={"Location": f"/v1/identifiers/uploads/{created.id}"},
            background=wake,
        )

    @get("/", summary="The caller's uploads, newest first")
    async def list_uploads(
        self,
        uploads: NamedDependency[UploadService],
        principal: NamedDependency[Principal],
        cursor: str | None = CursorParameter,
        limit: int = LimitParameter,
    ) -> Page[UploadOut]:
        return await uploads.list(principal.partner, cursor=cursor, limit=limit)

    @get("/{upload_id:uuid}", summary="An upload's status and counts")
    async def read(
        self,
        upload_id: FromPath[UUID],
        uploads: NamedDependency[UploadService],
        principal: NamedDependency[Principal],
    ) -> UploadOut:
        return await uploads.get(principal.partner, upload_id)

    @get("/{upload_id:uuid}/errors", summary="An upload's refused rows: row, field and reason")
    async def errors(
        self,
        upload_id: FromPath[UUID],
        uploads: NamedDependency[UploadService],
        principal: NamedDependency[Principal],
        cursor: str | None = CursorParameter,
        limit: int = LimitParameter,
    ) -> Page[UploadErrorOut]:
        return await uploads.errors(principal.partner, upload_id, cursor=cursor, limit=limit)

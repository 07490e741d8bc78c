"""Idempotency-Key for POST requests (DESIGN.md "Engineering decisions").

The same key with the same request returns the first response (marked ``Idempotent-Replayed``);
the same key with a different request is a 409. A key is reserved before the handler runs, so
two concurrent attempts never both apply: the second is told to retry. Only successful (2xx)
responses are kept, for 24 hours; after an error the client may retry with the same key. Fields
shown only once (a client secret) are not kept: a replay carries them as null and names them in
``replayed_without``.

If a process dies after the handler committed but before the response was stored, the key stays
reserved: a retry is answered 409 "outcome unknown" rather than risking a second application.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import BigInteger, Integer, LargeBinary, String, UniqueConstraint, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from hub.core.asgi import header
from hub.core.db import Base, writing
from hub.core.errors import PROBLEM_JSON

HEADER = b"idempotency-key"
# Route option naming response fields that must not be kept for replay.
REDACT_OPT = "idempotency_redact"
# Route option: the handler applies Idempotency-Key itself (a streamed body too large to hold).
HANDLED_OPT = "idempotency_by_handler"
KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,200}$")
RETENTION = timedelta(hours=24)
MAX_BODY = 2_000_000


class IdempotencyRecord(Base):
    __tablename__ = "idempotency_keys"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    client_id: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(200))
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    content_type: Mapped[str | None] = mapped_column(String(100), nullable=True)
    body: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTimeUTC(timezone=True), default=lambda: datetime.now(UTC), index=True
    )

    __table_args__ = (UniqueConstraint("client_id", "key", name="uq_idempotency_client_key"),)


def _problem(status: int, slug: str, detail: str, fix: str) -> tuple[int, bytes, list[Any]]:
    body = msgspec.json.encode(
        {
            "type": f"urn:hub:problem:{slug}",
            "title": "Idempotency conflict" if status == 409 else "Bad Idempotency-Key",
            "status": status,
            "detail": detail,
            "fix": fix,
        }
    )
    return status, body, [(b"content-type", PROBLEM_JSON.encode())]


def _with_context(scope: Any, answer: tuple[int, bytes, list[Any]]) -> tuple[int, bytes, list[Any]]:
    """Add the instance and request id to a problem answered here, as problem_response does."""
    status, body, headers = answer
    if status < 400:
        return answer
    problem = msgspec.json.decode(body)
    problem["instance"] = scope["path"]
    problem["request_id"] = scope.get("state", {}).get("request_id")
    return status, msgspec.json.encode(problem), headers


class IdempotencyMiddleware:
    """ASGI middleware (inside authentication, so the caller's client id is known)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        key = header(scope, HEADER)
        client_id = scope.get("state", {}).get("client_id")
        route_opt = getattr(scope.get("route_handler"), "opt", {})
        if key is None or not client_id or route_opt.get(HANDLED_OPT):
            await self.app(scope, receive, send)
            return
        if not KEY_PATTERN.match(key):
            await _send(
                send,
                *_problem(
                    400,
                    "bad-idempotency-key",
                    "The Idempotency-Key header must be 1 to 200 printable ASCII characters.",
                    "Send a UUID as the Idempotency-Key.",
                ),
            )
            return
        body, more = await _read_body(receive)
        if more:  # too large to fingerprint: let the normal size limit answer
            await self.app(scope, _replay(body, more, receive), send)
            return
        digest = hashlib.sha256(
            b"\n".join(
                [
                    scope["method"].encode(),
                    scope["path"].encode(),
                    scope.get("query_string", b""),
                    body,
                ]
            )
        ).hexdigest()
        sessions: async_sessionmaker[AsyncSession] = scope["app"].state.session_maker
        outcome = await _reserve(sessions, client_id, key, digest)
        if outcome is not None:
            await _send(send, *_with_context(scope, outcome))
            return
        captured: dict[str, Any] = {
            "status": 500,
            "headers": [],
            "body": b"",
            "settled": False,
            # Fields a route shows once (a client secret) are never stored for replay.
            "redact": tuple(getattr(scope.get("route_handler"), "opt", {}).get(REDACT_OPT, ())),
        }

        async def capture(message: Any) -> None:
            if message["type"] == "http.response.start":
                captured["status"] = message["status"]
                captured["headers"] = list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                captured["body"] += message.get("body", b"")
                if not message.get("more_body", False):
                    # Settle before the client sees the end of the response, so an immediate
                    # retry finds the stored answer rather than the reservation.
                    captured["settled"] = True
                    await _settle(sessions, client_id, key, captured)
            await send(message)

        try:
            await self.app(scope, _replay(body, False, receive), capture)
        finally:
            if not captured["settled"]:
                await _settle(sessions, client_id, key, captured)


async def _reserve(
    sessions: async_sessionmaker[AsyncSession], client_id: str, key: str, digest: str
) -> tuple[int, bytes, list[Any]] | None:
    """Reserve the key, or return the response to send instead of running the handler."""
    with writing():
        async with sessions() as session:
            await session.execute(
                delete(IdempotencyRecord).where(
                    IdempotencyRecord.created_at < datetime.now(UTC) - RETENTION
                )
            )
            record = await session.scalar(
                select(IdempotencyRecord).where(
                    IdempotencyRecord.client_id == client_id, IdempotencyRecord.key == key
                )
            )
            if record is None:
                session.add(IdempotencyRecord(client_id=client_id, key=key, request_hash=digest))
                try:
                    await session.commit()
                except IntegrityError:
                    return _problem(
                        409,
                        "idempotency-in-progress",
                        "A request with this Idempotency-Key is being processed.",
                        "Retry in a moment with the same key.",
                    )
                return None
            await session.commit()
    if record.request_hash != digest:
        return _problem(
            409,
            "idempotency-key-reused",
            "This Idempotency-Key was used for a different request.",
            "Use a new key for a new request; reuse a key only to retry the same one.",
        )
    if record.status_code is None:
        return _problem(
            409,
            "idempotency-in-progress",
            "A request with this Idempotency-Key is in progress, or its outcome is "
            "unknown (the hub stopped while answering it).",
            "Retry in a moment; if this persists, read the resource's state before "
            "sending the request again with a new key.",
        )
    headers = [
        (b"content-type", (record.content_type or "application/json").encode()),
        (b"idempotent-replayed", b"true"),
    ]
    return record.status_code, record.body or b"", headers


async def _settle(
    sessions: async_sessionmaker[AsyncSession], client_id: str, key: str, captured: dict[str, Any]
) -> None:
    with writing():
        async with sessions() as session:
            record = await session.scalar(
                select(IdempotencyRecord).where(
                    IdempotencyRecord.client_id == client_id, IdempotencyRecord.key == key
                )
            )
            if record is not None:
                if 200 <= captured["status"] < 300:
                    record.status_code = captured["status"]
                    record.body = _redact(captured["body"], captured["redact"])
                    record.content_type = _content_type(captured["headers"])
                else:
                    await session.delete(record)  # nothing applied: the key may be used again
            await session.commit()


def _redact(body: bytes, fields: tuple[str, ...]) -> bytes:
    if not fields:
        return body
    try:
        document = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return b""
    if isinstance(document, dict):
        for field in fields:
            if field in document:
                document[field] = None
        document["replayed_without"] = list(fields)
    return msgspec.json.encode(document)


def _content_type(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name.lower() == b"content-type":
            return value.decode("latin-1")[:100]
    return "application/json"


async def _read_body(receive: Any) -> tuple[bytes, bool]:
    chunks = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), False
        if size > MAX_BODY:
            return b"".join(chunks), True


def _replay(body: bytes, more: bool, receive: Any) -> Any:
    sent = False

    async def replay() -> Any:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": more}
        return await receive()

    return replay


async def _send(send: Any, status: int, body: bytes, headers: list[Any]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

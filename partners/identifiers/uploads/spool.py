"""Where upload bodies wait on disk: streamed in by the request, read by the processor, and
removed when their upload is finished (or swept when a process died before removing them)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
import uuid
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from uuid import UUID

from sqlalchemy import Engine, select

from hub.core.errors import BadRequest, PayloadTooLarge, RequestTimeout
from partners.identifiers.uploads.models import PENDING, PROCESSING
from partners.identifiers.uploads.staging import STAGING, UPLOADS, clear_staging

STALE_INCOMING_SECONDS = 24 * 3600  # a body still arriving after a day was abandoned
ORPHAN_BODY_SECONDS = 3600


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")


def _is_uuid(text: str) -> bool:
    try:
        UUID(text)
    except ValueError:
        return False
    return True


def spool_path(spool_dir: Path, upload_id: UUID) -> Path:
    return spool_dir / f"{upload_id}.body"


GZIP_MAGIC = b"\x1f\x8b"
GZIP_WBITS = 31  # zlib's "gzip container" mode
INFLATE_STEP = 1024 * 1024  # the most a single inflate call produces (memory stays flat)
RATIO_CHECKED_FROM = 8 * 1024 * 1024  # a small body may compress as well as it likes


@dataclass(frozen=True)
class InflateLimits:
    """How far a gzip body may inflate: in bytes, and as a multiple of its compressed size."""

    max_bytes: int
    max_ratio: int


class InflatedSizeGauge:
    """Inflates a gzip body as it arrives, only to measure it: the output is thrown away.

    A gzip bomb (a few hundred KB of gzip that inflate to gigabytes of blank lines) would
    otherwise be accepted, spooled small and then keep the upload processor busy for minutes;
    here it is refused with 413 once its first megabytes came out. Several gzip members (as
    ``cat a.gz b.gz`` makes) and zero padding after them are read as the processor reads them.
    """

    def __init__(self, limits: InflateLimits) -> None:
        self.limits = limits
        self.inflated = 0
        self._inflater: Any = None  # None between members

    def feed(self, chunk: bytes, compressed_so_far: int) -> None:
        data = chunk
        while data:
            if self._inflater is None:
                data = data.lstrip(b"\x00")
                if not data:
                    return
                self._inflater = zlib.decompressobj(GZIP_WBITS)
            try:
                out = self._inflater.decompress(data, INFLATE_STEP)
            except zlib.error as exc:
                raise BadRequest(
                    f"The body is declared 'Content-Encoding: gzip' but is not a valid gzip "
                    f"stream ({exc}).",
                    fix="Compress the file with gzip, or send it without that header.",
                ) from None
            self.inflated += len(out)
            self._check(compressed_so_far)
            if self._inflater.eof:
                data = self._inflater.unused_data
                self._inflater = None
            else:
                data = self._inflater.unconsumed_tail

    def finish(self) -> None:
        """The body has all arrived: it must not end inside a gzip member."""
        if self._inflater is not None:
            raise BadRequest(
                "The gzip body ends before its end marker (the file was cut short).",
                fix="Send the whole file again.",
            )

    def _check(self, compressed_so_far: int) -> None:
        limits = self.limits
        if self.inflated > limits.max_bytes:
            raise PayloadTooLarge(
                f"The gzip body inflates to more than {limits.max_bytes:,} bytes.",
                fix="Split the file into smaller uploads.",
            )
        if (
            self.inflated > RATIO_CHECKED_FROM
            and self.inflated > limits.max_ratio * compressed_so_far
        ):
            raise PayloadTooLarge(
                f"The gzip body inflates more than {limits.max_ratio}-fold "
                f"({compressed_so_far:,} bytes gave {self.inflated:,} bytes so far): that is a "
                "compression bomb, not a file of records.",
                fix="Send the records themselves (blank or repeated lines are not records), "
                "or the file uncompressed.",
            )


class SpooledBody:
    """An upload body written to a temporary file beside its final place."""

    def __init__(self, path: Path, size: int, sha256: str) -> None:
        self.path = path
        self.size = size
        self.sha256 = sha256

    def keep_as(self, final: Path) -> None:
        self.path.replace(final)

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


async def spool(
    chunks: AsyncIterator[bytes],
    spool_dir: Path,
    *,
    limit: int,
    gzip: InflateLimits | None,
    limit_reason: str,
    receive_seconds: float,
) -> SpooledBody:
    """Write the body to disk as it arrives (never whole in memory), up to ``limit`` bytes,
    within ``receive_seconds`` (a body arriving longer than that could miss an erasure the hub
    has stopped remembering: see IdentifierErasure). A gzip body (``gzip`` gives its limits)
    is also inflated on the way, to refuse one that inflates too far
    (:class:`InflatedSizeGauge`)."""
    path = spool_dir / f".incoming-{uuid.uuid4()}"
    digest = hashlib.sha256()
    received = [0]
    try:
        with path.open("wb") as out:
            async with asyncio.timeout(receive_seconds):
                await _receive(chunks, out, digest, received, limit, gzip, limit_reason)
    except TimeoutError:
        path.unlink(missing_ok=True)
        raise RequestTimeout(
            f"The body did not arrive within {receive_seconds / 60:g} minutes "
            f"({received[0]:,} bytes so far); nothing was kept.",
            fix="Send the file again over a faster link, or split it into smaller uploads.",
        ) from None
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    size = received[0]
    if size == 0:
        path.unlink(missing_ok=True)
        raise BadRequest(
            "The upload body is empty.",
            fix="Send NDJSON (one record a line) or CSV with a header row.",
        )
    return SpooledBody(path, size, digest.hexdigest())


async def _receive(
    chunks: AsyncIterator[bytes],
    out: IO[bytes],
    digest: Any,
    received: list[int],
    limit: int,
    gzip: InflateLimits | None,
    limit_reason: str,
) -> None:
    """Copy the chunks to ``out``, counting bytes in ``received[0]`` as they arrive."""
    size = 0
    gauge = InflatedSizeGauge(gzip) if gzip is not None else None
    async for chunk in chunks:
        if not chunk:
            continue
        if size == 0 and gzip and not chunk.startswith(GZIP_MAGIC[: len(chunk)]):
            raise BadRequest(
                "The body is declared 'Content-Encoding: gzip' but is not gzip.",
                fix="Compress the file with gzip, or send it without that header.",
            )
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(limit_reason, fix="Split the file into smaller uploads.")
        if gauge is not None:
            gauge.feed(chunk, size)
        digest.update(chunk)
        out.write(chunk)
        received[0] = size
    if gauge is not None:
        gauge.finish()


def sweep(engine: Engine, spool_dir: Path) -> None:
    """Remove what finished uploads left behind when their process died between the
    commit and the clean-up: staging rows and spooled bodies (and stale partial bodies)."""
    with engine.connect() as connection:
        staged = {
            key.split(".", 1)[0]
            for (key,) in connection.execute(select(STAGING.c.stage_key).distinct())
        }
        bodies = {path.name.removesuffix(".body"): path for path in spool_dir.glob("*.body")}
        names = [name for name in staged | set(bodies) if _is_uuid(name)]
        status = {
            str(upload_id): state
            for upload_id, state in connection.execute(
                select(UPLOADS.c.id, UPLOADS.c.status).where(
                    UPLOADS.c.id.in_([UUID(n) for n in names])
                )
            )
        }
    # A body with no upload row yet may belong to a request about to commit it: only an
    # old one is an orphan (its request failed after naming the file).
    orphaned_before = time.time() - ORPHAN_BODY_SECONDS
    for name in names:
        if status.get(name) in (PENDING, PROCESSING):
            continue
        if name in staged:
            with engine.begin() as connection:
                clear_staging(connection, UUID(name), errors=False)
        body = bodies.get(name)
        if body is not None and (name in status or _mtime(body) < orphaned_before):
            body.unlink(missing_ok=True)
    stale = time.time() - STALE_INCOMING_SECONDS
    for partial in spool_dir.glob(".incoming-*"):
        with contextlib.suppress(FileNotFoundError):
            if partial.stat().st_mtime < stale:
                partial.unlink()

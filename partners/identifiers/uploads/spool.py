"""Where upload bodies wait on disk: streamed in by the request, read by the processor, and
removed when their upload is finished (or swept when a process died before removing them).

Bodies are readable by the hub's user alone (0600). A body being received is held under an
exclusive lock (flock) by its process until it is kept or discarded, so when a hub starts it
removes the partial bodies whose process died (:func:`remove_abandoned_bodies`) and never one
that another live process is still receiving.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any
from uuid import UUID

from sqlalchemy import Engine, select

from hub.core.errors import BadRequest, PayloadTooLarge, RequestTimeout
from partners.identifiers.uploads.measure import BlankLineCounter, InflatedSizeGauge, InflateLimits
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


STARTING_BODY_SECONDS = 10  # a body this young may not be locked by its creator yet


def create_private_body(path: Path) -> IO[bytes]:
    """Create ``path`` empty with mode 0600 and return a handle holding its lock: the
    file belongs to this process until the handle is closed."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return os.fdopen(fd, "wb")


def remove_abandoned_bodies(spool_dir: Path) -> int:
    """At start: remove partial bodies left by a process that died while receiving them
    (no process holds their lock). Returns how many were removed."""
    removed = 0
    starting = time.time() - STARTING_BODY_SECONDS
    for partial in spool_dir.glob(".incoming-*"):
        if _mtime(partial) > starting:
            continue
        with contextlib.suppress(FileNotFoundError), partial.open("rb") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # still being received by a live process
            partial.unlink(missing_ok=True)
            removed += 1
    return removed


class SpooledBody:
    """An upload body written to a temporary file beside its final place."""

    def __init__(
        self,
        path: Path,
        size: int,
        sha256: str,
        lock: IO[bytes] | None = None,
        blank_lines: int = 0,
    ) -> None:
        self.path = path
        self.size = size
        self.sha256 = sha256
        self.lock = lock
        self.blank_lines = blank_lines

    def keep_as(self, final: Path) -> None:
        self.path.replace(final)
        self._release()

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)
        self._release()

    def _release(self) -> None:
        if self.lock is not None:
            self.lock.close()
            self.lock = None


async def spool(
    chunks: AsyncIterator[bytes],
    spool_dir: Path,
    *,
    limit: int,
    gzip: InflateLimits | None,
    limit_reason: str,
    receive_seconds: float,
    lines: BlankLineCounter | None = None,
) -> SpooledBody:
    """Write the body to disk as it arrives (never whole in memory), up to ``limit`` bytes,
    within ``receive_seconds`` (a body arriving longer than that could miss an erasure the hub
    has stopped remembering: see IdentifierErasure). A gzip body (``gzip`` gives its limits)
    is also inflated on the way, to refuse one that inflates too far
    (:class:`InflatedSizeGauge`)."""
    path = spool_dir / f".incoming-{uuid.uuid4()}"
    lock = create_private_body(path)
    digest = hashlib.sha256()
    received = [0]
    try:
        with path.open("wb") as out:
            async with asyncio.timeout(receive_seconds):
                await _receive(chunks, out, digest, received, limit, gzip, limit_reason, lines)
    except TimeoutError:
        path.unlink(missing_ok=True)
        lock.close()
        raise RequestTimeout(
            f"The body did not arrive within {receive_seconds / 60:g} minutes "
            f"({received[0]:,} bytes so far); nothing was kept.",
            fix="Send the file again over a faster link, or split it into smaller uploads.",
        ) from None
    except BaseException:
        path.unlink(missing_ok=True)
        lock.close()
        raise
    size = received[0]
    if size == 0:
        path.unlink(missing_ok=True)
        lock.close()
        raise BadRequest(
            "The upload body is empty.",
            fix="Send NDJSON (one record a line) or CSV with a header row.",
        )
    blank_lines = lines.finish() if lines is not None else 0
    return SpooledBody(path, size, digest.hexdigest(), lock, blank_lines)


async def _receive(
    chunks: AsyncIterator[bytes],
    out: IO[bytes],
    digest: Any,
    received: list[int],
    limit: int,
    gzip: InflateLimits | None,
    limit_reason: str,
    lines: BlankLineCounter | None,
) -> None:
    """Copy the chunks to ``out``, counting bytes in ``received[0]`` as they arrive (and
    blank lines in ``lines``, in the inflated text of a gzip body)."""
    size = 0
    gauge = InflatedSizeGauge(gzip, lines) if gzip is not None else None
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
        elif lines is not None:
            lines.feed(chunk)
        digest.update(chunk)
        out.write(chunk)
        received[0] = size
        # Chunks the server has buffered already come without a pause, and inflating,
        # counting and writing them back to back held the event loop (and every other request
        # of the process) for up to half a second (the soak's stall watch): let it go round.
        await asyncio.sleep(0)
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

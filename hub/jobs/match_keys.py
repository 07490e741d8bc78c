"""``match_key_rotation``: move stored rows to the newest match-key and data-key versions.

``hub admin keys add-match-key`` or ``add-data-key`` adds a version; this job does what
``hub admin keys rotate-match-key`` does, on a schedule: re-key identifier records and reward
members, re-seal their digests and the webhook secrets (``partners.identifiers.rotation``),
a batch per transaction committed with the job's cursor, so a run stopped anywhere resumes
where it stopped. Once a final sweep finds no row left under an older version, those versions
are retired in the keyring (under its lock, written atomically) and the run is audited.
"""

from __future__ import annotations

import asyncio

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from hub.core import audit
from hub.core.audit import SYSTEM, key_operation_event
from hub.core.db import writing
from hub.core.keyring import KeyringReadOnly
from hub.jobs.context import JobContext
from hub.jobs.signing_keys import BACKUP_REMINDER
from partners.identifiers.rotation import (
    Position,
    RotationReport,
    Targets,
    rotate,
    rotation_batch,
)

log = structlog.get_logger("hub.jobs")


def _counts(report: RotationReport, retired: int = 0) -> dict[str, int]:
    return {
        "rekeyed": report.rekeyed,
        "resealed": report.resealed,
        "remaining": report.remaining,
        "retired_versions": retired,
    }


async def match_key_rotation(ctx: JobContext) -> dict[str, int]:
    ring = ctx.keyring
    ring.reload_if_changed()  # the version may have been added by the CLI a moment ago
    if len(ring.live_match_versions()) < 2 and len(ring.live_data_versions()) < 2:
        return _counts(RotationReport(ring.match_version, ring.data_version))
    crypto = ctx.identifier_crypto
    targets = Targets.newest(crypto)
    report = RotationReport(targets.match_version, targets.data_version)
    batch_size = ctx.settings.jobs.key_rotation_batch
    position: Position | None = Position.from_cursor(ctx.cursor, targets)
    with writing():
        while position is not None:
            async with ctx.session_maker() as session:
                batch = await rotation_batch(session, crypto, targets, position, batch_size)
                report.add(batch)
                position = batch.next
                # The batch and the position after it commit together.
                cursor = (position or Position("done")).to_cursor(targets)
                await ctx.checkpoint(cursor, _counts(report), session=session)
        # Other processes pick up the keyring within their poll interval; give a write keyed
        # or sealed with an older version that long, then sweep again from the start.
        await asyncio.sleep(ctx.settings.oauth.revocation_poll_seconds + 1)
        again = await rotate(ctx.session_maker, crypto, batch_size=batch_size)
        report.rekeyed += again.rekeyed
        report.resealed += again.resealed
        report.remaining = again.remaining
        done = Position("done").to_cursor(targets)
        await ctx.checkpoint(done, _counts(report))
        retired = _retire(ctx, targets) if report.remaining == 0 else {"match": [], "data": []}
        async with ctx.session_maker() as session:
            await _audit(ctx, session, targets, report, retired)
            await session.commit()
    if retired["match"] or retired["data"]:
        log.warning(BACKUP_REMINDER, job=ctx.name, retired=retired)
    return _counts(report, len(retired["match"]) + len(retired["data"]))


def _retire(ctx: JobContext, targets: Targets) -> dict[str, list[int]]:
    """Retire the versions no row uses any more (in the keyring file, under its lock)."""
    ring = ctx.keyring
    retired: dict[str, list[int]] = {"match": [], "data": []}
    try:
        with ring.editing():
            retired["match"] = ring.retire_match_versions(below=targets.match_version)
            retired["data"] = ring.retire_data_versions(below=targets.data_version)
    except KeyringReadOnly as reason:
        log.warning("key versions not retired", job=ctx.name, reason=str(reason))
        return {"match": [], "data": []}
    return retired


async def _audit(
    ctx: JobContext,
    session: AsyncSession,
    targets: Targets,
    report: RotationReport,
    retired: dict[str, list[int]],
) -> None:
    """An entry when the run changed something: rows moved or versions retired."""
    if not (report.rekeyed or report.resealed or retired["match"] or retired["data"]):
        return
    await audit.append(
        session,
        key_operation_event(
            "rows_rotated",
            "match,data",
            actor=SYSTEM.name,
            job=ctx.name,
            run_id=ctx.run_id,
            match_version=targets.match_version,
            data_version=targets.data_version,
            rekeyed=report.rekeyed,
            resealed=report.resealed,
            remaining=report.remaining,
            retired_match_versions=retired["match"],
            retired_data_versions=retired["data"],
        ),
    )

"""``match_key_rotation``: re-key identifier records to the newest match-key version.

``hub admin keys add-match-key`` adds a version; this job does what ``hub admin keys
rotate-match-key`` does, on a schedule: re-key in batches (the query is the cursor, see
``partners.identifiers.rotation``), then retire the older versions once no record is left.
"""

from __future__ import annotations

import asyncio

import structlog

from hub.core.db import writing
from hub.jobs.context import JobContext
from partners.identifiers.rotation import rotate

log = structlog.get_logger("hub.jobs")
BATCH_SIZE = 5000


async def match_key_rotation(ctx: JobContext) -> dict[str, int]:
    ring = ctx.keyring
    ring.reload_if_changed()  # the version may have been added by the CLI a moment ago
    if len(ring.live_match_versions()) < 2:
        return {"rekeyed": 0, "remaining": 0, "retired_versions": 0}
    target = ring.match_version
    counts = {"rekeyed": 0, "remaining": 0, "retired_versions": 0}
    with writing():
        report = await rotate(ctx.session_maker, ctx.identifier_crypto, batch_size=BATCH_SIZE)
        counts["rekeyed"] = report.rekeyed
        await ctx.checkpoint({"target_version": target}, counts)
        if report.remaining == 0:
            # Other processes pick up the keyring within their poll interval; give an upload
            # keyed with an older version that long, then sweep again (as the CLI does).
            await asyncio.sleep(ctx.settings.oauth.revocation_poll_seconds + 1)
            again = await rotate(ctx.session_maker, ctx.identifier_crypto, batch_size=BATCH_SIZE)
            report.rekeyed += again.rekeyed
            report.remaining = again.remaining
    counts["rekeyed"] = report.rekeyed
    counts["remaining"] = report.remaining
    if report.remaining or ring.path is None:
        if ring.path is None:
            log.warning("match-key versions not retired: HUB_KEYRING is in use", job=ctx.name)
        return counts
    counts["retired_versions"] = len(ring.retire_match_versions(below=target))
    ring.save()
    return counts

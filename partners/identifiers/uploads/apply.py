"""Applying a staged upload to the partner's records: one transaction, set-based SQL.

Everything happens in the database, whatever the upload's size: consent events are computed
by joining the staging rows with the records they replace, ``replace`` removes the records of
the id types present that the upload no longer holds (except those of a person whose row was
refused), known records are updated and new ones inserted (``UPDATE … FROM``, ``INSERT …
SELECT``). The caller owns the transaction: an upload is applied whole or not at all.

Every statement is linear in the upload and the partner's records: a removal is one anti-join
(the staging index on SQLite, a hash join on PostgreSQL), and the people a refused row keeps
are one uncorrelated set. What this module does not do yet is apply in slices: on SQLite the
one transaction holds the write lock for the whole apply (32 s for a 1M-row upsert, 64 s for a
1M-row replace on a busy 2-core machine: bench/replace_upload.py), so other writers wait that
long, and past the 30 s busy timeout they fail (503). PostgreSQL's writers of other partners
do not wait. The design
that removes the wait (DESIGN.md "Hostile and heavy input": a new generation of the partner's
records written in slices, made visible by one small transaction, every reader going through
one "current records" query) is not built; the processor's shutdown interrupts the
transaction instead (it rolls back; the upload resumes from its spooled body).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import (
    ColumnElement,
    Text,
    and_,
    case,
    cast,
    delete,
    exists,
    func,
    literal,
    or_,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from hub.core import horizon
from hub.core.db import rowcount
from partners.identifiers.models import CONSENT_BITS
from partners.identifiers.service import EVENTS, RECORD_COLUMNS, RECORDS, IdentifierService
from partners.identifiers.uploads.erasures import erased_since
from partners.identifiers.uploads.models import REPLACE
from partners.identifiers.uploads.staging import STAGING

UNREADABLE_PERSON = (
    "Some refused rows name no readable customer_ref or identifier, so the hub cannot tell "
    "whose records they would have kept: this replace removed nothing (its records were "
    "still created and updated). Fix those rows and upload the snapshot again."
)


SQLITE_APPLY_CACHE = -256 * 1024  # KiB when negative: 256 MB
SQLITE_DEFAULT_CACHE = -2000


@contextlib.asynccontextmanager
async def apply_settings(session: AsyncSession) -> AsyncIterator[None]:
    """Room for a large apply in the session's connection, for as long as the block runs.

    PostgreSQL: memory for the joins and the per-person aggregation (``SET LOCAL``, so it ends
    with the transaction). SQLite: a page cache that holds the indexes being written (its
    default is 2 MB); it belongs to the connection, so it is put back before the connection
    returns to the pool, whatever happened.
    """
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("SET LOCAL work_mem = '256MB'"))
        yield
        return
    await session.execute(text(f"PRAGMA cache_size = {SQLITE_APPLY_CACHE}"))
    try:
        yield
    finally:
        await session.rollback()  # nothing left to roll back after a commit
        await session.execute(text(f"PRAGMA cache_size = {SQLITE_DEFAULT_CACHE}"))
        await session.commit()


@dataclass
class ApplyResult:
    created: int
    updated: int
    removed: int
    notice: str | None
    skipped: int = 0


def erased_notice(skipped: int) -> str:
    return (
        f"{skipped:,} accepted row(s) were not applied: the people or identifiers they name "
        "were erased after this upload was sent, and an erasure wins over older uploads. "
        "Upload them again if they should come back."
    )


def _bit_or(column: Any, dialect: str) -> ColumnElement[Any]:
    """OR of a small bit mask over a group (SQLite has no bit_or aggregate: one MAX per bit)."""
    if dialect == "postgresql":
        return func.bit_or(column)
    total: ColumnElement[Any] | None = None
    for bit in CONSENT_BITS.values():
        term = func.coalesce(func.max(column.bitwise_and(bit)), 0)
        total = term if total is None else total + term
    assert total is not None
    return total


class UploadApplier:
    def __init__(self, session: AsyncSession, service: IdentifierService) -> None:
        self.session = session
        self.service = service

    async def apply(
        self,
        stage_key: str,
        partner_id: UUID,
        mode: str,
        match_version: int,
        *,
        accepted_rows: int,
        sent_at: datetime,
        with_previous_keys: bool = False,
    ) -> ApplyResult:
        """Apply the upload staged under ``stage_key`` (run it inside :func:`apply_settings`).

        Rows naming a person or identifier erased since ``sent_at`` are left out (skipped)."""
        # The partner's change counter first: its row lock serialises this apply with every
        # other write to the partner's records (on SQLite the transaction holds the database).
        await self.service.touch(partner_id)
        s = STAGING.alias("s")
        accepted = and_(s.c.stage_key == stage_key, s.c.refused.is_(False))
        skipped = 0
        erased = await erased_since(self.session, s, partner_id, sent_at)
        if erased is not None:
            skipped = int(
                await self.session.scalar(
                    select(func.count()).select_from(s).where(accepted, erased)
                )
                or 0
            )
            accepted = and_(accepted, ~erased)
        if with_previous_keys:
            await self._rekey_previous_version(s, accepted, partner_id, match_version)
        r = RECORDS.alias("r")
        same_key = and_(
            r.c.partner_id == partner_id, r.c.id_type == s.c.id_type, r.c.match_key == s.c.match_key
        )
        # A partner's first upload meets no records: skip every join with them.
        has_records = bool(
            await self.session.scalar(select(exists().where(RECORDS.c.partner_id == partner_id)))
        )
        updated = 0
        if has_records:
            updated = int(
                await self.session.scalar(
                    select(func.count()).select_from(s.join(r, same_key)).where(accepted)
                )
                or 0
            )
        removal, notice = (
            await self._removal(stage_key, partner_id, with_previous_keys=with_previous_keys)
            if mode == REPLACE and has_records
            else (None, None)
        )
        await self._record_consent_changes(
            s, r, same_key, accepted, partner_id, removal, has_records=has_records
        )
        removed = 0
        if removal is not None:
            result = await self.session.execute(delete(RECORDS).where(removal))
            removed = rowcount(result)
        await self._upsert(s, same_key, accepted, partner_id, match_version, updated=updated)
        if skipped:
            notice = " ".join(filter(None, [notice, erased_notice(skipped)]))
        return ApplyResult(
            created=accepted_rows - skipped - updated,
            updated=updated,
            removed=removed,
            notice=notice,
            skipped=skipped,
        )

    async def _rekey_previous_version(
        self, s: Any, accepted: Any, partner_id: UUID, match_version: int
    ) -> None:
        """During a match-key rotation: move the records this upload names to the current
        version first, so the upsert meets them whatever version they are still under."""
        await self.session.execute(
            update(RECORDS)
            .where(
                RECORDS.c.partner_id == partner_id,
                RECORDS.c.key_version < match_version,
                RECORDS.c.id_type == s.c.id_type,
                RECORDS.c.match_key == s.c.prev_key,
                accepted,
            )
            .values(match_key=s.c.match_key, key_version=match_version)
        )

    async def _removal(
        self, stage_key: str, partner_id: UUID, *, with_previous_keys: bool
    ) -> tuple[ColumnElement[bool] | None, str | None]:
        """Which records a ``replace`` removes: those of the id types present that the upload
        does not hold, except records of people (or identifiers) whose row was refused."""
        t = STAGING.alias("t")
        in_upload = t.c.stage_key == stage_key
        faceless = await self.session.scalar(
            select(
                exists().where(
                    in_upload,
                    t.c.refused.is_(True),
                    t.c.customer_ref.is_(None),
                    t.c.match_key.is_(None),
                )
            )
        )
        if faceless:
            return None, UNREADABLE_PERSON
        types = select(t.c.id_type).where(in_upload, t.c.id_type.is_not(None)).distinct()

        # One equality per NOT EXISTS: the database turns each into an anti-join (a hash join
        # on PostgreSQL, the staging index (stage_key, id_type, match_key) on SQLite). (With
        # "match_key = … OR prev_key = …" in one, PostgreSQL hashed on id_type alone and
        # compared every record with every staged row: a 1M-row replace did not finish in
        # 14 minutes.)
        def held(key: Any) -> Any:
            return exists().where(
                in_upload, t.c.id_type == RECORDS.c.id_type, key == RECORDS.c.match_key
            )

        # The people whose row was refused: one uncorrelated set, computed once and looked
        # up by hash (SQLite builds a transient index on it). Correlated on customer_ref,
        # which staging does not index, SQLite scanned the upload's staged rows once per
        # removed record: 0.4 s each at 200k staged rows, 779 s for 2,000 removals.
        kept_people = select(t.c.customer_ref).where(
            in_upload, t.c.refused.is_(True), t.c.customer_ref.is_not(None)
        )
        conditions = [
            RECORDS.c.partner_id == partner_id,
            RECORDS.c.id_type.in_(types),
            ~held(t.c.match_key),
            RECORDS.c.customer_ref.not_in(kept_people),
        ]
        if with_previous_keys:  # mid-rotation: a record still under the previous version
            conditions.append(~held(t.c.prev_key))
        return and_(*conditions), None

    async def _record_consent_changes(
        self,
        s: Any,
        r: Any,
        same_key: Any,
        accepted: Any,
        partner_id: UUID,
        removal: ColumnElement[bool] | None,
        *,
        has_records: bool,
    ) -> None:
        """One consent event per person whose consents this upload grants or withdraws (as
        the synchronous upload records them): new records grant, changed ones grant and
        withdraw the difference, moved and removed ones withdraw from their old person."""
        if not has_records:  # every record is new: it grants its consents, nothing else
            parts: list[Any] = [
                select(
                    s.c.customer_ref.label("ref"), s.c.consents.label("g"), literal(0).label("w")
                ).where(accepted)
            ]
        else:
            new = r.c.match_key.is_(None)
            moved = r.c.customer_ref != s.c.customer_ref
            parts = [
                select(
                    s.c.customer_ref.label("ref"),
                    case(
                        (new, s.c.consents),
                        (moved, s.c.consents),
                        else_=s.c.consents.bitwise_and(r.c.consents.bitwise_not()),
                    ).label("g"),
                    case(
                        (new, 0),
                        (moved, 0),
                        else_=r.c.consents.bitwise_and(s.c.consents.bitwise_not()),
                    ).label("w"),
                )
                .select_from(s.outerjoin(r, same_key))
                .where(accepted),
                select(r.c.customer_ref, literal(0), r.c.consents)
                .select_from(s.join(r, same_key))
                .where(accepted, moved),
            ]
        if removal is not None:
            parts.append(
                select(RECORDS.c.customer_ref, literal(0), RECORDS.c.consents).where(removal)
            )
        changes = union_all(*parts).subquery("changes")
        dialect = self.session.get_bind().dialect.name
        per_person = (
            select(
                changes.c.ref,
                _bit_or(changes.c.g, dialect).label("g"),
                _bit_or(changes.c.w, dialect).label("w"),
            )
            .group_by(changes.c.ref)
            .subquery("per_person")
        )
        now = datetime.now(UTC)
        await horizon.inserting(self.session, horizon.CONSENT_EVENTS)
        await self.session.execute(
            EVENTS.insert().from_select(
                ["partner_id", "customer_ref", "granted", "withdrawn", "cause", "at"],
                select(
                    literal(partner_id, EVENTS.c.partner_id.type),
                    per_person.c.ref,
                    per_person.c.g.bitwise_and(per_person.c.w.bitwise_not()),
                    per_person.c.w,
                    literal("upload"),
                    literal(now, EVENTS.c.at.type),
                ).where(or_(per_person.c.g != 0, per_person.c.w != 0)),
            )
        )

    async def _upsert(
        self,
        s: Any,
        same_key: Any,
        accepted: Any,
        partner_id: UUID,
        match_version: int,
        *,
        updated: int,
    ) -> None:
        """Update the records the upload already knows, insert the others.

        No ``ON CONFLICT``: the partner's lock taken first (see ``touch``) keeps every other
        writer of these records out until the commit, so what is new now stays new.
        """
        now = datetime.now(UTC)
        known = and_(  # same_key, on the table itself: the UPDATE's target
            RECORDS.c.partner_id == partner_id,
            RECORDS.c.id_type == s.c.id_type,
            RECORDS.c.match_key == s.c.match_key,
        )
        # Only records that change are written: a daily snapshot mostly repeats yesterday's,
        # and rewriting every row cost 13 s a million (bench/upload_phases.py --uploads 2).
        changed = or_(
            RECORDS.c.customer_ref != s.c.customer_ref,
            RECORDS.c.consents != s.c.consents,
            cast(RECORDS.c.attributes, Text).is_distinct_from(cast(s.c.attributes, Text)),
        )
        if updated:
            await self.session.execute(
                update(RECORDS)
                .where(known, accepted, changed)
                .values(
                    customer_ref=s.c.customer_ref,
                    consents=s.c.consents,
                    attributes=s.c.attributes,
                    updated_at=now,
                )
            )
        rows = select(
            literal(partner_id, RECORDS.c.partner_id.type),
            s.c.id_type,
            s.c.match_key,
            literal(match_version, RECORDS.c.key_version.type),
            s.c.digest_enc,
            s.c.data_version,
            s.c.customer_ref,
            s.c.consents,
            s.c.attributes,
            literal(now, RECORDS.c.updated_at.type),
        ).where(accepted)
        if updated:
            rows = rows.where(~exists().where(same_key))
        await self.session.execute(RECORDS.insert().from_select(list(RECORD_COLUMNS), rows))

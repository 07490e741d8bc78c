"""Applying a staged upload to the partner's records: in slices, into a new generation.

The records an upload creates or changes are written, one slice of staged rows per short
transaction, under the partner's *pending* generation (partners.identifiers.records), and the
rows they replace are marked retired by it; ``replace`` then retires the records the upload
no longer holds. Readers see none of it until the flip (uploads.generation) makes the
generation current in one small transaction: the upload is applied whole or not at all, yet
no transaction holds SQLite's write lock for longer than a slice.

Every statement is set-based and linear in its slice: a slice joins its staged rows with the
partner's current records by key (the primary key). A removal is one anti-join: on SQLite by
slices of the partner's records (the upload's own staging index (id_type, match_key)), on
PostgreSQL in one statement (a hash join; staging has no index there, and PostgreSQL's
writers of other partners never wait for it). The consent changes of each slice go to
``identifier_pending_events``, published per person after the flip (a first load's are read
from its records then instead).
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
    bindparam,
    case,
    cast,
    exists,
    func,
    literal,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from hub.core.bulk import insert_rows
from hub.core.db import rowcount
from partners.identifiers.models import CONSENT_BITS
from partners.identifiers.records import PENDING_EVENTS, RECORDS
from partners.identifiers.uploads.erasures import erased_since
from partners.identifiers.uploads.staging import STAGING, upload_parts

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


def bit_or(column: Any, dialect: str) -> ColumnElement[Any]:
    """OR of a small bit mask over a group (SQLite has no bit_or aggregate: one MAX per bit)."""
    if dialect == "postgresql":
        return func.bit_or(column)
    total: ColumnElement[Any] | None = None
    for bit in CONSENT_BITS.values():
        term = func.coalesce(func.max(column.bitwise_and(bit)), 0)
        total = term if total is None else total + term
    assert total is not None
    return total


class SliceApplier:
    """The steps of applying one staged upload to one partner's pending generation. Each
    method is one slice's work in the caller's transaction (see the processor)."""

    def __init__(
        self,
        session: AsyncSession,
        *,
        stage_key: str,
        partner_id: UUID,
        current: int,
        pending: int,
        match_version: int,
        sent_at: datetime,
        with_previous_keys: bool = False,
        first_load: bool = False,
    ) -> None:
        self.session = session
        # The partner held no records when the apply began (and none can be written during
        # it: other writers wait for the flip): every accepted row is new.
        self.first_load = first_load
        self.stage_key = stage_key
        self.partner_id = partner_id
        self.current = current
        self.pending = pending
        self.match_version = match_version
        self.sent_at = sent_at
        self.with_previous_keys = with_previous_keys
        # The people whose row was refused (a sliced removal keeps their records).
        self.kept_people: set[str] = set()

    def _visible(self, r: Any) -> ColumnElement[bool]:
        """Current records of the partner as of the generation being replaced (the pending
        generation's rows and retirements do not count yet)."""
        return and_(
            r.c.partner_id == self.partner_id,
            r.c.generation <= self.current,
            or_(r.c.retired.is_(None), r.c.retired > self.current),
        )

    @contextlib.asynccontextmanager
    async def _probing_records(self) -> AsyncIterator[None]:
        """On PostgreSQL, the slice's rows are looked up in the records by primary key while
        the block runs, not hashed against all of the partner's records: at 1M records its
        planner read every record of the partner for every slice of 10,000 (at 3M it chose
        the lookup itself; the statement no longer depends on where the plan flips). SQLite
        looks them up by key anyway."""
        if self.session.get_bind().dialect.name != "postgresql":
            yield
            return
        await self.session.execute(text("SET LOCAL enable_hashjoin = off"))
        await self.session.execute(text("SET LOCAL enable_mergejoin = off"))
        try:
            yield
        finally:
            await self.session.execute(text("SET LOCAL enable_hashjoin = on"))
            await self.session.execute(text("SET LOCAL enable_mergejoin = on"))

    async def id_range(self) -> tuple[int, int] | None:
        """The first and last staging ids of the upload (read once: on SQLite a scan of the
        staging table, which has no index by stage_key). Slices are ranges of ids: looking
        for "the next N rows of this upload" each time sorted the upload's rows again on
        SQLite (when its staging index led with stage_key), once per slice."""
        low, high = (
            await self.session.execute(
                select(func.min(STAGING.c.id), func.max(STAGING.c.id)).where(
                    STAGING.c.stage_key == self.stage_key
                )
            )
        ).one()
        return None if low is None else (int(low), int(high))

    async def upsert_slice(self, after: int, upto: int) -> tuple[int, int, int]:
        """Write the accepted staged rows with ids in (after, upto]: new and changed records
        under the pending generation, the records they replace retired by it, their consent
        changes pending. Returns (accepted, matched, skipped): matched rows met a current
        record (changed or not); skipped ones name something erased since the upload was sent.

        One join of the slice with the current records (by primary key on both databases),
        its changing rows read into Python (at most a slice of rows), decides everything; the
        writes are by primary key. (Set-based statements that joined the records again let
        SQLite walk all the partner's records once per slice: 2.6 s a slice at 300k records.)
        """
        s = STAGING.alias("s")
        upload: ColumnElement[str] = s.c.stage_key
        if self.session.get_bind().dialect.name == "sqlite":
            # An expression, not the column: SQLite reads the slice by its id range (the
            # rowid), never by an index of stage_key (one that led with it made it read every
            # staged row of the upload for every statement of every slice: 90 ms a statement
            # at 1M rows, 36 s of a 1M first load's apply).
            upload = upload.concat("")
        accepted = and_(
            upload == self.stage_key,
            s.c.id > after,
            s.c.id <= upto,
            s.c.refused.is_(False),
        )
        skipped = 0
        erased = await erased_since(self.session, s, self.partner_id, self.sent_at)
        if erased is not None:
            skipped = int(
                await self.session.scalar(
                    select(func.count()).select_from(s).where(accepted, erased)
                )
                or 0
            )
            accepted = and_(accepted, ~erased)
        if self.first_load:
            return await self._load_slice(s, accepted), 0, skipped
        if self.with_previous_keys:
            await self._rekey_previous_version(s, accepted)
        r = RECORDS.alias("r")
        same_key = and_(
            self._visible(r), r.c.id_type == s.c.id_type, r.c.match_key == s.c.match_key
        )
        # Only the rows that change something come back (a new record, a record moved to
        # another person, new consents or attributes), with the slice's counts on every row,
        # and on one row more when none changes: a daily snapshot of unchanged data read its
        # whole slice into Python to find nothing to do (79 ms a slice of 10,000 on
        # PostgreSQL, and the day-N soak's top statement).
        changing = or_(
            r.c.match_key.is_(None),
            r.c.customer_ref != s.c.customer_ref,
            r.c.consents != s.c.consents,
            cast(r.c.attributes, Text).is_distinct_from(cast(s.c.attributes, Text)),
        )
        joined = (
            select(
                s.c.customer_ref,
                s.c.consents,
                r.c.id_type,
                r.c.match_key,
                r.c.generation,
                r.c.customer_ref.label("old_ref"),
                r.c.consents.label("old"),
                case((changing, 1), else_=0).label("changing"),
                func.count().over().label("accepted"),
                func.count(r.c.match_key).over().label("matched"),
                func.row_number().over().label("n"),
            )
            .select_from(s.outerjoin(r, same_key))
            .where(accepted)
            .subquery("met")
        )
        async with self._probing_records():
            met = (
                await self.session.execute(
                    select(joined).where(or_(joined.c.changing == 1, joined.c.n == 1))
                )
            ).all()
        met_count = int(met[0].accepted) if met else 0
        matched = int(met[0].matched) if met else 0
        changes: dict[str, list[int]] = {}

        def change(ref: str, granted: int, withdrawn: int) -> None:
            if granted or withdrawn:
                both = changes.setdefault(ref, [0, 0])
                both[0] |= granted
                both[1] |= withdrawn

        replaced = []
        for row in met:
            if not row.changing:  # the row carrying the counts only
                continue
            ref, consents, key, old_ref, old = (
                row.customer_ref,
                row.consents,
                row.match_key,
                row.old_ref,
                row.old,
            )
            if key is None:  # a new record
                change(ref, consents, 0)
                continue
            if old_ref != ref:  # moved to another person
                change(ref, consents, 0)
                change(old_ref, 0, old)
            else:
                change(ref, consents & ~old, old & ~consents)
            replaced.append({"t": row.id_type, "k": key, "g": row.generation})
        if changes:
            # COPY on PostgreSQL: an upload's first load pends one change per person, and as
            # an executemany the database spent the slice waiting for the driver's messages
            # (the soak's top wait: 267 backend-s of ClientRead in 10 minutes).
            await insert_rows(
                self.session,
                PENDING_EVENTS,
                [
                    {
                        "partner_id": self.partner_id,
                        "generation": self.pending,
                        "customer_ref": ref,
                        "granted": granted & ~withdrawn,
                        "withdrawn": withdrawn,
                    }
                    for ref, (granted, withdrawn) in changes.items()
                ],
            )
        if replaced:
            await self._retire(replaced)
        rows = self._new_records(s, accepted)
        if matched:  # an unchanged current record stays as it is (nothing to write)
            rows = rows.where(
                ~exists().where(
                    self._visible(r),
                    r.c.retired.is_(None),
                    r.c.id_type == s.c.id_type,
                    r.c.match_key == s.c.match_key,
                )
            )
        if met_count > matched or replaced:
            await self._insert_records(rows)
        return met_count, matched, skipped

    async def _load_slice(self, s: Any, accepted: ColumnElement[bool]) -> int:
        """A slice of a first load: nothing to meet, so no join read into Python (at 1M rows
        it cost 5.7 s of reads and as much again in Python and in sending the changes back).
        The rows go in as new records, and nothing else: every consent they hold is a grant,
        published per person from the records after the flip (``generation.flip``'s
        ``publish_records``) rather than pended here (at 10M, a third of the slices' time
        went to writing pending changes that the tidying read and deleted again). Returns
        how many."""
        await self._insert_records(self._new_records(s, accepted))
        # Counted, not the insert's rowcount: PostgreSQL's driver reports none for it here.
        return int(
            await self.session.scalar(select(func.count()).select_from(s).where(accepted)) or 0
        )

    def _new_records(self, s: Any, accepted: ColumnElement[bool]) -> Any:
        """The accepted staged rows as records of the pending generation."""
        now = datetime.now(UTC)
        return select(
            literal(self.partner_id, RECORDS.c.partner_id.type),
            s.c.id_type,
            s.c.match_key,
            literal(self.pending, RECORDS.c.generation.type),
            literal(self.match_version, RECORDS.c.key_version.type),
            s.c.digest_enc,
            s.c.data_version,
            s.c.customer_ref,
            s.c.consents,
            s.c.attributes,
            literal(now, RECORDS.c.updated_at.type),
        ).where(accepted)

    async def _insert_records(self, rows: Any) -> Any:
        return await self.session.execute(
            RECORDS.insert().from_select(
                [
                    "partner_id",
                    "id_type",
                    "match_key",
                    "generation",
                    "key_version",
                    "digest_enc",
                    "data_version",
                    "customer_ref",
                    "consents",
                    "attributes",
                    "updated_at",
                ],
                rows,
            )
        )

    async def _retire(self, keys: list[dict[str, Any]]) -> None:
        """Mark the rows with these keys (``t``, ``k``, ``g``) retired by the pending
        generation: current until the flip, gone after it."""
        await self.session.execute(
            update(RECORDS)
            .where(
                RECORDS.c.partner_id == self.partner_id,
                RECORDS.c.id_type == bindparam("t"),
                RECORDS.c.match_key == bindparam("k"),
                RECORDS.c.generation == bindparam("g"),
            )
            .values(retired=self.pending),
            keys,
        )

    async def _rekey_previous_version(self, s: Any, accepted: Any) -> None:
        """During a match-key rotation: move the current records this slice names to the
        current version first, so the slice meets them whatever version they are still under
        (the same person under another key: no reader's answer changes)."""
        await self.session.execute(
            update(RECORDS)
            .where(
                self._visible(RECORDS),
                RECORDS.c.key_version < self.match_version,
                RECORDS.c.id_type == s.c.id_type,
                RECORDS.c.match_key == s.c.prev_key,
                accepted,
            )
            .values(match_key=s.c.match_key, key_version=self.match_version)
        )

    async def _pend(self, changes: Any) -> None:
        await self.session.execute(
            PENDING_EVENTS.insert().from_select(
                ["partner_id", "generation", "customer_ref", "granted", "withdrawn"],
                select(
                    literal(self.partner_id, PENDING_EVENTS.c.partner_id.type),
                    literal(self.pending, PENDING_EVENTS.c.generation.type),
                    changes.c.ref,
                    changes.c.g,
                    changes.c.w,
                ).where(or_(changes.c.g != 0, changes.c.w != 0)),
            )
        )

    async def removal(
        self, *, sliced: bool = False
    ) -> tuple[ColumnElement[bool] | None, str | None]:
        """Which current records a ``replace`` removes: those of the id types present that
        the upload does not hold, except records of people (or identifiers) whose row was
        refused. None (and a notice) when a refused row names no one."""
        t = STAGING.alias("t")
        in_upload = t.c.stage_key == self.stage_key
        parts = await upload_parts(self.session, t, self.stage_key)
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
        # The id types present, read once (a list, not a subquery each statement evaluates).
        types = list(
            (
                await self.session.scalars(
                    select(t.c.id_type).where(in_upload, t.c.id_type.is_not(None)).distinct()
                )
            ).all()
        )

        # One equality per NOT EXISTS: the database turns each into an anti-join (a hash join
        # on PostgreSQL; on SQLite a lookup in the index of each part of the upload, one part
        # up to 2M rows). (With "match_key = … OR prev_key = …" in one, PostgreSQL hashed on
        # id_type alone and compared every record with every staged row: a 1M-row replace did
        # not finish in 14 minutes.)
        def held(key: Any) -> Any:
            return or_(
                *(
                    exists().where(
                        part, t.c.id_type == RECORDS.c.id_type, key == RECORDS.c.match_key
                    )
                    for part in parts
                )
            )

        # The people whose row was refused: one uncorrelated set, computed once and looked
        # up by hash (SQLite builds a transient index on it). Correlated on customer_ref,
        # which staging does not index, SQLite scanned the upload's staged rows once per
        # removed record: 0.4 s each at 200k staged rows, 779 s for 2,000 removals.
        kept_people = select(t.c.customer_ref).where(
            in_upload, t.c.refused.is_(True), t.c.customer_ref.is_not(None)
        )
        conditions = [
            self._visible(RECORDS),
            RECORDS.c.retired.is_(None),
            RECORDS.c.id_type.in_(sorted(types)),
            ~held(t.c.match_key),
        ]
        if sliced:
            # By slices, the set would be built again for every slice, each time from all
            # the upload's staged rows (2 s a slice at 1M): read once, applied in Python.
            self.kept_people = set((await self.session.scalars(kept_people)).all())
        else:
            conditions.append(RECORDS.c.customer_ref.not_in(kept_people))
        if self.with_previous_keys:  # mid-rotation: a record still under the previous version
            conditions.append(~held(t.c.prev_key))
        return and_(*conditions), None

    async def next_record_bound(self, after: tuple[int, bytes] | None, rows: int) -> Any:
        """The key (id_type, match_key) that ends the next slice of up to ``rows`` of the
        partner's current records after ``after``; None when the rest fits in one slice."""
        query = (
            select(RECORDS.c.id_type, RECORDS.c.match_key)
            .where(self._visible(RECORDS))
            .order_by(RECORDS.c.id_type, RECORDS.c.match_key)
            .offset(rows - 1)
            .limit(1)
        )
        if after is not None:
            query = query.where(tuple_(RECORDS.c.id_type, RECORDS.c.match_key) > tuple_(*after))
        row = (await self.session.execute(query)).first()
        return None if row is None else (int(row.id_type), bytes(row.match_key))

    async def remove(
        self,
        removal: ColumnElement[bool],
        after: tuple[int, bytes] | None = None,
        upto: tuple[int, bytes] | None = None,
        kept: frozenset[str] | set[str] = frozenset(),
        *,
        at_once: bool = False,
    ) -> int:
        """Retire the records ``removal`` names (within the key range (after, upto] if
        given), except those of ``kept`` people, and pend their consent withdrawals. Returns
        how many."""
        conditions = [removal]
        key = tuple_(RECORDS.c.id_type, RECORDS.c.match_key)
        if after is not None:
            conditions.append(key > tuple_(*after))
        if upto is not None:
            conditions.append(key <= tuple_(*upto))
        where = and_(*conditions)
        if at_once:  # PostgreSQL: one set-based statement (``removal`` keeps the refused)
            await self._pend(
                select(
                    RECORDS.c.customer_ref.label("ref"),
                    literal(0).label("g"),
                    RECORDS.c.consents.label("w"),
                )
                .where(where)
                .subquery("changes")
            )
            return rowcount(
                await self.session.execute(
                    update(RECORDS).where(where).values(retired=self.pending)
                )
            )
        # A slice (SQLite): the anti-join once, into Python; the writes by primary key.
        gone = [
            row
            for row in await self.session.execute(
                select(
                    RECORDS.c.id_type,
                    RECORDS.c.match_key,
                    RECORDS.c.generation,
                    RECORDS.c.customer_ref,
                    RECORDS.c.consents,
                ).where(where)
            )
            if row.customer_ref not in kept
        ]
        if not gone:
            return 0
        withdrawn: dict[str, int] = {}
        for *_, ref, consents in gone:
            withdrawn[ref] = withdrawn.get(ref, 0) | consents
        if any(withdrawn.values()):
            await self.session.execute(
                PENDING_EVENTS.insert(),
                [
                    {
                        "partner_id": self.partner_id,
                        "generation": self.pending,
                        "customer_ref": ref,
                        "granted": 0,
                        "withdrawn": mask,
                    }
                    for ref, mask in withdrawn.items()
                    if mask
                ],
            )
        await self._retire([{"t": t, "k": k, "g": g} for t, k, g, _, _ in gone])
        return len(gone)

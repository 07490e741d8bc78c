"""A partner's next generation of records: opened, flipped to current, tidied (see records.py).

Each function is one short transaction's work (the caller owns it), so that on SQLite no step
holds the write lock for long. The lifecycle of a bulk apply:

1. :func:`open_generation`: the partner's ``pending`` generation is set (after what an
   interrupted attempt left of an earlier one is discarded by :func:`discard_slice`).
2. The upload's slices write rows under it and retire the rows they replace (apply.py).
3. :func:`flip`: the withdrawals and erasures made since the upload was sent are applied to the
   new rows (again: they reached the old ones already), then the generation becomes current.
4. :func:`tidy_slice` until it returns 0: the retired rows go, and the upload's consent
   changes are folded per person into ``consent_events`` (a first load's are read from its
   records: :func:`publish_records_slice`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import and_, delete, exists, func, literal, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from hub.core import horizon
from hub.core.db import dialect_insert, rowcount
from partners.identifiers.models import CONSENT_BITS
from partners.identifiers.records import PENDING_EVENTS, RECORDS, STATE, current
from partners.identifiers.service import APPLY_CHANGES, ERASURES, EVENTS
from partners.identifiers.uploads.apply import bit_or

TIDY_ROWS = 10_000
EVERY_CONSENT = sum(CONSENT_BITS.values())


async def lock_state(session: AsyncSession, partner_id: UUID) -> tuple[int, int | None]:
    """The partner's (current, pending) generations, its state row locked for the
    transaction (created if missing). On SQLite the write transaction already excludes every
    other writer."""
    insert = dialect_insert(session, STATE)
    await session.execute(
        insert.values(
            partner_id=partner_id, version=0, updated_at=datetime.now(UTC)
        ).on_conflict_do_nothing(index_elements=["partner_id"])
    )
    row = (
        await session.execute(
            select(STATE.c.generation, STATE.c.pending)
            .where(STATE.c.partner_id == partner_id)
            .with_for_update()
        )
    ).one()
    return int(row.generation), row.pending


async def discard_slice(session: AsyncSession, partner_id: UUID, generation: int) -> int:
    """Undo up to TIDY_ROWS of what an attempt that never flipped wrote beyond
    ``generation`` (the current one): its rows, its retirements, its consent changes.
    Returns how many rows it changed (0: nothing is left)."""
    later = and_(RECORDS.c.partner_id == partner_id, RECORDS.c.generation > generation)
    key = tuple_(RECORDS.c.partner_id, RECORDS.c.id_type, RECORDS.c.match_key, RECORDS.c.generation)
    some = select(*key.clauses).where(later).limit(TIDY_ROWS)
    done = rowcount(await session.execute(delete(RECORDS).where(key.in_(some))))
    retired = and_(
        RECORDS.c.partner_id == partner_id,
        RECORDS.c.retired.is_not(None),
        RECORDS.c.retired > generation,
    )
    some = select(*key.clauses).where(retired).limit(TIDY_ROWS)
    done += rowcount(
        await session.execute(update(RECORDS).where(key.in_(some)).values(retired=None))
    )
    done += rowcount(
        await session.execute(
            delete(PENDING_EVENTS).where(
                PENDING_EVENTS.c.partner_id == partner_id,
                PENDING_EVENTS.c.generation > generation,
            )
        )
    )
    return done


async def holds_records(session: AsyncSession, partner_id: UUID) -> bool:
    """Whether the partner has any record row, of any generation (retired or pending ones
    too): False only for a partner that has never held a record, whose upload is then a
    first load (see ``apply.SliceApplier``)."""
    return bool(await session.scalar(select(exists().where(RECORDS.c.partner_id == partner_id))))


async def open_generation(session: AsyncSession, partner_id: UUID, generation: int) -> int:
    """Mark ``generation + 1`` as the one being written; returns it."""
    pending = generation + 1
    await session.execute(
        update(STATE).where(STATE.c.partner_id == partner_id).values(pending=pending)
    )
    await forget_changes(session, partner_id)  # an earlier attempt's, if it never flipped
    return pending


async def changed_since(
    session: AsyncSession, partner_id: UUID, first: int, version: int
) -> set[str] | None:
    """The people touched by the changes that raised the partner's counter to ``first`` ..
    ``version - 1`` while its upload was applied (``IdentifierApplyChange``); None when one
    of them left no record (a writer that does not record its people: the caller rebuilds)."""
    rows = (
        await session.execute(
            select(APPLY_CHANGES.c.version, APPLY_CHANGES.c.people).where(
                APPLY_CHANGES.c.partner_id == partner_id,
                APPLY_CHANGES.c.version >= first,
                APPLY_CHANGES.c.version < version,
            )
        )
    ).all()
    if len({row.version for row in rows}) != max(version - first, 0):
        return None
    return {ref for row in rows for ref in row.people}


async def forget_changes(session: AsyncSession, partner_id: UUID) -> None:
    """The people recorded for the partner's upload being applied (see ``changed_since``)
    are forgotten: at its flip, or when an attempt that never flipped is replaced."""
    await session.execute(delete(APPLY_CHANGES).where(APPLY_CHANGES.c.partner_id == partner_id))


async def flip(
    session: AsyncSession,
    partner_id: UUID,
    pending: int,
    sent_at: datetime,
    *,
    publish_records: bool = False,
    people: set[str] | None = None,
) -> int:
    """Make ``pending`` current, after applying to its rows what happened since ``sent_at``
    (:func:`reconcile`; the people whose rows it changed are added to ``people``). With
    ``publish_records`` (a first load, which pended no consent changes) the tidying is to
    publish each person's consents from the new records. Returns the number of rows that
    changed."""
    touched = await reconcile(session, partner_id, pending, sent_at, people)
    await session.execute(
        update(STATE)
        .where(STATE.c.partner_id == partner_id)
        .values(
            generation=pending,
            pending=None,
            version=STATE.c.version + 1,
            updated_at=datetime.now(UTC),
            **({"publishing": pending, "published_after": None} if publish_records else {}),
        )
    )
    return touched


async def reconcile(
    session: AsyncSession,
    partner_id: UUID,
    pending: int,
    sent_at: datetime,
    people: set[str] | None = None,
) -> int:
    """Apply to the ``pending`` generation's rows what happened since ``sent_at``; the flip
    does it (again) in its transaction, and the apply once before it builds the generation's
    arrays, so that at the flip only what came after that build changes rows.

    An erasure since then removes the new rows it names (the slices left out what was erased
    before they ran; this catches the rest). A withdrawal since then (a consent update or an
    erasure, net of any later grant) is taken off the new rows of that person and off the
    grants the upload has yet to publish. Returns the number of rows that changed (a row
    already without the withdrawn consents is not counted: doing it twice changes nothing);
    the people whose rows changed are added to ``people``, when given."""
    touched = 0
    since = and_(ERASURES.c.partner_id == partner_id, ERASURES.c.erased_at >= sent_at)
    refs = select(ERASURES.c.customer_ref).where(since, ERASURES.c.customer_ref.is_not(None))
    keys = select(ERASURES.c.match_key).where(since, ERASURES.c.match_key.is_not(None))
    new_rows = and_(RECORDS.c.partner_id == partner_id, RECORDS.c.generation == pending)
    # Only when there was one: the delete reads every new row (3.6-4.3 s at 1M on PostgreSQL,
    # in this transaction, which holds the partner's state row against its consent changes).
    if await session.scalar(select(exists().where(since))):
        erased = delete(RECORDS).where(
            new_rows, RECORDS.c.customer_ref.in_(refs) | RECORDS.c.match_key.in_(keys)
        )
        if people is None:
            touched += rowcount(await session.execute(erased))
        else:
            owners = (await session.scalars(erased.returning(RECORDS.c.customer_ref))).all()
            touched += len(owners)
            people.update(owners)
    withdrawals = await _net_withdrawals(session, partner_id, sent_at)
    for ref, withdrawn in withdrawals.items():
        changed = rowcount(
            await session.execute(
                update(RECORDS)
                .where(
                    new_rows,
                    RECORDS.c.customer_ref == ref,
                    RECORDS.c.consents.bitwise_and(withdrawn) != 0,
                )
                .values(consents=RECORDS.c.consents.bitwise_and(EVERY_CONSENT & ~withdrawn))
            )
        )
        touched += changed
        if changed and people is not None:
            people.add(ref)
        await session.execute(
            update(PENDING_EVENTS)
            .where(
                PENDING_EVENTS.c.partner_id == partner_id,
                PENDING_EVENTS.c.customer_ref == ref,
            )
            .values(granted=PENDING_EVENTS.c.granted.bitwise_and(EVERY_CONSENT & ~withdrawn))
        )
    return touched


async def _net_withdrawals(
    session: AsyncSession, partner_id: UUID, sent_at: datetime
) -> dict[str, int]:
    """Per person, the consents withdrawn since ``sent_at`` by consent updates and erasures
    and not granted again afterwards (the upload's own events are not published yet)."""
    rows = await session.execute(
        select(EVENTS.c.customer_ref, EVENTS.c.granted, EVENTS.c.withdrawn)
        .where(
            EVENTS.c.partner_id == partner_id,
            EVENTS.c.at >= sent_at,
            EVENTS.c.cause.in_(("update", "erasure")),
        )
        .order_by(EVENTS.c.seq)
    )
    net: dict[str, int] = {}
    for ref, granted, withdrawn in rows:
        net[ref] = (net.get(ref, 0) | withdrawn) & ~granted
    return {ref: mask for ref, mask in net.items() if mask}


@dataclass
class Tidying:
    """Where a tidying's publishing has got to: every pending change of a person up to
    ``after`` (in ``customer_ref`` order) is published and deleted. Each slice starts there
    instead of walking again, from the partner's first person, past the index entries of
    the rows the slices before it deleted."""

    after: str | None = None


async def tidy_slice(
    session: AsyncSession, partner_id: UUID, generation: int, progress: Tidying | None = None
) -> int:
    """One slice of the tidying after a flip: up to TIDY_ROWS retired rows deleted, or a
    first load's consents published from its records (:func:`publish_records_slice`), or the
    pending consent changes of up to TIDY_ROWS people published (one event per person: the
    grants net of the withdrawals). Returns how many rows it handled (0: all tidy)."""
    key = tuple_(RECORDS.c.partner_id, RECORDS.c.id_type, RECORDS.c.match_key, RECORDS.c.generation)
    retired = and_(
        RECORDS.c.partner_id == partner_id,
        RECORDS.c.retired.is_not(None),
        RECORDS.c.retired <= generation,
    )
    some = select(*key.clauses).where(retired).limit(TIDY_ROWS)
    done = rowcount(await session.execute(delete(RECORDS).where(key.in_(some))))
    if done:
        return done
    done = await publish_records_slice(session, partner_id)
    if done:
        return done
    mine = and_(
        PENDING_EVENTS.c.partner_id == partner_id, PENDING_EVENTS.c.generation <= generation
    )
    if progress is not None and progress.after is not None:
        mine = and_(mine, PENDING_EVENTS.c.customer_ref > progress.after)
    refs = (
        select(PENDING_EVENTS.c.customer_ref)
        .where(mine)
        .order_by(PENDING_EVENTS.c.customer_ref)
        .limit(TIDY_ROWS)
        .subquery()
    )
    last = await session.scalar(select(func.max(refs.c.customer_ref)))
    if last is None:
        return 0
    batch = and_(mine, PENDING_EVENTS.c.customer_ref <= last)
    dialect = session.get_bind().dialect.name
    per_person = (
        select(
            PENDING_EVENTS.c.customer_ref.label("ref"),
            bit_or(PENDING_EVENTS.c.granted, dialect).label("g"),
            bit_or(PENDING_EVENTS.c.withdrawn, dialect).label("w"),
        )
        .where(batch)
        .group_by(PENDING_EVENTS.c.customer_ref)
        .subquery("per_person")
    )
    await horizon.inserting(session, horizon.CONSENT_EVENTS)
    await session.execute(
        EVENTS.insert().from_select(
            ["partner_id", "customer_ref", "granted", "withdrawn", "cause", "at"],
            select(
                literal(partner_id, EVENTS.c.partner_id.type),
                per_person.c.ref,
                per_person.c.g.bitwise_and(per_person.c.w.bitwise_not()),
                per_person.c.w,
                literal("upload"),
                literal(datetime.now(UTC), EVENTS.c.at.type),
            ).where((per_person.c.g != 0) | (per_person.c.w != 0)),
        )
    )
    done = rowcount(await session.execute(delete(PENDING_EVENTS).where(batch))) or 1
    if progress is not None:
        progress.after = last
    return done


async def publish_records_slice(session: AsyncSession, partner_id: UUID) -> int:
    """One slice of publishing a first load's consents from its records: the people after
    the state row's cursor, up to TIDY_ROWS of them, each get one ``upload`` event
    granting what their current records hold, and the cursor moves past them, in this
    transaction. Returns how many people it covered (0: nothing left, the mark is cleared).

    The partner's state row is locked first, as every writer of its records does
    (``IdentifierService.touch``): a consent change or an erasure of a person comes wholly
    before the slice that publishes them or wholly after it. Before: it changed their records
    and published its own event, and the slice grants what the records hold now (a consent
    granted meanwhile is granted again, a withdrawn one is not). After: it is a change from
    what was published. Either way the person's events fold to their records. (A
    synchronous upsert is accepted once the flip is made: a person it adds ahead of the
    cursor gets an ``upload`` event too, granting what its own event granted.)
    """
    columns = select(STATE.c.generation, STATE.c.publishing, STATE.c.published_after).where(
        STATE.c.partner_id == partner_id
    )
    # Read first without the lock: every other upload's tidying passes here once a slice,
    # and must not hold the partner's consent writers back while it publishes its own.
    if (
        await session.scalar(select(STATE.c.publishing).where(STATE.c.partner_id == partner_id))
        is None
    ):
        return 0
    state = (await session.execute(columns.with_for_update())).first()
    if state is None or state.publishing is None:
        return 0
    mine = current(RECORDS, partner_id, generation=int(state.generation))
    if state.published_after is not None:
        mine = and_(mine, RECORDS.c.customer_ref > state.published_after)
    # The slice's people in customer_ref order, each with what their records grant.
    dialect = session.get_bind().dialect.name
    people = (
        select(
            RECORDS.c.customer_ref.label("ref"),
            bit_or(RECORDS.c.consents, dialect).label("granted"),
        )
        .where(mine)
        .group_by(RECORDS.c.customer_ref)
        .order_by(RECORDS.c.customer_ref)
    )
    now = datetime.now(UTC)

    def grants(batch: Any) -> Any:
        return EVENTS.insert().from_select(
            ["partner_id", "customer_ref", "granted", "withdrawn", "cause", "at"],
            select(
                literal(partner_id, EVENTS.c.partner_id.type),
                batch.c.ref,
                batch.c.granted,
                literal(0),
                literal("upload"),
                literal(now, EVENTS.c.at.type),
            ).where(batch.c.granted != 0),
        )

    await horizon.inserting(session, horizon.CONSENT_EVENTS)
    last: str | None
    if dialect == "postgresql":
        # One statement: the slice's people aggregated as the person index is walked, their
        # events inserted from them, and where the slice ends (people without consents count
        # too: the cursor moves past them). (Finding the end first, then an INSERT ... SELECT
        # reading the same rows again, cost 44 ms a slice more, each record's row fetched
        # twice: 13 s of a 3M first load's 47 s apply.)
        batch = people.limit(TIDY_ROWS).cte("batch")
        last, covered = (
            await session.execute(
                select(func.max(batch.c.ref), func.count()).add_cte(grants(batch).cte("published"))
            )
        ).one()
    else:
        # SQLite has no data-modifying CTE. Where the slice ends comes from the person index
        # alone (it holds partner_id and customer_ref: no table row is read), then one
        # INSERT ... SELECT. (Reading the people into Python and sending them back cost 9 s
        # more of a 1M first load: SQLAlchemy processes every parameter of 10,000 rows.)
        refs = select(RECORDS.c.customer_ref).where(RECORDS.c.partner_id == partner_id)
        if state.published_after is not None:
            refs = refs.where(RECORDS.c.customer_ref > state.published_after)
        last = await session.scalar(
            refs.order_by(RECORDS.c.customer_ref).offset(TIDY_ROWS - 1).limit(1)
        )
        if last is None:  # the rest fits in this slice
            last = await session.scalar(select(func.max(refs.subquery().c.customer_ref)))
        covered = 0
        if last is not None:
            upto = people.where(RECORDS.c.customer_ref <= last).subquery()
            # At least 1: a slice of people without consents publishes no event.
            covered = max(rowcount(await session.execute(grants(upto))), 1)
    if last is None:
        await session.execute(
            update(STATE)
            .where(STATE.c.partner_id == partner_id)
            .values(publishing=None, published_after=None)
        )
        return 0
    await session.execute(
        update(STATE).where(STATE.c.partner_id == partner_id).values(published_after=last)
    )
    return int(covered)

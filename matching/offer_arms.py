"""A joint offer's two arms per side: computed once at activation, then only ever shrunk.

* **At activation** each side's eligible people are its people in the groups matched under
  ``joint_offers`` consent on both sides, restricted by its own filters. Every group is
  assigned to the treated or the control arm by :mod:`matching.holdout` (HMAC of the offer's
  salt and the group's smallest shared key, below the holdout share: control), and each
  person is stored in the arm of their group: the audience table is the treated arm, the
  controls table the control arm. Held-out people are in neither side's audience.
* **Reconciliation** brings both arms in line with the members' current records: whoever is
  no longer eligible (consent withdrawn, erased, a moved key) is removed from the arm they are
  in. Nobody is added or moved between arms, so later rotations and group changes never
  re-assign anyone. A person removed from the audience is listed, for that member only, in
  ``/audience/changes``; a control person was never disclosed, so their removal is silent.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import Table, and_, delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.core.bulk import insert_rows
from hub.core.db import reading, writing
from matching import engine, holdout
from matching.array_files import People
from matching.held_arms import HeldArm
from matching.loader import ArrayCache, Loaded
from matching.models import ACTIVE, Offer, OfferAudience, OfferAudienceChange, OfferControl
from partners.identifiers.models import CONSENT_BITS, IdentifierState
from partners.partnerships.models import Partnership

AUDIENCE: Table = OfferAudience.__table__  # type: ignore[assignment]
CONTROLS: Table = OfferControl.__table__  # type: ignore[assignment]
CHANGES: Table = OfferAudienceChange.__table__  # type: ignore[assignment]
JOINT_OFFERS = CONSENT_BITS["joint_offers"]
INSERT_ROWS = 5_000

Filters = Mapping[str, Mapping[str, Sequence[str]]]


@dataclass(frozen=True, slots=True)
class Arms:
    """One side's people at activation: the treated arm (its audience) and the control arm."""

    treated: list[str]
    control: list[str]


def eligible(a: Loaded, b: Loaded, filters: Filters) -> dict[UUID, NDArray[np.int64]]:
    """Each side's people currently eligible for the offer (both arms together), as person
    indices of its arrays."""
    groups = engine.match(a.side, b.side, JOINT_OFFERS)
    result = {}
    for which, loaded in (("a", a), ("b", b)):
        own = filters.get(str(loaded.partner_id)) or None
        people = engine.audience(groups, loaded.side, which, own)  # type: ignore[arg-type]
        result[loaded.partner_id] = np.asarray(people, dtype=np.int64)
    return result


def assign_arms(
    a: Loaded, b: Loaded, filters: Filters, salt: bytes, share: float
) -> dict[UUID, Arms]:
    """Each side's eligible people split into arms by their group's holdout assignment."""
    groups = engine.match(a.side, b.side, JOINT_OFFERS)
    hi, lo = holdout.smallest_shared_keys(groups, a.side, b.side, JOINT_OFFERS)
    held = holdout.held_out_groups(salt, hi, lo, share)
    result = {}
    for which, loaded in (("a", a), ("b", b)):
        own = filters.get(str(loaded.partner_id)) or None
        people = engine.audience(groups, loaded.side, which, own)  # type: ignore[arg-type]
        control = holdout.held_out_people(groups, which, people, held)  # type: ignore[arg-type]
        result[loaded.partner_id] = Arms(
            treated=loaded.people.refs(people[~control]),
            control=loaded.people.refs(people[control]),
        )
    return result


async def insert_arm(
    session: AsyncSession, table: Table, offer_id: UUID, partner_id: UUID, refs: Sequence[str]
) -> None:
    """Store one side's arm (the audience or the controls table): one COPY on PostgreSQL (an
    executemany took minutes for two sides of a million people each)."""
    for start in range(0, len(refs), INSERT_ROWS * 20):
        chunk = refs[start : start + INSERT_ROWS * 20]
        await insert_rows(
            session,
            table,
            [{"offer_id": offer_id, "partner_id": partner_id, "customer_ref": r} for r in chunk],
        )


def _held_arm(
    arrays: ArrayCache, table: Table, offer_id: UUID, partner_id: UUID, people: People
) -> HeldArm:
    """Who is in one side's arm now, over ``people`` (read before the offer's lock: arms only
    ever shrink, so this is a superset of who will be there under the lock, now and later).

    Run in a thread on the synchronous engine, in the order :meth:`HeldArm.of` sorts them
    (byte order: PostgreSQL's "C" collation, SQLite's default): a million refs read on the
    event loop, then sorted, held every request of the process for 2.5-5 s (the soak's stall
    watch, ``hub.core.stalls``)."""
    ref = table.c.customer_ref
    in_order = ref.collate("C") if arrays.engine.dialect.name == "postgresql" else ref
    with reading(), arrays.engine.connect() as conn:
        refs = list(
            conn.scalars(
                select(ref)
                .where(table.c.offer_id == offer_id, table.c.partner_id == partner_id)
                .order_by(in_order)
            )
        )
    return HeldArm.of(people, refs)


async def _remove(
    session: AsyncSession,
    table: Table,
    offer_id: UUID,
    partner_id: UUID,
    gone: Sequence[str],
    size: int | None,
) -> tuple[list[str], int]:
    """Delete ``gone`` from one side's arm: (those actually removed, the arm's size left).
    ``size`` is the arm's size as recorded on the offer, whose row the caller holds locked
    (only a reconciliation removes, under that lock); counted when not recorded."""
    removed: list[str] = []
    for start in range(0, len(gone), INSERT_ROWS):
        chunk = gone[start : start + INSERT_ROWS]
        removed += await session.scalars(
            delete(table)
            .where(
                and_(
                    table.c.offer_id == offer_id,
                    table.c.partner_id == partner_id,
                    table.c.customer_ref.in_(chunk),
                )
            )
            .returning(table.c.customer_ref)
        )
    if size is not None:
        return sorted(removed), size - len(removed)
    left = await session.scalar(
        select(func.count()).where(table.c.offer_id == offer_id, table.c.partner_id == partner_id)
    )
    return sorted(removed), int(left or 0)


@dataclass(slots=True)
class _Plan:
    """What one reconciliation will remove, computed before the offer's row is locked."""

    versions: dict[str, int]
    gone: dict[tuple[Table, UUID], list[str]]
    arms: dict[tuple[Table, UUID], HeldArm]


# Per array cache (one per hub process): each arm this process has read, by (offer, table,
# partner). Arms only shrink, so what was read once stays a superset: see matching.held_arms.
_ARMS: weakref.WeakKeyDictionary[ArrayCache, dict[tuple[UUID, str, UUID], HeldArm]] = (
    weakref.WeakKeyDictionary()
)


async def _plan(
    arrays: ArrayCache,
    a: Loaded,
    b: Loaded,
    offer_id: UUID,
    filters: Filters,
    controls: bool,
) -> _Plan:
    current = await asyncio.to_thread(eligible, a, b, filters)
    tables = (AUDIENCE, CONTROLS) if controls else (AUDIENCE,)
    known = _ARMS.setdefault(arrays, {})
    side = {x.partner_id: x for x in (a, b)}
    arms: dict[tuple[Table, UUID], HeldArm] = {}
    for pid in current:
        for table in tables:
            arm = known.get((offer_id, table.name, pid))
            if arm is None:
                people = side[pid].people
                arm = await asyncio.to_thread(_held_arm, arrays, table, offer_id, pid, people)
            elif arm.people is not side[pid].people:
                arm = await asyncio.to_thread(arm.moved_to, side[pid].people)
            known[offer_id, table.name, pid] = arms[table, pid] = arm

    def removals() -> dict[tuple[Table, UUID], list[str]]:
        return {(table, pid): arm.gone(current[pid]) for (table, pid), arm in arms.items()}

    gone = await asyncio.to_thread(removals)
    return _Plan({str(x.partner_id): x.version for x in (a, b)}, gone, arms)


_RUNNING: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[UUID, asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)


def _one_at_a_time(offer_id: UUID) -> asyncio.Lock:
    """This process's lock for one offer's reconciliation: requests that arrive while it runs
    wait here (holding no database connection), then find it done."""
    locks = _RUNNING.setdefault(asyncio.get_running_loop(), {})
    return locks.setdefault(offer_id, asyncio.Lock())


async def reconcile_offer(
    session_maker: async_sessionmaker[AsyncSession],
    arrays: ArrayCache,
    offer_id: UUID,
    partnership: Partnership,
) -> int:
    """Remove from the offer's arms whoever no longer belongs; how many left the audiences.

    Who is eligible is computed from the members' arrays before the offer's row is locked;
    under the lock, the offer's reconciled versions decide whether the plan is still news
    (another process may have applied the same or newer versions meanwhile). Within a process,
    one reconciliation per offer runs at a time."""
    async with _one_at_a_time(offer_id):
        return await _reconcile(session_maker, arrays, offer_id, partnership)


async def _reconcile(
    session_maker: async_sessionmaker[AsyncSession],
    arrays: ArrayCache,
    offer_id: UUID,
    partnership: Partnership,
) -> int:
    a_id, b_id = (m.partner_id for m in partnership.members)
    async with session_maker() as session:
        versions = dict(
            (
                await session.execute(
                    select(IdentifierState.partner_id, IdentifierState.version).where(
                        IdentifierState.partner_id.in_((a_id, b_id))
                    )
                )
            ).all()
        )
        row = (
            await session.execute(
                select(Offer.reconciled, Offer.filters, Offer.control_sizes).where(
                    Offer.id == offer_id, Offer.activated_at.is_not(None)
                )
            )
        ).first()
    if row is None:
        return 0
    reconciled, filters, control_sizes = row
    if all(reconciled.get(str(pid)) == versions.get(pid, 0) for pid in (a_id, b_id)):
        return 0
    a, b = await asyncio.gather(arrays.get(a_id), arrays.get(b_id))
    if all(reconciled.get(str(x.partner_id), -1) >= x.version for x in (a, b)):
        return 0
    plan = await _plan(arrays, a, b, offer_id, filters, control_sizes is not None)
    removed = 0
    with writing():
        async with session_maker() as session, session.begin():
            offer = await session.scalar(
                select(Offer)
                .where(Offer.id == offer_id)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
            if offer is None or offer.activated_at is None:
                return 0
            if all(offer.reconciled.get(pid, -1) >= v for pid, v in plan.versions.items()):
                return 0  # someone else reconciled to these versions (or newer) meanwhile
            if offer.filters != filters:
                return 0  # not expected (filters are fixed at activation); the next call replans
            sizes = dict(offer.audience_sizes)
            control_sizes = dict(offer.control_sizes or {})
            now = datetime.now(UTC)
            for (table, pid), candidates in plan.gone.items():
                recorded = control_sizes if table is CONTROLS else sizes
                gone, left = await _remove(
                    session, table, offer_id, pid, candidates, recorded.get(str(pid))
                )
                if table is CONTROLS:
                    control_sizes[str(pid)] = left  # a control person was never disclosed
                    continue
                sizes[str(pid)] = left
                for start in range(0, len(gone), INSERT_ROWS):
                    await session.execute(
                        insert(CHANGES),
                        [
                            {
                                "offer_id": offer_id,
                                "partner_id": pid,
                                "customer_ref": ref,
                                "change": "removed",
                                "at": now,
                            }
                            for ref in gone[start : start + INSERT_ROWS]
                        ],
                    )
                removed += len(gone)
            offer.reconciled = plan.versions
            offer.audience_sizes = sizes
            if offer.control_sizes is not None:
                offer.control_sizes = control_sizes
    # Committed: whoever was a candidate is out of the arm for good (removed now, or before).
    for key, candidates in plan.gone.items():
        plan.arms[key].forget(candidates)
    return removed


async def reconcile_offers(
    session_maker: async_sessionmaker[AsyncSession], arrays: ArrayCache, offer_ids: Sequence[UUID]
) -> None:
    """Reconcile these offers (those ever activated) to their members' current records, in
    sessions of their own: called before a request's own transaction starts (an earn under an
    offer is funded only for the audience as it stands now)."""
    if not offer_ids:
        return
    async with session_maker() as session:
        rows = (
            await session.execute(
                select(Offer.id, Partnership)
                .join(Partnership, Partnership.id == Offer.partnership_id)
                .where(Offer.id.in_(sorted(set(offer_ids))), Offer.activated_at.is_not(None))
            )
        ).all()
    for offer_id, partnership in rows:
        await reconcile_offer(session_maker, arrays, offer_id, partnership)


async def reconcile_active_offers(
    session_maker: async_sessionmaker[AsyncSession], arrays: ArrayCache
) -> int:
    """Reconcile every active offer whose members' records changed (the maintenance loop)."""
    async with session_maker() as session:
        offers = (await session.scalars(select(Offer).where(Offer.status == ACTIVE))).all()
        states: dict[UUID, int] = {
            pid: version
            for pid, version in await session.execute(
                select(IdentifierState.partner_id, IdentifierState.version)
            )
        }
        # The arms kept of offers no longer active go: they would hold their masks (and the
        # people they index) for the life of the process. Read again if ever needed.
        known = _ARMS.get(arrays, {})
        active = {offer.id for offer in offers}
        for key in [key for key in known if key[0] not in active]:
            del known[key]
        stale = []
        for offer in offers:
            if any(states.get(UUID(pid), 0) != v for pid, v in offer.reconciled.items()):
                partnership = await session.get(Partnership, offer.partnership_id)
                if partnership is not None:
                    stale.append((offer.id, partnership))
    removed = 0
    for offer_id, partnership in stale:
        removed += await reconcile_offer(session_maker, arrays, offer_id, partnership)
    return removed


__all__ = [
    "AUDIENCE",
    "CONTROLS",
    "Arms",
    "assign_arms",
    "eligible",
    "insert_arm",
    "reconcile_active_offers",
    "reconcile_offer",
    "reconcile_offers",
]

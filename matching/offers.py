"""Joint offers: proposal, approval, activation on the consented overlap, and audiences.

* A member proposes an offer for an active partnership that allows ``joint_offers``; its
  approval is implicit. The proposer may set filters on its own attributes only; the other
  member sets its own when it approves. A side's filters restrict only that side's audience.
* The other member's approval activates the offer: each side's audience is its own people in
  the groups matched under ``joint_offers`` consent on both sides, restricted by its own
  filters. If either side's audience is below the partnership's ``min_audience`` the approval
  is refused and nothing changes.
* An offer may hold out a share ``holdout`` of the matched groups as a control (default 0.1,
  up to 0.5; 0 allowed): activation splits each side's eligible people into the treated arm
  (the audience) and the control arm (:mod:`matching.offer_arms`), and needs the treated arm
  and, with a holdout, the control arm to reach ``min_audience`` on each side. A member sees
  only its own side's split sizes.
* The arms are fixed at activation (people matched later are not added). They only shrink:
  when a member's records change (consent withdrawal, erasure, a moved key), the arms are
  reconciled with a fresh computation and whoever left the audience is removed and listed, for
  that member only, in ``/audience/changes``. Reads reconcile first, and the hub's
  maintenance loop reconciles active offers within seconds of a change.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from uuid import UUID

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.core.audit import Actor, append
from hub.core.db import writing
from hub.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from hub.core.instants import as_utc
from hub.core.pagination import Page, paginate, read_after
from matching import result_totals
from matching.loader import ArrayCache, Loaded
from matching.models import (
    ACTIVE,
    ENDED,
    PROPOSED,
    Offer,
    OfferAudience,
    OfferAudienceChange,
)
from matching.offer_arms import AUDIENCE, CONTROLS, assign_arms, insert_arm, reconcile_offer
from matching.overlap import PrivacyRefusal
from matching.schemas import (
    AudienceChange,
    AudienceChanges,
    AudienceItem,
    OfferApprove,
    OfferCreate,
    OfferOut,
)
from partners.partnerships.models import ACTIVE as PARTNERSHIP_ACTIVE
from partners.partnerships.models import ENDED as PARTNERSHIP_ENDED
from partners.partnerships.models import Partnership, PartnershipMember
from partners.partnerships.service import PartnershipService

CHANGES: Table = OfferAudienceChange.__table__  # type: ignore[assignment]


def status_of(offer: Offer, now: datetime | None = None) -> str:
    """An active offer whose window has closed reads as ended."""
    now = now or datetime.now(UTC)
    if offer.status == ACTIVE and offer.ends_at is not None and offer.ends_at <= now:
        return ENDED
    return offer.status


def to_out(offer: Offer, caller: UUID | None) -> OfferOut:
    mine = str(caller) if caller else None
    return OfferOut(
        id=offer.id,
        partnership_id=offer.partnership_id,
        proposer_id=offer.proposer_id,
        title=offer.title,
        description=offer.description,
        points=dict(offer.points),
        status=status_of(offer),
        approvals={k: datetime.fromisoformat(v) for k, v in offer.approvals.items()},
        starts_at=offer.starts_at,
        ends_at=offer.ends_at,
        activated_at=offer.activated_at,
        created_at=offer.created_at,
        filters=dict(offer.filters.get(mine, {})) if mine else {},
        audience_size=offer.audience_sizes.get(mine) if mine else None,
        holdout=offer.holdout,
        attribution_days=offer.attribution_days,
        control_size=(offer.control_sizes or {}).get(mine, 0 if offer.activated_at else None)
        if mine
        else None,
    )


def _check_filters(loaded: Loaded, filters: Mapping[str, Sequence[str]], field: str) -> None:
    errors = []
    for attribute in filters:
        if attribute in loaded.over_quota or attribute not in loaded.side.attributes:
            errors.append(
                {
                    "index": 0,
                    "field": f"{field}.{attribute}",
                    "reason": "none of your records carries this attribute"
                    if attribute not in loaded.over_quota
                    else "this attribute has more than 100 values and cannot filter",
                }
            )
    if errors:
        raise InvalidInput(
            "Filters name attributes your records do not carry.",
            errors=errors,
            fix="Filter on attributes of your own records (see your uploads).",
        )


async def offer_for(
    session: AsyncSession, offer_id: UUID, caller: UUID | None, *, lock: bool = False
) -> tuple[Offer, Partnership]:
    """The offer and its partnership as the member ``caller`` (None: an admin) may see them;
    anyone else gets the 404 an unknown offer gets. Read afresh (with ``lock``, locked)."""
    stmt = select(Offer).where(Offer.id == offer_id).execution_options(populate_existing=True)
    if lock:
        stmt = stmt.with_for_update()
    offer = await session.scalar(stmt)
    if offer is None:
        raise NotFound(f"No offer {offer_id} visible to you.")
    try:
        partnership = await PartnershipService(session).get_for(offer.partnership_id, caller)
    except NotFound:
        raise NotFound(f"No offer {offer_id} visible to you.") from None
    return offer, partnership


class OfferService:
    def __init__(
        self,
        session: AsyncSession,
        session_maker: async_sessionmaker[AsyncSession],
        arrays: ArrayCache,
    ) -> None:
        self.session = session
        self.session_maker = session_maker
        self.arrays = arrays

    # -- reading ---------------------------------------------------------------------------

    async def get_for(
        self, session: AsyncSession, offer_id: UUID, caller: UUID | None, *, lock: bool = False
    ) -> tuple[Offer, Partnership]:
        """The offer as its partnership's member ``caller`` (None: an admin) may see it."""
        return await offer_for(session, offer_id, caller, lock=lock)

    async def page(self, caller: UUID | None, *, cursor: str | None, limit: int) -> Page[OfferOut]:
        stmt = select(Offer)
        if caller is not None:
            stmt = stmt.where(
                Offer.partnership_id.in_(
                    select(PartnershipMember.partnership_id).where(
                        PartnershipMember.partner_id == caller
                    )
                )
            )
        return await paginate(
            self.session,
            stmt,
            Offer.id,
            cursor=cursor,
            limit=limit,
            to_item=lambda o: to_out(o, caller),
            descending=True,
        )

    # -- proposing and approving -------------------------------------------------------------

    async def propose(self, data: OfferCreate, caller: UUID, actor: Actor) -> Offer:
        partnership = await PartnershipService(self.session).get_for(data.partnership_id, caller)
        _require_offers(partnership)
        members = {m.partner_id for m in partnership.members}
        if set(data.points) != members:
            raise InvalidInput(
                "points names each member of the partnership, and nobody else.",
                errors=[{"index": 0, "field": "points", "reason": "one entry per member"}],
                fix="Send points as {<member id>: <points>} for both members.",
            )
        filters = data.filters or {}
        if set(filters) - {caller}:
            raise InvalidInput(
                "A member sets filters on its own attributes only.",
                errors=[{"index": 0, "field": "filters", "reason": "names another member"}],
                fix="Leave the other member's filters to it: it sets them when it approves.",
            )
        starts_at, ends_at = (
            _window_time(data.starts_at, "starts_at"),
            _window_time(data.ends_at, "ends_at"),
        )
        if starts_at and ends_at and ends_at <= starts_at:
            raise InvalidInput(
                "ends_at is not after starts_at.",
                errors=[{"index": 0, "field": "ends_at", "reason": "before starts_at"}],
                fix="Give a validity window whose end is after its start.",
            )
        if ends_at and ends_at <= datetime.now(UTC):
            raise InvalidInput(
                "ends_at is in the past.",
                errors=[{"index": 0, "field": "ends_at", "reason": "in the past"}],
                fix="Give an end in the future, or none.",
            )
        own = filters.get(caller, {})
        if own:
            _check_filters(await self.arrays.get(caller), own, "filters")
        offer = Offer(
            partnership_id=partnership.id,
            proposer_id=caller,
            title=data.title,
            description=data.description,
            points={str(k): v for k, v in data.points.items()},
            filters={str(caller): {k: sorted(set(v)) for k, v in own.items()}} if own else {},
            starts_at=starts_at,
            ends_at=ends_at,
            holdout=data.holdout,
            attribution_days=data.attribution_days,
            salt=secrets.token_bytes(32),
            status=PROPOSED,
            approvals={str(caller): datetime.now(UTC).isoformat()},
            reconciled={},
            audience_sizes={},
        )
        self.session.add(offer)
        await self.session.flush()
        await append(
            self.session,
            actor.event(
                "offer.proposed",
                "offer",
                str(offer.id),
                concerns=members,
                partnership_id=str(partnership.id),
                title=data.title,
                points=offer.points,
                holdout=data.holdout,
                attribution_days=data.attribution_days,
            ),
        )
        await _audit_own_filters(self.session, actor, offer, caller, own)
        return offer

    async def approve(
        self, offer_id: UUID, data: OfferApprove, caller: UUID, actor: Actor
    ) -> Offer:
        # Arrays are loaded before the lock: a first build may take seconds.
        offer, partnership = await self.get_for(self.session, offer_id, caller)
        a_id, b_id = (m.partner_id for m in partnership.members)
        a_loaded, b_loaded = await asyncio.gather(self.arrays.get(a_id), self.arrays.get(b_id))
        loaded = {a_id: a_loaded, b_id: b_loaded}
        offer, partnership = await self.get_for(self.session, offer_id, caller, lock=True)
        if str(caller) in offer.approvals:
            if data.filters:
                raise Conflict(
                    "You have approved this offer already; its filters are set.",
                    fix="Propose a new offer to use other filters.",
                )
            return offer
        if offer.status != PROPOSED:
            raise Conflict(
                f"Offer {offer.id} is {status_of(offer)}; only a proposed offer is approved.",
                fix="Read the offer's status.",
            )
        _require_offers(partnership)
        if offer.ends_at and offer.ends_at <= datetime.now(UTC):
            raise Conflict(
                f"Offer {offer.id} ended at {offer.ends_at.isoformat()} before it was approved.",
                fix="Propose it again with a new validity window.",
            )
        filters = dict(offer.filters)
        if data.filters:
            _check_filters(loaded[caller], data.filters, "filters")
            filters[str(caller)] = {k: sorted(set(v)) for k, v in data.filters.items()}
        salt = offer.salt or secrets.token_bytes(32)
        arms = await asyncio.to_thread(
            assign_arms, loaded[a_id], loaded[b_id], filters, salt, offer.holdout
        )
        sizes = {str(pid): len(arm.treated) for pid, arm in arms.items()}
        control_sizes = {str(pid): len(arm.control) for pid, arm in arms.items()}
        minimum = partnership.min_audience
        too_small = min(sizes.values()) < minimum or (
            offer.holdout > 0 and min(control_sizes.values()) < minimum
        )
        if too_small:
            await self._audit_refusal(actor, offer)  # expires the ORM objects
            raise PrivacyRefusal(
                "The offer's audience (or, with a holdout, its control group) is below the "
                f"partnership's minimum audience of {minimum} on at least one side; it cannot "
                "be activated.",
                fix="Loosen the filters, lower the holdout, or wait for more consented "
                "customers, then propose or approve again.",
            )
        now = datetime.now(UTC)
        offer.filters = filters
        offer.approvals = {**offer.approvals, str(caller): now.isoformat()}
        offer.status = ACTIVE
        offer.activated_at = now
        offer.audience_sizes = sizes
        offer.control_sizes = control_sizes
        offer.salt = salt
        offer.reconciled = {str(pid): loaded[pid].version for pid in (a_id, b_id)}
        for pid, arm in arms.items():
            await insert_arm(self.session, AUDIENCE, offer.id, pid, arm.treated)
            await insert_arm(self.session, CONTROLS, offer.id, pid, arm.control)
        # The results' running totals start now (the window opens now: events dated ahead at
        # most); the inserters of events wait from here to this request's commit.
        await result_totals.fill(self.session, offer, (a_id, b_id), now)
        members = (a_id, b_id)
        await append(
            self.session, actor.event("offer.approved", "offer", str(offer.id), concerns=members)
        )
        await _audit_own_filters(self.session, actor, offer, caller, data.filters or {})
        await append(
            self.session, actor.event("offer.activated", "offer", str(offer.id), concerns=members)
        )
        # Each side's audience size is its own (the API shows a member only its own): one
        # entry per side, concerning that side alone.
        for pid in members:
            await append(
                self.session,
                actor.event(
                    "offer.audience_fixed",
                    "offer",
                    str(offer.id),
                    concerns=[pid],
                    side=str(pid),
                    audience_size=sizes[str(pid)],
                    control_size=control_sizes[str(pid)],
                ),
            )
        await self.session.flush()
        return offer

    async def end(self, offer_id: UUID, caller: UUID, actor: Actor) -> Offer:
        """A member ends the offer now (its window closes; earns that occurred before the end
        are still funded if they arrive within the late days). Ending it again is harmless."""
        offer, _ = await self.get_for(self.session, offer_id, caller, lock=True)
        now = datetime.now(UTC)
        if status_of(offer, now) == ENDED:
            return offer
        offer.status = ENDED
        offer.ends_at = now
        await result_totals.close(self.session, offer)
        await append(
            self.session,
            actor.event(
                "offer.ended",
                "offer",
                str(offer.id),
                concerns=list(offer.points),
                partnership_id=str(offer.partnership_id),
                was_active=offer.activated_at is not None,
            ),
        )
        await self.session.flush()
        return offer

    async def _audit_refusal(self, actor: Actor, offer: Offer) -> None:
        """Record the refusal although nothing else of the request is kept: roll the request
        back, then commit the audit entry alone (the request's session holds SQLite's write
        lock, so a second session could not write)."""
        offer_id = str(offer.id)
        members = list(offer.points)  # read before the rollback expires the offer
        await self.session.rollback()
        await append(
            self.session,
            actor.event(
                "offer.activation_refused",
                "offer",
                offer_id,
                concerns=members,
                reason="min_audience",
            ),
        )
        await self.session.commit()

    # -- audiences -----------------------------------------------------------------------------

    async def audience_page(
        self, offer_id: UUID, caller: UUID, actor: Actor, *, cursor: str | None, limit: int
    ) -> Page[AudienceItem]:
        await self._require_active_partnership(offer_id, caller)
        partnership = await self.reconcile(offer_id, caller)
        stmt = select(OfferAudience).where(
            OfferAudience.offer_id == offer_id, OfferAudience.partner_id == caller
        )
        page = await paginate(
            self.session,
            stmt,
            OfferAudience.customer_ref,
            cursor=cursor,
            limit=limit,
            to_item=lambda row: AudienceItem(customer_ref=row.customer_ref),
            parse_key=_parse_ref,
        )
        await self._audit_read(actor, "offer.audience_read", offer_id, partnership, cursor)
        return page

    async def audience_refs(
        self, offer_id: UUID, caller: UUID, actor: Actor, export_format: str
    ) -> list[str]:
        await self._require_active_partnership(offer_id, caller)
        partnership = await self.reconcile(offer_id, caller)
        rows = await self.session.scalars(
            select(OfferAudience.customer_ref)
            .where(OfferAudience.offer_id == offer_id, OfferAudience.partner_id == caller)
            .order_by(OfferAudience.customer_ref)
        )
        refs = list(rows)
        await self._audit_read(
            actor, "offer.audience_exported", offer_id, partnership, None, format=export_format
        )
        return refs

    async def _require_active_partnership(self, offer_id: UUID, caller: UUID) -> None:
        """Audiences (lists and exports) are served only while the partnership is active.
        Removals are not held back: ``changes`` is served whatever its status."""
        _, partnership = await self.get_for(self.session, offer_id, caller)
        if partnership.status == PARTNERSHIP_ACTIVE:
            return
        then = (
            "an ended partnership is not resumed; the coalition admin may propose a new one"
            if partnership.status == PARTNERSHIP_ENDED
            else "read the audience again once the partnership is active"
        )
        raise Conflict(
            f"Partnership {partnership.id} is {partnership.status}: the audiences of its offers "
            "are not served while it is not active.",
            fix="Keep pulling removals from /v1/offers/{id}/audience/changes (still served) and "
            f"stop using the people it lists; {then}.",
        )

    async def changes(
        self, offer_id: UUID, caller: UUID, actor: Actor, *, cursor: str | None, limit: int
    ) -> AudienceChanges:
        partnership = await self.reconcile(offer_id, caller)
        rows, position, more = await read_after(
            self.session,
            select(CHANGES.c.seq, CHANGES.c.customer_ref, CHANGES.c.change, CHANGES.c.at).where(
                CHANGES.c.offer_id == offer_id, CHANGES.c.partner_id == caller
            ),
            CHANGES.c.seq,
            cursor=cursor,
            limit=limit,
        )
        await self._audit_read(actor, "offer.audience_changes_read", offer_id, partnership, cursor)
        return AudienceChanges(
            items=[AudienceChange(customer_ref=r[1], change=r[2], at=r[3]) for r in rows],
            next_cursor=position,
            has_more=more,
        )

    async def reconcile(self, offer_id: UUID, caller: UUID | None) -> Partnership:
        """Bring an active offer's audiences in line with its members' current records;
        returns the offer's partnership."""
        async with self.session_maker() as session:
            offer, partnership = await self.get_for(session, offer_id, caller)
            if offer.status != ACTIVE:
                if caller is not None and offer.status == PROPOSED:
                    raise Conflict(
                        f"Offer {offer.id} is not active yet: it has no audience.",
                        fix="Wait until the other member approves it.",
                    )
                return partnership
        if self.session.in_transaction():
            # Nothing was written in the request's own transaction yet. Ended now, it holds no
            # pooled connection while the reconciliation runs or waits for another (the soak's
            # day N ran out of connections so), and the reads that follow start after the
            # reconciliation committed: SQLite's read transactions keep the snapshot of their
            # first read, which once served a person the reconciliation had just removed.
            await self.session.rollback()
        await reconcile_offer(self.session_maker, self.arrays, offer.id, partnership)
        return partnership

    async def _audit_read(
        self,
        actor: Actor,
        action: str,
        offer_id: UUID,
        partnership: Partnership,
        cursor: str | None,
        **details: str,
    ) -> None:
        """Every audience read or export is an entry concerning both members. It names no
        count: a side's audience size is its own (the API shows a member only its own).
        Committed on its own (a read's session may be in autocommit)."""
        with writing():
            async with self.session_maker() as session, session.begin():
                await append(
                    session,
                    actor.event(
                        action,
                        "offer",
                        str(offer_id),
                        concerns=[m.partner_id for m in partnership.members],
                        first_page=cursor is None,
                        **details,
                    ),
                )


async def _audit_own_filters(
    session: AsyncSession, actor: Actor, offer: Offer, side: UUID, filters: Mapping[str, object]
) -> None:
    """The attributes a member filters its own side on are its own business: the API never
    shows them to the other member, so neither does the audit (this entry concerns that
    member alone)."""
    if filters:
        await append(
            session,
            actor.event(
                "offer.filters_set",
                "offer",
                str(offer.id),
                concerns=[side],
                filters=sorted(filters),
            ),
        )


def _parse_ref(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("not a customer_ref")
    return value


def _require_offers(partnership: Partnership) -> None:
    if partnership.status != PARTNERSHIP_ACTIVE:
        raise Conflict(
            f"Partnership {partnership.id} is {partnership.status}; offers need an active one.",
            fix="Wait until both members have accepted the partnership.",
        )
    if "joint_offers" not in partnership.purposes:
        raise Forbidden(
            "This partnership does not allow joint offers.",
            fix="Ask the coalition admin for a partnership with the joint_offers purpose.",
        )


# An offer's window lies in these years (UTC): its end plus the attribution days, and the
# measurement windows built from them, must stay times the hub can hold.
WINDOW_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
WINDOW_LATEST = datetime(2100, 1, 1, tzinfo=UTC)


def _window_time(moment: datetime | None, field: str) -> datetime | None:
    """``starts_at`` or ``ends_at`` in UTC (a time without an offset is UTC), in range."""
    if moment is None:
        return None
    moment = as_utc(moment, field)
    if not WINDOW_EARLIEST <= moment < WINDOW_LATEST:
        raise InvalidInput(
            f"{field} is outside the years 2000 to 2099 (UTC).",
            errors=[{"index": 0, "field": field, "reason": "between 2000-01-01 and 2100-01-01"}],
            fix="Give the offer's window in the years 2000 to 2099, or leave it open.",
        )
    return moment

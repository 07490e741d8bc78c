"""Partnerships: proposed by an admin, active once every member accepted with its own token."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.core import audit
from hub.core.audit import Actor
from hub.core.errors import Conflict, InvalidInput, NotFound
from hub.core.pagination import Page, paginate
from partners.partners.models import ACTIVE as PARTNER_ACTIVE
from partners.partners.models import Partner
from partners.partnerships.models import (
    ACTIVE,
    ENDED,
    PROPOSED,
    SUSPENDED,
    Partnership,
    PartnershipMember,
)
from partners.partnerships.schemas import (
    MemberOut,
    PartnershipCreate,
    PartnershipOut,
    PartnershipUpdate,
)

OPEN = (PROPOSED, ACTIVE, SUSPENDED)
# Allowed admin transitions (PATCH). Activation from "proposed" happens only by acceptance.
TRANSITIONS = {
    PROPOSED: {ENDED},
    ACTIVE: {SUSPENDED, ENDED},
    SUSPENDED: {ACTIVE, ENDED},
    ENDED: set(),
}


class PartnershipRepository(SQLAlchemyAsyncRepository[Partnership]):
    model_type = Partnership


def to_out(p: Partnership) -> PartnershipOut:
    return PartnershipOut(
        id=p.id,
        status=p.status,
        members=[
            MemberOut(
                partner_id=m.partner_id,
                accepted=m.accepted_at is not None,
                accepted_at=m.accepted_at,
            )
            for m in p.members
        ],
        purposes=list(p.purposes),
        min_audience=p.min_audience,
        epsilon=p.epsilon,
        epsilon_budget=budget_of(p),
        budget_period=p.budget_period,
        allow_competitors=p.allow_competitors,
        created_at=p.created_at,
        updated_at=p.updated_at,
    )


QUERIES_PER_BUDGET = 10


def budget_of(p: Partnership) -> float | None:
    """The epsilon a partnership's queries may spend per period (None: no noise, no budget)."""
    if p.epsilon is None:
        return None
    return p.epsilon_budget if p.epsilon_budget is not None else p.epsilon * QUERIES_PER_BUDGET


def _rule(field: str, reason: str, fix: str) -> InvalidInput:
    return InvalidInput(reason, errors=[{"index": 0, "field": field, "reason": reason}], fix=fix)


class PartnershipService:
    def __init__(
        self, session: AsyncSession, *, default_min_audience: int = 50, floor_min_audience: int = 10
    ) -> None:
        self.session = session
        self.repo = PartnershipRepository(session=session)
        self.default_min_audience = default_min_audience
        self.floor_min_audience = floor_min_audience

    async def _members(self, ids: list[UUID]) -> list[Partner]:
        if ids[0] == ids[1]:
            raise _rule(
                "members",
                "a partnership needs two different partners",
                "Name two distinct partner ids.",
            )
        # Locking both partners serialises proposals for the same pair (PostgreSQL).
        locked = select(Partner).where(Partner.id.in_(ids)).order_by(Partner.id).with_for_update()
        found = {p.id: p for p in await self.session.scalars(locked)}
        missing = [str(i) for i in ids if i not in found]
        if missing:
            raise _rule(
                "members",
                f"unknown partner(s): {', '.join(missing)}",
                "Use ids returned by GET /v1/partners.",
            )
        partners = [found[i] for i in ids]
        inactive = [str(p.id) for p in partners if p.status != PARTNER_ACTIVE]
        if inactive:
            raise _rule(
                "members",
                f"suspended partner(s): {', '.join(inactive)}",
                "Reactivate the partner before proposing a partnership.",
            )
        return partners

    async def propose(self, data: PartnershipCreate, actor: Actor) -> Partnership:
        a, b = await self._members(data.members)
        min_audience = (
            data.min_audience if data.min_audience is not None else self.default_min_audience
        )
        if min_audience < self.floor_min_audience:
            raise _rule(
                "min_audience",
                f"min_audience must be at least {self.floor_min_audience}",
                f"Use a threshold of {self.floor_min_audience} or more (default "
                f"{self.default_min_audience}).",
            )
        if data.epsilon is not None and not 0 < data.epsilon <= 10:
            raise _rule(
                "epsilon",
                "epsilon must be greater than 0 and at most 10",
                "Use a small positive epsilon such as 0.5 or 1.0, or leave it out.",
            )
        if data.epsilon_budget is not None and (
            data.epsilon is None or data.epsilon_budget < data.epsilon
        ):
            raise _rule(
                "epsilon_budget",
                "epsilon_budget needs an epsilon and must be at least one query's epsilon",
                "Set epsilon too, and an epsilon_budget of at least epsilon (default: 10 "
                "queries' worth).",
            )
        if a.category == b.category and not data.allow_competitors:
            raise _rule(
                "members",
                f"both partners are in the category {a.category!r}: coalitions share "
                "between non-competing brands",
                "Set allow_competitors: true if the coalition really wants this.",
            )
        existing = await self.session.scalar(
            select(Partnership.id)
            .join(PartnershipMember, PartnershipMember.partnership_id == Partnership.id)
            .where(Partnership.status.in_(OPEN), PartnershipMember.partner_id == a.id)
            .where(
                Partnership.id.in_(
                    select(PartnershipMember.partnership_id).where(
                        PartnershipMember.partner_id == b.id
                    )
                )
            )
        )
        if existing is not None:
            raise Conflict(
                f"Partners {a.id} and {b.id} already have partnership {existing}.",
                fix="Update or end that partnership instead of creating another.",
            )
        partnership = Partnership(
            status=PROPOSED,
            purposes=sorted(set(data.purposes)),
            min_audience=min_audience,
            epsilon=data.epsilon,
            epsilon_budget=data.epsilon_budget,
            budget_period=data.budget_period,
            allow_competitors=data.allow_competitors,
            members=[PartnershipMember(partner_id=a.id), PartnershipMember(partner_id=b.id)],
        )
        await self.repo.add(partnership)
        await audit.append(
            self.session,
            actor.event(
                "partnership.proposed",
                "partnership",
                str(partnership.id),
                concerns=(a.id, b.id),
                members=[str(a.id), str(b.id)],
                purposes=partnership.purposes,
                min_audience=min_audience,
                epsilon=data.epsilon,
                epsilon_budget=data.epsilon_budget,
                budget_period=data.budget_period,
                allow_competitors=data.allow_competitors,
            ),
        )
        return partnership

    async def get_for(
        self, partnership_id: UUID, partner_id: UUID | None, *, for_update: bool = False
    ) -> Partnership:
        """Read as an admin (``partner_id`` None) or as a member; others get 404.

        ``for_update`` locks the row (PostgreSQL; SQLite writers are serialised already) so two
        members accepting at once, or an admin ending it meanwhile, see each other's change.
        """
        stmt = select(Partnership).where(Partnership.id == partnership_id)
        if for_update:
            stmt = stmt.with_for_update().execution_options(populate_existing=True)
        partnership = await self.session.scalar(stmt)
        if partnership is None or (
            partner_id is not None and partner_id not in {m.partner_id for m in partnership.members}
        ):
            raise NotFound(f"No partnership {partnership_id} visible to you.")
        return partnership

    async def accept(self, partnership_id: UUID, partner_id: UUID, actor: Actor) -> Partnership:
        partnership = await self.get_for(partnership_id, partner_id, for_update=True)
        member = next(m for m in partnership.members if m.partner_id == partner_id)
        if member.accepted_at is None:
            if partnership.status != PROPOSED:
                raise Conflict(
                    f"Partnership {partnership.id} is {partnership.status}; only a "
                    "proposed partnership can be accepted.",
                    fix="Ask the coalition admin to propose a new partnership.",
                )
            member.accepted_at = datetime.now(UTC)
            await audit.append(
                self.session,
                actor.event(
                    "partnership.accepted",
                    "partnership",
                    str(partnership.id),
                    concerns=(m.partner_id for m in partnership.members),
                ),
            )
        # Accepting twice is the same as once; either way, the last acceptance activates it.
        if partnership.status == PROPOSED and all(m.accepted_at for m in partnership.members):
            partnership.status = ACTIVE
            await audit.append(
                self.session,
                actor.event(
                    "partnership.activated",
                    "partnership",
                    str(partnership.id),
                    concerns=(m.partner_id for m in partnership.members),
                ),
            )
        await self.session.flush()
        return partnership

    async def update(
        self, partnership_id: UUID, data: PartnershipUpdate, actor: Actor
    ) -> Partnership:
        partnership = await self.get_for(partnership_id, None, for_update=True)
        if data.status == partnership.status:
            return partnership
        if data.status not in TRANSITIONS[partnership.status]:
            hint = (
                "members activate it by accepting"
                if partnership.status == PROPOSED
                else "an ended partnership stays ended; propose a new one"
                if partnership.status == ENDED
                else "choose another status"
            )
            raise Conflict(
                f"A {partnership.status} partnership cannot become {data.status}.",
                fix=hint[0].upper() + hint[1:] + ".",
            )
        previous = partnership.status
        partnership.status = data.status
        await audit.append(
            self.session,
            actor.event(
                f"partnership.{data.status if data.status != ACTIVE else 'resumed'}",
                "partnership",
                str(partnership.id),
                concerns=(m.partner_id for m in partnership.members),
                previous=previous,
            ),
        )
        await self.session.flush()
        return partnership

    async def list(
        self, partner_id: UUID | None, *, cursor: str | None, limit: int, status: str | None = None
    ) -> Page[PartnershipOut]:
        stmt = select(Partnership)
        if partner_id is not None:
            stmt = stmt.where(
                Partnership.id.in_(
                    select(PartnershipMember.partnership_id).where(
                        PartnershipMember.partner_id == partner_id
                    )
                )
            )
        if status:
            stmt = stmt.where(Partnership.status == status)
        return await paginate(
            self.session, stmt, Partnership.id, cursor=cursor, limit=limit, to_item=to_out
        )

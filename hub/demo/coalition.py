"""The demo coalition's partners, partnerships, joint offer and credentials, through the
hub's own services (the same calls as the API's controllers, with the CLI as the actor).

Every step finds what an earlier run made before making anything: partners by name, an open
partnership by its pair, the offer by its title, so running the demo again never duplicates.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

import msgspec
from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.console.accounts import ConsoleAccounts
from hub.console.models import ConsoleUser
from hub.core.audit import Actor
from hub.core.auth import ADMIN_SCOPE, PARTNER_SCOPES
from hub.core.secrets import SecretHasher
from hub.demo.brands import (
    OFFER_DAYS,
    OFFER_DESCRIPTION,
    OFFER_HOLDOUT,
    OFFER_POINTS,
    OFFER_TITLE,
    PARTNERSHIPS,
    Brand,
    PartnershipPlan,
)
from hub.settings import Settings
from matching.loader import ArrayCache
from matching.models import PROPOSED as OFFER_PROPOSED
from matching.models import Offer
from matching.offers import OfferService
from matching.schemas import OfferApprove, OfferCreate
from partners.clients.models import ACTIVE as CLIENT_ACTIVE
from partners.clients.models import OAuthClient
from partners.clients.schemas import ClientCreate
from partners.clients.service import ClientService
from partners.partners.models import ACTIVE as PARTNER_ACTIVE
from partners.partners.models import Partner
from partners.partners.schemas import PartnerCreate, PartnerUpdate
from partners.partners.service import PartnerService
from partners.partnerships.models import Partnership, PartnershipMember
from partners.partnerships.schemas import PartnershipCreate
from partners.partnerships.service import OPEN, PartnershipService

DEMO_ACTOR = Actor(name="cli:demo")
PARTNER_CLIENT_NAME = "demo"
ADMIN_CLIENT_NAME = "demo-admin"
CONSOLE_USERNAME = "demo-admin"


def member_actor(partner_id: UUID) -> Actor:
    """The demo acting as a member brand (accepting, proposing, approving)."""
    return Actor(name="cli:demo", partner_id=str(partner_id))


@dataclass(frozen=True)
class Credentials:
    """A client id and secret, or a console username and password (shown once)."""

    name: str
    secret: str


async def ensure_partner(session: AsyncSession, settings: Settings, brand: Brand) -> Partner:
    """The brand's partner, onboarded unless a partner of that name exists (reactivated if an
    admin suspended it since)."""
    service = PartnerService(session, allow_loopback_http=settings.webhooks.allow_loopback_http)
    found = await session.scalar(
        select(Partner).where(func.lower(Partner.name) == brand.name.lower())
    )
    if found is None:
        return await service.onboard(
            PartnerCreate(name=brand.name, category=brand.category), DEMO_ACTOR
        )
    if found.status != PARTNER_ACTIVE:
        return await service.update(found.id, PartnerUpdate(status="active"), DEMO_ACTOR)
    return found


async def _open_partnership(session: AsyncSession, a: UUID, b: UUID) -> Partnership | None:
    both = (
        select(PartnershipMember.partnership_id)
        .where(PartnershipMember.partner_id.in_([a, b]))
        .group_by(PartnershipMember.partnership_id)
        .having(func.count() == 2)
    )
    return await session.scalar(
        select(Partnership).where(Partnership.id.in_(both), Partnership.status.in_(OPEN))
    )


async def ensure_partnership(
    session: AsyncSession, settings: Settings, plan: PartnershipPlan, ids: dict[str, UUID]
) -> Partnership:
    """Proposed by the coalition admin (unless open already), then accepted by each member
    with its own identity, which activates it."""
    service = PartnershipService(
        session,
        default_min_audience=settings.partnerships.default_min_audience,
        floor_min_audience=settings.partnerships.floor_min_audience,
    )
    a, b = ids[plan.a.key], ids[plan.b.key]
    partnership = await _open_partnership(session, a, b)
    if partnership is None:
        partnership = await service.propose(
            msgspec.convert(
                {"members": [a, b], "purposes": plan.purposes, "min_audience": plan.min_audience},
                PartnershipCreate,
            ),
            DEMO_ACTOR,
        )
    for member in (a, b):
        partnership = await service.accept(partnership.id, member, member_actor(member))
    return partnership


async def ensure_partnerships(
    session: AsyncSession, settings: Settings, ids: dict[str, UUID], customers: int
) -> list[Partnership]:
    """The demo's partnerships. A small demo (under 5,000 customers a brand) asks a smaller
    minimum audience, a hundredth of its customers and at least the floor: with a 10 %
    holdout the offer's control group of a 3,000-customer demo is about 60 people, and a
    random salt put it under 50 now and then (the offer then cannot activate)."""
    plans = [
        dataclasses.replace(
            plan,
            min_audience=max(
                settings.partnerships.floor_min_audience,
                min(plan.min_audience, customers // 100),
            ),
        )
        for plan in PARTNERSHIPS
    ]
    return [await ensure_partnership(session, settings, plan, ids) for plan in plans]


OFFER_BACKDATE_DAYS = 8


async def ensure_offer(
    sessions: async_sessionmaker[AsyncSession],
    arrays: ArrayCache,
    partnership: Partnership,
    ids: dict[str, UUID],
) -> Offer:
    """The airline's joint offer on its hotel partnership, approved by the hotel (approval
    activates it and computes both audiences), unless it exists already."""
    airline, hotel = (ids[key] for key in OFFER_POINTS)
    async with sessions() as session:
        offer = await session.scalar(
            select(Offer).where(Offer.partnership_id == partnership.id, Offer.title == OFFER_TITLE)
        )
        if offer is not None and offer.status != OFFER_PROPOSED:
            return offer
    # The first approval builds both brands' arrays (seconds at full size): warm them first,
    # outside the write transaction (on SQLite a reader never waits for a writer).
    await asyncio.gather(arrays.get(airline), arrays.get(hotel))
    async with sessions() as session:
        service = OfferService(session, sessions, arrays)
        if offer is None:
            offer = await service.propose(
                OfferCreate(
                    partnership_id=partnership.id,
                    title=OFFER_TITLE,
                    description=OFFER_DESCRIPTION,
                    points={ids[key]: points for key, points in OFFER_POINTS.items()},
                    ends_at=datetime.now(UTC) + timedelta(days=OFFER_DAYS),
                    holdout=OFFER_HOLDOUT,
                ),
                airline,
                member_actor(airline),
            )
            await session.commit()
        offer = await service.approve(offer.id, OfferApprove(), hotel, member_actor(hotel))
        # The demo's activity spans past weeks, its offer's earns the last one: the offer is
        # dated as activated before them, so they fall in its window (a demo-only shortcut;
        # the API never backdates an activation).
        assert offer.activated_at is not None
        offer.activated_at -= timedelta(days=OFFER_BACKDATE_DAYS)
        await session.commit()
        return offer


def _client(name: str, scopes: list[str]) -> ClientCreate:
    return msgspec.convert({"name": name, "scopes": scopes}, ClientCreate)


async def _revoke_named(
    session: AsyncSession, service: ClientService, partner_id: UUID | None, name: str
) -> None:
    owned = (
        OAuthClient.partner_id.is_(None)
        if partner_id is None
        else OAuthClient.partner_id == partner_id
    )
    earlier = await session.scalars(
        select(OAuthClient.client_id).where(
            owned, OAuthClient.name == name, OAuthClient.status == CLIENT_ACTIVE
        )
    )
    for client_id in list(earlier):
        await service.revoke(partner_id, client_id, DEMO_ACTOR)


async def fresh_credentials(
    session: AsyncSession, hasher: SecretHasher, partners: dict[str, Partner]
) -> tuple[Credentials, dict[str, Credentials]]:
    """A new admin client and a new client per brand (all partner scopes); the demo's
    earlier clients are revoked, so only the secrets printed now work (the hub keeps slow
    hashes: an old secret cannot be shown again)."""
    service = ClientService(session, hasher)
    await _revoke_named(session, service, None, ADMIN_CLIENT_NAME)
    admin = await service.create(None, _client(ADMIN_CLIENT_NAME, [ADMIN_SCOPE]), DEMO_ACTOR)
    out: dict[str, Credentials] = {}
    for key, partner in partners.items():
        await _revoke_named(session, service, partner.id, PARTNER_CLIENT_NAME)
        created = await service.create(
            partner,
            _client(PARTNER_CLIENT_NAME, list(PARTNER_SCOPES)),
            DEMO_ACTOR,
        )
        assert created.client_secret is not None
        out[key] = Credentials(created.client_id, created.client_secret)
    assert admin.client_secret is not None
    return Credentials(admin.client_id, admin.client_secret), out


async def fresh_console_user(session: AsyncSession, hasher: SecretHasher) -> Credentials:
    """A console account with a random password (shown once). The console stores only a slow
    hash and has no password reset, so a later run makes a new account (``demo-admin-2``...)
    and disables the demo's earlier ones."""
    accounts = ConsoleAccounts(session, hasher)
    earlier = list(
        await session.scalars(
            select(ConsoleUser).where(
                or_(
                    ConsoleUser.username == CONSOLE_USERNAME,
                    ConsoleUser.username.startswith(f"{CONSOLE_USERNAME}-"),
                )
            )
        )
    )
    taken = {user.username for user in earlier}
    username = CONSOLE_USERNAME
    number = 1
    while username in taken:
        number += 1
        username = f"{CONSOLE_USERNAME}-{number}"
    for user in earlier:
        if not user.disabled:
            await accounts.disable(user.username, DEMO_ACTOR)
    password = secrets.token_urlsafe(18)
    await accounts.create(username, password, DEMO_ACTOR)
    return Credentials(username, password)

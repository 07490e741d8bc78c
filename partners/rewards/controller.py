"""``/v1/rewards``: reward events, balances and the shared-activity feed (settlement
statements are in :mod:`partners.rewards.statements`)."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody, Parameter
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.core.audit import Actor
from hub.core.auth import Principal, requires_partner, requires_scope
from hub.core.errors import BadRequest, InvalidInput, PayloadTooLarge
from hub.core.openapi import OPENAPI_BODY_OPT, OPENAPI_STATUSES_OPT
from hub.core.pagination import (
    CursorParameter,
    LimitParameter,
    decode_cursor,
    parse_seq,
    read_after,
)
from matching.offer_arms import reconcile_offers
from partners.identifiers.crypto import IdentifierCrypto
from partners.identifiers.models import ID_TYPE_CODES
from partners.kit import parse_digest
from partners.rewards.models import RewardFeedItem
from partners.rewards.schemas import (
    MAX_EVENTS,
    MAX_EVENTS_BODY_BYTES,
    BalanceOut,
    EventsIn,
    EventsOut,
    FeedItem,
    FeedPage,
    RewardEventsBody,
)
from partners.rewards.service import RewardService, check_events, remember_read

WRITE, READ = "rewards:write", "rewards:read"


def provide_rewards(db_session: NamedDependency[AsyncSession], state: State) -> RewardService:
    crypto: IdentifierCrypto = state.identifier_crypto

    async def reconcile(offer_ids: Sequence[UUID]) -> None:
        await reconcile_offers(state.session_maker, state.array_cache, offer_ids)

    # On PostgreSQL, new members are committed before the events, so other brands' requests
    # naming them do not wait for this one (on SQLite, writers take turns anyway).
    apart = db_session.get_bind().dialect.name == "postgresql"
    return RewardService(db_session, crypto, reconcile, members_apart=apart)


class RewardController(Controller):
    path = "/v1/rewards"
    tags = ["rewards"]
    guards = [requires_partner]
    dependencies = {"rewards": Provide(provide_rewards, sync_to_thread=False)}

    @post(
        "/events",
        guards=[requires_scope(WRITE)],
        status_code=200,
        request_max_body_size=MAX_EVENTS_BODY_BYTES,
        summary="Record up to 1,000 reward events (all or nothing, idempotent per event_id)",
        opt={OPENAPI_BODY_OPT: RewardEventsBody},
    )
    async def events(
        self,
        data: JSONBody[EventsIn],
        rewards: NamedDependency[RewardService],
        principal: NamedDependency[Principal],
        actor: NamedDependency[Actor],
    ) -> EventsOut:
        if len(data.events) > MAX_EVENTS:
            raise PayloadTooLarge(
                f"This request holds {len(data.events)} events; the limit is {MAX_EVENTS}.",
                fix=f"Send at most {MAX_EVENTS:,} events per request.",
            )
        valid, errors = check_events(data.events)
        if errors:
            bad = len({e["index"] for e in errors})
            raise InvalidInput(
                f"{bad} of {len(data.events)} events are invalid; nothing was applied.",
                errors=errors,
            )
        return await rewards.record(principal.partner, valid, actor)

    @get(
        "/balances",
        guards=[requires_scope(READ)],
        summary="A member's points as the caller may know them",
        description="Name the member by id_type and id_hash, or by the caller's own "
        "customer_ref. coalition_points is null unless the member consented to sharing "
        "rewards with the caller. 404 when the caller's brand holds no such member.",
        opt={OPENAPI_STATUSES_OPT: (404,)},
    )
    async def balances(
        self,
        rewards: NamedDependency[RewardService],
        principal: NamedDependency[Principal],
        id_type: str | None = Parameter(default=None, pattern="^(email|phone)$"),
        id_hash: str | None = Parameter(default=None, max_length=100),
        customer_ref: str | None = Parameter(default=None, max_length=200),
    ) -> BalanceOut:
        by_hash = id_type is not None and id_hash is not None
        if by_hash == (customer_ref is not None) or (id_type is None) != (id_hash is None):
            raise BadRequest(
                "Name the member either by id_type and id_hash, or by customer_ref.",
                fix="Use ?id_type=email&id_hash=<digest> or ?customer_ref=<your reference>.",
            )
        if by_hash:
            assert id_type is not None
            assert id_hash is not None
            try:
                digest = parse_digest(id_hash)
            except ValueError as exc:
                raise BadRequest(str(exc), fix="Send the digest as 64 hex or 44 base64.") from exc
            return await rewards.balance(
                principal.partner, digest=digest, id_type=ID_TYPE_CODES[id_type], customer_ref=None
            )
        return await rewards.balance(
            principal.partner, digest=None, id_type=None, customer_ref=customer_ref
        )

    @get(
        "/feed",
        guards=[requires_scope(READ)],
        summary="Coalition activity of the caller's members at other brands, since a cursor",
        description="Items name the member by the caller's own customer_ref. next_cursor is "
        "always returned: pass it back to receive only later items.",
    )
    async def feed(
        self,
        db_session: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
        state: State,
        limit: int = LimitParameter,
        cursor: str | None = CursorParameter,
    ) -> FeedPage:
        if cursor:
            # The cursor a reader presents is how far it has read: withdrawn items before it
            # may now leave with the feed's retention.
            await remember_read(
                state.session_maker, principal.partner, decode_cursor(cursor, parse_seq)
            )
        feed = RewardFeedItem.__table__.c
        rows, position, more = await read_after(
            db_session,
            select(
                feed.seq,
                feed.customer_ref,
                feed.kind,
                feed.points,
                feed.occurred_at,
                feed.source_partner_id,
            ).where(feed.partner_id == principal.partner),
            feed.seq,
            cursor=cursor,
            limit=limit,
        )
        return FeedPage(
            items=[
                FeedItem(
                    id=r.seq,
                    customer_ref=r.customer_ref,
                    kind=r.kind,
                    points=r.points,
                    occurred_at=r.occurred_at,
                    source_partner_id=r.source_partner_id,
                )
                for r in rows
            ],
            next_cursor=position,
            has_more=more,
        )

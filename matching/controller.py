"""HTTP: overlaps, privacy budgets, the coalition matrix, joint offers and their audiences."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any
from uuid import UUID

import msgspec
from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody, Parameter
from litestar.response import Stream
from sqlalchemy.ext.asyncio import AsyncSession

from hub.core.audit import Actor
from hub.core.auth import (
    Principal,
    requires_admin,
    requires_any_scope,
    requires_partner,
    requires_scope,
)
from hub.core.errors import BadRequest
from hub.core.openapi import (
    OPENAPI_ALSO_AS_OPT,
    OPENAPI_BODY_OPT,
    OPENAPI_BODY_OPTIONAL_OPT,
    OPENAPI_STATUSES_OPT,
)
from hub.core.pagination import CursorParameter, LimitParameter, Page, check_limit
from matching.matrix import MatrixCell, overlap_matrix
from matching.offers import OfferService, to_out
from matching.overlap import OverlapService, budget_status
from matching.results import OfferResultsService
from matching.schemas import (
    AudienceChanges,
    AudienceItem,
    BudgetOut,
    CellOut,
    MatrixCellOut,
    MatrixOut,
    OfferApprove,
    OfferCreate,
    OfferOut,
    OfferResultsOut,
    OverlapOut,
    PartnerRef,
)
from partners.free_text import filter_texts, refuse_contact_details
from partners.partnerships.service import PartnershipService

OVERLAP_READ = "overlap:read"
OFFERS_READ, OFFERS_WRITE = "offers:read", "offers:write"
PURPOSE_PATTERN = "^(analytics|joint_offers|rewards_sharing)$"


def _caller(principal: Principal) -> UUID | None:
    """The member asking, or None for a coalition admin (who sees every partnership)."""
    if principal.is_admin or principal.partner_id is None:
        return None
    return UUID(principal.partner_id)


def provide_offers(db_session: NamedDependency[AsyncSession], state: State) -> OfferService:
    return OfferService(db_session, state.session_maker, state.array_cache)


class OverlapController(Controller):
    path = "/v1"
    tags = ["matching"]

    @get(
        "/partnerships/{partnership_id:uuid}/overlap",
        guards=[requires_partner, requires_scope(OVERLAP_READ)],
        summary="Consented overlap with the other member, optionally broken down",
        description=(
            "Counts connected groups of matched people whose records on both sides carry the "
            "purpose. Counts below the partnership's min_audience are suppressed, breakdown "
            "cells with complementary suppression; noise is added when the partnership has an "
            "epsilon. An answer that would differ from an earlier answer to the same question "
            "by fewer than min_audience people is refused (422 privacy-refusal)."
        ),
    )
    async def overlap(
        self,
        partnership_id: FromPath[UUID],
        state: State,
        db_session: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
        actor: NamedDependency[Actor],
        purpose: str = Parameter(pattern=PURPOSE_PATTERN),
        by: str | None = Parameter(
            default=None,
            max_length=300,
            pattern=r"^[^\x00-\x1f\x7f]*$",  # attribute names hold no control characters
            description="Breakdown: self.<attribute>, partner.<attribute> or "
            "<member id>.<attribute>, comma separated",
        ),
    ) -> OverlapOut:
        service: OverlapService = state.overlap_service
        answer = await service.ask(
            db_session, partnership_id, principal.partner, purpose, by, actor
        )
        out = OverlapOut(
            purpose=answer.purpose,
            count=answer.count,
            suppressed=answer.suppressed,
            min_audience=answer.min_audience,
            noise=answer.noise,
        )
        if answer.breakdown is not None:
            out.breakdown = [CellOut(c.values, c.count, c.suppressed) for c in answer.breakdown]
        return out

    @get(
        "/partnerships/{partnership_id:uuid}/budget",
        guards=[requires_any_scope(OVERLAP_READ, "admin")],
        summary="The partnership's privacy budget: used and left in this period",
    )
    async def budget(
        self,
        partnership_id: FromPath[UUID],
        db_session: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> BudgetOut:
        partnership = await PartnershipService(db_session).get_for(
            partnership_id, _caller(principal)
        )
        status = await budget_status(db_session, partnership)
        if status is None:
            return BudgetOut(
                partnership_id=partnership.id,
                noise=False,
                epsilon=None,
                budget=None,
                spent=0.0,
                left=None,
                period=partnership.budget_period,
                period_start=None,
                renews_at=None,
                queries=0,
            )
        return BudgetOut(
            partnership_id=partnership.id,
            noise=True,
            epsilon=partnership.epsilon,
            budget=status.budget.total,
            spent=status.budget.spent,
            left=status.budget.left,
            period=status.period,
            period_start=status.period_start,
            renews_at=status.renews_at,
            queries=status.queries,
        )

    @get(
        "/coalition/overlap-matrix",
        guards=[requires_admin],
        summary="Pairwise overlaps of every active partner, under each pair's rules (admin)",
        description=(
            "A pair that has or had a partnership (in any status) is answered as that "
            "partnership answers its members: its min_audience, its epsilon noise charged to "
            "its budget, the differencing rule; or the cell is refused (refused, reason: "
            "purpose-not-allowed, budget-exhausted, differencing). Pairs that never had one "
            "use the coalition default threshold on analytics consent. Answers are stored "
            "with both sides' data versions and served again, spending nothing, until either "
            "side's data changes. One matrix covers at most matching.matrix_max_partners "
            "partners (422 beyond): name the ones to compare with ?partner=."
        ),
        opt={OPENAPI_STATUSES_OPT: (422,)},
    )
    async def matrix(
        self,
        state: State,
        actor: NamedDependency[Actor],
        purpose: str = Parameter(default="analytics", pattern=PURPOSE_PATTERN),
        partner: list[UUID] | None = Parameter(
            default=None,
            required=False,
            description="Partners to compare (repeat it); all active partners when absent. "
            "At most matching.matrix_max_partners (200 by default) either way: 422 beyond.",
        ),
    ) -> MatrixOut:
        matrix = await overlap_matrix(
            state.overlap_service,
            purpose,
            state.settings.partnerships.default_min_audience,
            actor,
            chosen=partner or (),
            max_partners=state.settings.matching.matrix_max_partners,
        )
        return MatrixOut(
            purpose=purpose,
            partners=[PartnerRef(id=pid, name=name) for pid, name in matrix.partners],
            cells=[matrix_cell_out(c) for c in matrix.cells],
        )


def matrix_cell_out(cell: MatrixCell) -> MatrixCellOut:
    answer = cell.answer
    return MatrixCellOut(
        a=cell.a,
        b=cell.b,
        count=answer.count,
        suppressed=answer.suppressed,
        min_audience=answer.min_audience,
        partnership_id=answer.partnership_id,
        noise=answer.noise,
        answered_at=answer.answered_at,
        refused=answer.refused,
        reason=answer.reason,
        stale=answer.stale,
    )


def _ndjson(refs: list[str]) -> Iterator[bytes]:
    for start in range(0, len(refs), 1000):
        yield "".join(
            json.dumps({"customer_ref": r}) + "\n" for r in refs[start : start + 1000]
        ).encode()


def _csv(refs: list[str]) -> Iterator[bytes]:
    yield b"customer_ref\r\n"
    for start in range(0, len(refs), 1000):
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerows([r] for r in refs[start : start + 1000])
        yield buffer.getvalue().encode()


class Download(Stream):
    """A stream whose own media type wins over the route's (Litestar 2.25 prefers the
    route handler's JSON default to the response's, contrary to its docstring)."""

    def to_asgi_response(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["media_type"] = self.media_type
        return super().to_asgi_response(*args, **kwargs)


async def _stream(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


class OfferController(Controller):
    path = "/v1/offers"
    tags = ["offers"]
    dependencies = {"offers": Provide(provide_offers, sync_to_thread=False)}

    @post(
        "/",
        guards=[requires_partner, requires_scope(OFFERS_WRITE)],
        status_code=201,
        summary="Propose a joint offer to the other member of a partnership",
    )
    async def propose(
        self,
        data: JSONBody[OfferCreate],
        offers: NamedDependency[OfferService],
        principal: NamedDependency[Principal],
        actor: NamedDependency[Actor],
    ) -> OfferOut:
        refuse_contact_details(
            (text for side in (data.filters or {}).values() for text in filter_texts(side)),
            title=data.title,
            description=data.description,
        )
        offer = await offers.propose(data, principal.partner, actor)
        return to_out(offer, principal.partner)

    @get(
        "/",
        guards=[requires_any_scope(OFFERS_READ, OFFERS_WRITE, "admin")],
        summary="List offers (members: their partnerships'; admins: all)",
    )
    async def list_offers(
        self,
        offers: NamedDependency[OfferService],
        principal: NamedDependency[Principal],
        limit: int = LimitParameter,
        cursor: str | None = CursorParameter,
    ) -> Page[OfferOut]:
        return await offers.page(_caller(principal), cursor=cursor, limit=limit)

    @get(
        "/{offer_id:uuid}",
        guards=[requires_any_scope(OFFERS_READ, OFFERS_WRITE, "admin")],
        summary="Read an offer",
    )
    async def read(
        self,
        offer_id: FromPath[UUID],
        offers: NamedDependency[OfferService],
        db_session: NamedDependency[AsyncSession],
        principal: NamedDependency[Principal],
    ) -> OfferOut:
        offer, _ = await offers.get_for(db_session, offer_id, _caller(principal))
        return to_out(offer, _caller(principal))

    @post(
        "/{offer_id:uuid}/approve",
        guards=[requires_partner, requires_scope(OFFERS_WRITE)],
        status_code=200,
        summary="Approve an offer as the other member (activates it)",
        description="The body may carry the approving member's own filters. Approving twice "
        "is harmless. Refused (422) when either side's audience is below min_audience.",
        opt={OPENAPI_BODY_OPT: OfferApprove, OPENAPI_BODY_OPTIONAL_OPT: True},
    )
    async def approve(
        self,
        offer_id: FromPath[UUID],
        offers: NamedDependency[OfferService],
        principal: NamedDependency[Principal],
        actor: NamedDependency[Actor],
        request: Request[Any, Any, Any],
    ) -> OfferOut:
        body = await request.body()
        data = OfferApprove()
        if body.strip():
            try:
                data = msgspec.json.decode(body, type=OfferApprove)
            except msgspec.DecodeError as exc:
                raise BadRequest(
                    f"The body is not a valid approval: {exc}.",
                    fix='Send no body, or {"filters": {"<attribute>": ["<value>", ...]}}.',
                ) from exc
        refuse_contact_details(filter_texts(data.filters))
        offer = await offers.approve(offer_id, data, principal.partner, actor)
        return to_out(offer, principal.partner)

    @post(
        "/{offer_id:uuid}/end",
        guards=[requires_partner, requires_scope(OFFERS_WRITE)],
        status_code=200,
        summary="End an offer now (either member)",
        description="Closes the offer's window at once: earns that occurred before the end "
        "are still funded when sent within 7 days. A proposed offer ends without ever being "
        "active. Ending an ended offer is harmless.",
    )
    async def end(
        self,
        offer_id: FromPath[UUID],
        offers: NamedDependency[OfferService],
        principal: NamedDependency[Principal],
        actor: NamedDependency[Actor],
    ) -> OfferOut:
        offer = await offers.end(offer_id, principal.partner, actor)
        return to_out(offer, principal.partner)

    @get(
        "/{offer_id:uuid}/audience",
        guards=[requires_partner, requires_any_scope(OFFERS_READ, OFFERS_WRITE)],
        summary="The caller's own customer_refs in an active offer's audience",
        description="Paginated JSON, or the whole audience with format=ndjson or format=csv "
        "(or Accept: application/x-ndjson / text/csv). 409 while the partnership is not "
        "active (suspended or ended): /audience/changes is still served.",
        opt={
            OPENAPI_ALSO_AS_OPT: ("application/x-ndjson", "text/csv"),
            OPENAPI_STATUSES_OPT: (409,),
        },
    )
    async def audience(
        self,
        offer_id: FromPath[UUID],
        offers: NamedDependency[OfferService],
        principal: NamedDependency[Principal],
        actor: NamedDependency[Actor],
        request: Request[Any, Any, Any],
        limit: int = LimitParameter,
        cursor: str | None = CursorParameter,
        format: str | None = Parameter(default=None, pattern="^(json|ndjson|csv)$"),
    ) -> Page[AudienceItem] | Download:
        accept = request.headers.get("accept", "")
        wanted = format or (
            "ndjson"
            if "application/x-ndjson" in accept
            else "csv"
            if "text/csv" in accept
            else "json"
        )
        if wanted == "json":
            return await offers.audience_page(
                offer_id, principal.partner, actor, cursor=cursor, limit=check_limit(limit)
            )
        refs = await offers.audience_refs(offer_id, principal.partner, actor, wanted)
        media = "application/x-ndjson" if wanted == "ndjson" else "text/csv"
        return Download(
            _stream(_ndjson(refs) if wanted == "ndjson" else _csv(refs)),
            media_type=media,
            headers={
                "Content-Disposition": f'attachment; filename="offer-{offer_id}-audience.{wanted}"'
            },
        )

    @get(
        "/{offer_id:uuid}/audience/changes",
        guards=[requires_partner, requires_any_scope(OFFERS_READ, OFFERS_WRITE)],
        summary="People who left the caller's audience since a cursor (to pull them out)",
        description="next_cursor is always returned: pass it back to receive only later "
        "changes. has_more says whether another page is ready now. Served whatever the "
        "partnership's status, so removals always reach the member.",
    )
    async def changes(
        self,
        offer_id: FromPath[UUID],
        offers: NamedDependency[OfferService],
        principal: NamedDependency[Principal],
        actor: NamedDependency[Actor],
        limit: int = LimitParameter,
        cursor: str | None = CursorParameter,
    ) -> AudienceChanges:
        return await offers.changes(offer_id, principal.partner, actor, cursor=cursor, limit=limit)

    @get(
        "/{offer_id:uuid}/results",
        guards=[requires_any_scope(OFFERS_READ, OFFERS_WRITE, "admin")],
        summary="Measured lift of an offer per side: treated against the held-out control",
        description=(
            "Per side over the offer's window (activation to ends_at or now, plus "
            "attribution_days): each arm's people, responders (at least one earn or redeem at "
            "that side), points and amount_minor sums (clamped per person), response rates, and "
            "the absolute and relative lift with a 95% interval and a p-value (the method is "
            "stated in the answer), computed from the released figures only. by=self.<attr> "
            "adds the lift per value of the caller's own attribute. Counts below min_audience "
            "are suppressed (complementary suppression included); with the partnership's "
            "epsilon every figure is noised and one read spends epsilon from its budget (429 "
            "when spent). The same question at the same data versions is served again free; "
            "an answer differing from an earlier one by fewer than min_audience people is "
            "refused (422 privacy-refusal). 409 while the offer was never activated or the "
            "partnership is not active."
        ),
        opt={OPENAPI_STATUSES_OPT: (409, 422, 429)},
    )
    async def results(
        self,
        offer_id: FromPath[UUID],
        state: State,
        principal: NamedDependency[Principal],
        actor: NamedDependency[Actor],
        by: str | None = Parameter(
            default=None,
            max_length=300,
            pattern=r"^[^\x00-\x1f\x7f]*$",
            description="Segment breakdown: self.<attribute> (an admin: <member id>.<attribute>)",
        ),
    ) -> OfferResultsOut:
        service: OfferResultsService = state.offer_results
        return await service.read(offer_id, _caller(principal), by, actor)

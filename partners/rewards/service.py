"""Reward events: checking them, applying them to the ledger once, and reading balances.

A request of events is applied whole or not at all (the request's transaction). Each partner's
``event_id`` is unique: the same event again returns its first result; the same id with
another body is a 409 and nothing of the request is applied.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import msgspec
from sqlalchemy import Table, case, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.core import audit, horizon
from hub.core.audit import Actor
from hub.core.bulk import insert_rows
from hub.core.db import dialect_insert, writing
from hub.core.errors import Conflict, InvalidInput, NotFound
from partners.identifiers.crypto import IdentifierCrypto
from partners.identifiers.models import ID_TYPE_CODES, IdentifierRecord
from partners.identifiers.records import current
from partners.kit import parse_digest
from partners.rewards import funding, ledger
from partners.rewards.models import (
    ADJUST,
    COALITION,
    EARN,
    LOCAL,
    REDEEM,
    RewardEvent,
    RewardFeedReader,
)
from partners.rewards.schemas import MAX_POINTS, BalanceOut, EventResult, EventsOut

EVENTS: Table = RewardEvent.__table__  # type: ignore[assignment]
RECORDS: Table = IdentifierRecord.__table__  # type: ignore[assignment]
READERS: Table = RewardFeedReader.__table__  # type: ignore[assignment]
FIELDS = {
    "event_id",
    "id_type",
    "id_hash",
    "kind",
    "points",
    "occurred_at",
    "offer_id",
    "amount_minor",
}
MAX_AMOUNT_MINOR = 10**15  # a purchase of ten trillion in major units is a bug, not a sale
# Activity is dated: nothing before the coalition's era, nothing more than a day ahead (clock
# skew between a brand's systems and the hub, time zones); anything else is a bug or a trick.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
FUTURE_SLACK = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class ValidEvent:
    index: int
    event_id: str
    id_type: int
    digest: bytes
    kind: str
    points: int
    occurred_at: datetime
    offer_id: UUID | None
    amount_minor: int | None = None

    def body_sha256(self) -> str:
        """The event's meaning (a digest in hex or base64 is the same event)."""
        canonical = [
            self.event_id,
            self.id_type,
            self.digest.hex(),
            self.kind,
            self.points,
            self.occurred_at.astimezone(UTC).isoformat(),
            str(self.offer_id) if self.offer_id else None,
        ]
        if self.amount_minor is not None:  # events sent before amounts existed keep their hash
            canonical.append(self.amount_minor)
        return hashlib.sha256(json.dumps(canonical).encode()).hexdigest()


def phases_of(members: Sequence[int], earns: Sequence[bool]) -> list[int]:
    """The phase in which each event of a request is written (each phase writes its earns,
    then its spends); ``earns`` tells an earn (a new lot) from a spend.

    Only a member's own events depend on one another: a spend takes from that member's lots
    alone. So each event goes to the earliest phase that keeps its member's order: an earn
    after the member's spend of phase p goes to p + 1, anything else joins the phase of the
    member's latest event. A spend then sees every earlier event of its member and no later
    one, as if the request were applied event by event, in a few statements: one batch per
    change from earns to spends across the request (the way before) wrote ~120 batches for
    a request of 1,000 events with 12 % redeems (issue 19's soak).
    """
    latest: dict[int, tuple[int, bool]] = {}  # member -> (phase, its latest event a spend)
    plan = []
    for member, earn in zip(members, earns, strict=True):
        phase, spent = latest.get(member, (0, False))
        if earn and spent:
            phase += 1
        latest[member] = (phase, not earn)
        plan.append(phase)
    return plan


def _error(index: int, field: str, reason: str) -> dict[str, Any]:
    return {"index": index, "field": field, "reason": reason}


def check_event(index: int, item: Any) -> tuple[ValidEvent | None, list[dict[str, Any]]]:
    if not isinstance(item, dict):
        return None, [_error(index, "", "an event is a JSON object")]
    errors = [_error(index, k, "unknown field") for k in sorted(set(item) - FIELDS)]
    event_id = item.get("event_id")
    if not isinstance(event_id, str) or not 1 <= len(event_id) <= 200 or not event_id.isprintable():
        errors.append(_error(index, "event_id", "1 to 200 printable characters, unique per brand"))
    id_type = item.get("id_type")
    if not isinstance(id_type, str) or id_type not in ID_TYPE_CODES:  # a dict is unhashable
        errors.append(_error(index, "id_type", "email or phone"))
    digest = b""
    id_hash = item.get("id_hash")
    if not isinstance(id_hash, str):
        errors.append(_error(index, "id_hash", "a SHA-256 digest: 64 hex or 44 base64 characters"))
    else:
        try:
            digest = parse_digest(id_hash)
        except ValueError as exc:  # the reason never repeats the value
            errors.append(_error(index, "id_hash", str(exc)))
    kind = item.get("kind")
    points = item.get("points")
    if kind not in (EARN, REDEEM, ADJUST):
        errors.append(_error(index, "kind", "earn, redeem or adjust"))
    elif type(points) is not int or abs(points) > MAX_POINTS:
        errors.append(_error(index, "points", f"a whole number of points up to {MAX_POINTS:,}"))
    elif kind in (EARN, REDEEM) and points <= 0:
        errors.append(_error(index, "points", f"an {kind} carries positive points"))
    elif kind == ADJUST and points == 0:
        errors.append(_error(index, "points", "an adjustment is not zero"))
    occurred = item.get("occurred_at")
    when = None
    try:
        when = datetime.fromisoformat(occurred) if isinstance(occurred, str) else None
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        errors.append(_error(index, "occurred_at", "an ISO 8601 time with its offset"))
    elif not EARLIEST <= when <= datetime.now(UTC) + FUTURE_SLACK:
        errors.append(
            _error(
                index,
                "occurred_at",
                "between 2000-01-01 and a day from now (UTC): when the activity happened",
            )
        )
    offer_id = None
    if item.get("offer_id") is not None:
        if kind != EARN:
            errors.append(_error(index, "offer_id", "only an earn names an offer"))
        else:
            try:
                offer_id = UUID(str(item["offer_id"]))
            except ValueError:
                errors.append(_error(index, "offer_id", "an offer id"))
    amount = item.get("amount_minor")
    if amount is not None and (type(amount) is not int or not 0 <= amount <= MAX_AMOUNT_MINOR):
        errors.append(
            _error(index, "amount_minor", "the purchase value in minor units: a whole number ≥ 0")
        )
    elif amount is not None and kind not in (EARN, REDEEM):
        errors.append(_error(index, "amount_minor", "only an earn or a redeem carries an amount"))
    if errors:
        return None, errors
    assert isinstance(event_id, str)
    assert isinstance(points, int)
    assert when is not None
    return (
        ValidEvent(
            index,
            event_id,
            ID_TYPE_CODES[str(id_type)],
            digest,
            str(kind),
            points,
            when,
            offer_id,
            amount,
        ),
        [],
    )


def check_events(items: Sequence[Any]) -> tuple[list[ValidEvent], list[dict[str, Any]]]:
    valid: list[ValidEvent] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        event, problems = check_event(index, item)
        errors += problems
        if event is not None:
            if event.event_id in seen:
                errors.append(_error(index, "event_id", "the same event_id twice in a request"))
                continue
            seen.add(event.event_id)
            valid.append(event)
    return valid, errors


class RewardService:
    def __init__(
        self,
        session: AsyncSession,
        crypto: IdentifierCrypto,
        reconcile: funding.Reconcile | None = None,
        *,
        members_apart: bool = False,
    ) -> None:
        self.session = session
        self.crypto = crypto
        self.reconcile = reconcile
        # New members are committed on their own before the events (PostgreSQL requests,
        # where the caller's session may commit mid-request): see ledger.create_members.
        self.members_apart = members_apart

    async def record(
        self, partner_id: UUID, events: Sequence[ValidEvent], actor: Actor
    ) -> EventsOut:
        session = self.session
        named = sorted({e.offer_id for e in events if e.offer_id})
        if named and self.reconcile is not None:
            await self.reconcile(named)  # before this request's first statement
        known = {
            row.event_id: row
            for row in await session.execute(
                select(EVENTS.c.event_id, EVENTS.c.body_sha256, EVENTS.c.result).where(
                    EVENTS.c.partner_id == partner_id,
                    EVENTS.c.event_id.in_([e.event_id for e in events]),
                )
            )
        }
        conflicts = [
            _error(e.index, "event_id", "already used for a different event")
            for e in events
            if e.event_id in known and known[e.event_id].body_sha256 != e.body_sha256()
        ]
        if conflicts:
            raise Conflict(
                f"{len(conflicts)} event_id(s) were already used for different events; nothing "
                "was applied.",
                errors=conflicts,
                fix="Use a new event_id for a new event; resend an event only unchanged.",
            )
        new = [e for e in events if e.event_id not in known]
        identities = [(e.id_type, e.digest) for e in new]
        held = await ledger.records_at(session, self.crypto, partner_id, identities)
        strangers = [
            _error(e.index, "id_hash", "your brand holds no record of this identifier")
            for e, record in zip(new, held, strict=True)
            if record is None
        ]
        if strangers:
            raise InvalidInput(
                f"{len(strangers)} event(s) name identifiers your brand holds no record of; "
                "nothing was applied.",
                errors=strangers,
                fix="Upload the member's identifier with POST /v1/identifiers first; events "
                "name only members your brand holds.",
            )
        records = [r for r in held if r is not None]
        splits = await funding.offer_funding(
            session,
            partner_id,
            [
                funding.OfferEarn(e.index, e.offer_id, e.occurred_at, record, e.id_type)
                for e, record in zip(new, records, strict=True)
                if e.offer_id is not None
            ],
        )
        sharing = [bool(r.consents & ledger.SHARING) for r in records]
        created: list[int] = []
        if self.members_apart:
            # Everything so far was reads: the new members are committed now, alone, and
            # removed again if the request is refused (a refused request leaves nothing).
            members, created = await ledger.create_members(session, self.crypto, identities)
        else:
            members = await ledger.members_for(session, self.crypto, identities)
        try:
            return await self._apply(
                partner_id, new, events, known, members, sharing, splits, actor
            )
        except BaseException:
            if created:
                await session.rollback()
                await ledger.forget_members(session, created)
            raise

    async def _apply(
        self,
        partner_id: UUID,
        new: Sequence[ValidEvent],
        events: Sequence[ValidEvent],
        known: dict[str, Any],
        members: Sequence[int],
        sharing: Sequence[bool],
        splits: dict[int, dict[str, int] | None],
        actor: Actor,
    ) -> EventsOut:
        """Write the new events, their lots and postings (inside the request's transaction)."""
        session = self.session
        results = {e.event_id: _result(e, sharing[i]) for i, e in enumerate(new)}
        # Only members who spend here are locked (their lots are read, then taken from): an
        # earn adds a lot of its own and races no one. Locking earners too serialised every
        # request of every brand naming the same coalition members (the soak of issue 19:
        # 5,660 backend-seconds waiting on member rows in 30 minutes, 1,000-event requests
        # queued behind one another for 18 s at the median).
        await ledger.lock_members(
            session,
            [members[i] for i, e in enumerate(new) if results[e.event_id].wallet is None],
        )
        refs = await self._insert_events(partner_id, new, members, results)
        earning = [results[e.event_id].wallet is not None for e in new]
        plan = phases_of(members, earning)
        phases: list[tuple[list[dict[str, Any]], list[tuple[ValidEvent, ledger.Spend]]]] = [
            ([], []) for _ in range(max(plan, default=-1) + 1)
        ]
        now = datetime.now(UTC)  # when the hub learnt of it: a late event never changes a
        # closed settlement period
        for i, e in enumerate(new):
            wallet = results[e.event_id].wallet
            earns, spends = phases[plan[i]]
            if wallet is not None:  # an earn or a positive adjustment: a new lot
                shares = splits.get(e.index)
                earns.append(
                    {
                        "txn": f"event:{refs[i]}",
                        "event_ref": refs[i],
                        "member": members[i],
                        "issuer": partner_id,
                        "wallet": wallet,
                        "points": e.points,
                        "earned_at": e.occurred_at,
                        "funding": ledger.split(e.points, shares) if shares else None,
                    }
                )
                continue
            spends.append(
                (
                    e,
                    ledger.Spend(
                        txn=f"event:{refs[i]}",
                        kind=REDEEM if e.kind == REDEEM else ADJUST,
                        event_ref=refs[i],
                        member=members[i],
                        partner=partner_id,
                        coalition=sharing[i],
                        points=abs(e.points),
                        at=now,
                    ),
                )
            )
        errors: list[dict[str, Any]] = []
        for earns, spends in phases:
            await ledger.credit_many(session, earns)
            short = await ledger.debit_many(session, [s for _, s in spends])
            errors += [
                _error(
                    e.index,
                    "points",
                    f"the member may spend {available} points at your brand, not {abs(e.points)}",
                )
                for (e, _), available in zip(spends, short, strict=True)
                if available is not None
            ]
        errors.sort(key=lambda error: int(error["index"]))
        if errors:
            raise InvalidInput(
                f"{len(errors)} event(s) cannot be applied; nothing was applied.",
                errors=errors,
                fix="Redeem at most the points the member may spend at your brand (see "
                "GET /v1/rewards/balances), then send the request again.",
            )
        out = [
            results[e.event_id]
            if e.event_id in results
            else msgspec_replay(known[e.event_id].result)
            for e in events
        ]
        if new:
            await audit.append(
                session,
                actor.event(
                    "rewards.events_applied",
                    "partner",
                    str(partner_id),
                    applied=len(new),
                    replayed=len(events) - len(new),
                    kinds=sorted({e.kind for e in new}),
                ),
            )
        return EventsOut(applied=len(new), replayed=len(events) - len(new), results=out)

    async def _insert_events(
        self,
        partner_id: UUID,
        events: Sequence[ValidEvent],
        members: Sequence[int],
        results: dict[str, EventResult],
    ) -> list[int]:
        """Insert the events (with the result a replay returns); their ids in order."""
        if not events:
            return []
        now = datetime.now(UTC)
        await horizon.inserting(self.session, horizon.REWARD_EVENTS)
        refs = await insert_rows(
            self.session,
            EVENTS,
            [
                {
                    "partner_id": partner_id,
                    "event_id": e.event_id,
                    "body_sha256": e.body_sha256(),
                    "kind": e.kind,
                    "points": e.points,
                    "member_id": member,
                    "occurred_at": e.occurred_at,
                    "offer_id": e.offer_id,
                    "amount_minor": e.amount_minor,
                    "result": msgspec.to_builtins(results[e.event_id]),
                    "created_at": now,
                }
                for e, member in zip(events, members, strict=True)
            ],
            ids=True,
        )
        # Offer results' running totals, in this transaction (matching owns them; imported
        # here as funding imports the offers: matching imports rewards' tables).
        from matching.result_totals import add_applied

        await add_applied(self.session, partner_id, refs, min(e.occurred_at for e in events))
        return refs

    async def balance(
        self,
        partner_id: UUID,
        *,
        digest: bytes | None,
        id_type: int | None,
        customer_ref: str | None,
    ) -> BalanceOut:
        """What the caller may know: its local wallets, and the coalition wallet of the members
        who consented to sharing rewards at the caller.

        A member is found only through the caller's own records: one it holds no record of is
        a 404 exactly like an unknown one, so balances never tell whether a digest is known
        at another brand.
        """
        session = self.session
        if digest is not None and id_type is not None:
            held = (await ledger.records_at(session, self.crypto, partner_id, [(id_type, digest)]))[
                0
            ]
            shares = held is not None and bool(held.consents & ledger.SHARING)
            # Under every live key version: the member may be re-keyed before the record.
            by_key = (
                {} if held is None else {k: shares for _, k in ledger.keys_for(self.crypto, digest)}
            )
        else:
            rows = await session.execute(
                select(RECORDS.c.match_key, RECORDS.c.consents).where(
                    current(RECORDS, partner_id), RECORDS.c.customer_ref == customer_ref
                )
            )
            by_key = {bytes(k): bool(c & ledger.SHARING) for k, c in rows}
        if not by_key:
            raise NotFound(
                "No member with this identifier is known to your brand.",
                fix="Name a member your brand uploaded (its id_type and id_hash, or your "
                "customer_ref).",
            )
        found = await session.execute(
            select(ledger.MEMBERS.c.id, ledger.MEMBERS.c.match_key).where(
                ledger.MEMBERS.c.match_key.in_(list(by_key))
            )
        )
        members = [(int(i), by_key[bytes(k)]) for i, k in found]
        local = coalition = 0
        for member, consented in members:
            here, shared = await ledger.wallet_points(session, [member], partner_id)
            local += here
            if consented:
                coalition += shared
        visible = any(by_key.values())
        return BalanceOut(
            points=local + coalition,
            local_points=local,
            coalition_points=coalition if visible else None,
        )


def _result(e: ValidEvent, sharing: bool) -> EventResult:
    """What applying ``e`` returns (and a replay returns again)."""
    credits = e.kind == EARN or (e.kind == ADJUST and e.points > 0)
    wallet = (COALITION if sharing else LOCAL) if credits else None
    return EventResult(
        event_id=e.event_id, status="applied", kind=e.kind, points=e.points, wallet=wallet
    )


def msgspec_replay(stored: dict[str, Any]) -> EventResult:
    return EventResult(
        event_id=stored["event_id"],
        status="replayed",
        kind=stored["kind"],
        points=stored["points"],
        wallet=stored.get("wallet"),
    )


async def remember_read(
    session_maker: async_sessionmaker[AsyncSession], partner_id: UUID, seq: int
) -> None:
    """Raise the reader's feed position to ``seq`` (a write only when it moves forward), in a
    session of its own: a feed read stays a read."""
    async with session_maker() as session:
        known = await session.scalar(
            select(READERS.c.read_seq).where(READERS.c.partner_id == partner_id)
        )
    if known is not None and known >= seq:
        return
    with writing():
        async with session_maker() as session, session.begin():
            statement = dialect_insert(session, READERS).values(
                partner_id=partner_id, read_seq=seq, updated_at=datetime.now(UTC)
            )
            await session.execute(
                statement.on_conflict_do_update(
                    index_elements=["partner_id"],
                    set_={
                        "read_seq": case(
                            (
                                READERS.c.read_seq < statement.excluded.read_seq,
                                statement.excluded.read_seq,
                            ),
                            else_=READERS.c.read_seq,
                        ),
                        "updated_at": statement.excluded.updated_at,
                    },
                )
            )

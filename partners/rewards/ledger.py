"""Members and the double-entry ledger: lots, oldest-first consumption, postings that sum to 0.

Every function works inside the caller's transaction.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Table, and_, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from hub.core.bulk import insert_rows
from hub.core.db import dialect_insert
from partners.identifiers.crypto import IdentifierCrypto
from partners.identifiers.models import CONSENT_BITS, IdentifierRecord
from partners.identifiers.records import current, with_keys
from partners.rewards.funding import HeldRecord
from partners.rewards.models import (
    COALITION,
    EXPIRED,
    FORFEIT,
    FORFEITED,
    ISSUED,
    LOCAL,
    REDEEMED,
    RewardLot,
    RewardLotUse,
    RewardMember,
    RewardPosting,
)

SHARING = CONSENT_BITS["rewards_sharing"]
# Members' digests are sealed like identifier records, with this in place of a partner id.
MEMBER_SCOPE = UUID(int=0)
MEMBERS: Table = RewardMember.__table__  # type: ignore[assignment]
RECORDS: Table = IdentifierRecord.__table__  # type: ignore[assignment]
LOTS: Table = RewardLot.__table__  # type: ignore[assignment]
USES: Table = RewardLotUse.__table__  # type: ignore[assignment]
POSTINGS: Table = RewardPosting.__table__  # type: ignore[assignment]


class NotEnoughPoints(Exception):
    def __init__(self, available: int) -> None:
        super().__init__(f"{available} points available")
        self.available = available


def keys_for(crypto: IdentifierCrypto, digest: bytes) -> list[tuple[int, bytes]]:
    """(version, match key) under every live match-key version, the newest first."""
    versions = sorted(crypto.keys.live_match_versions(), reverse=True)
    return [(v, crypto.match_key(digest, v)) for v in versions]


async def member_id(
    session: AsyncSession, crypto: IdentifierCrypto, id_type: int, digest: bytes, *, create: bool
) -> int | None:
    """The member of this identifier (created when asked), keyed under the newest version.

    A member still under an older version (a rotation in progress) is re-keyed here.
    """
    keys = keys_for(crypto, digest)
    newest_version, newest_key = keys[0]
    row = (
        await session.execute(
            select(MEMBERS.c.id, MEMBERS.c.key_version).where(
                MEMBERS.c.match_key.in_([k for _, k in keys])
            )
        )
    ).first()
    if row is not None:
        if row.key_version != newest_version:
            await session.execute(
                update(MEMBERS)
                .where(MEMBERS.c.id == row.id)
                .values(match_key=newest_key, key_version=newest_version)
            )
        return int(row.id)
    if not create:
        return None
    data_version, sealed = crypto.encrypt(digest, MEMBER_SCOPE, id_type)
    statement = (
        dialect_insert(session, MEMBERS)
        .values(
            id_type=id_type,
            match_key=newest_key,
            key_version=newest_version,
            digest_enc=sealed,
            data_version=data_version,
            created_at=datetime.now(UTC),
        )
        .on_conflict_do_nothing(index_elements=["match_key"])
    )
    await session.execute(statement)
    found = await session.scalar(select(MEMBERS.c.id).where(MEMBERS.c.match_key == newest_key))
    assert found is not None
    return int(found)


async def lock_members(session: AsyncSession, ids: Sequence[int]) -> None:
    """Serialise spending per member (PostgreSQL row locks, in id order: no deadlocks).

    ``FOR NO KEY UPDATE``, not ``FOR UPDATE``: a row inserted elsewhere that references the
    member (an earn's event and lot) takes ``FOR KEY SHARE`` on it for its foreign key, which
    ``FOR UPDATE`` would make wait for the spender's whole transaction."""
    if ids and session.get_bind().dialect.name == "postgresql":
        await session.execute(
            select(MEMBERS.c.id)
            .where(MEMBERS.c.id.in_(sorted(set(ids))))
            .order_by(MEMBERS.c.id)  # rows are locked as the plan emits them: in id order
            .with_for_update(key_share=True)  # FOR NO KEY UPDATE
        )


async def members_for(
    session: AsyncSession, crypto: IdentifierCrypto, identities: Sequence[tuple[int, bytes]]
) -> list[int]:
    """The member of each (id type, digest), created where new, all keyed under the newest
    version: the batched form of :func:`member_id` (a few statements for a whole request)."""
    return (await _members(session, crypto, identities))[0]


async def create_members(
    session: AsyncSession, crypto: IdentifierCrypto, identities: Sequence[tuple[int, bytes]]
) -> tuple[list[int], list[int]]:
    """:func:`members_for`, then commit: (the member of each identity, the ids of the members
    created here).

    For PostgreSQL requests that go on for seconds after naming new members: a row inserted
    under a unique key makes every other transaction inserting the same key wait for this one
    to end (the soak of issue 19: 514 backend-seconds in 10 minutes, four brands naming the
    same new coalition members). Committed at once, the members are there for everyone; the
    caller removes them again with :func:`forget_members` if its request is then refused.
    Everything the session did before is committed with them, so call it after reads only."""
    members, created = await _members(session, crypto, identities)
    await session.commit()
    return members, created


async def forget_members(session: AsyncSession, ids: Sequence[int]) -> int:
    """Remove these members (made by :func:`create_members` for a request that was then
    refused) unless an event names them by now (another brand's request found them in the
    meantime), and commit: how many were removed. Call it after rolling the request back.

    One statement for all of them; only when one is in use, one savepoint per member."""
    if not ids:
        return 0
    wanted = sorted(set(ids))
    try:
        async with session.begin_nested():
            result = await session.execute(delete(MEMBERS).where(MEMBERS.c.id.in_(wanted)))
        removed = int(result.rowcount)  # type: ignore[attr-defined]
    except IntegrityError:  # an event or a lot of another request names one of them now
        removed = 0
        for member in wanted:
            try:
                async with session.begin_nested():
                    result = await session.execute(delete(MEMBERS).where(MEMBERS.c.id == member))
                removed += int(result.rowcount)  # type: ignore[attr-defined]
            except IntegrityError:
                continue
    await session.commit()
    return removed


async def _members(
    session: AsyncSession, crypto: IdentifierCrypto, identities: Sequence[tuple[int, bytes]]
) -> tuple[list[int], list[int]]:
    """(the member of each identity, the ids of the members this call inserted)."""
    if not identities:
        return [], []
    versions = sorted(crypto.keys.live_match_versions(), reverse=True)
    newest = versions[0]
    keyed = [[crypto.match_key(digest, v) for v in versions] for _, digest in identities]
    wanted = list({k for keys in keyed for k in keys})
    found: dict[bytes, tuple[int, int]] = {}
    for start in range(0, len(wanted), 1000):
        rows = await session.execute(
            select(MEMBERS.c.match_key, MEMBERS.c.id, MEMBERS.c.key_version).where(
                MEMBERS.c.match_key.in_(wanted[start : start + 1000])
            )
        )
        found.update({bytes(k): (int(i), int(v)) for k, i, v in rows})
    fresh: dict[bytes, dict[str, Any]] = {}
    for (id_type, digest), keys in zip(identities, keyed, strict=True):
        old = next((found[k] for k in keys if k in found), None)
        if old is None:
            if keys[0] not in fresh:
                data_version, sealed = crypto.encrypt(digest, MEMBER_SCOPE, id_type)
                fresh[keys[0]] = {
                    "id_type": id_type,
                    "match_key": keys[0],
                    "key_version": newest,
                    "digest_enc": sealed,
                    "data_version": data_version,
                    "created_at": datetime.now(UTC),
                }
        elif old[1] != newest:  # a rotation in progress: re-key this member now
            await session.execute(
                update(MEMBERS)
                .where(MEMBERS.c.id == old[0])
                .values(match_key=keys[0], key_version=newest)
            )
            found[keys[0]] = (old[0], newest)
    created: list[int] = []
    if fresh:
        # In match-key order: two requests creating the same new members wait for each other
        # in one order, never in a cycle (PostgreSQL's "deadlock detected" on the unique index).
        inserted = await session.execute(
            dialect_insert(session, MEMBERS)
            .on_conflict_do_nothing(index_elements=["match_key"])
            .returning(MEMBERS.c.id),
            [fresh[key] for key in sorted(fresh)],
        )
        created = [int(i) for i in inserted.scalars()]
        ids = await session.execute(
            select(MEMBERS.c.match_key, MEMBERS.c.id).where(MEMBERS.c.match_key.in_(list(fresh)))
        )
        found.update({bytes(k): (int(i), newest) for k, i in ids})
    return [found[keys[0]][0] for keys in keyed], created


async def records_at(
    session: AsyncSession,
    crypto: IdentifierCrypto,
    partner_id: UUID,
    identities: Sequence[tuple[int, bytes]],
) -> list[HeldRecord | None]:
    """The partner's record of each (id type, digest), under any live key version, or None
    where the partner holds none (batched)."""
    versions = crypto.keys.live_match_versions()
    keyed = [[crypto.match_key(digest, v) for v in versions] for _, digest in identities]
    wanted = list({k for keys in keyed for k in keys})
    found: dict[tuple[int, bytes], HeldRecord] = {}
    for start in range(0, len(wanted), 1000):
        rows = await session.execute(
            select(
                RECORDS.c.id_type, RECORDS.c.match_key, RECORDS.c.customer_ref, RECORDS.c.consents
            ).where(
                current(RECORDS, partner_id),
                with_keys(RECORDS, wanted[start : start + 1000], {t for t, _ in identities}),
            )
        )
        for t, k, ref, consents in rows:
            found[(int(t), bytes(k))] = HeldRecord(str(ref), int(consents), bytes(k))
    return [
        next((found[(id_type, k)] for k in keys if (id_type, k) in found), None)
        for (id_type, _), keys in zip(identities, keyed, strict=True)
    ]


async def consented_at(
    session: AsyncSession, partner_id: UUID, id_type: int, keys: Sequence[tuple[int, bytes]]
) -> bool:
    """Whether the partner holds a record of this identifier with rewards_sharing consent."""
    mask = await session.scalar(
        select(RECORDS.c.consents).where(
            current(RECORDS, partner_id),
            with_keys(RECORDS, [k for _, k in keys], [id_type]),
        )
    )
    return bool(mask and mask & SHARING)


@dataclass
class Leg:
    account: str
    amount: int
    partner_id: UUID | None = None
    member_id: int | None = None
    lot_id: int | None = None


async def post(session: AsyncSession, txn: str, legs: Sequence[Leg], at: datetime) -> None:
    """Write one balanced transaction."""
    if sum(leg.amount for leg in legs) != 0:
        raise AssertionError(f"unbalanced transaction {txn}")
    await session.execute(insert(POSTINGS), [_posting(txn, leg, at) for leg in legs if leg.amount])


def split(points: int, shares: dict[str, int]) -> dict[str, int]:
    """``points`` split in proportion to ``shares`` (largest remainder, exact total)."""
    total = sum(shares.values())
    exact = {k: points * v / total for k, v in shares.items()}
    out = {k: int(v) for k, v in exact.items()}
    left = points - sum(out.values())
    for k in sorted(exact, key=lambda k: (out[k] - exact[k], k))[:left]:
        out[k] += 1
    return out


async def credit(
    session: AsyncSession,
    *,
    txn: str,
    event_ref: int,
    member: int,
    issuer: UUID,
    wallet: str,
    points: int,
    earned_at: datetime,
    funding: dict[str, int] | None,
) -> int:
    """A new lot of ``points`` in the member's wallet, issued by ``issuer``."""
    result = await session.execute(
        insert(LOTS)
        .values(
            member_id=member,
            wallet=wallet,
            issuer_id=issuer,
            event_ref=event_ref,
            earned_at=earned_at,
            points=points,
            remaining=points,
            funding=funding,
        )
        .returning(LOTS.c.id)
    )
    lot = int(result.scalar_one())
    now = datetime.now(UTC)
    await post(
        session,
        txn,
        [
            Leg(ISSUED, -points, partner_id=issuer),
            Leg(wallet, points, member_id=member, lot_id=lot, partner_id=_owner(wallet, issuer)),
        ],
        now,
    )
    return lot


async def credit_many(session: AsyncSession, lots: Sequence[dict[str, Any]]) -> None:
    """Many new lots at once (each a dict of :func:`credit`'s arguments), one transaction of
    postings per lot."""
    if not lots:
        return
    ids = await insert_rows(
        session,
        LOTS,
        [
            {
                "member_id": lot["member"],
                "wallet": lot["wallet"],
                "issuer_id": lot["issuer"],
                "event_ref": lot["event_ref"],
                "earned_at": lot["earned_at"],
                "points": lot["points"],
                "remaining": lot["points"],
                "funding": lot["funding"],
            }
            for lot in lots
        ],
        ids=True,
    )
    now = datetime.now(UTC)
    rows = []
    for lot, lot_id in zip(lots, ids, strict=True):
        for leg in (
            Leg(ISSUED, -lot["points"], partner_id=lot["issuer"]),
            Leg(
                lot["wallet"],
                lot["points"],
                member_id=lot["member"],
                lot_id=lot_id,
                partner_id=_owner(lot["wallet"], lot["issuer"]),
            ),
        ):
            rows.append(_posting(lot["txn"], leg, now))
    await insert_rows(session, POSTINGS, rows)


def _owner(wallet: str, partner: UUID) -> UUID | None:
    return partner if wallet == LOCAL else None


@dataclass
class Spend:
    """One redeem or negative adjustment: ``points`` taken from what the member may spend at
    ``partner`` (its local lots, and coalition lots when ``coalition``), oldest first."""

    txn: str
    kind: str
    event_ref: int
    member: int
    partner: UUID
    coalition: bool
    points: int
    at: datetime


@dataclass
class _Lot:
    id: int
    member: int
    wallet: str
    issuer: UUID
    remaining: int
    taken: int = 0


async def debit_many(session: AsyncSession, spends: Sequence[Spend]) -> list[int | None]:
    """Apply ``spends`` in order; for each, None or the points it could have spent (then
    nothing of that spend is written, and the caller refuses the request).

    The members' spendable lots are read once, consumed in memory in order (a later spend
    sees what an earlier one took), then written with one statement per table. A redeem
    credits the partner's ``redeemed`` account; a negative adjustment gives the points back
    to the partner's ``issued`` account.
    """
    if not spends:
        return []
    members = sorted({s.member for s in spends})
    lots: dict[int, list[_Lot]] = defaultdict(list)
    for start in range(0, len(members), 1000):
        rows = await session.execute(
            select(LOTS.c.id, LOTS.c.member_id, LOTS.c.wallet, LOTS.c.issuer_id, LOTS.c.remaining)
            .where(LOTS.c.member_id.in_(members[start : start + 1000]), LOTS.c.remaining > 0)
            .order_by(LOTS.c.earned_at, LOTS.c.id)
        )
        for lot_id, member, wallet, issuer, remaining in rows:
            lots[member].append(_Lot(lot_id, member, wallet, issuer, int(remaining)))
    outcome: list[int | None] = []
    uses = []
    postings = []
    now = datetime.now(UTC)
    for spend in spends:
        eligible = [
            lot
            for lot in lots[spend.member]
            if lot.remaining
            and (
                (lot.wallet == LOCAL and lot.issuer == spend.partner)
                or (lot.wallet == COALITION and spend.coalition)
            )
        ]
        available = sum(lot.remaining for lot in eligible)
        if available < spend.points:
            outcome.append(available)
            continue
        outcome.append(None)
        left = spend.points
        for lot in eligible:
            if not left:
                break
            take = min(left, lot.remaining)
            left -= take
            lot.remaining -= take
            lot.taken += take
            uses.append(
                {
                    "lot_id": lot.id,
                    "kind": spend.kind,
                    "event_ref": spend.event_ref,
                    "partner_id": spend.partner,
                    "points": take,
                    "at": spend.at,
                }
            )
            postings.append(
                _posting(
                    spend.txn,
                    Leg(
                        lot.wallet,
                        -take,
                        member_id=lot.member,
                        lot_id=lot.id,
                        partner_id=_owner(lot.wallet, lot.issuer),
                    ),
                    now,
                )
            )
        credit_to = REDEEMED if spend.kind == "redeem" else ISSUED
        postings.append(
            _posting(spend.txn, Leg(credit_to, spend.points, partner_id=spend.partner), now)
        )
    changed = [
        {"lot": lot.id, "taken": lot.taken}
        for member_lots in lots.values()
        for lot in member_lots
        if lot.taken
    ]
    if changed:
        await session.execute(
            update(LOTS)
            .where(LOTS.c.id == bindparam("lot"))
            .values(remaining=LOTS.c.remaining - bindparam("taken")),
            changed,
        )
        await insert_rows(session, USES, uses)
        await insert_rows(session, POSTINGS, postings)
    return outcome


def _posting(txn: str, leg: Leg, at: datetime) -> dict[str, Any]:
    return {
        "txn": txn,
        "account": leg.account,
        "partner_id": leg.partner_id,
        "member_id": leg.member_id,
        "lot_id": leg.lot_id,
        "amount": leg.amount,
        "at": at,
    }


async def expire_lot(session: AsyncSession, lot_id: int, at: datetime) -> int:
    """Expire what is left of a lot (to its issuer's ``expired`` account); points expired."""
    lot = (
        await session.execute(
            select(LOTS.c.remaining, LOTS.c.wallet, LOTS.c.issuer_id, LOTS.c.member_id).where(
                LOTS.c.id == lot_id, LOTS.c.remaining > 0
            )
        )
    ).first()
    if lot is None:
        return 0
    points = int(lot.remaining)
    await session.execute(update(LOTS).where(LOTS.c.id == lot_id).values(remaining=0))
    await session.execute(
        insert(USES).values(
            lot_id=lot_id, kind="expire", event_ref=None, partner_id=None, points=points, at=at
        )
    )
    await post(
        session,
        f"expiry:{lot_id}",
        [
            Leg(
                lot.wallet,
                -points,
                member_id=lot.member_id,
                lot_id=lot_id,
                partner_id=_owner(lot.wallet, lot.issuer_id),
            ),
            Leg(EXPIRED, points, partner_id=lot.issuer_id),
        ],
        datetime.now(UTC),
    )
    return points


async def wallet_points(
    session: AsyncSession, members: Sequence[int], partner: UUID
) -> tuple[int, int]:
    """(points in the partner's local wallets, points in the coalition wallets) of members."""
    if not members:
        return 0, 0
    rows = await session.execute(
        select(LOTS.c.wallet, func.coalesce(func.sum(LOTS.c.remaining), 0))
        .where(
            LOTS.c.member_id.in_(members),
            LOTS.c.remaining > 0,
            or_(
                LOTS.c.wallet == COALITION,
                and_(LOTS.c.wallet == LOCAL, LOTS.c.issuer_id == partner),
            ),
        )
        .group_by(LOTS.c.wallet)
    )
    found = {wallet: int(points) for wallet, points in rows}
    return found.get(LOCAL, 0), found.get(COALITION, 0)


async def forfeit_local(session: AsyncSession, partner: UUID, members: Sequence[int]) -> int:
    """A brand's erasure: what is left of its local lots of these members goes to its
    ``forfeited`` account (never settled: no other brand is owed anything for it). Points."""
    if not members:
        return 0
    await lock_members(session, members)
    lots = (
        await session.execute(
            select(LOTS.c.id, LOTS.c.member_id, LOTS.c.remaining)
            .where(
                LOTS.c.member_id.in_(sorted(set(members))),
                LOTS.c.wallet == LOCAL,
                LOTS.c.issuer_id == partner,
                LOTS.c.remaining > 0,
            )
            .order_by(LOTS.c.id)
        )
    ).all()
    now = datetime.now(UTC)
    for lot_id, member, remaining in lots:
        await session.execute(update(LOTS).where(LOTS.c.id == lot_id).values(remaining=0))
        await session.execute(
            insert(USES).values(
                lot_id=lot_id,
                kind=FORFEIT,
                event_ref=None,
                partner_id=partner,
                points=remaining,
                at=now,
            )
        )
        await post(
            session,
            f"forfeit:{lot_id}",
            [
                Leg(LOCAL, -int(remaining), member_id=member, lot_id=lot_id, partner_id=partner),
                Leg(FORFEITED, int(remaining), partner_id=partner),
            ],
            now,
        )
    return sum(int(r) for _, _, r in lots)


async def tombstone_unheld(session: AsyncSession, members: Sequence[int] | None = None) -> int:
    """Tombstone the members (of ``members``, or all) that no brand holds any more: no record
    of any partner carries their match key. Their postings stay (settlements remain
    reproducible) but nothing links them to a person: a random key instead, no digest.

    Erasure is per brand: while one brand still holds the member, its coalition wallet and
    every other brand's local wallet stay as they are."""
    unheld = (
        select(MEMBERS.c.id)
        .where(
            MEMBERS.c.tombstoned_at.is_(None),
            # All generations: a record an upload is writing (not current yet) still holds
            # its member.
            ~select(RECORDS.c.match_key).where(RECORDS.c.match_key == MEMBERS.c.match_key).exists(),
        )
        .order_by(MEMBERS.c.id)
    )
    if members is not None:
        if not members:
            return 0
        unheld = unheld.where(MEMBERS.c.id.in_(sorted(set(members))))
    ids = [int(i) for i in await session.scalars(unheld)]
    now = datetime.now(UTC)
    for member in ids:
        await session.execute(
            update(MEMBERS)
            .where(MEMBERS.c.id == member)
            .values(match_key=os.urandom(32), digest_enc=None, data_version=None, tombstoned_at=now)
        )
    return len(ids)


async def members_with_keys(session: AsyncSession, keys: Sequence[bytes]) -> list[int]:
    """The ledger members carrying these match keys."""
    wanted = sorted(set(keys))
    found: list[int] = []
    for start in range(0, len(wanted), 1000):
        found += [
            int(i)
            for i in await session.scalars(
                select(MEMBERS.c.id).where(MEMBERS.c.match_key.in_(wanted[start : start + 1000]))
            )
        ]
    return found

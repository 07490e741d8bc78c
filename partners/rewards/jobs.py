"""The rewards jobs: ``rewards_sync``, ``settlement`` and ``points_expiry``.

Each resumes from its cursor and commits each batch of work together with the cursor that
says it is done (``ctx.checkpoint(..., session=session)``), so a crash anywhere neither loses
nor repeats work; the feed's unique key (reader, event) is a second guard.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from uuid import UUID

from sqlalchemy import (
    Table,
    Text,
    bindparam,
    cast,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from hub.core import horizon
from hub.core.db import dialect_insert, rowcount, writing
from partners.identifiers.models import ConsentEvent, IdentifierRecord
from partners.identifiers.records import current, with_keys
from partners.partnerships.models import ACTIVE, Partnership, PartnershipMember
from partners.rewards import ledger
from partners.rewards.models import (
    REDEEM,
    WITHDRAWN,
    RewardDisclosure,
    RewardEvent,
    RewardFeedItem,
    RewardFeedReader,
    RewardLot,
    RewardLotUse,
    RewardMember,
    RewardSettlement,
)
from partners.webhooks.service import enqueue


class JobContext(Protocol):
    """What these jobs use of the scheduler's context (hub.jobs.context.JobContext)."""

    session_maker: async_sessionmaker[AsyncSession]
    settings: Any  # hub.settings.Settings (the domain does not import the shell)
    cursor: dict[str, Any]

    async def checkpoint(
        self, cursor: dict[str, Any], counts: dict[str, int], *, session: AsyncSession | None = None
    ) -> None: ...


EVENTS: Table = RewardEvent.__table__  # type: ignore[assignment]
MEMBERS: Table = RewardMember.__table__  # type: ignore[assignment]
RECORDS: Table = IdentifierRecord.__table__  # type: ignore[assignment]
FEED: Table = RewardFeedItem.__table__  # type: ignore[assignment]
LOTS: Table = RewardLot.__table__  # type: ignore[assignment]
USES: Table = RewardLotUse.__table__  # type: ignore[assignment]
SETTLEMENTS: Table = RewardSettlement.__table__  # type: ignore[assignment]
DISCLOSURES: Table = RewardDisclosure.__table__  # type: ignore[assignment]
READERS: Table = RewardFeedReader.__table__  # type: ignore[assignment]
CONSENTS: Table = ConsentEvent.__table__  # type: ignore[assignment]
SYNC_BATCH = 2000
EXPIRY_BATCH = 1000


async def sharing_partners(session: AsyncSession) -> dict[UUID, set[UUID]]:
    """Partner -> the partners it shares reward activity with (active, rewards_sharing)."""
    rows = await session.execute(
        select(Partnership.id, Partnership.purposes, PartnershipMember.partner_id)
        .join(PartnershipMember, PartnershipMember.partnership_id == Partnership.id)
        .where(Partnership.status == ACTIVE)
    )
    members: dict[UUID, list[UUID]] = defaultdict(list)
    for partnership_id, purposes, partner_id in rows:
        if "rewards_sharing" in purposes:
            members[partnership_id].append(partner_id)
    out: dict[UUID, set[UUID]] = defaultdict(set)
    for pair in members.values():
        for x in pair:
            out[x].update(p for p in pair if p != x)
    return out


async def _sync_batch(
    session: AsyncSession,
    after: int,
    shares: dict[UUID, set[UUID]],
    batch_items: int,
    batch: int = SYNC_BATCH,
    upto: int | None = None,
) -> tuple[int, int, int]:
    """Feed items for the events after ``after`` (up to ``upto``, the stream's committed
    horizon: :mod:`hub.core.horizon`): (last event id, events, items written)."""
    events = (
        await session.execute(
            select(
                EVENTS.c.id,
                EVENTS.c.partner_id,
                EVENTS.c.member_id,
                EVENTS.c.kind,
                EVENTS.c.points,
                EVENTS.c.occurred_at,
                MEMBERS.c.id_type,
                MEMBERS.c.match_key,
            )
            .join(MEMBERS, MEMBERS.c.id == EVENTS.c.member_id)
            .where(EVENTS.c.id > after, EVENTS.c.id <= upto if upto is not None else true())
            .order_by(EVENTS.c.id)
            .limit(batch)
        )
    ).all()
    if not events:
        return after, 0, 0
    # Looked up by the records' primary key (partner, id type, match key): per id type, the
    # partners concerned (where it happened and who shares with them) and the batch's keys.
    by_type: dict[int, set[bytes]] = defaultdict(set)
    partners: set[UUID] = set()
    for e in events:
        if shares.get(e.partner_id):
            by_type[e.id_type].add(bytes(e.match_key))
            partners.add(e.partner_id)
            partners.update(shares[e.partner_id])
    consented: dict[tuple[UUID, int, bytes], str] = {}
    for id_type, type_keys in by_type.items():
        key_list = sorted(type_keys)
        for start in range(0, len(key_list), 500):
            rows = await session.execute(
                select(RECORDS.c.partner_id, RECORDS.c.match_key, RECORDS.c.customer_ref).where(
                    RECORDS.c.partner_id.in_(sorted(partners)),
                    current(RECORDS),
                    with_keys(RECORDS, key_list[start : start + 500], [id_type]),
                    RECORDS.c.consents.op("&")(ledger.SHARING) != 0,
                )
            )
            for partner_id, key, ref in rows:
                consented[(partner_id, id_type, bytes(key))] = ref
    items = []
    disclosed: dict[tuple[UUID, UUID, int], dict[str, Any]] = {}
    now = datetime.now(UTC)
    for e in events:
        key = (e.id_type, bytes(e.match_key))
        source_ref = consented.get((e.partner_id, *key))
        if source_ref is None:
            continue  # the member does not share rewards at the brand where it happened
        for reader in sorted(shares.get(e.partner_id, ())):
            ref = consented.get((reader, *key))
            if ref is not None:
                disclosed[(reader, e.partner_id, int(e.member_id))] = {
                    "reader_id": reader,
                    "source_id": e.partner_id,
                    "member_id": int(e.member_id),
                    "reader_ref": ref,
                    "source_ref": source_ref,
                    "disclosed_at": now,
                    "withdrawn_at": None,
                }
                items.append(
                    {
                        "partner_id": reader,
                        "event_ref": e.id,
                        "customer_ref": ref,
                        "kind": e.kind,
                        "points": e.points,
                        "occurred_at": e.occurred_at,
                        "source_partner_id": e.partner_id,
                        "created_at": datetime.now(UTC),
                    }
                )
    written = await _write_feed(session, items)
    await _remember_disclosures(session, list(disclosed.values()))
    await _enqueue_items(session, written, batch_items)
    return int(events[-1].id), len(events), len(written)


async def _remember_disclosures(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Who received whom from where (a later withdrawal at the source reaches the reader).
    Activity flowing again after a withdrawal makes the disclosure live again."""
    for start in range(0, len(rows), 1000):
        statement = dialect_insert(session, DISCLOSURES)
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=["reader_id", "source_id", "member_id"],
                set_={
                    "reader_ref": statement.excluded.reader_ref,
                    "source_ref": statement.excluded.source_ref,
                    "withdrawn_at": None,
                },
            ),
            rows[start : start + 1000],
        )


async def _enqueue_items(
    session: AsyncSession, written: list[dict[str, Any]], batch_items: int
) -> None:
    """The written feed items, to their readers' webhooks (in feed order)."""
    by_reader: dict[UUID, list[dict[str, Any]]] = defaultdict(list)
    for item in written:
        by_reader[item["partner_id"]].append(
            {
                "id": item["seq"],
                "customer_ref": item["customer_ref"],
                "kind": item["kind"],
                "points": item["points"],
                "occurred_at": item["occurred_at"],
                "source_partner_id": item["source_partner_id"],
            }
        )
    for reader, reader_items in by_reader.items():
        reader_items.sort(key=lambda item: item["id"])
        await enqueue(session, reader, reader_items, batch_items=batch_items)


async def _withdrawal_batch(
    session: AsyncSession,
    after: int,
    batch_items: int,
    batch: int = SYNC_BATCH,
    upto: int | None = None,
) -> tuple[int, int, int]:
    """``withdrawn`` items for the consent events after ``after`` that withdrew
    ``rewards_sharing`` (by any path: a consent update, an upload, a moved key, an erasure):
    each reader that received one of those people from that brand, and whom the brand no
    longer holds with that consent, is told once, by its own customer_ref.
    Returns (the cursor: the last consent event seq considered, withdrawals read, items
    written).

    Only the events that withdrew ``rewards_sharing`` are read: a first load publishes a grant
    per person (a million at 1M), which the sync used to fetch 5,000 at a time only to skip.
    When fewer than ``batch`` withdrawals are left below ``upto``, the cursor moves to ``upto``
    (every event up to it is committed: see :func:`horizon.committed_horizon`; on SQLite, with
    one writer, every seq up to the highest is committed)."""
    if upto is None:
        upto = int(await session.scalar(select(func.coalesce(func.max(CONSENTS.c.seq), 0))) or 0)
    if upto <= after:
        return after, 0, 0
    changes = (
        await session.execute(
            select(
                CONSENTS.c.seq,
                CONSENTS.c.partner_id,
                CONSENTS.c.customer_ref,
                CONSENTS.c.withdrawn,
                CONSENTS.c.at,
            )
            .where(
                CONSENTS.c.seq > after,
                CONSENTS.c.seq <= upto,
                CONSENTS.c.withdrawn.op("&")(ledger.SHARING) != 0,
            )
            .order_by(CONSENTS.c.seq)
            .limit(batch)
        )
    ).all()
    last = int(changes[-1].seq) if len(changes) == batch else upto
    if not changes:
        return last, 0, 0
    withdrawn = {(c.partner_id, c.customer_ref): c.at for c in changes}  # all withdrawals
    items: list[dict[str, Any]] = []
    told: list[dict[str, Any]] = []  # the disclosures those items answer
    by_source: dict[UUID, list[str]] = defaultdict(list)
    for source, ref in withdrawn:
        by_source[source].append(ref)
    for source, refs in by_source.items():
        for start in range(0, len(refs), 500):
            still_shared = (
                select(RECORDS.c.match_key)
                .where(
                    current(RECORDS, source),
                    RECORDS.c.id_type == MEMBERS.c.id_type,  # the records' key: seek, not scan
                    RECORDS.c.match_key == MEMBERS.c.match_key,
                    RECORDS.c.consents.op("&")(ledger.SHARING) != 0,
                )
                .exists()
            )
            gone = (
                await session.execute(
                    select(
                        DISCLOSURES.c.reader_id,
                        DISCLOSURES.c.member_id,
                        DISCLOSURES.c.reader_ref,
                        DISCLOSURES.c.source_ref,
                    )
                    .join(MEMBERS, MEMBERS.c.id == DISCLOSURES.c.member_id)
                    .where(
                        DISCLOSURES.c.source_id == source,
                        DISCLOSURES.c.source_ref.in_(refs[start : start + 500]),
                        DISCLOSURES.c.withdrawn_at.is_(None),
                        ~still_shared,
                    )
                    .order_by(DISCLOSURES.c.reader_id, DISCLOSURES.c.member_id)
                )
            ).all()
            now = datetime.now(UTC)
            for reader, member, reader_ref, source_ref in gone:
                items.append(
                    {
                        "partner_id": reader,
                        "event_ref": None,
                        "customer_ref": reader_ref,
                        "kind": WITHDRAWN,
                        "points": 0,
                        "occurred_at": withdrawn[(source, source_ref)],
                        "source_partner_id": source,
                        "created_at": now,
                    }
                )
                told.append({"r": reader, "s": source, "m": member, "at": now})
    if told:
        await session.execute(
            update(DISCLOSURES)
            .where(
                DISCLOSURES.c.reader_id == bindparam("r"),
                DISCLOSURES.c.source_id == bindparam("s"),
                DISCLOSURES.c.member_id == bindparam("m"),
            )
            .values(withdrawn_at=bindparam("at")),
            told,
        )
    written = await _write_feed(session, items)
    await _enqueue_items(session, written, batch_items)
    return last, len(changes), len(written)


FEED_COLUMNS = (
    "seq",
    "partner_id",
    "event_ref",
    "customer_ref",
    "kind",
    "points",
    "occurred_at",
    "source_partner_id",
    "created_at",
)


async def _write_feed(session: AsyncSession, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Insert feed items in the caller's transaction; the items written, with their ``seq``.

    On PostgreSQL the sequence numbers are drawn first and the rows go in with ``COPY`` (the
    cursor that says the batch is done commits with them, so a batch is never written twice;
    the unique key would refuse it). Elsewhere: ``INSERT … ON CONFLICT DO NOTHING RETURNING``.
    """
    if not items:
        return []
    if session.get_bind().dialect.name != "postgresql":
        if items[0]["event_ref"] is None:  # withdrawn items: no event, nothing to collide
            result = await session.execute(
                insert(FEED).returning(FEED.c.seq, sort_by_parameter_order=True), items
            )
            return [
                {**item, "seq": int(seq)} for item, seq in zip(items, result.scalars(), strict=True)
            ]
        result = await session.execute(
            dialect_insert(session, FEED)
            .on_conflict_do_nothing(index_elements=["partner_id", "event_ref"])
            .returning(FEED.c.seq, FEED.c.partner_id, FEED.c.event_ref),
            items,
        )
        written = {(row.partner_id, row.event_ref): int(row.seq) for row in result}
        return [
            {**item, "seq": written[(item["partner_id"], item["event_ref"])]}
            for item in items
            if (item["partner_id"], item["event_ref"]) in written
        ]
    seqs = (
        await session.execute(
            text(
                "SELECT nextval(pg_get_serial_sequence('reward_feed', 'seq')) "
                "FROM generate_series(1, :n)"
            ),
            {"n": len(items)},
        )
    ).scalars()
    for item, seq in zip(items, seqs, strict=True):
        item["seq"] = int(seq)
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver: Any = raw.driver_connection
    statement = f"COPY reward_feed ({', '.join(FEED_COLUMNS)}) FROM STDIN"
    async with driver.cursor() as cursor, cursor.copy(statement) as copy:
        for item in items:
            await copy.write_row([item[column] for column in FEED_COLUMNS])
    return items


async def rewards_sync(ctx: JobContext) -> dict[str, int]:
    """New activity of members who share rewards at both brands reaches the other brand's feed
    (named by its own customer_ref) and its webhook, in batches, exactly once. Withdrawals
    come first: a reader learns that a member withdrew at a brand before (and instead of) any
    later activity of theirs there."""
    after = int(ctx.cursor.get("event", 0))
    consent_after = int(ctx.cursor.get("consent", 0))
    counts = {"events": 0, "feed_items": 0, "consent_events": 0, "withdrawn_items": 0}
    batch_items = ctx.settings.webhooks.batch_items
    # Read up to what is committed for good (a request that drew its ids first may commit
    # last); the horizon waits for the inserters in flight without holding new ones back.
    # A bulk upload holds the consent stream for its whole apply: if it is still in flight
    # after the patience, the consent stream is read on a later run.
    events_upto = await horizon.committed_horizon(
        ctx.session_maker, horizon.REWARD_EVENTS, EVENTS.c.id
    )
    consents_upto = await horizon.committed_horizon(
        ctx.session_maker,
        horizon.CONSENT_EVENTS,
        CONSENTS.c.seq,
        patience_seconds=horizon.PATIENCE_SECONDS,
    )
    while True:
        with writing():
            async with ctx.session_maker() as session:
                consent_last, consents, withdrawn = await _withdrawal_batch(
                    session,
                    consent_after,
                    batch_items,
                    ctx.settings.rewards.sync_batch,
                    consents_upto,
                )
                shares = await sharing_partners(session)
                last, events, written = await _sync_batch(
                    session,
                    after,
                    shares,
                    batch_items,
                    ctx.settings.rewards.sync_batch,
                    events_upto,
                )
                if not events and not consents and consent_last == consent_after:
                    await session.rollback()
                    return counts
                counts["events"] += events
                counts["feed_items"] += written
                counts["consent_events"] += consents
                counts["withdrawn_items"] += withdrawn
                await ctx.checkpoint(
                    {"event": last, "consent": consent_last}, counts, session=session
                )
        after, consent_after = last, consent_last


# -- settlement ---------------------------------------------------------------------------


def period_of(moment: datetime, period: str) -> tuple[datetime, datetime]:
    """The UTC settlement period [start, end) containing ``moment``."""
    moment = moment.astimezone(UTC)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day, day + timedelta(days=1)
    if period == "week":
        start = day - timedelta(days=day.weekday())
        return start, start + timedelta(days=7)
    start = day.replace(day=1)
    end = (start + timedelta(days=32)).replace(day=1)
    return start, end


async def settlement_lines(
    session: AsyncSession, start: datetime, end: datetime, point_value_minor: int
) -> list[dict[str, Any]]:
    """Net per pair of brands: points issued (funded) by one and redeemed at the other in
    [start, end), valued at the point value. Computed from the lots' uses alone.

    Each use is split on its own (a funded lot's largest-remainder split rounds per use), so
    uses alike (points, redeemer, issuer, funding) are counted by the database and split once:
    a period's hundreds of thousands of uses read one by one held the console's event loop
    for seconds (the soak's stall watch)."""
    funding = cast(LOTS.c.funding, Text)
    alike = (USES.c.points, USES.c.partner_id, LOTS.c.issuer_id, funding)
    rows = await session.execute(
        select(*alike, func.count())
        .join(LOTS, LOTS.c.id == USES.c.lot_id)
        .where(USES.c.kind == REDEEM, USES.c.at >= start, USES.c.at < end)
        .group_by(*alike)
    )
    owed: dict[tuple[str, str], int] = defaultdict(int)
    for points, redeemer, issuer, funded, uses in rows:
        split = json.loads(funded) if funded else None  # JSON null: the issuer alone
        shares = ledger.split(int(points), split) if split else {str(issuer): int(points)}
        for funder, share in shares.items():
            if funder != str(redeemer) and share:
                owed[(funder, str(redeemer))] += share * int(uses)
    lines = []
    for a, b in sorted({tuple(sorted(pair)) for pair in owed}):
        net = owed.get((a, b), 0) - owed.get((b, a), 0)
        if net:
            payer, payee = (a, b) if net > 0 else (b, a)
            lines.append(
                {
                    "from": payer,
                    "to": payee,
                    "points": abs(net),
                    "amount_minor": abs(net) * point_value_minor,
                }
            )
    return lines


async def settlement(ctx: JobContext) -> dict[str, int]:
    """Close every complete period since the first redemption that has no statement yet."""
    settings = ctx.settings
    period = settings.rewards.settlement_period
    now = datetime.now(UTC)
    closed = 0
    async with ctx.session_maker() as session:
        first = await session.scalar(select(func.min(USES.c.at)).where(USES.c.kind == REDEEM))
        done = set(await session.scalars(select(RewardSettlement.period_start)))
    if first is None:
        return {"statements": 0}
    start, end = period_of(first, period)
    while end <= now:
        if start not in done:
            with writing():
                async with ctx.session_maker() as session:
                    lines = await settlement_lines(
                        session, start, end, settings.rewards.point_value_minor
                    )
                    statement = dialect_insert(session, SETTLEMENTS).values(
                        period_start=start,
                        period_end=end,
                        currency=settings.rewards.currency,
                        point_value_minor=settings.rewards.point_value_minor,
                        lines=lines,
                        closed_at=now,
                    )
                    await session.execute(
                        statement.on_conflict_do_nothing(index_elements=["period_start"])
                    )
                    closed += 1
                    await ctx.checkpoint(
                        {"settled_until": end.isoformat()}, {"statements": closed}, session=session
                    )
        start, end = period_of(end, period)
    return {"statements": closed}


# -- expiry and retention ---------------------------------------------------------------------


async def points_expiry(ctx: JobContext) -> dict[str, int]:
    """Lots older than ``rewards.expiry_days`` give up what is left, as ledger postings."""
    cutoff = datetime.now(UTC) - timedelta(days=ctx.settings.rewards.expiry_days)
    counts = {"lots": 0, "points": 0}
    while True:
        with writing():
            async with ctx.session_maker() as session:
                lots = list(
                    await session.scalars(
                        select(LOTS.c.id)
                        .where(LOTS.c.remaining > 0, LOTS.c.earned_at < cutoff)
                        .order_by(LOTS.c.id)
                        .limit(EXPIRY_BATCH)
                    )
                )
                if not lots:
                    await session.rollback()
                    return counts
                await ledger.lock_members(
                    session,
                    list(
                        await session.scalars(select(LOTS.c.member_id).where(LOTS.c.id.in_(lots)))
                    ),
                )
                now = datetime.now(UTC)
                for lot in lots:
                    counts["points"] += await ledger.expire_lot(session, lot, now)
                counts["lots"] += len(lots)
                await ctx.checkpoint({"lot": lots[-1]}, counts, session=session)


async def purge_feed(session: AsyncSession, settings: Any) -> int:
    """Feed entries older than ``rewards.feed_retention_days`` -- but a ``withdrawn`` item
    only once its reader's cursor has passed it (it must not vanish unread)."""
    cutoff = datetime.now(UTC) - timedelta(days=settings.rewards.feed_retention_days)
    passed = (
        select(READERS.c.read_seq)
        .where(READERS.c.partner_id == FEED.c.partner_id)
        .scalar_subquery()
    )
    result = await session.execute(
        delete(FEED).where(
            FEED.c.created_at < cutoff,
            or_(FEED.c.kind != WITHDRAWN, FEED.c.seq <= func.coalesce(passed, 0)),
        )
    )
    return rowcount(result)


async def purge_unheld_members(session: AsyncSession, settings: Any) -> int:
    """Tombstone ledger members no brand holds any more (after replace removals and
    offboarding, which remove records without an erasure request)."""
    return await ledger.tombstone_unheld(session)

"""Re-keying every identifier record to the newest match-key version, online and resumable.

Batches of records still under an older version are decrypted (the digest lives only under
AES-GCM), re-keyed and updated, one short transaction each. The query *is* the cursor: a run
that stops anywhere resumes where it stopped. An upload of a record under an old version re-keys
that row itself first, and a batch's update is guarded by the version it read, so the two never
clash. When no record is left under an older version, those versions are retired.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from uuid import UUID

from sqlalchemy import Table, bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from partners.identifiers.crypto import IdentifierCrypto
from partners.identifiers.models import IdentifierRecord
from partners.identifiers.service import IdentifierService
from partners.rewards.ledger import MEMBER_SCOPE, MEMBERS

RECORDS: Table = IdentifierRecord.__table__  # type: ignore[assignment]


@dataclass
class RotationReport:
    target_version: int
    rekeyed: int = 0
    batches: int = 0
    remaining: int = 0
    partners: set[UUID] = field(default_factory=set)


async def remaining(session: AsyncSession, target: int) -> int:
    """Records and reward members still under an older version (none: it can be retired)."""
    count = await session.scalar(
        select(func.count()).select_from(RECORDS).where(RECORDS.c.key_version < target)
    )
    members = await session.scalar(
        select(func.count())
        .select_from(MEMBERS)
        .where(MEMBERS.c.key_version < target, MEMBERS.c.digest_enc.is_not(None))
    )
    return int(count or 0) + int(members or 0)


async def rekey_members_batch(
    session: AsyncSession, crypto: IdentifierCrypto, target: int, batch_size: int
) -> int:
    """Re-key up to ``batch_size`` reward members (the ledger's side of a rotation)."""
    rows = (
        await session.execute(
            select(
                MEMBERS.c.id,
                MEMBERS.c.id_type,
                MEMBERS.c.key_version,
                MEMBERS.c.digest_enc,
                MEMBERS.c.data_version,
            )
            .where(MEMBERS.c.key_version < target, MEMBERS.c.digest_enc.is_not(None))
            .limit(batch_size)
        )
    ).all()
    for member, id_type, version, sealed, data_version in rows:
        digest = crypto.decrypt(bytes(sealed), data_version, MEMBER_SCOPE, id_type)
        await session.execute(
            update(MEMBERS)
            .where(MEMBERS.c.id == member, MEMBERS.c.key_version == version)
            .values(match_key=crypto.match_key(digest, target), key_version=target)
        )
    return len(rows)


async def rekey_batch(
    session: AsyncSession, crypto: IdentifierCrypto, target: int, batch_size: int
) -> tuple[int, set[UUID]]:
    """Re-key up to ``batch_size`` records in the caller's transaction."""
    rows = (
        await session.execute(
            select(
                RECORDS.c.partner_id,
                RECORDS.c.id_type,
                RECORDS.c.match_key,
                RECORDS.c.key_version,
                RECORDS.c.digest_enc,
                RECORDS.c.data_version,
            )
            # Re-keyed rows leave this set, so each batch takes the next ones: no cursor needed.
            .where(RECORDS.c.key_version < target)
            .limit(batch_size)
        )
    ).all()
    if not rows:
        return 0, set()
    params = []
    partners: set[UUID] = set()
    for partner_id, id_type, old_key, version, sealed, data_version in rows:
        digest = crypto.decrypt(bytes(sealed), data_version, partner_id, id_type)
        params.append(
            {
                "p": partner_id,
                "t": id_type,
                "k": bytes(old_key),
                "old": version,
                "key": crypto.match_key(digest, target),
                "v": target,
            }
        )
        partners.add(partner_id)
    service = IdentifierService(session, crypto)
    for partner_id in sorted(partners):  # the partners' locks first, in one order (see touch)
        await service.touch(partner_id)
    result = await session.execute(
        update(RECORDS)
        .where(
            RECORDS.c.partner_id == bindparam("p"),
            RECORDS.c.id_type == bindparam("t"),
            RECORDS.c.match_key == bindparam("k"),
            RECORDS.c.key_version == bindparam("old"),
        )
        .values(match_key=bindparam("key"), key_version=bindparam("v")),
        params,
    )
    return int(getattr(result, "rowcount", len(params)) or 0), partners


async def rotate(
    session_factory: Callable[[], AsyncSession],
    crypto: IdentifierCrypto,
    *,
    batch_size: int = 5000,
    on_batch: Callable[[int], object] | None = None,
) -> RotationReport:
    """Re-key every record to the newest match-key version (one transaction per batch)."""
    target = crypto.keys.match_version
    report = RotationReport(target_version=target)
    while True:
        async with session_factory() as session:
            done, partners = await rekey_batch(session, crypto, target, batch_size)
            await session.commit()
        if not done:
            break
        report.rekeyed += done
        report.batches += 1
        report.partners |= partners
        if on_batch is not None:
            on_batch(done)
    while True:
        async with session_factory() as session:
            done = await rekey_members_batch(session, crypto, target, batch_size)
            await session.commit()
        if not done:
            break
        report.rekeyed += done
        report.batches += 1
        if on_batch is not None:
            on_batch(done)
    async with session_factory() as session:
        report.remaining = await remaining(session, target)
    return report

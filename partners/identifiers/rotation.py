"""Moving stored rows to the newest keys of the keyring, online and resumable.

One pass does both rotations of the identifier exchange (the ``match_key_rotation`` job and
``hub admin keys rotate-match-key`` run it):

- **re-key**: identifier records and reward members still keyed under an older match-key
  version get the newest one (the digest lives only under AES-GCM: open it, key it again);
- **re-seal**: digests of records and members, and partners' webhook secrets, still sealed
  under an older data-key version are sealed again under the newest.

The work goes in phases (:data:`PHASES`), each in batches of one short transaction. A batch
reads the rows after a position in primary-key order (keyset, so every batch costs the same),
and a :class:`Position` -- phase and last key -- is the cursor a job saves with its batch: a
run stopped anywhere resumes from it. Rows another process writes under an older version
meanwhile (it had not reloaded the keyring yet) may land behind the position: callers sweep
once more from the start after every process has reloaded, and retire older versions only
when :func:`remaining` finds nothing. Every update is guarded by what it read, so an upload
rewriting a row meanwhile wins and nothing is lost or applied twice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from sqlalchemy import Table, bindparam, func, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from partners.identifiers.crypto import IdentifierCrypto
from partners.identifiers.models import IdentifierRecord, IdentifierState
from partners.identifiers.service import IdentifierService
from partners.identifiers.uploads.models import StagedRecord
from partners.rewards.ledger import MEMBER_SCOPE, MEMBERS
from partners.webhooks.models import WebhookSecret
from partners.webhooks.signing import SecretBox

RECORDS: Table = IdentifierRecord.__table__  # type: ignore[assignment]
STATE: Table = IdentifierState.__table__  # type: ignore[assignment]
SECRETS: Table = WebhookSecret.__table__  # type: ignore[assignment]
STAGING: Table = StagedRecord.__table__  # type: ignore[assignment]

REKEY_RECORDS, REKEY_MEMBERS = "rekey_records", "rekey_members"
RESEAL_RECORDS, RESEAL_MEMBERS, RESEAL_SECRETS = (
    "reseal_records",
    "reseal_members",
    "reseal_webhook_secrets",
)
PHASES = (REKEY_RECORDS, REKEY_MEMBERS, RESEAL_RECORDS, RESEAL_MEMBERS, RESEAL_SECRETS)
REKEYING = {REKEY_RECORDS, REKEY_MEMBERS}


@dataclass(frozen=True)
class Targets:
    """The versions rows are moved to: the keyring's newest."""

    match_version: int
    data_version: int

    @classmethod
    def newest(cls, crypto: IdentifierCrypto) -> Targets:
        return cls(crypto.keys.match_version, crypto.keys.data_version)


@dataclass(frozen=True)
class Position:
    """Where a pass got to: the phase, and the last key done in it (None: its start)."""

    phase: str = PHASES[0]
    after: list[Any] | None = None

    def to_cursor(self, targets: Targets) -> dict[str, Any]:
        return {
            "match_version": targets.match_version,
            "data_version": targets.data_version,
            "phase": self.phase,
            "after": self.after,
        }

    @classmethod
    def from_cursor(cls, cursor: dict[str, Any], targets: Targets) -> Position:
        """The saved position, if it was saved for the same targets (else from the start)."""
        same = (
            cursor.get("match_version") == targets.match_version
            and cursor.get("data_version") == targets.data_version
            and cursor.get("phase") in PHASES
        )
        return cls(cursor["phase"], cursor.get("after")) if same else cls()


@dataclass
class Batch:
    """One batch's outcome: rows moved, and where the next batch starts (None: pass done)."""

    phase: str
    done: int
    next: Position | None
    partners: set[UUID] = field(default_factory=set)


@dataclass
class RotationReport:
    target_version: int
    data_version: int
    rekeyed: int = 0
    resealed: int = 0
    batches: int = 0
    remaining: int = 0
    partners: set[UUID] = field(default_factory=set)

    def add(self, batch: Batch) -> None:
        if batch.phase in REKEYING:
            self.rekeyed += batch.done
        else:
            self.resealed += batch.done
        self.batches += 1
        self.partners |= batch.partners


async def remaining(session: AsyncSession, targets: Targets) -> int:
    """Rows still under an older match-key or data-key version (none: they can be retired).

    Rows an upload staged under an older data key count too: applied later, they would land
    under it. (Staged keys under an older match key are re-keyed by the apply itself.)"""
    total = 0
    for query in (
        select(func.count())
        .select_from(RECORDS)
        .where(
            (RECORDS.c.key_version < targets.match_version)
            | (RECORDS.c.data_version < targets.data_version)
        ),
        select(func.count())
        .select_from(MEMBERS)
        .where(
            MEMBERS.c.digest_enc.is_not(None),
            (MEMBERS.c.key_version < targets.match_version)
            | (MEMBERS.c.data_version < targets.data_version),
        ),
        select(func.count())
        .select_from(SECRETS)
        .where(SECRETS.c.key_version < targets.data_version),
        select(func.count())
        .select_from(STAGING)
        .where(STAGING.c.data_version < targets.data_version),
    ):
        total += int(await session.scalar(query) or 0)
    return total


# -- records --------------------------------------------------------------------------------
RECORD_KEY = (RECORDS.c.partner_id, RECORDS.c.id_type, RECORDS.c.match_key)


def _records_after(after: list[Any] | None) -> Any:
    if after is None:
        return True
    partner, id_type, key = after
    return tuple_(*RECORD_KEY) > tuple_(
        bindparam(None, UUID(partner), type_=RECORDS.c.partner_id.type),
        bindparam(None, int(id_type), type_=RECORDS.c.id_type.type),
        bindparam(None, bytes.fromhex(key), type_=RECORDS.c.match_key.type),
    )


def _record_position(phase: str, rows: list[Any], batch_size: int) -> Position | None:
    if len(rows) < batch_size:
        return None
    last = rows[-1]
    return Position(phase, [str(last.partner_id), int(last.id_type), bytes(last.match_key).hex()])


async def _records_under_older(
    session: AsyncSession, version_column: Any, target: int, after: list[Any] | None, limit: int
) -> list[Any]:
    return list(
        (
            await session.execute(
                select(
                    *RECORD_KEY,
                    RECORDS.c.key_version,
                    RECORDS.c.digest_enc,
                    RECORDS.c.data_version,
                )
                .where(version_column < target, _records_after(after))
                .order_by(*RECORD_KEY)
                .limit(limit)
            )
        ).all()
    )


async def lock_partners(session: AsyncSession, partners: set[UUID]) -> None:
    """Take the partners' change-counter rows in one order, as every writer of their records
    does first (``IdentifierService.touch``), without raising them: re-sealing changes no
    match key, so no derived array or stored answer goes stale (PostgreSQL; SQLite writers
    are serialised already)."""
    if partners and session.get_bind().dialect.name == "postgresql":
        await session.execute(
            select(STATE.c.partner_id)
            .where(STATE.c.partner_id.in_(sorted(partners)))
            .order_by(STATE.c.partner_id)
            .with_for_update()
        )


async def rekey_records(
    session: AsyncSession,
    crypto: IdentifierCrypto,
    targets: Targets,
    after: list[Any] | None,
    batch_size: int,
) -> Batch:
    """Re-key up to ``batch_size`` records after ``after``, in the caller's transaction."""
    target = targets.match_version
    rows = await _records_under_older(session, RECORDS.c.key_version, target, after, batch_size)
    partners = {row.partner_id for row in rows}
    params = []
    for row in rows:
        digest = crypto.decrypt(
            bytes(row.digest_enc), row.data_version, row.partner_id, row.id_type
        )
        params.append(
            {
                "p": row.partner_id,
                "t": row.id_type,
                "k": bytes(row.match_key),
                "old": row.key_version,
                "key": crypto.match_key(digest, target),
            }
        )
    service = IdentifierService(session, crypto)
    for partner_id in sorted(partners):  # the partners' locks first, in one order (see touch)
        await service.touch(partner_id)
    if params:
        await session.execute(
            update(RECORDS)
            .where(
                RECORDS.c.partner_id == bindparam("p"),
                RECORDS.c.id_type == bindparam("t"),
                RECORDS.c.match_key == bindparam("k"),
                RECORDS.c.key_version == bindparam("old"),
            )
            .values(match_key=bindparam("key"), key_version=target),
            params,
        )
    next_position = _record_position(REKEY_RECORDS, rows, batch_size)
    return Batch(REKEY_RECORDS, len(rows), next_position, partners)


async def reseal_records(
    session: AsyncSession,
    crypto: IdentifierCrypto,
    targets: Targets,
    after: list[Any] | None,
    batch_size: int,
) -> Batch:
    """Seal the digests of up to ``batch_size`` records again under the newest data key."""
    target = targets.data_version
    rows = await _records_under_older(session, RECORDS.c.data_version, target, after, batch_size)
    partners = {row.partner_id for row in rows}
    await lock_partners(session, partners)
    params = []
    for row in rows:
        digest = crypto.decrypt(
            bytes(row.digest_enc), row.data_version, row.partner_id, row.id_type
        )
        version, sealed = crypto.encrypt(digest, row.partner_id, row.id_type)
        assert version == target
        # The key names the digest (an HMAC of it), so an upload that rewrote this row
        # meanwhile sealed the same digest: whichever write lands last is right.
        params.append(
            {
                "p": row.partner_id,
                "t": row.id_type,
                "k": bytes(row.match_key),
                "old": row.data_version,
                "sealed": sealed,
            }
        )
    if params:
        await session.execute(
            update(RECORDS)
            .where(
                RECORDS.c.partner_id == bindparam("p"),
                RECORDS.c.id_type == bindparam("t"),
                RECORDS.c.match_key == bindparam("k"),
                RECORDS.c.data_version == bindparam("old"),
            )
            .values(digest_enc=bindparam("sealed"), data_version=target),
            params,
        )
    next_position = _record_position(RESEAL_RECORDS, rows, batch_size)
    return Batch(RESEAL_RECORDS, len(rows), next_position, partners)


# -- reward members -------------------------------------------------------------------------
async def _members_under_older(
    session: AsyncSession, version_column: Any, target: int, after: list[Any] | None, limit: int
) -> list[Any]:
    start = int(after[0]) if after else 0
    return list(
        (
            await session.execute(
                select(
                    MEMBERS.c.id,
                    MEMBERS.c.id_type,
                    MEMBERS.c.key_version,
                    MEMBERS.c.digest_enc,
                    MEMBERS.c.data_version,
                )
                .where(
                    version_column < target,
                    MEMBERS.c.digest_enc.is_not(None),
                    MEMBERS.c.id > start,
                )
                .order_by(MEMBERS.c.id)
                .limit(limit)
            )
        ).all()
    )


def _member_position(phase: str, rows: list[Any], batch_size: int) -> Position | None:
    return Position(phase, [int(rows[-1].id)]) if len(rows) == batch_size else None


async def rekey_members(
    session: AsyncSession,
    crypto: IdentifierCrypto,
    targets: Targets,
    after: list[Any] | None,
    batch_size: int,
) -> Batch:
    """Re-key up to ``batch_size`` reward members (the ledger's side of a rotation)."""
    target = targets.match_version
    rows = await _members_under_older(session, MEMBERS.c.key_version, target, after, batch_size)
    for row in rows:
        digest = crypto.decrypt(bytes(row.digest_enc), row.data_version, MEMBER_SCOPE, row.id_type)
        await session.execute(
            update(MEMBERS)
            .where(MEMBERS.c.id == row.id, MEMBERS.c.key_version == row.key_version)
            .values(match_key=crypto.match_key(digest, target), key_version=target)
        )
    return Batch(REKEY_MEMBERS, len(rows), _member_position(REKEY_MEMBERS, rows, batch_size))


async def reseal_members(
    session: AsyncSession,
    crypto: IdentifierCrypto,
    targets: Targets,
    after: list[Any] | None,
    batch_size: int,
) -> Batch:
    """Seal the digests of up to ``batch_size`` reward members again under the newest data
    key. A member tombstoned meanwhile (its digest dropped) is left as it is."""
    target = targets.data_version
    rows = await _members_under_older(session, MEMBERS.c.data_version, target, after, batch_size)
    params = []
    for row in rows:
        digest = crypto.decrypt(bytes(row.digest_enc), row.data_version, MEMBER_SCOPE, row.id_type)
        version, sealed = crypto.encrypt(digest, MEMBER_SCOPE, row.id_type)
        assert version == target
        params.append({"m": row.id, "old": row.data_version, "sealed": sealed})
    if params:
        await session.execute(
            update(MEMBERS)
            .where(MEMBERS.c.id == bindparam("m"), MEMBERS.c.data_version == bindparam("old"))
            .values(digest_enc=bindparam("sealed"), data_version=target),
            params,
        )
    return Batch(RESEAL_MEMBERS, len(rows), _member_position(RESEAL_MEMBERS, rows, batch_size))


# -- webhook secrets (a handful of rows: one batch) -----------------------------------------
async def reseal_webhook_secrets(
    session: AsyncSession,
    crypto: IdentifierCrypto,
    targets: Targets,
    after: list[Any] | None,
    batch_size: int,
) -> Batch:
    """Seal partners' webhook secrets again under the newest data key. A secret replaced
    meanwhile is left as it is (the update is guarded by the sealed bytes it read)."""
    target = targets.data_version
    box = SecretBox(crypto)
    rows = (
        await session.execute(
            select(SECRETS.c.partner_id, SECRETS.c.key_version, SECRETS.c.sealed).where(
                SECRETS.c.key_version < target
            )
        )
    ).all()
    for partner_id, version, sealed in rows:
        new_version, resealed = box.seal(box.open(bytes(sealed), version, partner_id), partner_id)
        await session.execute(
            update(SECRETS)
            .where(SECRETS.c.partner_id == partner_id, SECRETS.c.sealed == bytes(sealed))
            .values(key_version=new_version, sealed=resealed)
        )
    return Batch(RESEAL_SECRETS, len(rows), None)


PhaseStep = Callable[
    [AsyncSession, IdentifierCrypto, Targets, "list[Any] | None", int], Awaitable[Batch]
]
STEPS: dict[str, PhaseStep] = {
    REKEY_RECORDS: rekey_records,
    REKEY_MEMBERS: rekey_members,
    RESEAL_RECORDS: reseal_records,
    RESEAL_MEMBERS: reseal_members,
    RESEAL_SECRETS: reseal_webhook_secrets,
}


async def rotation_batch(
    session: AsyncSession,
    crypto: IdentifierCrypto,
    targets: Targets,
    position: Position,
    batch_size: int,
) -> Batch:
    """Do the batch at ``position`` in the caller's transaction; ``next`` is the following
    batch's position (the next phase's start when this phase is done), None at the end."""
    batch = await STEPS[position.phase](session, crypto, targets, position.after, batch_size)
    if batch.next is None:
        following = PHASES.index(position.phase) + 1
        batch.next = Position(PHASES[following]) if following < len(PHASES) else None
    return batch


async def rotate(
    session_factory: Callable[[], AsyncSession],
    crypto: IdentifierCrypto,
    *,
    batch_size: int = 5000,
    on_batch: Callable[[int], object] | None = None,
) -> RotationReport:
    """One whole pass to the newest versions (one transaction per batch)."""
    targets = Targets.newest(crypto)
    report = RotationReport(targets.match_version, targets.data_version)
    position: Position | None = Position()
    while position is not None:
        async with session_factory() as session:
            batch = await rotation_batch(session, crypto, targets, position, batch_size)
            await session.commit()
        report.add(batch)
        position = batch.next
        if on_batch is not None and batch.done:
            on_batch(batch.done)
    async with session_factory() as session:
        report.remaining = await remaining(session, targets)
    return report

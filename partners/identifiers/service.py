"""Storing a partner's identifier records: upserts, consent updates, erasure.

All statements are Core (no ORM object per row) and every method works inside the caller's
transaction, so a request is applied whole or not at all.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import (
    ColumnElement,
    Table,
    and_,
    bindparam,
    delete,
    exists,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from hub.core import audit, horizon
from hub.core.audit import Actor
from hub.core.db import dialect_insert, rowcount
from hub.core.errors import Conflict
from partners.identifiers.changes import ChangeFollower, RecordsChanged
from partners.identifiers.crypto import IdentifierCrypto
from partners.identifiers.models import (
    CONSENT_BITS,
    ConsentEvent,
    IdentifierApplyChange,
    IdentifierErasure,
    IdentifierRecord,
    IdentifierState,
)
from partners.identifiers.records import PENDING_EVENTS, current, unsettled, with_keys
from partners.identifiers.validation import ValidRecord
from partners.rewards.erasure import forget_in_rewards

CHUNK = 500  # keys per IN (...) lookup
BUSY_RETRY_SECONDS = 5  # Retry-After of an upsert refused while a bulk upload is applied
RECORDS: Table = IdentifierRecord.__table__  # type: ignore[assignment]
EVENTS: Table = ConsentEvent.__table__  # type: ignore[assignment]
STATE: Table = IdentifierState.__table__  # type: ignore[assignment]
ERASURES: Table = IdentifierErasure.__table__  # type: ignore[assignment]
APPLY_CHANGES: Table = IdentifierApplyChange.__table__  # type: ignore[assignment]
# The columns a new record is written with, in table order (its generation is 0 by default:
# current for every partner, see partners.identifiers.records).
RECORD_COLUMNS = tuple(c.name for c in RECORDS.c if c.name not in ("generation", "retired"))


@dataclass
class UpsertResult:
    accepted: int
    created: int
    updated: int  # known records whose customer_ref, consents or attributes changed
    unchanged: int  # known records sent again exactly as they were


@dataclass
class _Change:
    granted: int = 0
    withdrawn: int = 0


def _chunks(items: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class IdentifierService:
    def __init__(
        self,
        session: AsyncSession,
        crypto: IdentifierCrypto,
        follower: ChangeFollower | None = None,
    ) -> None:
        self.session = session
        self.crypto = crypto
        # Told of every consent change and erasure (the matching arrays patch themselves).
        self.follower = follower
        # The partners whose counter this session raised while a bulk upload was being
        # applied (their changes record the people they touch: see IdentifierApplyChange).
        self._applying: set[UUID] = set()

    def insert_into(self, table: Table) -> Any:
        """INSERT with the dialect's ON CONFLICT support (PostgreSQL and SQLite)."""
        return dialect_insert(self.session, table)

    async def upsert(
        self, partner_id: UUID, records: Sequence[ValidRecord], actor: Actor
    ) -> UpsertResult:
        """Create or update ``records``; a known key with another customer_ref moves to it.

        Refused (409) while a bulk upload of the partner is being applied: written now, these
        records would be overwritten by the older snapshot at its flip, or would overwrite it.
        """
        version = await self.touch(partner_id)
        if await unsettled(self.session, partner_id):
            raise Conflict(
                "A bulk upload is being applied to your identifier records; records sent now "
                "would be overwritten by it (or overwrite it).",
                fix="Retry after the number of seconds in Retry-After; GET "
                "/v1/identifiers/uploads lists your uploads and their phase.",
                headers={"Retry-After": str(BUSY_RETRY_SECONDS)},
            )
        keys = self.crypto.keys
        current = keys.match_version
        match_keys = [self.crypto.match_key(r.digest, current) for r in records]
        await self._rekey_older_versions(partner_id, records, match_keys)
        existing = await self._existing(partner_id, records, match_keys)
        now = datetime.now(UTC)
        rows = []
        changes: dict[str, _Change] = defaultdict(_Change)
        created = unchanged = 0
        rewritten = {record.customer_ref for record in records}
        for record, key in zip(records, match_keys, strict=True):
            data_version, sealed = self.crypto.encrypt(record.digest, partner_id, record.id_type)
            rows.append(
                {
                    "partner_id": partner_id,
                    "id_type": record.id_type,
                    "match_key": key,
                    "key_version": current,
                    "digest_enc": sealed,
                    "data_version": data_version,
                    "customer_ref": record.customer_ref,
                    "consents": record.consents,
                    "attributes": record.attributes,
                    "updated_at": now,
                }
            )
            before = existing.get((record.id_type, key))
            if before is None:
                created += 1
                changes[record.customer_ref].granted |= record.consents
                continue
            if before == (record.customer_ref, record.consents, record.attributes or {}):
                unchanged += 1
            if before[0] != record.customer_ref:
                rewritten.add(before[0])
                changes[before[0]].withdrawn |= before[1]
                changes[record.customer_ref].granted |= record.consents
            else:
                changes[record.customer_ref].granted |= record.consents & ~before[1]
                changes[record.customer_ref].withdrawn |= before[1] & ~record.consents
        # Outside an apply a key has one row (of whatever generation): known keys are
        # updated in place, new ones inserted under generation 0, current for every partner.
        known = [row for row in rows if (row["id_type"], row["match_key"]) in existing]
        new = [row for row in rows if (row["id_type"], row["match_key"]) not in existing]
        if known:
            await self.session.execute(
                update(RECORDS)
                .where(
                    RECORDS.c.partner_id == bindparam("p"),
                    RECORDS.c.id_type == bindparam("t"),
                    RECORDS.c.match_key == bindparam("k"),
                )
                .values(
                    customer_ref=bindparam("customer_ref"),
                    consents=bindparam("consents"),
                    attributes=bindparam("attributes"),
                    updated_at=bindparam("updated_at"),
                ),
                [
                    {
                        "p": row["partner_id"],
                        "t": row["id_type"],
                        "k": row["match_key"],
                        "customer_ref": row["customer_ref"],
                        "consents": row["consents"],
                        "attributes": row["attributes"],
                        "updated_at": row["updated_at"],
                    }
                    for row in known
                ],
            )
        if new:
            await self.session.execute(RECORDS.insert(), new)
        await self._record_changes(partner_id, changes, "upload")
        people = tuple(sorted(rewritten))
        await self._announce(RecordsChanged(partner_id, version, rewritten=people, touched=people))
        await audit.append(
            self.session,
            actor.event(
                "identifiers.uploaded",
                "partner",
                str(partner_id),
                accepted=len(rows),
                created=created,
                updated=len(rows) - created - unchanged,
                unchanged=unchanged,
            ),
        )
        updated = len(rows) - created - unchanged
        return UpsertResult(len(rows), created=created, updated=updated, unchanged=unchanged)

    async def _rekey_older_versions(
        self, partner_id: UUID, records: Sequence[ValidRecord], match_keys: list[bytes]
    ) -> None:
        """During a match-key rotation, move these records' rows to the current version first,
        so the upsert finds them whatever version they are still under."""
        current = self.crypto.keys.match_version
        for version in self.crypto.keys.live_match_versions():
            if version == current:
                continue
            params = [
                {
                    "p": partner_id,
                    "t": r.id_type,
                    "old": self.crypto.match_key(r.digest, version),
                    "new": key,
                    "v": current,
                }
                for r, key in zip(records, match_keys, strict=True)
            ]
            await self.session.execute(
                update(RECORDS)
                .where(
                    RECORDS.c.partner_id == bindparam("p"),
                    RECORDS.c.id_type == bindparam("t"),
                    RECORDS.c.match_key == bindparam("old"),
                )
                .values(match_key=bindparam("new"), key_version=bindparam("v")),
                params,
            )

    async def _existing(
        self, partner_id: UUID, records: Sequence[ValidRecord], match_keys: list[bytes]
    ) -> dict[tuple[int, bytes], tuple[str, int, dict[str, str]]]:
        """(customer_ref, consents, attributes) of the records these keys already have."""
        found: dict[tuple[int, bytes], tuple[str, int, dict[str, str]]] = {}
        pairs = [(r.id_type, k) for r, k in zip(records, match_keys, strict=True)]
        for chunk in _chunks(pairs):
            rows = await self.session.execute(
                select(
                    RECORDS.c.id_type,
                    RECORDS.c.match_key,
                    RECORDS.c.customer_ref,
                    RECORDS.c.consents,
                    RECORDS.c.attributes,
                ).where(
                    current(RECORDS, partner_id),
                    with_keys(RECORDS, [k for _, k in chunk], {t for t, _ in chunk}),
                )
            )
            for id_type, key, ref, consents, attributes in rows:
                found[(id_type, bytes(key))] = (ref, consents, attributes or {})
        return found

    async def set_consents(
        self, partner_id: UUID, updates: Sequence[tuple[str, int]], actor: Actor
    ) -> tuple[int, int, list[str]]:
        """Set each person's consents on all their records. Returns (people updated, records
        updated, customer_refs without records)."""
        version = await self.touch(partner_id)
        refs = [ref for ref, _ in updates]
        held: dict[str, list[int]] = defaultdict(list)
        for chunk in _chunks(refs):
            rows = await self.session.execute(
                select(RECORDS.c.customer_ref, RECORDS.c.consents).where(
                    current(RECORDS, partner_id), RECORDS.c.customer_ref.in_(chunk)
                )
            )
            for ref, consents in rows:
                held[ref].append(consents)
        changes: dict[str, _Change] = defaultdict(_Change)
        params = []
        records = 0
        for ref, mask in updates:
            if ref not in held:
                continue
            records += len(held[ref])
            for before in held[ref]:
                changes[ref].granted |= mask & ~before
                changes[ref].withdrawn |= before & ~mask
            params.append({"p": partner_id, "r": ref, "c": mask, "u": datetime.now(UTC)})
        if params:
            # Every generation: a bulk upload being applied keeps the new consents (and its
            # rows written after this are corrected at its flip, see uploads.generation).
            await self.session.execute(
                update(RECORDS)
                .where(
                    RECORDS.c.partner_id == bindparam("p"), RECORDS.c.customer_ref == bindparam("r")
                )
                .values(consents=bindparam("c"), updated_at=bindparam("u")),
                params,
            )
        await self._take_back_pending_grants(partner_id, changes)
        await self._record_changes(partner_id, changes, "update")
        masks = {ref: mask for ref, mask in updates if ref in held}
        await self._announce(
            RecordsChanged(partner_id, version, consents=masks, touched=tuple(masks))
        )
        unknown = [ref for ref, _ in updates if ref not in held]
        withdrawn = sum(1 for c in changes.values() if c.withdrawn)
        await audit.append(
            self.session,
            actor.event(
                "identifiers.consents_updated",
                "partner",
                str(partner_id),
                people=len(params),
                records=records,
                withdrawals=withdrawn,
            ),
        )
        return len(params), records, unknown

    async def erase(
        self,
        partner_id: UUID,
        actor: Actor,
        *,
        customer_refs: Sequence[str] = (),
        digests: Sequence[bytes] = (),
    ) -> tuple[int, int]:
        """Remove people (by customer_ref) or records (by digest, any id type and live key
        version). Returns (records removed, people affected); the audit log gets the counts."""
        conditions: list[ColumnElement[bool]] = []
        for chunk in _chunks(list(customer_refs)):
            conditions.append(RECORDS.c.customer_ref.in_(chunk))
        versions = self.crypto.keys.live_match_versions()
        keys = [self.crypto.match_key(d, v) for d in digests for v in versions]
        for chunk in _chunks(keys):
            conditions.append(with_keys(RECORDS, chunk))  # any id type
        if not conditions:
            return 0, 0
        version = await self.touch(partner_id)
        where = and_(RECORDS.c.partner_id == partner_id, or_(*conditions))
        found = (
            await self.session.execute(
                select(RECORDS.c.customer_ref, RECORDS.c.match_key).where(where)
            )
        ).all()
        people = sorted({ref for ref, _ in found})
        result = await self.session.execute(delete(RECORDS).where(where))
        await self._remember_erasure(partner_id, customer_refs, keys + [bytes(k) for _, k in found])
        await forget_in_rewards(self.session, partner_id, [bytes(key) for _, key in found], people)
        removed = rowcount(result)
        everything = sum(CONSENT_BITS.values())
        changes = {ref: _Change(withdrawn=everything) for ref in people}
        await self._take_back_pending_grants(partner_id, changes)
        await self._record_changes(partner_id, changes, "erasure")
        await self._announce(
            RecordsChanged(
                partner_id,
                version,
                erased_people=tuple(customer_refs),
                erased_keys=tuple(keys),
                touched=tuple(people),
            )
        )
        await audit.append(
            self.session,
            actor.event(
                "identifiers.erased",
                "partner",
                str(partner_id),
                requested=len(customer_refs) + len(digests),
                by="customer_ref" if customer_refs else "id_hash",
                records_removed=removed,
                people=len(people),
            ),
        )
        return removed, len(people)

    async def _remember_erasure(
        self, partner_id: UUID, customer_refs: Sequence[str], keys: Sequence[bytes]
    ) -> None:
        """For the bulk uploads sent before now and applied later: they leave these people
        and identifiers out (see IdentifierErasure; the uploads' maintenance forgets them)."""
        now = datetime.now(UTC)
        rows = [
            {"partner_id": partner_id, "customer_ref": ref, "match_key": None, "erased_at": now}
            for ref in dict.fromkeys(customer_refs)
        ] + [
            {"partner_id": partner_id, "customer_ref": None, "match_key": key, "erased_at": now}
            for key in dict.fromkeys(keys)
        ]
        if rows:
            await self.session.execute(ERASURES.insert(), rows)

    async def _take_back_pending_grants(
        self, partner_id: UUID, changes: dict[str, _Change]
    ) -> None:
        """A withdrawal wins over the grants a bulk upload has computed but not yet published
        (they would reach consent_events after this withdrawal, and undo it for readers)."""
        params = [
            {"p": partner_id, "r": ref, "keep": sum(CONSENT_BITS.values()) & ~change.withdrawn}
            for ref, change in changes.items()
            if change.withdrawn
        ]
        if not params:
            return
        if not await self.session.scalar(
            select(exists().where(PENDING_EVENTS.c.partner_id == partner_id))
        ):
            return
        await self.session.execute(
            update(PENDING_EVENTS)
            .where(
                PENDING_EVENTS.c.partner_id == bindparam("p"),
                PENDING_EVENTS.c.customer_ref == bindparam("r"),
            )
            .values(granted=PENDING_EVENTS.c.granted.bitwise_and(bindparam("keep"))),
            params,
        )

    async def _record_changes(
        self, partner_id: UUID, changes: dict[str, _Change], cause: str
    ) -> None:
        rows = [
            {
                "partner_id": partner_id,
                "customer_ref": ref,
                "granted": change.granted & ~change.withdrawn,
                "withdrawn": change.withdrawn,
                "cause": cause,
                "at": datetime.now(UTC),
            }
            for ref, change in changes.items()
            if change.granted or change.withdrawn
        ]
        if rows:
            await horizon.inserting(self.session, horizon.CONSENT_EVENTS)
            await self.session.execute(EVENTS.insert(), rows)

    async def touch(self, partner_id: UUID) -> int:
        """Raise the partner's change counter (derived arrays of older versions are stale);
        returns its new value (the old one plus one: the row is locked until the commit).

        Every writer of a partner's records calls this first: on PostgreSQL the counter's row
        lock then orders all of them (no deadlock between an upload, a consent update, an
        erasure and a re-keying batch), and a bulk apply knows no one else writes meanwhile.
        """
        insert = self.insert_into(STATE)
        raised = await self.session.execute(
            insert.values(partner_id=partner_id, version=1, updated_at=datetime.now(UTC))
            .on_conflict_do_update(
                index_elements=["partner_id"],
                set_={"version": STATE.c.version + 1, "updated_at": insert.excluded.updated_at},
            )
            .returning(STATE.c.version, STATE.c.pending)
        )
        version, pending = raised.one()
        if pending is None:
            self._applying.discard(partner_id)
        else:
            self._applying.add(partner_id)
        return int(version)

    async def _announce(self, change: RecordsChanged) -> None:
        if change.partner_id in self._applying:
            # A bulk upload is being applied: its flip patches the arrays it built ahead
            # with the people of every change since their build (see IdentifierApplyChange).
            await self.session.execute(
                APPLY_CHANGES.insert().values(
                    partner_id=change.partner_id,
                    version=change.version,
                    people=sorted(set(change.touched)),
                )
            )
        if self.follower is not None:
            await self.follower.follow(self.session, change)

    async def counts(self, partner_id: UUID) -> dict[str, int]:
        """Records, people and the change counter of one partner."""
        records, people = (
            await self.session.execute(
                select(func.count(), func.count(func.distinct(RECORDS.c.customer_ref))).where(
                    current(RECORDS, partner_id)
                )
            )
        ).one()
        version = await self.session.scalar(
            select(STATE.c.version).where(STATE.c.partner_id == partner_id)
        )
        return {"records": int(records), "people": int(people), "version": int(version or 0)}

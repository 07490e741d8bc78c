"""Following a consent change or an erasure by patching the arrays of the version before.

A consent change or an erasure raises a partner's counter by one, from V to V+1, in one
transaction. When V's arrays exist, V+1's are V's with the change applied: the consent column
copied with the changed people's consents; an erasure's rows left out (a boolean mask), the
people with no row left gone (their ``customer_ref`` with them) and the others renumbered.
The attributes of the people touched are taken again from their remaining records, read in
the change's own transaction (``merged_attributes``, the build's rule), and each attribute
keeps the values someone holds, as a build keeps them. So V+1's arrays equal a build at V+1
(tests compare them on both databases), for a few array copies instead of reading every
record; the columns the change leaves alone are hard links to V's files.

The patch runs after the change commits and before it is answered
(``hub.core.db.after_commit``). It is skipped, never guessed, when V's arrays are neither in
memory nor on disk, when the counter moved more than once in the transaction, when the
keyring has a newer match key than V's arrays, or when an erasure meets an attribute over its
quota (how many values are left cannot be told from the arrays): the next question (or the
maintenance) builds V+1 then. An erasure deletes the older versions' files in any case.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from functools import partial
from uuid import UUID

import numpy as np
import structlog
from numpy.typing import NDArray
from sqlalchemy import Text, cast, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.core.db import after_commit
from matching.array_files import (
    FIXED_COLUMNS,
    Loaded,
    People,
    discard_older,
    open_version,
    save,
    version_name,
)
from matching.engine import Attribute, Side
from matching.loader import RECORDS, STATE, ArrayCache, merged_attributes, person_order
from partners.identifiers.changes import RecordsChanged
from partners.identifiers.records import current

log = structlog.get_logger("hub.matching")
CHUNK = 500  # customer_refs per IN (...) lookup
# How long a change's answer waits for a build of the same partner in this process (a
# question's, an upload's) before it gives up patching: a build of millions of records takes
# seconds to minutes, and the build (or the apply's check after it) catches up by itself.
PATCH_WAIT_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class Patch:
    """A patched version, and the columns it shares with the version it came from."""

    loaded: Loaded
    unchanged: frozenset[str]


def with_consents(
    base: Loaded,
    version: int,
    consents: Mapping[str, int],
    attributes: Mapping[str, Mapping[str, str]],
) -> Patch:
    """``base`` with each person's records carrying their new ``consents``; ``attributes``
    are the touched people's, from their records as they now stand (a consent update
    changes the records' order, hence possibly which record's attribute counts)."""
    side = base.side
    positions = base.people.positions(consents)
    new_mask = np.full(side.n_people, -1, dtype=np.int16)
    for ref, person in positions.items():
        new_mask[person] = consents[ref]
    per_record = new_mask[side.person]
    changed = per_record >= 0
    consent = np.where(changed, per_record, side.consent).astype(np.uint8)
    touched = {positions[ref]: attrs for ref, attrs in attributes.items() if ref in positions}
    patched = replace(
        side,
        consent=consent,
        attributes=_reattributed(side.attributes, touched) if touched else side.attributes,
    )
    unchanged = set(FIXED_COLUMNS) - ({"consent"} if changed.any() else set())
    return Patch(replace(base, version=version, side=patched), frozenset(unchanged))


def without(
    base: Loaded,
    version: int,
    people: Iterable[str],
    keys: Iterable[bytes],
    attributes: Mapping[str, Mapping[str, str]],
) -> Patch | None:
    """``base`` without the records of ``people`` and those under ``keys`` (match keys; the
    first 16 bytes are the arrays' key); None when an attribute is over its quota."""
    if base.over_quota:
        return None
    side = base.side
    dropped = _records_of(base, people) | _records_under(side, keys)
    if not dropped.any():
        return Patch(replace(base, version=version), frozenset(FIXED_COLUMNS))
    kept = ~dropped
    has_records = np.zeros(side.n_people, dtype=bool)
    has_records[side.person[kept]] = True
    renumbered = np.cumsum(has_records, dtype=np.int64) - 1
    remaining = _kept_people(base.people, has_records)
    touched_at = remaining.positions(attributes)
    touched = {touched_at[ref]: attrs for ref, attrs in attributes.items() if ref in touched_at}
    coded = {
        name: Attribute(np.ascontiguousarray(a.codes[has_records]), a.values)
        for name, a in side.attributes.items()
    }
    patched = Side(
        hi=np.ascontiguousarray(side.hi[kept]),
        lo=np.ascontiguousarray(side.lo[kept]),
        person=renumbered[side.person[kept]].astype(np.int32),
        consent=np.ascontiguousarray(side.consent[kept]),
        n_people=len(remaining),
        attributes=_reattributed(coded, touched),
    )
    return Patch(replace(base, version=version, side=patched, people=remaining), frozenset())


def _records_of(base: Loaded, people: Iterable[str]) -> NDArray[np.bool_]:
    gone = np.zeros(base.side.n_people, dtype=bool)
    gone[list(base.people.positions(people).values())] = True
    result: NDArray[np.bool_] = gone[base.side.person]
    return result


def _records_under(side: Side, keys: Iterable[bytes]) -> NDArray[np.bool_]:
    found = np.zeros(len(side.hi), dtype=bool)
    prefixes = [key[:16] for key in keys]
    if not prefixes:
        return found
    pairs = np.frombuffer(b"".join(prefixes), dtype=">u8").reshape(-1, 2).astype(np.uint64)
    wanted = {(int(hi), int(lo)) for hi, lo in pairs}
    for row in np.flatnonzero(np.isin(side.hi, pairs[:, 0])).tolist():
        found[row] = (int(side.hi[row]), int(side.lo[row])) in wanted
    return found


def _kept_people(people: People, kept: NDArray[np.bool_]) -> People:
    """The people table without those not ``kept`` (their bytes leave the blob)."""
    lengths = np.diff(people.offsets)
    blob = np.frombuffer(people.blob, dtype=np.uint8)[np.repeat(kept, lengths)].tobytes()
    offsets = np.zeros(int(kept.sum()) + 1, dtype=np.int64)
    np.cumsum(lengths[kept], out=offsets[1:])
    return People(blob, offsets)


def _reattributed(
    attributes: Mapping[str, Attribute], touched: Mapping[int, Mapping[str, str]]
) -> dict[str, Attribute]:
    """Each attribute with the ``touched`` people's values set again, keeping the values
    someone holds (sorted) and the attributes someone has, as ``_build`` does."""
    result: dict[str, Attribute] = {}
    for name, attribute in attributes.items():
        values = list(attribute.values)
        code_of = {value: code for code, value in enumerate(values)}
        codes = np.array(attribute.codes, dtype=np.int16)
        for person, attrs in touched.items():
            value = attrs.get(name)
            if value is None:
                codes[person] = -1
                continue
            if value not in code_of:
                code_of[value] = len(values)
                values.append(value)
            codes[person] = code_of[value]
        held = np.unique(codes[codes >= 0]).tolist()
        if not held:
            continue  # no one has it any more: a build would not know it
        vocabulary = sorted(values[code] for code in held)
        remap = np.full(len(values) + 1, -1, dtype=np.int16)  # remap[-1] stays -1
        for new, value in enumerate(vocabulary):
            remap[code_of[value]] = new
        result[name] = Attribute(remap[codes], tuple(vocabulary))
    return result


async def touched_attributes(
    session: AsyncSession, partner_id: UUID, refs: Iterable[str]
) -> dict[str, dict[str, str]]:
    """The attributes of each of ``refs`` with records left, from those records (read in the
    caller's transaction, in the build's order)."""
    texts: dict[str, list[str | None]] = defaultdict(list)
    wanted = sorted(set(refs))
    order = person_order(session.get_bind().dialect.name)
    for start in range(0, len(wanted), CHUNK):
        rows = await session.execute(
            select(RECORDS.c.customer_ref, cast(RECORDS.c.attributes, Text))
            .where(
                current(RECORDS, partner_id),
                RECORDS.c.customer_ref.in_(wanted[start : start + CHUNK]),
            )
            .order_by(*order)
        )
        for ref, text in rows:
            texts[ref].append(text)
    return {ref: merged_attributes(found) for ref, found in texts.items()}


class ArrayPatcher:
    """Follows consent changes and erasures (``partners.identifiers.changes``) in the
    partner's arrays: wired into the identifier service of every request by the app."""

    def __init__(self, cache: ArrayCache) -> None:
        self.cache = cache

    async def follow(self, session: AsyncSession, change: RecordsChanged) -> None:
        """In the change's transaction: check it raised the counter exactly once, read the
        touched people's attributes, and patch after the commit."""
        counter = await session.scalar(
            select(STATE.c.version).where(STATE.c.partner_id == change.partner_id)
        )
        if counter != change.version:
            return  # raised again in this transaction: V's arrays are not its base
        attributes = await touched_attributes(session, change.partner_id, change.touched)
        after_commit(session, partial(self._patch, change, attributes))

    async def _patch(self, change: RecordsChanged, attributes: dict[str, dict[str, str]]) -> None:
        try:
            await self._patch_when_free(change, attributes)
        except Exception:  # committed either way: the next question builds the arrays
            log.warning(
                "could not patch a partner's arrays",
                partner_id=str(change.partner_id),
                exc_info=True,
            )

    async def _patch_when_free(
        self, change: RecordsChanged, attributes: dict[str, dict[str, str]]
    ) -> None:
        lock = self.cache.lock(change.partner_id)
        try:
            await asyncio.wait_for(lock.acquire(), PATCH_WAIT_SECONDS)
        except TimeoutError:  # a build is under way: it, or the question after it, catches up
            await asyncio.to_thread(self.forget_older, change)
            return
        try:
            await asyncio.to_thread(self.patch_now, change, attributes)
        finally:
            lock.release()

    def patch_now(
        self, change: RecordsChanged, attributes: Mapping[str, Mapping[str, str]]
    ) -> None:
        """Write V+1's arrays from V's (see the module's docstring for when it does not)."""
        cache = self.cache
        partner_id, version = change.partner_id, change.version
        key_version = cache.crypto.keys.match_version
        directory = cache.directory(partner_id)
        erasure = bool(change.erased_people or change.erased_keys)
        try:
            if (directory / version_name(version, key_version)).is_dir():
                return  # built meanwhile (a question, another process)
            base = cache.held(partner_id, version - 1, key_version) or open_version(
                directory, partner_id, version - 1, key_version
            )
            if base is None:
                return
            if erasure:
                patch = without(base, version, change.erased_people, change.erased_keys, attributes)
            else:
                patch = with_consents(base, version, change.consents, attributes)
            if patch is None:
                return
            save(
                directory,
                patch.loaded,
                link_from=directory / version_name(version - 1, key_version),
                unchanged=patch.unchanged,
            )
            cache.patches += 1
            cache.remember(patch.loaded)
        finally:
            self.forget_older(change)

    def forget_older(self, change: RecordsChanged) -> None:
        """After an erasure: the older versions leave memory and disk (with the erased
        people's ``customer_ref``) before the erasure is answered."""
        if not (change.erased_people or change.erased_keys):
            return
        cache = self.cache
        cache.forget(change.partner_id, before=change.version)
        key_version = cache.crypto.keys.match_version
        discard_older(cache.directory(change.partner_id), change.version, key_version)

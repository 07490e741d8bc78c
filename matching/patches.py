"""Following a consent change, an erasure or a synchronous upsert by patching the arrays of
the version before.

Each raises a partner's counter by one, from V to V+1, in one transaction. When V's arrays
exist, V+1's are V's with the change applied: the consent column copied with the changed
people's consents; an erasure's rows left out (a boolean mask), the people with no row left
gone (their ``customer_ref`` with them) and the others renumbered; an upsert's people (the
records' owners and a moved key's former owner) taken out whole and put back with the records
they now hold, read in the upsert's transaction, each at its place in key and person order.
The attributes of the people touched are taken again from their remaining records, read in
the change's own transaction (``merged_attributes``, the build's rule), and each attribute
keeps the values someone holds, as a build keeps them. So V+1's arrays equal a build at V+1
(tests compare them on both databases), for a few array copies instead of reading every
record; the columns the change leaves alone are hard links to V's files.

The patch runs after the change commits and before it is answered
(``hub.core.db.after_commit``); V+1 is announced in the change's transaction (a marker file),
so questions about V+1, in any process, wait for its files instead of building them. When V's
arrays are still being built or patched (here or in another process), the change is answered
and a task waits for them, then patches (the marker kept fresh meanwhile); an erasure is
not left to such a task: the older files go before it is answered. It is skipped, never
guessed, when V's arrays are neither in memory nor on disk nor on their way, when the counter
moved more than once in the transaction, when the keyring has a newer match key than V's arrays
(or an upserted person's records are under an older one), when an erasure or an upsert meets an
attribute over its quota (how many values are left cannot be told from the arrays), when an
upsert brings an attribute value V's arrays do not hold (it might put the attribute over its
quota), or when an upserted key equals one already there (a tie the build orders by person):
the next question (or the maintenance) builds V+1 then. An erasure deletes the older versions'
files in any case.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from uuid import UUID

import numpy as np
import structlog
from numpy.typing import NDArray
from sqlalchemy import Text, cast, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.core.db import after_commit
from hub.core.memory import release_free_memory
from matching import array_files
from matching.array_files import (
    FIXED_COLUMNS,
    Loaded,
    People,
    build_lock,
    build_under_way,
    discard_older,
    keep_marked,
    mark_patching,
    open_version,
    patch_under_way,
    save,
    unmark_patching,
    version_name,
)
from matching.engine import Attribute, Side
from matching.loader import (
    BUILD_LOCK_SECONDS,
    MAX_ATTRIBUTE_VALUES,
    RECORDS,
    STATE,
    ArrayCache,
    merged_attributes,
    person_order,
)
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


def with_rewritten(base: Loaded, version: int, people: Iterable[str], now: Touched) -> Patch | None:
    """``base`` with the records of ``people`` replaced by those they now hold (``now``);
    None when the result might differ from a build (see the module's docstring)."""
    if base.over_quota or not _values_known(base, now.values):
        return None
    if now.key_versions - {base.key_version}:
        return None  # a re-keying is under way: the build re-keys such records
    stripped = without(base, version, people, (), {})
    if stripped is None:
        return None
    side, held = stripped.loaded.side, stripped.loaded.people
    arriving = sorted(ref for ref, records in now.records.items() if records)
    at = np.array(_insertion_points(held, arriving), dtype=np.int64)
    index = at + np.arange(len(arriving), dtype=np.int64)  # the arriving people's new indices
    keys = [key for ref in arriving for key, _ in now.records[ref]]
    pairs = np.frombuffer(b"".join(keys), dtype=">u8").reshape(-1, 2).astype(np.uint64)
    hi, lo = np.ascontiguousarray(pairs[:, 0]), np.ascontiguousarray(pairs[:, 1])
    person = np.repeat(index, [len(now.records[ref]) for ref in arriving]).astype(np.int32)
    consent = np.array([c for ref in arriving for _, c in now.records[ref]], dtype=np.uint8)
    order = np.lexsort((lo, hi))  # stable: equal keys would stay in person order
    hi, lo, person, consent = hi[order], lo[order], person[order], consent[order]
    if len(hi) > 1 and np.any((hi[1:] == hi[:-1]) & (lo[1:] == lo[:-1])):
        return None
    places = _key_places(side, hi, lo)
    if places is None:
        return None
    shifted = side.person + np.searchsorted(at, side.person, side="right").astype(np.int32)
    n_people = side.n_people + len(arriving)
    coded = {
        name: Attribute(np.insert(a.codes, at, -1).astype(np.int16), a.values)
        for name, a in side.attributes.items()
    }
    for name in now.values:
        coded.setdefault(name, Attribute(np.full(n_people, -1, dtype=np.int16), ()))
    touched = {int(index[j]): now.attributes.get(ref, {}) for j, ref in enumerate(arriving)}
    attributes = _reattributed(coded, touched)
    patched = Side(
        hi=np.insert(side.hi, places, hi),
        lo=np.insert(side.lo, places, lo),
        person=np.insert(shifted, places, person).astype(np.int32),
        consent=np.insert(side.consent, places, consent),
        n_people=n_people,
        attributes={name: attributes[name] for name in sorted(attributes)},
    )
    return Patch(
        replace(stripped.loaded, side=patched, people=_with_people(held, arriving, at)),
        frozenset(),
    )


def _values_known(base: Loaded, values: Mapping[str, set[str]]) -> bool:
    """Whether an attribute stays within its quota whatever values the build meets: each
    value is one V's arrays hold, or the attribute is new and holds few enough."""
    for name, seen in values.items():
        attribute = base.side.attributes.get(name)
        if attribute is None:
            if len(seen) > MAX_ATTRIBUTE_VALUES:
                return False
        elif not seen <= set(attribute.values):
            return False
    return True


def _insertion_points(people: People, refs: list[str]) -> list[int]:
    """Where each of ``refs`` (sorted, none of them here) goes among ``people``."""
    points: list[int] = []
    for ref in refs:
        points.append(people.bisect(ref.encode(), points[-1] if points else 0))
    return points


def _with_people(people: People, refs: list[str], at: NDArray[np.int64]) -> People:
    """``people`` with ``refs`` inserted at ``at`` (their insertion points)."""
    if not refs:
        return people
    encoded = [ref.encode() for ref in refs]
    lengths = np.insert(np.diff(people.offsets), at, [len(e) for e in encoded])
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    cuts = people.offsets[at].tolist()
    parts, previous = [], 0
    for cut, ref in zip(cuts, encoded, strict=True):
        parts += [people.blob[previous:cut], ref]
        previous = cut
    parts.append(people.blob[previous:])
    return People(b"".join(parts), offsets)


def _key_places(side: Side, hi: NDArray[np.uint64], lo: NDArray[np.uint64]) -> list[int] | None:
    """Where each new key (sorted) goes in ``side``'s keys; None if one is already there."""
    first = np.searchsorted(side.hi, hi, side="left")
    last = np.searchsorted(side.hi, hi, side="right")
    places: list[int] = [int(place) for place in first]
    for j in np.flatnonzero(last > first).tolist():  # the same first half: look at the second
        start, end = int(first[j]), int(last[j])
        place = start + int(np.searchsorted(side.lo[start:end], lo[j], side="left"))
        if place < end and side.lo[place] == lo[j]:
            return None
        places[j] = place
    return places


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


@dataclass(frozen=True, slots=True)
class Touched:
    """The touched people as their records now stand, read in the change's transaction."""

    # Each person's attributes (``merged_attributes``); people with no record left are absent.
    attributes: dict[str, dict[str, str]]
    # Each person's records in build order: the arrays' 16-byte key, the consents.
    records: dict[str, list[tuple[bytes, int]]]
    # Every value each attribute takes in those records (a later record's may hide it).
    values: dict[str, set[str]]
    # The match-key versions those records are under.
    key_versions: frozenset[int]


async def touched_people(session: AsyncSession, partner_id: UUID, refs: Iterable[str]) -> Touched:
    """The records of each of ``refs`` (read in the caller's transaction, in the build's
    order), with what a patch needs of them."""
    merged: dict[str, dict[str, str]] = defaultdict(dict)
    records: dict[str, list[tuple[bytes, int]]] = defaultdict(list)
    values: dict[str, set[str]] = defaultdict(set)
    key_versions: set[int] = set()
    wanted = sorted(set(refs))
    order = person_order(session.get_bind().dialect.name)
    for start in range(0, len(wanted), CHUNK):
        rows = await session.execute(
            select(
                RECORDS.c.customer_ref,
                RECORDS.c.match_key,
                RECORDS.c.key_version,
                RECORDS.c.consents,
                cast(RECORDS.c.attributes, Text),
            )
            .where(
                current(RECORDS, partner_id),
                RECORDS.c.customer_ref.in_(wanted[start : start + CHUNK]),
            )
            .order_by(*order)
        )
        for ref, key, key_version, consents, text in rows:
            records[ref].append((bytes(key[:16]), int(consents)))
            key_versions.add(int(key_version))
            attributes = merged_attributes([text])  # a later record's values win, as built
            merged[ref].update(attributes)
            for name, value in attributes.items():
                values[name].add(value)
    return Touched(
        dict(merged),
        dict(records),
        dict(values),
        frozenset(key_versions),
    )


class ArrayPatcher:
    """Follows consent changes and erasures (``partners.identifiers.changes``) in the
    partner's arrays: wired into the identifier service of every request by the app."""

    def __init__(self, cache: ArrayCache) -> None:
        self.cache = cache
        # Patches waiting for a build or a patch of the version before (answered already).
        self._later: set[asyncio.Task[None]] = set()

    async def follow(self, session: AsyncSession, change: RecordsChanged) -> None:
        """In the change's transaction: check it raised the counter exactly once, read the
        touched people's attributes, and patch after the commit."""
        counter = await session.scalar(
            select(STATE.c.version).where(STATE.c.partner_id == change.partner_id)
        )
        if counter != change.version:
            return  # raised again in this transaction: V's arrays are not its base
        now = await touched_people(session, change.partner_id, change.touched)
        # Announced before the commit, so that whoever reads the new counter (a question in
        # any process, the next change's patch) waits for these files instead of building.
        await asyncio.to_thread(
            mark_patching,
            self.cache.directory(change.partner_id),
            change.version,
            self.cache.crypto.keys.match_version,
        )
        after_commit(session, partial(self._patch, change, now))

    async def _patch(self, change: RecordsChanged, now: Touched) -> None:
        handed_off = False
        try:
            handed_off = await self._patch_when_free(change, now)
        except Exception:  # committed either way: the next question builds the arrays
            log.warning(
                "could not patch a partner's arrays",
                partner_id=str(change.partner_id),
                exc_info=True,
            )
        finally:
            if not handed_off:
                await asyncio.to_thread(self._unmark, change)

    def _unmark(self, change: RecordsChanged) -> None:
        unmark_patching(
            self.cache.directory(change.partner_id),
            change.version,
            self.cache.crypto.keys.match_version,
        )

    async def _patch_when_free(self, change: RecordsChanged, now: Touched) -> bool:
        """Patch now, or (when V's arrays are still being built or patched, here or in
        another process) hand the patch to a task that waits for them, the change answered
        meanwhile; never an erasure's. Returns whether it was handed off. (Giving up
        instead broke the chain of patches: every later change found no base, and each
        serving process read every record of the partner again, for as long as changes kept
        coming: the soak's serving processes built 1M-record partners back to back.)"""
        lock = self.cache.lock(change.partner_id)
        # V's own patch may still be under way (in another process, or queued behind this
        # one here): its files are waited for a moment, the lock released meanwhile.
        deadline = time.monotonic() + PATCH_WAIT_SECONDS
        while time.monotonic() < deadline:
            try:
                await asyncio.wait_for(lock.acquire(), PATCH_WAIT_SECONDS)
            except TimeoutError:  # a build is under way in this process
                break
            try:
                done = await asyncio.to_thread(self.patch_now, change, now, patient=True)
            finally:
                lock.release()
            if done:
                return False
            await asyncio.sleep(0.02)
        if change.erased_people or change.erased_keys:
            # An erasure is not answered while files of the versions before it (with the
            # erased people in them) are still on disk: they go now, and V+1 is built by the
            # next question instead of patched from one of them later.
            _skipped(change, "an erasure whose base was not there yet")
            await asyncio.to_thread(self.forget_older, change)
            return False
        task = asyncio.create_task(self._patch_later(change, now))
        self._later.add(task)
        task.add_done_callback(self._later.discard)
        return True

    async def _patch_later(self, change: RecordsChanged, now: Touched) -> None:
        """Wait for the build or patch of V under way, then patch V+1 from it. V+1's marker
        is kept fresh meanwhile, so questions about V+1 wait for these files too."""
        directory = self.cache.directory(change.partner_id)
        key_version = self.cache.crypto.keys.match_version
        announcing = asyncio.create_task(keep_marked(directory, change.version, key_version))
        lock = self.cache.lock(change.partner_id)
        deadline = time.monotonic() + BUILD_LOCK_SECONDS
        try:
            while True:
                patient = time.monotonic() < deadline
                async with lock:
                    done = await asyncio.to_thread(self._patch_after_builds, change, now, patient)
                if done:
                    return
                await asyncio.sleep(0.1)
        except Exception:
            log.warning(
                "could not patch a partner's arrays",
                partner_id=str(change.partner_id),
                exc_info=True,
            )
        finally:
            announcing.cancel()
            await asyncio.to_thread(self._unmark, change)

    def _patch_after_builds(self, change: RecordsChanged, now: Touched, patient: bool) -> bool:
        # Under the partner's build lock: a build of V in another process is waited for.
        directory = self.cache.directory(change.partner_id)
        with build_lock(directory, BUILD_LOCK_SECONDS):
            return self.patch_now(change, now, patient=patient, holding_build_lock=True)

    def patch_now(
        self,
        change: RecordsChanged,
        now: Touched,
        *,
        patient: bool = False,
        holding_build_lock: bool = False,
    ) -> bool:
        """Write V+1's arrays from V's (see the module's docstring for when it does not).
        False only when ``patient`` and V's arrays are missing but on their way (being
        patched, or a build of the partner under way): the caller asks again shortly."""
        cache = self.cache
        partner_id, version = change.partner_id, change.version
        key_version = cache.crypto.keys.match_version
        directory = cache.directory(partner_id)
        erasure = bool(change.erased_people or change.erased_keys)
        waiting = False
        try:
            if (directory / version_name(version, key_version)).is_dir():
                return True  # built meanwhile (a question, another process)
            base = cache.held(partner_id, version - 1, key_version) or open_version(
                directory, partner_id, version - 1, key_version
            )
            if (
                base is None
                and patient
                and (
                    patch_under_way(directory, version - 1, key_version)
                    or (not holding_build_lock and build_under_way(directory))
                )
            ):
                waiting = True  # older versions stay: V's patch may be reading one
                return False
            if base is None:
                _skipped(change, "no arrays of the version before")
                return True
            patch: Patch | None
            if erasure:
                patch = without(
                    base, version, change.erased_people, change.erased_keys, now.attributes
                )
            elif change.rewritten:
                patch = with_rewritten(base, version, change.rewritten, now)
            else:
                patch = with_consents(base, version, change.consents, now.attributes)
            if patch is None:
                _skipped(change, "the change could differ from a build (see matching.patches)")
                return True
            save(
                directory,
                patch.loaded,
                link_from=directory / version_name(version - 1, key_version),
                unchanged=patch.unchanged,
            )
            cache.patches += 1
            served = _served_from_files(directory, patch.loaded)
            mapped = served is not patch.loaded
            del patch
            cache.remember(served)
            if mapped:  # the patch's heap copies are garbage now: hand them back
                release_free_memory()
            return True
        finally:
            if not waiting:
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


def _served_from_files(directory: Path, patched: Loaded) -> Loaded:
    """What the cache keeps of a patched version: large arrays are served from the files
    just saved (memory-mapped: page cache shared by the hub's processes) and the patch's heap
    copies handed back, as a build's are. Kept as patched, every erasure's rewrite of a
    1M-record partner's columns stayed in each serving process's heap (the soak saw their
    anonymous memory grow 60-90 % between minute 5 and minute 10)."""
    if patched.side.hi.nbytes < array_files.MMAP_MIN_BYTES:
        return patched
    mapped = open_version(directory, patched.partner_id, patched.version, patched.key_version)
    return patched if mapped is None else mapped  # None: removed meanwhile (a newer erasure)


def _skipped(change: RecordsChanged, reason: str) -> None:
    """Logged: the version is built instead, by the next question or the maintenance."""
    log.info(
        "arrays not patched",
        partner_id=str(change.partner_id),
        version=change.version,
        reason=reason,
    )

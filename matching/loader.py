"""The only code that turns identifier rows into the engine's arrays.

A partner's records become one :class:`~matching.engine.Side` (sorted 128-bit keys, a person
index per record, consent masks, per-person attribute codes) plus the table of its people's
``customer_ref``\\ s. Arrays are built for a *version*: the partner's change counter
(``identifier_state.version``, raised by every upload, consent change, erasure and re-keying)
and the keyring's newest match-key version. The counter and the rows are read in one snapshot
(:func:`_snapshot`), so files never carry a version they do not match. Arrays are kept in
memory (a small LRU) and in files under ``<data_dir>/arrays/<partner>/`` (``array_files``),
shared by every hub process; a request checks the counter (one indexed read) and opens or
builds only when it moved.

Who builds them: the apply of a bulk upload, from its new generation before the flip that makes
it current (:meth:`ArrayCache.build_ahead`; published with the flip, so the upload is never
visible without its arrays), or after the flip when a change moved the counter meanwhile
(:meth:`ArrayCache.prepare`, before the upload is reported ``completed``); a consent change, an
erasure or a synchronous upsert patches the previous version's arrays before it is answered
(``matching.patches``); what neither covers (a re-keying batch, a patch that could not be made)
is built by the first question, or by the hub's maintenance after a quiet interval. Every
process sharing the directory builds under one lock per partner (``flock``), so a version is
read from the records once, not once per process; and a question whose version is being patched
(announced by a marker file made in the change's transaction) waits for the patched files
rather than building them.

During a match-key rotation, records still under an older version are decrypted and keyed
under the newest one here, so both sides of a merge always use the same key version.

Erasure reaches the arrays through the counter: a changed counter makes the cached arrays
unusable at once; the erasure's patch deletes the older files, and
:meth:`ArrayCache.discard_stale` (run by the hub every few seconds) deletes whatever else is
stale, on disk and in memory.
"""

from __future__ import annotations

import asyncio
import gc
import json
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

import numpy as np
import structlog
from numpy.typing import NDArray
from sqlalchemy import ColumnElement, Table, Text, cast, func, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncSession

from hub.core.db import reading
from hub.core.memory import release_free_memory
from matching import array_files
from matching.array_files import (
    Loaded,
    People,
    build_lock,
    discard_older,
    open_version,
    patch_under_way,
    patched_from,
    save,
)
from matching.engine import Attribute, Side, make_side
from partners.identifiers.crypto import IdentifierCrypto
from partners.identifiers.models import IdentifierRecord, IdentifierState
from partners.identifiers.records import current as current_records

if TYPE_CHECKING:
    from matching.patches import Touched

log = structlog.get_logger("hub.matching")
RECORDS: Table = IdentifierRecord.__table__  # type: ignore[assignment]
STATE: Table = IdentifierState.__table__  # type: ignore[assignment]
FETCH_ROWS = 50_000
MAX_ATTRIBUTE_VALUES = 100  # DESIGN "Quotas": at most 100 distinct values per attribute
# How many times the apply of an upload builds again when a change moved the counter during
# its build (a consent change's patch usually catches up first).
PREPARE_ATTEMPTS = 3
# How long at most a question waits for a version announced as on its way (a patch, or the
# build after an upload's flip, in any process; the marker is kept fresh while it lasts and
# goes stale 30 s after its process stopped) before it builds that version itself: waiting
# costs nothing, and building it again would take as long and read every record.
WAIT_FOR_PATCH_SECONDS = 120.0
# How long a builder waits for another process's build of the same partner (then opens its
# files) before it builds as well.
BUILD_LOCK_SECONDS = 600.0


@contextmanager
def _snapshot(engine: Engine) -> Iterator[Connection]:
    """A read transaction that sees one state of the database from its first statement to
    its last, so the counter it reads labels exactly the rows it streams. SQLite's read
    transaction (WAL) does this by itself; PostgreSQL's default, READ COMMITTED, takes a new
    snapshot per statement (a consent change committed between the counter and the rows
    would be saved under the older version), hence REPEATABLE READ there."""
    # A read: on SQLite it must not queue for the write lock its own caller may hold.
    with reading(), engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execution_options(isolation_level="REPEATABLE READ")
        yield conn


def person_order(dialect: str) -> list[ColumnElement[Any]]:
    """The order rows are read in: by person (``customer_ref``, bytewise as Python compares
    strings), then by when each record changed, then by key (records changed together, as a
    consent update changes them, still come in one order)."""
    ref_column: Any = RECORDS.c.customer_ref
    if dialect == "postgresql":
        ref_column = ref_column.collate("C")  # bytewise, like SQLite and Python
    return [ref_column, RECORDS.c.updated_at, RECORDS.c.id_type, RECORDS.c.match_key]


def merged_attributes(texts: Iterable[str | None]) -> dict[str, str]:
    """A person's attributes from their records' ``attributes`` (JSON text, in
    :func:`person_order`): each attribute's value is the one of the last record that has it.
    :func:`_build` applies the same rule inline, row by row; a patch applies it to the few
    people it touches."""
    merged: dict[str, str] = {}
    for text in texts:
        if text and text != "null":
            merged.update(json.loads(text))
    return merged


def _current_version(conn: Connection, partner_id: UUID) -> int:
    version = conn.execute(select(STATE.c.version).where(STATE.c.partner_id == partner_id)).scalar()
    return int(version or 0)


class _AttributeCoder:
    """One attribute's per-person codes, filled while rows stream in (people in order)."""

    def __init__(self, capacity: int) -> None:
        self.codes = np.full(capacity, -1, dtype=np.int16)
        self.index: dict[str, int] = {}
        self.over = False

    def code(self, value: str) -> int:
        """The value's code (in order of first sight); -1 once the attribute has more than
        MAX_ATTRIBUTE_VALUES values (it is then left out of the arrays)."""
        code = self.index.get(value)
        if code is None:
            if len(self.index) >= MAX_ATTRIBUTE_VALUES:
                self.over = True
                return -1
            code = self.index[value] = len(self.index)
        return code

    def finish(self, n_people: int) -> Attribute:
        """The values some person holds, sorted, and the codes renumbered to them: the same
        people with the same values give the same files, whatever records came and went (a
        patch computes exactly this; a value no one holds counts in no answer)."""
        codes = self.codes[:n_people]
        value_of = {code: value for value, code in self.index.items()}
        held = np.unique(codes[codes >= 0]).tolist()
        vocabulary = sorted(value_of[code] for code in held)
        remap = np.full(len(self.index) + 1, -1, dtype=np.int16)  # remap[-1] stays -1
        for new, value in enumerate(vocabulary):
            remap[self.index[value]] = new
        return Attribute(remap[codes], tuple(vocabulary))


def _build(
    conn: Connection,
    partner_id: UUID,
    crypto: IdentifierCrypto,
    key_version: int,
    generation: int | None = None,
) -> tuple[Side, People, frozenset[str]]:
    """Stream every record of the partner and build its arrays (keys under ``key_version``);
    with ``generation``, the records that will count once that (pending) generation is current.

    Rows arrive in :func:`person_order`, so a person's index is known as its rows pass and
    only one copy of each reference is kept; a person's attributes follow
    :func:`merged_attributes`. Rows are taken a batch at a time and turned into columns with
    numpy (a Python statement per row cost 2.6 of the 4.6 s a 1M-record build took). Memory
    stays at the arrays' size (about 40 bytes a record) plus one batch, whatever the number
    of rows. ``conn`` must read one snapshot (:func:`_snapshot`).
    """
    total = int(
        conn.execute(
            select(func.count())
            .select_from(RECORDS)
            .where(current_records(RECORDS, partner_id, generation=generation))
        ).scalar_one()
    )
    result = conn.execution_options(stream_results=True, yield_per=FETCH_ROWS).execute(
        select(
            RECORDS.c.id_type,
            RECORDS.c.match_key,
            RECORDS.c.key_version,
            RECORDS.c.digest_enc,
            RECORDS.c.data_version,
            RECORDS.c.customer_ref,
            RECORDS.c.consents,
            cast(RECORDS.c.attributes, Text),
        )
        .where(current_records(RECORDS, partner_id, generation=generation))
        .order_by(*person_order(conn.dialect.name))
    )
    columns = _Columns(total, partner_id, crypto, key_version)
    gc_was_enabled = gc.isenabled()
    gc.disable()  # rows are tuples: the collector would run every few hundred rows for nothing
    try:
        for batch in result.partitions():
            if not columns.add(batch[: total - columns.n]):
                break  # rows committed after the count: the next version picks them up
    finally:
        result.close()
        if gc_was_enabled:
            gc.enable()
    return columns.finish()


class _Columns:
    """The arrays of :func:`_build`, filled a batch of rows (in person order) at a time."""

    def __init__(
        self, total: int, partner_id: UUID, crypto: IdentifierCrypto, key_version: int
    ) -> None:
        self.partner_id, self.crypto, self.key_version = partner_id, crypto, key_version
        self.keyer = crypto.keyer(key_version)
        self.total = total
        self.hi = np.empty(total, dtype=np.uint64)
        self.lo = np.empty(total, dtype=np.uint64)
        self.person = np.empty(total, dtype=np.int32)
        self.consent = np.empty(total, dtype=np.uint8)
        self.blobs: list[bytes] = []
        self.offsets: list[NDArray[np.int64]] = [np.zeros(1, dtype=np.int64)]
        self.n = 0
        self.people = 0  # people so far; the last one may go on in the next batch
        self.last_ref: str | None = None
        self.coders: dict[str, _AttributeCoder] = {}
        self.parsed: dict[str, dict[str, str]] = {}  # attribute sets repeat: each parsed once

    def add(self, rows: Sequence[Any]) -> bool:
        """Take a batch of rows; False when there is nothing more to take."""
        if not rows or self.n >= self.total:
            return False
        start, count = self.n, len(rows)
        id_types, keys, versions, sealed, data_versions, refs, masks, texts = zip(
            *rows, strict=True
        )
        if any(version != self.key_version for version in set(versions)):
            keys = tuple(self._rekeyed(id_types, keys, versions, sealed, data_versions))
        pairs = np.frombuffer(b"".join([key[:16] for key in keys]), dtype=">u8").reshape(count, 2)
        self.hi[start : start + count] = pairs[:, 0]
        self.lo[start : start + count] = pairs[:, 1]
        self.consent[start : start + count] = np.frombuffer(bytes(masks), dtype=np.uint8)
        person = self._people(refs)
        self.person[start : start + count] = person
        self._attributes(texts, person)
        self.n += count
        return True

    def _rekeyed(
        self,
        id_types: Sequence[int],
        keys: Sequence[bytes],
        versions: Sequence[int],
        sealed: Sequence[bytes],
        data_versions: Sequence[int],
    ) -> Iterator[bytes]:
        """The match keys under ``key_version``: records still under an older one are
        decrypted and keyed again."""
        for id_type, key, version, seal, data_version in zip(
            id_types, keys, versions, sealed, data_versions, strict=True
        ):
            if version == self.key_version:
                yield key
            else:
                digest = self.crypto.decrypt(bytes(seal), data_version, self.partner_id, id_type)
                yield self.keyer(digest)

    def _people(self, refs: Sequence[str]) -> NDArray[np.int32]:
        """Each row's person index; a new person starts wherever the reference changes."""
        column = np.array(refs, dtype=object)
        new = np.empty(len(column), dtype=bool)
        new[0] = column[0] != self.last_ref
        np.not_equal(column[1:], column[:-1], out=new[1:])
        starts = column[new]
        encoded = [ref.encode() for ref in starts]
        self.blobs.append(b"".join(encoded))
        ends = np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)))
        self.offsets.append(self.offsets[-1][-1] + ends if len(ends) else ends)
        person = (self.people - 1 + np.cumsum(new)).astype(np.int32)
        self.people += len(starts)
        self.last_ref = column[-1]
        return person

    def _attributes(self, texts: Sequence[str | None], person: NDArray[np.int32]) -> None:
        """Each attribute's value per person: the last record's that has it (rows are in
        :func:`person_order`), as :func:`merged_attributes` says."""
        distinct: dict[str | None, int] = {}
        which = np.fromiter(
            (distinct.setdefault(text, len(distinct)) for text in texts),
            dtype=np.int64,
            count=len(texts),
        )
        tables: dict[str, NDArray[np.int16]] = {}
        for text, number in distinct.items():
            if not text or text == "null":
                continue
            attrs = self.parsed.get(text)
            if attrs is None:
                attrs = json.loads(text)
                if len(self.parsed) < 100_000:
                    self.parsed[text] = attrs
            for name, value in attrs.items():
                coder = self.coders.get(name)
                if coder is None:
                    coder = self.coders[name] = _AttributeCoder(self.total)
                table = tables.get(name)
                if table is None:
                    table = tables[name] = np.full(len(distinct), -2, dtype=np.int16)
                table[number] = coder.code(value)
        for name, table in tables.items():
            coder = self.coders[name]
            if coder.over:
                continue
            codes = table[which]
            rows = np.flatnonzero(codes != -2)  # the records that have this attribute
            people = person[rows]
            last = np.ones(len(rows), dtype=bool)  # each person's last such record wins
            np.not_equal(people[1:], people[:-1], out=last[:-1])
            coder.codes[people[last]] = codes[rows[last]]

    def finish(self) -> tuple[Side, People, frozenset[str]]:
        n, count = self.n, self.people
        people = People(b"".join(self.blobs), np.concatenate(self.offsets))
        self.blobs.clear()
        over = frozenset(name for name, coder in self.coders.items() if coder.over)
        coded = {  # by name: the same records give the same files
            name: self.coders[name].finish(count)
            for name in sorted(self.coders)
            if not self.coders[name].over
        }
        side = make_side(self.hi[:n], self.lo[:n], self.person[:n], self.consent[:n], count, coded)
        return side, people, over


def _log_build(event: str, built: Loaded, started: float) -> None:
    log.info(
        event,
        partner_id=str(built.partner_id),
        version=built.version,
        key_version=built.key_version,
        records=len(built.side.hi),
        seconds=round(time.perf_counter() - started, 3),
    )


@dataclass(frozen=True)
class ArraysAhead:
    """A partner's arrays built from an upload's pending generation before its flip, written
    aside (no reader opens them) for the version the flip will make (``version``) if nothing
    else moves the partner's counter meanwhile. The apply announces the version its flip
    makes in the flip's transaction (:meth:`announce`: a question that reads the new counter
    waits for the files); once committed, :meth:`publish` moves these into place. When
    changes moved the counter during the build (consent changes, erasures: their people are
    recorded while an upload is applied), the flip reads those people's records as the flip
    leaves them (:meth:`follow`) and :meth:`publish` patches the arrays with them
    (``matching.patches.with_rewritten``): each person taken out whole and put back with the
    records they now hold, so the result equals a build at the flip's version. When they
    cannot be patched, the apply builds that version at once (:meth:`discard`, then
    :meth:`ArrayCache.prepare`) and :meth:`withdraw` s the announcement."""

    directory: Path
    partial: Path
    version: int
    key_version: int
    partner_id: UUID
    # The version the files were built for (``version`` until :meth:`follow`).
    built: int
    # From :meth:`follow`: the people to take again, and their records as the flip leaves them.
    changes: tuple[tuple[str, ...], Touched] | None = None

    def announce(self, version: int) -> None:
        array_files.mark_patching(self.directory, version, self.key_version)

    def withdraw(self, version: int) -> None:
        array_files.unmark_patching(self.directory, version, self.key_version)

    async def keep_announced(self, version: int) -> None:
        await array_files.keep_marked(self.directory, version, self.key_version)

    async def follow(
        self, session: AsyncSession, version: int, people: Iterable[str]
    ) -> ArraysAhead:
        """In the flip's transaction, after the flip: these arrays, to be published as
        ``version`` with ``people``'s records as they now stand (no one: as they are, the
        changes since the build having changed no record)."""
        from matching.patches import touched_people  # it builds on this module

        refs = tuple(sorted(set(people)))
        if not refs:
            return replace(self, version=version)
        now = await touched_people(session, self.partner_id, refs)
        return replace(self, version=version, changes=(refs, now))

    def publish(self) -> bool:
        """Move the files into place as ``version`` (patched first, after :meth:`follow`).
        False when the patch could differ from a build (see ``matching.patches``) or the
        files are gone: the caller builds the version instead. The caller withdraws the
        announcement."""
        if self.changes is None:
            array_files.publish(self.directory, self.partial, self.version)
            return True
        from matching.patches import with_rewritten  # it builds on this module

        started = time.perf_counter()
        built = array_files.open_path(self.partial, self.partner_id, self.built, self.key_version)
        people, now = self.changes
        patch = None if built is None else with_rewritten(built, self.version, people, now)
        del built
        if patch is None:
            return False
        array_files.save(self.directory, patch.loaded)
        log.info(
            "arrays built ahead patched",
            partner_id=str(self.partner_id),
            built_for=self.built,
            version=self.version,
            people=len(people),
            seconds=round(time.perf_counter() - started, 3),
        )
        del patch
        self.discard()
        release_free_memory()
        return True

    def discard(self) -> None:
        shutil.rmtree(self.partial, ignore_errors=True)


class ArrayCache:
    """Per-partner arrays, current with the database, in memory and on disk."""

    def __init__(
        self, engine: Engine, crypto: IdentifierCrypto, root: Path, *, max_in_memory: int = 16
    ) -> None:
        self.engine = engine
        self.crypto = crypto
        self.root = root
        self.max_in_memory = max_in_memory
        self._memory: OrderedDict[UUID, Loaded] = OrderedDict()
        self._memory_lock = threading.Lock()  # builds of two partners run on two threads
        self._locks: dict[UUID, asyncio.Lock] = {}
        self.builds = 0  # how many times arrays were built from rows (tests and metrics)
        self.patches = 0  # how many versions were patched from the one before
        # Partners whose arrays went stale while in use -> the version seen at the last check.
        self._stale: dict[UUID, int] = {}

    def directory(self, partner_id: UUID) -> Path:
        return self.root / str(partner_id)

    def lock(self, partner_id: UUID) -> asyncio.Lock:
        """One builder or patcher of a partner's arrays at a time in this process."""
        return self._locks.setdefault(partner_id, asyncio.Lock())

    async def get(self, partner_id: UUID) -> Loaded:
        """The partner's arrays as of now (built or read from disk when the version moved).

        When the version is being patched (a change just committed, here or in another
        process), this waits for the patched files, the lock released meanwhile so that a
        patch of this process can run."""
        deadline = time.monotonic() + WAIT_FOR_PATCH_SECONDS
        while True:
            patient = time.monotonic() < deadline
            async with self.lock(partner_id):
                loaded = await asyncio.to_thread(self._load, partner_id, patient)
            if loaded is not None:
                return loaded
            await asyncio.sleep(0.02)

    async def prepare(self, partner_id: UUID, *, patient: bool = True) -> Loaded:
        """The partner's arrays at its current version, built if need be and saved where
        every hub process opens them: the apply of an upload calls this before it reports the
        upload completed, so the first question after it only opens files. A change committed
        meanwhile moves the counter; then again (a few times at most: the change's own patch
        usually gets there first, and the next question builds what is still missing).
        Not ``patient``: it does not wait for a version announced as on its way (the caller
        announced it: the build after an upload's flip)."""
        if patient:
            loaded = await self.get(partner_id)
        else:  # its own announcement is not waited for
            async with self.lock(partner_id):
                loaded = await asyncio.to_thread(self._get_sync, partner_id)
        for _ in range(PREPARE_ATTEMPTS - 1):
            if await asyncio.to_thread(self.version_now, partner_id) == loaded.version:
                break
            loaded = await self.get(partner_id)
        return loaded

    async def build_ahead(self, partner_id: UUID, generation: int) -> ArraysAhead:
        """The arrays of the partner's records as they will be once ``generation`` (an
        upload's pending one) is current, written aside for the version its flip makes (see
        :class:`ArraysAhead`): the upload becomes visible with its arrays, and no question
        or patch meets a version without them. Not under the partner's lock: nothing reads
        them before the flip, and questions about the current version go on meanwhile."""
        return await asyncio.to_thread(self._build_ahead, partner_id, generation)

    def _build_ahead(self, partner_id: UUID, generation: int) -> ArraysAhead:
        key_version = self.crypto.keys.match_version
        directory = self.directory(partner_id)
        started = time.perf_counter()
        with _snapshot(self.engine) as conn:
            version = _current_version(conn, partner_id) + 1
            side, people, over = _build(
                conn, partner_id, self.crypto, key_version, generation=generation
            )
        self.builds += 1
        built = Loaded(partner_id, version, key_version, side, people, over)
        partial = array_files.write_aside(directory, built)
        _log_build("arrays built ahead of a flip", built, started)
        del side, people, built
        release_free_memory()
        return ArraysAhead(directory, partial, version, key_version, partner_id, version)

    def version_now(self, partner_id: UUID) -> int:
        with reading(), self.engine.connect() as conn:
            return _current_version(conn, partner_id)

    def _get_sync(self, partner_id: UUID) -> Loaded:
        """The partner's arrays as of now, built at once if no process has them."""
        loaded = self._load(partner_id, patient=False)
        assert loaded is not None
        return loaded

    def _load(self, partner_id: UUID, patient: bool) -> Loaded | None:
        """The arrays of the partner's current version; None when ``patient`` and a patch of
        that version is under way (the caller asks again shortly).

        A version no process has is built under the partner's build lock, which every
        process sharing the directory takes: the first builds, the others then open its
        files (before the lock, each serving process and the worker built the same version
        at once after an upload's flip)."""
        key_version = self.crypto.keys.match_version
        directory = self.directory(partner_id)
        with reading(), self.engine.connect() as conn:
            version = _current_version(conn, partner_id)
        loaded = self.held(partner_id, version, key_version) or open_version(
            directory, partner_id, version, key_version
        )
        if loaded is None and patient and patch_under_way(directory, version, key_version):
            return None
        if loaded is None:
            # No database connection is held while waiting for the lock (another process's
            # build can take a minute), and the version is read again after it: the one
            # asked for may be gone by then, replaced by a newer one (building it anyway
            # made files no one opens).
            with build_lock(directory, BUILD_LOCK_SECONDS), _snapshot(self.engine) as conn:
                version = _current_version(conn, partner_id)
                loaded = self.held(partner_id, version, key_version) or open_version(
                    directory, partner_id, version, key_version
                )
                if loaded is None:
                    loaded = self._build_and_save(conn, partner_id, version, key_version)
        self.remember(loaded)
        discard_older(directory, version, key_version)
        return loaded

    def _build_and_save(
        self, conn: Connection, partner_id: UUID, version: int, key_version: int
    ) -> Loaded:
        directory = self.directory(partner_id)
        started = time.perf_counter()
        side, people, over = _build(conn, partner_id, self.crypto, key_version)
        built = Loaded(partner_id, version, key_version, side, people, over)
        self.builds += 1
        save(directory, built)
        # What an operator needs to see why a process reads every record (a build
        # costs seconds per million): no patch made this version from the one before.
        _log_build("arrays built", built, started)
        # Large arrays are served from the files just written (memory-mapped: page
        # cache the processes share, not each one's heap) and the build's heap is
        # handed back; small ones would only be read back, so they stay as built.
        loaded = built
        if side.hi.nbytes >= array_files.MMAP_MIN_BYTES:
            loaded = open_version(directory, partner_id, version, key_version) or built
        del side, people, built
        release_free_memory()
        return loaded

    def held(self, partner_id: UUID, version: int, key_version: int) -> Loaded | None:
        """The arrays of this version if this process holds them in memory."""
        with self._memory_lock:
            cached = self._memory.get(partner_id)
            if cached and (cached.version, cached.key_version) == (version, key_version):
                self._memory.move_to_end(partner_id)
                return cached
        return None

    def remember(self, loaded: Loaded) -> None:
        """Keep ``loaded`` in memory, unless a newer version of the partner is there."""
        with self._memory_lock:
            held = self._memory.get(loaded.partner_id)
            if held and (held.version, held.key_version) > (loaded.version, loaded.key_version):
                return
            self._memory[loaded.partner_id] = loaded
            self._memory.move_to_end(loaded.partner_id)
            while len(self._memory) > self.max_in_memory:
                self._memory.popitem(last=False)

    def forget(self, partner_id: UUID, before: int) -> None:
        """Drop the memory copy of the partner's arrays if it is older than ``before``."""
        with self._memory_lock:
            held = self._memory.get(partner_id)
            if held and held.version < before:
                del self._memory[partner_id]

    def discard_stale(self) -> list[UUID]:
        """Drop memory copies and files of versions that are no longer current.

        Returns the partners whose arrays were in use and whose records have not changed since
        the previous call: rebuilding those now (``get``) keeps them warm after a change that
        no apply and no patch prepared, without rebuilding again and again during a burst of
        changes.
        """
        current: dict[UUID, int] = {}
        with reading(), self.engine.connect() as conn:
            for partner_id, version in conn.execute(select(STATE.c.partner_id, STATE.c.version)):
                current[UUID(str(partner_id))] = int(version)
        key_version = self.crypto.keys.match_version
        with self._memory_lock:
            held = list(self._memory.items())
        for partner_id, loaded in held:
            if (current.get(partner_id, 0), key_version) != (loaded.version, loaded.key_version):
                with self._memory_lock:
                    self._memory.pop(partner_id, None)
                self._stale[partner_id] = -1  # seen changing: wait for one quiet interval
        if self.root.is_dir():
            for directory in self.root.iterdir():
                try:
                    partner_id = UUID(directory.name)
                except ValueError:
                    continue
                # A change just committed (the counter read here) and announced patches its
                # arrays from the version before right after: that one stays. Deleting it
                # broke the chain of patches (the soak: the serving processes then read all
                # the partner's records again, 13-15 s at 1M, while questions waited).
                discard_older(
                    directory,
                    patched_from(directory, current.get(partner_id, 0), key_version),
                    key_version,
                    counter=partial(self.version_now, partner_id),
                )
        ready = []
        for partner_id, seen in list(self._stale.items()):
            now = current.get(partner_id, 0)
            if now == seen:
                ready.append(partner_id)
                del self._stale[partner_id]
            else:
                self._stale[partner_id] = now
        return ready


__all__ = ["ArrayCache", "Loaded", "People", "merged_attributes", "person_order"]

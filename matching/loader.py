"""The only code that turns identifier rows into the engine's arrays.

A partner's records become one :class:`~matching.engine.Side` (sorted 128-bit keys, a person
index per record, consent masks, per-person attribute codes) plus the table of its people's
``customer_ref``\\ s. Arrays are built for a *version*: the partner's change counter
(``identifier_state.version``, raised by every upload, consent change, erasure and re-keying)
and the keyring's newest match-key version. They are kept in memory (a small LRU) and in files
under ``<data_dir>/arrays/<partner>/`` so a restarted process starts warm; a request checks the
counter (one indexed read) and rebuilds only when it moved.

During a match-key rotation, records still under an older version are decrypted and keyed
under the newest one here, so both sides of a merge always use the same key version.

Erasure reaches the arrays through the counter: a changed counter makes the cached arrays
unusable at once, and :meth:`ArrayCache.discard_stale` (run by the hub every few seconds and
after every rebuild) deletes the older files and memory copies.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import shutil
import threading
from array import array
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import Table, Text, cast, func, select
from sqlalchemy.engine import Connection, Engine

from hub.core.db import reading
from hub.core.memory import release_free_memory
from matching.engine import Attribute, Side, make_side
from partners.identifiers.crypto import IdentifierCrypto
from partners.identifiers.models import IdentifierRecord, IdentifierState
from partners.identifiers.records import current as current_records

RECORDS: Table = IdentifierRecord.__table__  # type: ignore[assignment]
STATE: Table = IdentifierState.__table__  # type: ignore[assignment]
FETCH_ROWS = 50_000
MAX_ATTRIBUTE_VALUES = 100  # DESIGN "Quotas": at most 100 distinct values per attribute


@dataclass(frozen=True, slots=True)
class People:
    """A side's ``customer_ref`` per person index, stored as one UTF-8 blob and offsets."""

    blob: bytes
    offsets: NDArray[np.int64]  # len = people + 1

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def ref(self, index: int) -> str:
        return self.blob[self.offsets[index] : self.offsets[index + 1]].decode()

    def refs(self, indices: Iterable[int]) -> list[str]:
        return [self.ref(int(i)) for i in indices]

    @classmethod
    def of(cls, refs: list[str]) -> People:
        encoded = [r.encode() for r in refs]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in encoded], out=offsets[1:])
        return cls(b"".join(encoded), offsets)


@dataclass(frozen=True, slots=True)
class Loaded:
    """One partner's arrays at one version."""

    partner_id: UUID
    version: int
    key_version: int
    side: Side
    people: People
    # Attributes with more distinct values than the quota: not usable for breakdowns or filters.
    over_quota: frozenset[str]

    def index_of(self, refs: Iterable[str]) -> NDArray[np.int32]:
        """Person indices of ``refs`` (unknown refs are skipped); people are sorted by ref."""
        wanted = sorted(set(refs))
        found = []
        lo = 0
        n = len(self.people)
        for ref in wanted:
            hi = n
            while lo < hi:  # binary search over the sorted refs
                mid = (lo + hi) // 2
                if self.people.ref(mid) < ref:
                    lo = mid + 1
                else:
                    hi = mid
            if lo < n and self.people.ref(lo) == ref:
                found.append(lo)
        return np.asarray(found, dtype=np.int32)


def _current_version(conn: Connection, partner_id: UUID) -> int:
    version = conn.execute(select(STATE.c.version).where(STATE.c.partner_id == partner_id)).scalar()
    return int(version or 0)


class _AttributeCoder:
    """One attribute's per-person codes, filled while rows stream in (people in order)."""

    def __init__(self, capacity: int) -> None:
        self.codes = np.full(capacity, -1, dtype=np.int16)
        self.index: dict[str, int] = {}
        self.over = False

    def set(self, person: int, value: str) -> None:
        code = self.index.get(value)
        if code is None:
            if len(self.index) >= MAX_ATTRIBUTE_VALUES:
                self.over = True
                return
            code = self.index[value] = len(self.index)
        self.codes[person] = code

    def finish(self, n_people: int) -> Attribute:
        """Codes renumbered so that values are in sorted order (deterministic files)."""
        vocabulary = sorted(self.index)
        remap = np.full(len(vocabulary) + 1, -1, dtype=np.int16)  # remap[-1] stays -1
        for new, value in enumerate(vocabulary):
            remap[self.index[value]] = new
        return Attribute(remap[self.codes[:n_people]], tuple(vocabulary))


def _build(
    conn: Connection, partner_id: UUID, crypto: IdentifierCrypto, key_version: int
) -> tuple[Side, People, frozenset[str]]:
    """Stream every record of the partner and build its arrays (keys under ``key_version``).

    Rows arrive sorted by ``customer_ref`` (bytewise, as Python compares strings), so a person's
    index is known as its rows pass and only one copy of each reference is kept; a person's
    attributes are those of their most recently updated record. Memory stays at the arrays'
    size (about 40 bytes a record) whatever the number of rows.
    """
    total = int(
        conn.execute(
            select(func.count()).select_from(RECORDS).where(current_records(RECORDS, partner_id))
        ).scalar_one()
    )
    keyer = crypto.keyer(key_version)
    # Compact buffers filled row by row, turned into arrays once at the end (a numpy item
    # assignment per row costs more than the rest of the loop).
    keys = bytearray()
    person = array("i")
    consent = bytearray()
    blob = bytearray()
    offsets = array("q", [0])
    coders: dict[str, _AttributeCoder] = {}
    decoded: dict[str, dict[str, str]] = {}  # attribute sets repeat: each is parsed once
    ref_column: Any = RECORDS.c.customer_ref
    if conn.dialect.name == "postgresql":
        ref_column = ref_column.collate("C")  # bytewise, like SQLite and Python
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
        .where(current_records(RECORDS, partner_id))
        .order_by(ref_column, RECORDS.c.updated_at)
    )
    n = 0
    p = -1
    current = None
    gc_was_enabled = gc.isenabled()
    gc.disable()  # rows are tuples: the collector would run every few hundred rows for nothing
    try:
        for id_type, match_key, version, sealed, data_version, ref, mask, text in result:
            if n == total:
                break  # rows committed after the count: the next version picks them up
            if version != key_version:
                digest = crypto.decrypt(bytes(sealed), data_version, partner_id, id_type)
                match_key = keyer(digest)
            keys += match_key[:16]
            if ref != current:
                current = ref
                blob += ref.encode()
                offsets.append(len(blob))
                p += 1
            person.append(p)
            consent.append(mask)
            if text and text != "null":
                attrs = decoded.get(text)
                if attrs is None:
                    attrs = json.loads(text)
                    if len(decoded) < 100_000:
                        decoded[text] = attrs
                for name, value in attrs.items():
                    coder = coders.get(name)
                    if coder is None:
                        coder = coders[name] = _AttributeCoder(total)
                    coder.set(p, value)
            n += 1
    finally:
        if gc_was_enabled:
            gc.enable()
    people_count = len(offsets) - 1
    pairs = np.frombuffer(bytes(keys), dtype=">u8").reshape(n, 2).astype(np.uint64)
    del keys
    people = People(bytes(blob), np.frombuffer(offsets, dtype=np.int64).copy())
    over = frozenset(name for name, coder in coders.items() if coder.over)
    coded = {name: coder.finish(people_count) for name, coder in coders.items() if not coder.over}
    side = make_side(
        np.ascontiguousarray(pairs[:, 0]),
        np.ascontiguousarray(pairs[:, 1]),
        np.frombuffer(person, dtype=np.int32).copy(),
        np.frombuffer(consent, dtype=np.uint8).copy(),
        people_count,
        coded,
    )
    return side, people, over


# -- files --------------------------------------------------------------------------------


def _save(directory: Path, loaded: Loaded) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    name = f"v{loaded.version}-k{loaded.key_version}"
    # A partial of its own: hub processes sharing the cache directory (scale-out on one host)
    # may build the same version at once, and one's rename must not pull the other's files away.
    partial = directory / f".{name}.{os.getpid()}-{uuid4().hex}.tmp"
    partial.mkdir(parents=True)
    side = loaded.side
    arrays: dict[str, Any] = {
        "hi": side.hi,
        "lo": side.lo,
        "person": side.person,
        "consent": side.consent,
        "offsets": loaded.people.offsets,
        "blob": np.frombuffer(loaded.people.blob, dtype=np.uint8),
    }
    meta: dict[str, Any] = {"n_people": side.n_people, "attributes": {}, "over": []}
    for i, (attr, coded) in enumerate(side.attributes.items()):
        arrays[f"attr{i}"] = coded.codes
        meta["attributes"][attr] = {"array": f"attr{i}", "values": list(coded.values)}
    meta["over"] = sorted(loaded.over_quota)
    for key, column in arrays.items():
        np.save(partial / f"{key}.npy", np.ascontiguousarray(column), allow_pickle=False)
    (partial / "meta.json").write_text(json.dumps(meta))
    target = directory / name
    try:
        partial.rename(target)  # whole or absent: a reader never sees half a version
    except OSError:
        if not target.is_dir():
            raise
        shutil.rmtree(partial, ignore_errors=True)  # another process saved it first: the same


# numpy reads an .npy header with ast.literal_eval, and CPython 3.11's AST constructor is not
# safe in concurrent threads ("SystemError: AST constructor recursion depth mismatch", seen when
# the admin matrix opened several partners' arrays at once): one header at a time.
_NPY_HEADER_LOCK = threading.Lock()


def _open(directory: Path, partner_id: UUID, version: int, key_version: int) -> Loaded | None:
    path = directory / f"v{version}-k{key_version}"
    if not path.is_dir():
        return None
    try:
        meta = json.loads((path / "meta.json").read_text())

        def arr(name: str) -> Any:
            with _NPY_HEADER_LOCK:
                return np.load(path / f"{name}.npy", mmap_mode="r", allow_pickle=False)

        attributes = {
            attr: Attribute(np.asarray(arr(spec["array"])), tuple(spec["values"]))
            for attr, spec in meta["attributes"].items()
        }
        side = Side(
            hi=np.asarray(arr("hi")),
            lo=np.asarray(arr("lo")),
            person=np.asarray(arr("person")),
            consent=np.asarray(arr("consent")),
            n_people=int(meta["n_people"]),
            attributes=attributes,
        )
        people = People(bytes(np.asarray(arr("blob"))), np.asarray(arr("offsets")))
    except (OSError, ValueError, KeyError):
        shutil.rmtree(path, ignore_errors=True)  # a damaged cache file is rebuilt, not trusted
        return None
    return Loaded(partner_id, version, key_version, side, people, frozenset(meta["over"]))


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
        # Partners whose arrays went stale while in use -> the version seen at the last check.
        self._stale: dict[UUID, int] = {}

    def directory(self, partner_id: UUID) -> Path:
        return self.root / str(partner_id)

    async def get(self, partner_id: UUID) -> Loaded:
        """The partner's arrays as of now (built or read from disk when the version moved)."""
        lock = self._locks.setdefault(partner_id, asyncio.Lock())
        async with lock:
            return await asyncio.to_thread(self._get_sync, partner_id)

    def _get_sync(self, partner_id: UUID) -> Loaded:
        key_version = self.crypto.keys.match_version
        # A read: on SQLite it must not queue for the write lock its own caller may hold.
        with reading(), self.engine.connect() as conn:
            version = _current_version(conn, partner_id)
            with self._memory_lock:
                cached = self._memory.get(partner_id)
                if cached and (cached.version, cached.key_version) == (version, key_version):
                    self._memory.move_to_end(partner_id)
                    return cached
            directory = self.directory(partner_id)
            loaded = _open(directory, partner_id, version, key_version)
            if loaded is None:
                side, people, over = _build(conn, partner_id, self.crypto, key_version)
                built = Loaded(partner_id, version, key_version, side, people, over)
                self.builds += 1
                _save(directory, built)
                # Served from the files just written (memory-mapped: page cache the
                # processes share, not each one's heap), and the build's heap handed back.
                loaded = _open(directory, partner_id, version, key_version) or built
                del side, people, built
                release_free_memory()
        self._remember(loaded)
        self._discard_files(partner_id, keep=(version, key_version))
        return loaded

    def _remember(self, loaded: Loaded) -> None:
        with self._memory_lock:
            self._memory[loaded.partner_id] = loaded
            self._memory.move_to_end(loaded.partner_id)
            while len(self._memory) > self.max_in_memory:
                self._memory.popitem(last=False)

    def _discard_files(self, partner_id: UUID, keep: tuple[int, int] | None) -> None:
        directory = self.directory(partner_id)
        if not directory.is_dir():
            return
        name = f"v{keep[0]}-k{keep[1]}" if keep else None
        for entry in directory.iterdir():
            if entry.name != name and not entry.name.startswith("."):
                shutil.rmtree(entry, ignore_errors=True)

    def discard_stale(self) -> list[UUID]:
        """Drop memory copies and files of versions that are no longer current.

        Returns the partners whose arrays were in use and whose records have not changed since
        the previous call: rebuilding those now (``get``) keeps them warm after an upload, a
        consent change or an erasure, without rebuilding again and again during a burst of
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
                self._discard_files(partner_id, keep=(current.get(partner_id, 0), key_version))
        ready = []
        for partner_id, seen in list(self._stale.items()):
            now = current.get(partner_id, 0)
            if now == seen:
                ready.append(partner_id)
                del self._stale[partner_id]
            else:
                self._stale[partner_id] = now
        return ready

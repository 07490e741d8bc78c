"""A partner's arrays at one version, and their files on disk.

The files of a version live in ``<root>/<partner>/v{version}-k{key_version}/``: one ``.npy``
per column and ``meta.json``. A version's files are written once, whole (a partial directory
of the writer's own, renamed), and never changed afterwards: a newer version gets a directory
of its own, whose unchanged columns may be hard links to the previous version's files. Every
hub process sharing the directory (the processes of one host, or any host on shared storage)
opens what another saved, so no process starts cold.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import numpy as np
from numpy.typing import NDArray

from matching.engine import Attribute, Side

# Columns that a patch may leave as they were (hard-linked rather than written again).
FIXED_COLUMNS = ("hi", "lo", "person", "consent", "offsets", "blob")


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

    def bisect(self, wanted: bytes, lo: int = 0) -> int:
        """Where ``wanted`` (a UTF-8 ref) is, or would go, among the people from ``lo`` on
        (people are sorted by ref, bytewise: UTF-8 bytes sort as Python sorts strings)."""
        hi = len(self)
        while lo < hi:
            mid = (lo + hi) // 2
            if self.blob[self.offsets[mid] : self.offsets[mid + 1]] < wanted:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def positions(self, refs: Iterable[str]) -> dict[str, int]:
        """The person index of each of ``refs`` that is here."""
        found: dict[str, int] = {}
        lo = 0
        n = len(self)
        for ref in sorted(set(refs)):  # in order: each search starts where the last ended
            wanted = ref.encode()
            lo = self.bisect(wanted, lo)
            if lo < n and self.blob[self.offsets[lo] : self.offsets[lo + 1]] == wanted:
                found[ref] = lo
        return found

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
        """Person indices of ``refs`` (unknown refs are skipped), in increasing order."""
        return np.asarray(sorted(self.people.positions(refs).values()), dtype=np.int32)


def version_name(version: int, key_version: int) -> str:
    return f"v{version}-k{key_version}"


# A patch under way announces itself with a marker file, made in the change's transaction
# (before anyone can read the new counter) and removed once the patched files are saved or
# the patch is given up: a process that needs that version meanwhile waits for the files
# instead of reading every record to build them. A marker older than this is a stopped
# process's or a rolled-back change's, and is ignored.
PATCH_MARKER_SECONDS = 30.0
# Files written aside (:func:`write_aside`) and never published after this long are a stopped
# process's: an upload's arrays wait aside only between their build and the upload's flip.
PARTIAL_FILES_SECONDS = 3600.0


def patch_marker(directory: Path, version: int, key_version: int) -> Path:
    return directory / f".{version_name(version, key_version)}.patching"


def mark_patching(directory: Path, version: int, key_version: int) -> None:
    """Announce that ``version``'s files are being patched (see :data:`PATCH_MARKER_SECONDS`)."""
    directory.mkdir(parents=True, exist_ok=True)
    patch_marker(directory, version, key_version).touch()


def unmark_patching(directory: Path, version: int, key_version: int) -> None:
    patch_marker(directory, version, key_version).unlink(missing_ok=True)


async def keep_marked(directory: Path, version: int, key_version: int) -> None:
    """Keep ``version``'s marker fresh for as long as this task runs (cancel it when done):
    whoever waits for the files knows they are still on their way, however long it takes."""
    while True:
        await asyncio.sleep(PATCH_MARKER_SECONDS / 3)
        await asyncio.to_thread(mark_patching, directory, version, key_version)


def patch_under_way(directory: Path, version: int, key_version: int) -> bool:
    """Whether a patch of ``version`` announced itself lately and has not finished."""
    try:
        made = patch_marker(directory, version, key_version).stat().st_mtime
    except OSError:
        return False
    return time.time() - made < PATCH_MARKER_SECONDS


@contextlib.contextmanager
def build_lock(directory: Path, timeout: float) -> Iterator[bool]:
    """The partner's build lock, shared by every process using the directory (``flock``):
    one of them builds a version while the others wait and then open its files, instead of
    each reading every record. Yields whether it was taken within ``timeout`` seconds (a
    build that takes longer is not waited for: the caller builds as well)."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / ".build.lock", os.O_RDWR | os.O_CREAT, 0o600)
    taken = False
    try:
        deadline = time.monotonic() + timeout
        pause = 0.005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                taken = True
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    break
                time.sleep(pause)
                pause = min(pause * 2, 0.1)
        yield taken
    finally:
        if taken:
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def build_under_way(directory: Path) -> bool:
    """Whether some process (this one included) holds the partner's build lock now."""
    try:
        fd = os.open(directory / ".build.lock", os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _parse_name(name: str) -> tuple[int, int] | None:
    try:
        version, key_version = name[1:].split("-k")
        return int(version), int(key_version)
    except ValueError:
        return None


def save(
    directory: Path,
    loaded: Loaded,
    *,
    link_from: Path | None = None,
    unchanged: Iterable[str] = (),
) -> None:
    """Write ``loaded``'s files whole or not at all; the columns named in ``unchanged`` are
    hard links to ``link_from``'s (the version it was patched from), when that still exists."""
    publish(directory, write_aside(directory, loaded, link_from=link_from, unchanged=unchanged))


def write_aside(
    directory: Path,
    loaded: Loaded,
    *,
    link_from: Path | None = None,
    unchanged: Iterable[str] = (),
) -> Path:
    """Write ``loaded``'s files into a directory of their own that no reader opens (a
    dot-name); :func:`publish` moves it into place."""
    directory.mkdir(parents=True, exist_ok=True)
    name = version_name(loaded.version, loaded.key_version)
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
    linked = set(unchanged) & set(FIXED_COLUMNS) if link_from is not None else set()
    for key, column in arrays.items():
        if key in linked and link_from is not None and _link(link_from / f"{key}.npy", partial):
            continue
        np.save(partial / f"{key}.npy", np.ascontiguousarray(column), allow_pickle=False)
    (partial / "meta.json").write_text(json.dumps(meta))
    return partial


def publish(directory: Path, partial: Path, version: int | None = None) -> None:
    """Move files written by :func:`write_aside` into place under their version's name (or
    ``version``'s: the records they were built from are that version's too)."""
    name = partial.name[1:].split(".", 1)[0]
    if version is not None:
        parsed = _parse_name(name)
        assert parsed is not None, name
        name = version_name(version, parsed[1])
    target = directory / name
    try:
        partial.rename(target)  # whole or absent: a reader never sees half a version
    except OSError:
        if not target.is_dir():
            raise
        shutil.rmtree(partial, ignore_errors=True)  # another process saved it first: the same


def _link(source: Path, partial: Path) -> bool:
    """A hard link to an unchanged column (files of a version are never written again)."""
    try:
        os.link(source, partial / source.name)
    except OSError:  # gone meanwhile, or a file system without hard links: written instead
        return False
    return True


# numpy reads an .npy header with ast.literal_eval, and CPython 3.11's AST constructor is not
# safe in concurrent threads ("SystemError: AST constructor recursion depth mismatch", seen when
# the admin matrix opened several partners' arrays at once): one header at a time.
_NPY_HEADER_LOCK = threading.Lock()


# Arrays files at least this large are memory-mapped (page cache the hub's processes share);
# smaller ones are read into memory, holding no file descriptor.
MMAP_MIN_BYTES = 1 << 20


def open_version(
    directory: Path, partner_id: UUID, version: int, key_version: int
) -> Loaded | None:
    """The saved arrays of one version (memory-mapped), or None when there are none."""
    return open_path(
        directory / version_name(version, key_version), partner_id, version, key_version
    )


def open_path(path: Path, partner_id: UUID, version: int, key_version: int) -> Loaded | None:
    """The arrays saved in ``path`` (a version's directory, or one written aside), or None."""
    if not path.is_dir():
        return None
    try:
        meta = json.loads((path / "meta.json").read_text())

        def arr(name: str) -> Any:
            file = path / f"{name}.npy"
            # A memory map keeps a file descriptor open while it lives: small arrays are
            # read instead (the admin matrix holds every active partner's arrays at once;
            # with thousands of small partners the maps ran the process out of descriptors).
            mapped = file.stat().st_size >= MMAP_MIN_BYTES
            with _NPY_HEADER_LOCK:
                if mapped:
                    return np.load(file, mmap_mode="r", allow_pickle=False)
                return np.load(file, allow_pickle=False)

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


def discard_older(
    directory: Path,
    version: int,
    key_version: int,
    *,
    counter: Callable[[], int] | None = None,
) -> None:
    """Delete the versions older than (``version``, ``key_version``): an erased person's
    ``customer_ref`` leaves the disk with them. Newer versions stay (another process may have
    saved one after the caller read the counter), unless ``counter`` (read again, only when a
    newer version is found) says the partner never reached it: a database restored from a
    backup counts again from an older version and must not meet files of its "future".
    Partial directories are their writers' (a stopped writer's go after
    :data:`PARTIAL_FILES_SECONDS`)."""
    if not directory.is_dir():
        return
    reached: int | None = None
    for entry in directory.iterdir():
        if entry.name.startswith("."):
            if entry.name.endswith(".patching"):
                _drop_if_stale(entry, PATCH_MARKER_SECONDS)
            elif entry.name.endswith(".tmp"):
                _drop_if_stale(entry, PARTIAL_FILES_SECONDS)
            continue
        parsed = _parse_name(entry.name)
        if parsed == (version, key_version):
            continue
        if parsed is None or parsed[0] < version or parsed[1] < key_version:
            shutil.rmtree(entry, ignore_errors=True)
            continue
        if counter is None:
            continue
        if reached is None:
            reached = counter()
        if parsed[0] > reached:
            shutil.rmtree(entry, ignore_errors=True)


def patched_from(directory: Path, version: int, key_version: int) -> int:
    """The oldest version a patch may still need: ``version`` itself, or, while ``version``
    is announced as on its way and not saved yet, the version before it (and so on down a
    chain of announced patches, each waiting for the one before)."""
    while (
        version > 0
        and patch_under_way(directory, version, key_version)
        and not (directory / version_name(version, key_version)).is_dir()
    ):
        version -= 1
    return version


def _drop_if_stale(entry: Path, seconds: float) -> None:
    """A patch marker left by a stopped process or a rolled-back change, or files a stopped
    process was writing (or had written ahead of a flip that never came)."""
    try:
        if time.time() - entry.stat().st_mtime < seconds:
            return
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    except OSError:
        pass  # removed meanwhile by its writer

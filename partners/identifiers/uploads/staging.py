"""Writing checked rows of an upload to the staging table, a batch per short transaction.

Runs in the processor's worker thread on the synchronous engine. NDJSON rows are checked and
sealed in parsing processes, which on PostgreSQL also ``COPY`` them in themselves; otherwise
the thread writes them (``COPY`` with psycopg 3, or one ``executemany`` on SQLite). After each
batch the thread records the upload's progress, and checks that the upload is still its own.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import IO, Any
from uuid import UUID

import numpy as np
from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Table,
    and_,
    bindparam,
    delete,
    func,
    select,
    text,
    update,
)

from hub.core.db import leave_write_lock, rowcount
from partners.identifiers.crypto import IdentifierCrypto
from partners.identifiers.models import ID_TYPE_NAMES
from partners.identifiers.uploads.models import NDJSON, IdentifierUpload, StagedRecord, UploadError
from partners.identifiers.uploads.rows import (
    Batch,
    LineChunk,
    check_lines,
    read_batches,
    read_ndjson_chunks,
)
from partners.identifiers.validation import RecordError

STAGING: Table = StagedRecord.__table__  # type: ignore[assignment]
ERRORS: Table = UploadError.__table__  # type: ignore[assignment]
UPLOADS: Table = IdentifierUpload.__table__  # type: ignore[assignment]
COLUMNS = (
    "stage_key",
    "row",
    "refused",
    "id_type",
    "match_key",
    "prev_key",
    "digest_enc",
    "data_version",
    "customer_ref",
    "consents",
    "attributes",
)
IN_FLIGHT = 4  # chunks handed to parsing processes and not yet written


class LeaseLost(Exception):
    """Another process took the upload over (this one was too slow to renew its claim)."""


PREFIX_BYTES = 8


class KeyCensus:
    """The first 8 bytes of every accepted row's match key, gathered while the rows are
    staged, to tell without a query whether any identifier can repeat in the upload.

    Match keys are HMAC outputs: in an upload without repeats, two 64-bit prefixes are equal
    with a probability of about n²/2⁶⁵ (3·10⁻⁸ for a million rows). Equal prefixes, whatever
    the id type, only mean "look": the exact check in SQL then runs. 8 bytes a row in memory.
    """

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def add(self, prefixes: bytes) -> None:
        self._parts.append(prefixes)

    def may_repeat(self) -> bool:
        parts, self._parts = self._parts, []
        keys = np.empty(sum(len(part) for part in parts) // PREFIX_BYTES, dtype=np.uint64)
        at = 0
        parts.reverse()
        while parts:  # each part is freed once copied: at most the array and one part held
            part = np.frombuffer(parts.pop(), dtype=np.uint64)
            keys[at : at + len(part)] = part
            at += len(part)
        keys.sort()
        return bool((keys[1:] == keys[:-1]).any())


def key_prefixes(rows: Sequence[tuple[Any, ...]], accepted: int) -> bytes:
    """The census prefixes of the first ``accepted`` staged rows (the accepted ones)."""
    return b"".join([row[4][:PREFIX_BYTES] for row in rows[:accepted]])


@dataclass
class StageReport:
    rows_read: int = 0
    accepted: int = 0
    refused: int = 0
    errors_kept: int = 0
    match_version: int = 0
    # Staged with keys under the previous match-key version too (a rotation is unfinished).
    with_previous_keys: bool = False
    census: KeyCensus = field(default_factory=KeyCensus)


@dataclass(frozen=True)
class StagingJob:
    upload_id: UUID
    partner_id: UUID
    fmt: str
    compressed: bool
    attempt: int
    batch_rows: int
    max_error_rows: int

    @property
    def stage_key(self) -> str:
        return stage_key(self.upload_id, self.attempt)


def stage_key(upload_id: UUID, attempt: int) -> str:
    return f"{upload_id}.{attempt}"


# An upload's staged rows are indexed in parts of this many ids, each built in a transaction
# of its own: SQLite holds its write lock while it builds an index (1M rows: ~1 s; 10M at
# once: 11.6 s, past the 5 s other writers wait), so no part keeps them waiting for long.
INDEX_PART_ROWS = 2_000_000


def _literal(value: object) -> Any:
    """A value written into the statement (see :func:`upload_parts`)."""
    return bindparam(None, value, literal_execute=True)


def _index_prefix(key: str) -> str:
    upload, attempt = key.split(".")
    return f"ix_identifier_staging_{UUID(upload).hex}_{int(attempt)}_"


def index_staged(engine: Engine, key: str) -> None:
    """On SQLite, index an upload's staged rows by (id_type, match_key), once they are all
    staged: the removal of a ``replace`` and the check for repeats look them up by key.

    One index of every upload's rows, kept while they were inserted, put every row's entry on
    a random page (match keys are random) of an index as long as the upload: the 10M stage
    took 398-450 s. Built after the rows, in sorted passes, it costs a fraction of that. The
    indexes are partial (this upload's rows, a part of :data:`INDEX_PART_ROWS` ids each) and
    dropped before the rows are deleted. PostgreSQL hash-joins staged rows and needs none."""
    if engine.dialect.name != "sqlite":
        return
    prefix = _index_prefix(key)  # the key is ours (a UUID and a number), never a partner's
    with engine.connect() as connection:
        low, high = connection.execute(
            select(func.min(STAGING.c.id), func.max(STAGING.c.id)).where(STAGING.c.stage_key == key)
        ).one()
        connection.rollback()
    if low is None:
        return
    for first in range(int(low), int(high) + 1, INDEX_PART_ROWS):
        last = min(first + INDEX_PART_ROWS - 1, int(high))
        with engine.begin() as connection:
            connection.exec_driver_sql(
                f"CREATE INDEX IF NOT EXISTS {prefix}{first}_{last} ON identifier_staging "
                f"(id_type, match_key) WHERE stage_key = '{key}' AND id BETWEEN {first} AND {last}"
            )
        leave_write_lock(engine)


def _parts(names: Iterable[str], key: str) -> list[tuple[int, int]]:
    prefix = _index_prefix(key)
    bounds = (name.removeprefix(prefix).split("_") for name in names if name.startswith(prefix))
    return sorted((int(first), int(last)) for first, last in bounds)


_STAGING_INDEXES = text(
    "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'identifier_staging'"
)


def parts_of(connection: Connection, table: Any, key: str) -> list[ColumnElement[bool]]:
    """:func:`upload_parts` for synchronous callers."""
    names: Iterable[str] = ()
    if connection.dialect.name == "sqlite":
        names = connection.execute(_STAGING_INDEXES).scalars().all()
    return _part_conditions(table, key, connection.dialect.name, names)


async def upload_parts(session: Any, table: Any, key: str) -> list[ColumnElement[bool]]:
    """Conditions that together select the upload's staged rows in ``table`` (staging or an
    alias), one per part indexed apart on SQLite (:func:`index_staged`), each written as the
    part's index is, values in the statement: SQLite uses a partial index only for a query
    that names its condition literally. One condition, ``stage_key = key``, on PostgreSQL or
    when no part is indexed (then correct, only slower)."""
    return await session.run_sync(lambda sync: parts_of(sync.connection(), table, key))  # type: ignore[no-any-return]


def _part_conditions(
    table: Any, key: str, dialect: str, names: Iterable[str]
) -> list[ColumnElement[bool]]:
    parts = _parts(names, key) if dialect == "sqlite" else []
    if not parts:
        return [table.c.stage_key == key]
    return [
        and_(
            table.c.stage_key == _literal(key),
            table.c.id.between(_literal(first), _literal(last)),
        )
        for first, last in parts
    ]


def _drop_indexes(connection: Connection, upload_id: UUID) -> None:
    """Drop the SQLite indexes of every attempt of an upload (before deleting its rows: the
    deletes then maintain no entry of a random key)."""
    if connection.dialect.name != "sqlite":
        return
    prefix = f"ix_identifier_staging_{upload_id.hex}_"
    names = connection.execute(_STAGING_INDEXES).scalars()
    for name in [n for n in names if n.startswith(prefix)]:
        connection.exec_driver_sql(f"DROP INDEX IF EXISTS {name}")


def _staged_rows(
    batch: Batch, job: StagingJob, crypto: IdentifierCrypto, version: int, previous: int | None
) -> list[tuple[Any, ...]]:
    upload = job.stage_key
    keyer = crypto.keyer(version)
    previous_keyer = None if previous is None else crypto.keyer(previous)
    sealers = {t: crypto.sealer(job.partner_id, t) for t in ID_TYPE_NAMES}
    rows: list[tuple[Any, ...]] = []
    for row, (id_type, digest, ref, consents, attributes) in batch.records:
        data_version, seal = sealers[id_type]
        rows.append(
            (
                upload,
                row,
                False,
                id_type,
                keyer(digest),
                None if previous_keyer is None else previous_keyer(digest),
                seal(digest),
                data_version,
                ref,
                consents,
                attributes,
            )
        )
    for refused in batch.refused:
        key = prev = None
        if refused.digest is not None:
            key = keyer(refused.digest)
            prev = None if previous_keyer is None else previous_keyer(refused.digest)
        rows.append(
            (
                upload,
                refused.row,
                True,
                refused.id_type,
                key,
                prev,
                None,
                None,
                refused.customer_ref,
                0,
                None,
            )
        )
    return rows


@dataclass(frozen=True)
class WorkerKeys:
    """The key versions a parsing process needs, sent along with each chunk of lines (secrets
    stay in memory and in the pipe to our own child process; never logged)."""

    match: tuple[tuple[int, bytes], ...]  # (version, secret), newest first
    data: tuple[int, bytes]

    @property
    def match_version(self) -> int:
        return self.match[0][0]

    @property
    def data_version(self) -> int:
        return self.data[0]

    def match_secret(self, version: int) -> bytes:
        return dict(self.match)[version]

    def data_secret(self, version: int) -> bytes:
        assert version == self.data[0]
        return self.data[1]

    def live_match_versions(self) -> list[int]:
        return [version for version, _ in self.match]


# (rows left for the caller to write, errors, rows read, accepted, refused, key prefixes)
Staged = tuple[list[tuple[Any, ...]], list[RecordError], int, int, int, bytes]
_worker_crypto: dict[WorkerKeys, IdentifierCrypto] = {}


def _staged(
    batch: Batch, job: StagingJob, crypto: IdentifierCrypto, version: int, previous: int | None
) -> Staged:
    rows = _staged_rows(batch, job, crypto, version, previous)
    accepted = len(batch.records)
    prefixes = key_prefixes(rows, accepted)
    return rows, batch.errors, batch.rows_read, accepted, len(batch.refused), prefixes


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def start_parser(parent: int, nice: int) -> None:
    """Initializer of a parsing process: lower its CPU priority by ``nice`` (a bulk upload is
    background work: on a busy machine the answers to requests get the CPU first) and
    :func:`watch_parent`."""
    if nice > 0:
        os.nice(nice)
    watch_parent(parent)


def watch_parent(parent: int) -> None:
    """Initializer of a parsing process: end when ``parent``, the process that started it,
    is gone (a process killed hard cannot tell its pool, and the pool's pipes never close for
    it). The pid is passed in: the parent may die before this runs.

    On Linux the kernel kills the process with its parent (PR_SET_PDEATHSIG): a starved
    process on a loaded machine need not get scheduled to notice. The polling thread stays
    for other systems and for a parent that died before the request was made."""
    if sys.platform == "linux":
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass  # the polling thread below still ends it

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(0)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()


def check_and_stage(
    chunk: LineChunk, job: StagingJob, keys: WorkerKeys, version: int, previous: int | None
) -> Staged:
    """In a parsing process: check a chunk of NDJSON lines and key and seal its records."""
    crypto = _worker_crypto.get(keys)
    if crypto is None:
        _worker_crypto.clear()
        crypto = _worker_crypto[keys] = IdentifierCrypto(keys)
    return _staged(check_lines(chunk), job, crypto, version, previous)


_worker_connections: dict[str, Any] = {}
COPY_SQL = f"COPY identifier_staging ({', '.join(COLUMNS)}) FROM STDIN"


def _copy(raw_connection: Any, rows: Sequence[tuple[Any, ...]]) -> None:
    """``COPY`` rows into staging on a psycopg 3 connection (in its current transaction)."""
    with raw_connection.cursor() as cursor, cursor.copy(COPY_SQL) as copy:
        for row in rows:
            copy.write_row(row)


def check_and_copy(
    chunk: LineChunk,
    job: StagingJob,
    keys: WorkerKeys,
    version: int,
    previous: int | None,
    dsn: str,
) -> Staged:
    """In a parsing process, on PostgreSQL: check, key and seal a chunk of NDJSON lines and
    ``COPY`` its rows into staging on the process's own connection (committed at once: the
    rows are keyed by this attempt, so a later attempt never counts them)."""
    import psycopg

    rows, errors, rows_read, accepted, refused, prefixes = check_and_stage(
        chunk, job, keys, version, previous
    )
    connection = _worker_connections.get(dsn)
    if connection is None or connection.closed:
        connection = _worker_connections[dsn] = psycopg.connect(dsn)
    try:
        _copy(connection, rows)
        connection.commit()
    except BaseException:
        _worker_connections.pop(dsn, None)
        connection.close()
        raise
    return [], errors, rows_read, accepted, refused, prefixes  # rows written: none left


def _in_processes(
    pool: Executor,
    body: IO[bytes],
    job: StagingJob,
    crypto: IdentifierCrypto,
    version: int,
    previous: int | None,
    dsn: str | None,
) -> Iterator[Staged]:
    """Chunks checked in the pool's processes, in order, a few in flight (bounded memory).
    With a ``dsn`` (PostgreSQL) the processes also write the rows themselves."""
    keys = crypto.keys
    worker_keys = WorkerKeys(
        match=tuple((v, keys.match_secret(v)) for v in (version, previous) if v is not None),
        data=(keys.data_version, keys.data_secret(keys.data_version)),
    )
    in_flight: deque[Future[Staged]] = deque()
    try:
        for chunk in read_ndjson_chunks(body, compressed=job.compressed, batch_rows=job.batch_rows):
            if dsn is None:
                future = pool.submit(check_and_stage, chunk, job, worker_keys, version, previous)
            else:
                future = pool.submit(
                    check_and_copy, chunk, job, worker_keys, version, previous, dsn
                )
            in_flight.append(future)
            if len(in_flight) >= IN_FLIGHT:
                yield in_flight.popleft().result()
        while in_flight:
            yield in_flight.popleft().result()
    finally:
        for future in in_flight:
            future.cancel()


def _write_rows(connection: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    if not rows:
        return
    raw: Any = connection.connection.dbapi_connection
    if connection.dialect.name == "postgresql":
        _copy(raw, rows)
        return
    marks = ", ".join("?" for _ in COLUMNS)
    cursor = raw.cursor()
    try:
        cursor.executemany(
            f"INSERT INTO identifier_staging ({', '.join(COLUMNS)}) VALUES ({marks})",  # noqa: S608
            rows,
        )
    finally:
        cursor.close()


def _staged_rows_of(upload_id: UUID) -> Any:
    """The staging rows of every attempt of an upload."""
    return STAGING.c.stage_key.startswith(f"{upload_id}.")


def clear_staging(connection: Connection, upload_id: UUID, *, errors: bool) -> int:
    """Remove the staging rows of every attempt of an upload (and its error report).
    Returns how many staging rows were removed."""
    _drop_indexes(connection, upload_id)
    removed = rowcount(connection.execute(delete(STAGING).where(_staged_rows_of(upload_id))))
    if errors:
        connection.execute(delete(ERRORS).where(ERRORS.c.upload_id == upload_id))
    return removed


CLEAR_BATCH_ROWS = 50_000


def clear_staging_in_batches(engine: Engine, upload_id: UUID) -> int:
    """:func:`clear_staging` for a finished upload, in short transactions on SQLite: one
    DELETE of a million rows held SQLite's write lock for 7.4 s, longer than a writer waits
    (the 5 s busy timeout); in batches of 50k ids a concurrent writer waited at most 0.8 s
    (13 s in all). PostgreSQL deletes them at once without blocking other writers. Returns
    how many rows were removed."""
    if engine.dialect.name != "sqlite":
        with engine.begin() as connection:
            return clear_staging(connection, upload_id, errors=False)
    mine = _staged_rows_of(upload_id)
    with engine.begin() as connection:
        _drop_indexes(connection, upload_id)
    with engine.connect() as connection:
        low, high = connection.execute(
            select(func.min(STAGING.c.id), func.max(STAGING.c.id)).where(mine)
        ).one()
    removed = 0
    if low is None:
        return removed
    for start in range(low, high + 1, CLEAR_BATCH_ROWS):  # by id: a range of the table
        in_range = and_(STAGING.c.id >= start, STAGING.c.id < start + CLEAR_BATCH_ROWS, mine)
        with engine.begin() as connection:
            removed += rowcount(connection.execute(delete(STAGING).where(in_range)))
        leave_write_lock(engine)
    return removed


def _record_progress(connection: Connection, job: StagingJob, report: StageReport) -> None:
    """The upload's counters, guarded by the attempt: another process's claim stops this one."""
    result = connection.execute(
        update(UPLOADS)
        .where(UPLOADS.c.id == job.upload_id, UPLOADS.c.attempts == job.attempt)
        .values(rows_read=report.rows_read, accepted=report.accepted, refused=report.refused)
    )
    if result.rowcount != 1:
        raise LeaseLost(str(job.upload_id))


def stage(
    engine: Engine,
    crypto: IdentifierCrypto,
    job: StagingJob,
    body: IO[bytes],
    *,
    cancelled: Callable[[], bool] = lambda: False,
    pool: Executor | None = None,
) -> StageReport:
    """Read ``body`` and stage every row (refused ones marked), from scratch.

    Whatever an earlier, interrupted attempt staged is removed first, so a resumed upload
    never counts a row twice. Raises :class:`~partners.identifiers.uploads.rows.UnreadableBody`
    when the body cannot be read on.
    """
    keys = crypto.keys
    version = keys.match_version
    older = [v for v in keys.live_match_versions() if v != version]
    previous = max(older) if older else None
    report = StageReport(match_version=version, with_previous_keys=previous is not None)
    with engine.begin() as connection:
        clear_staging(connection, job.upload_id, errors=True)
    staged: Iterable[Staged]
    if pool is not None and job.fmt == NDJSON:  # CSV rows may span lines: read in order here
        dsn = None
        if engine.dialect.name == "postgresql":
            dsn = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        staged = _in_processes(pool, body, job, crypto, version, previous, dsn)
    else:
        staged = (
            _staged(batch, job, crypto, version, previous)
            for batch in read_batches(
                body, job.fmt, compressed=job.compressed, batch_rows=job.batch_rows
            )
        )
    for rows, errors, rows_read, accepted, refused, prefixes in staged:
        if cancelled():
            raise LeaseLost(str(job.upload_id))
        report.census.add(prefixes)
        report.rows_read += rows_read
        report.accepted += accepted
        report.refused += refused
        kept = [
            {"upload_id": job.upload_id, "row": e.index, "field": e.field, "reason": e.reason}
            for e in errors[: max(0, job.max_error_rows - report.errors_kept)]
        ]
        report.errors_kept += len(kept)
        with engine.begin() as connection:
            _write_rows(connection, rows)
            if kept:
                connection.execute(ERRORS.insert(), kept)
            _record_progress(connection, job, report)
        leave_write_lock(engine)
    return report


def refuse_duplicates(engine: Engine, job: StagingJob, report: StageReport) -> int:
    """Refuse every row that repeats an identifier of an earlier row (as the synchronous
    upload does); the earliest one stands. Returns how many rows were refused.

    The query runs only when the census of the staged keys says a repeat is possible."""
    if not report.census.may_repeat():
        return 0
    s = STAGING
    upload = job.stage_key
    refused = 0
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":  # hash the upload's keys in memory
            connection.execute(text("SET LOCAL work_mem = '256MB'"))
        groups = connection.execute(
            select(s.c.id_type, s.c.match_key, func.min(s.c.row))
            .where(s.c.stage_key == upload, s.c.refused.is_(False))
            .group_by(s.c.id_type, s.c.match_key)
            .having(func.count() > 1)
        ).all()
        parts = parts_of(connection, s, upload)
        for id_type, key, first in groups:
            repeats = sorted(
                row
                for part in parts  # by each part's own index on SQLite
                for (row,) in connection.execute(
                    update(s)
                    .where(part, s.c.id_type == id_type, s.c.match_key == key, s.c.row > first)
                    .values(refused=True)
                    .returning(s.c.row)
                )
            )
            refused += len(repeats)
            room = max(0, job.max_error_rows - report.errors_kept)
            kept = [
                {
                    "upload_id": job.upload_id,
                    "row": row,
                    "field": "id_hash",
                    "reason": f"the same identifier as row {first}; send it once",
                }
                for row in repeats[:room]
            ]
            if kept:
                connection.execute(ERRORS.insert(), kept)
            report.errors_kept += len(kept)
        report.accepted -= refused
        report.refused += refused
        _record_progress(connection, job, report)
    return refused

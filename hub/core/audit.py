"""The audit log: append-only, hash-chained, with a signed head.

Each row's ``hash`` is SHA-256 over the previous row's hash and the row's canonical JSON, so
editing or deleting a row breaks the chain. An entry is appended with the caller's transaction
and given its place in the chain as that transaction commits (:func:`append`); appends are
serialised — PostgreSQL takes a transaction-scoped advisory lock for the commit, SQLite runs
writers under ``BEGIN IMMEDIATE`` — and ``seq`` is unique, so the chain can never fork. The
head (count and hash) is signed with the audit key; a truncated tail is detected against any
earlier signed head. The database itself refuses
UPDATE and DELETE on the log (triggers, migration 0017): nothing in the hub removes a row.

Each entry names the partners it ``concerns`` (inside its hash), and those partners read it
with scope ``audit:read``: by default the acting client's partner; both members for
partnership, offer and overlap actions; every active partner for a matrix answer; none for
job runs and key operations. Rows written before ``concerns`` existed have NULL there and are
hashed without the key, so their hashes are unchanged.

The canonical form a partner recomputes (README "Audit log")::

    sha256(prev_hash + "\n" + json.dumps(body, sort_keys=True, separators=(",", ":")))

where ``body`` holds ``seq``, ``at`` (UTC, ISO 8601 with microseconds and ``+00:00``),
``actor``, ``partner_id``, ``action``, ``target_type``, ``target_id``, ``details``,
``request_id`` and — when the row has it — ``concerns`` (sorted partner ids).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import msgspec
from advanced_alchemy.types import DateTimeUTC
from joserfc import jws
from joserfc.errors import JoseError
from sqlalchemy import BigInteger, ForeignKey, Index, String, insert, select, text
from sqlalchemy import event as orm_events
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, Session, SessionTransaction, mapped_column

from hub.core.db import Base, JsonType
from hub.core.keyring import AUDIT_ALG, Keyring

GENESIS = "0" * 64
# Any constant works; it names the lock that serialises audit appends on PostgreSQL.
AUDIT_LOCK_ID = 0x617564697400


class AuditEntry(Base):
    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    actor: Mapped[str] = mapped_column(String(200))
    partner_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    action: Mapped[str] = mapped_column(String(100))
    target_type: Mapped[str] = mapped_column(String(50))
    target_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(JsonType)
    request_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    # Sorted partner ids; NULL on rows written before concerns existed (hashed without it).
    concerns: Mapped[list[str] | None] = mapped_column(JsonType, nullable=True)

    __table_args__ = (
        Index("ix_audit_log_action", "action"),
        Index("ix_audit_log_target", "target_id"),
    )


class AuditConcern(Base):
    """An index of ``AuditEntry.concerns`` (which stays the source of truth, inside the hash):
    one row per partner an entry concerns, so a partner's entries are read by key, newest
    first, without scanning the log. Written with the entry; append-only like it."""

    __tablename__ = "audit_log_concerns"

    partner_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("audit_log.seq"), primary_key=True, autoincrement=False
    )


class AuditEvent(msgspec.Struct, frozen=True):
    """What happened, before it is given a place in the chain."""

    actor: str
    action: str
    target_type: str
    target_id: str | None = None
    partner_id: str | None = None
    details: dict[str, Any] = msgspec.field(default_factory=dict)
    request_id: str | None = None
    # The partners the entry concerns; None: the acting partner alone (none for the system
    # and admins). Resolved once, in _new_entry.
    concerns: tuple[str, ...] | None = None


def _resolved_concerns(event: AuditEvent) -> list[str]:
    if event.concerns is None:
        return [event.partner_id] if event.partner_id else []
    return sorted({str(p) for p in event.concerns})


def _canonical(seq: int, at: datetime, event: AuditEvent | AuditEntry) -> bytes:
    body = {
        "seq": seq,
        "at": at.astimezone(UTC).isoformat(timespec="microseconds"),
        "actor": event.actor,
        "partner_id": event.partner_id,
        "action": event.action,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "details": event.details,
        "request_id": event.request_id,
    }
    # Only rows that carry concerns hash them: older rows (NULL) keep their hashes.
    if event.concerns is not None:
        body["concerns"] = list(event.concerns)
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()


def chain_hash(prev_hash: str, seq: int, at: datetime, event: AuditEvent | AuditEntry) -> str:
    return hashlib.sha256(prev_hash.encode() + b"\n" + _canonical(seq, at, event)).hexdigest()


def _new_entry(head: tuple[int, str] | None, event: AuditEvent) -> AuditEntry:
    seq, prev = (head[0] + 1, head[1]) if head else (1, GENESIS)
    # Stored with microsecond precision on both databases; hashed the same way.
    at = datetime.now(UTC)
    # The details must survive a JSON round trip unchanged for the hash to verify later.
    details = json.loads(json.dumps(event.details, default=str))
    concerns = _resolved_concerns(event)
    event = msgspec.structs.replace(event, details=details, concerns=tuple(concerns))
    return AuditEntry(
        seq=seq,
        at=at,
        actor=event.actor,
        partner_id=event.partner_id,
        action=event.action,
        target_type=event.target_type,
        target_id=event.target_id,
        details=details,
        request_id=event.request_id,
        concerns=concerns,
        prev_hash=prev,
        hash=chain_hash(prev, seq, at, event),
    )


def _concern_rows(entry: AuditEntry) -> list[dict[str, Any]]:
    return [{"partner_id": p, "seq": entry.seq} for p in entry.concerns or []]


def _entry_row(entry: AuditEntry) -> dict[str, Any]:
    return {c.key: getattr(entry, c.key) for c in AuditEntry.__table__.columns}


_CONCERNS = insert(AuditConcern)


_HEAD = select(AuditEntry.seq, AuditEntry.hash).order_by(AuditEntry.seq.desc()).limit(1)
_PG_LOCK = text("SELECT pg_advisory_xact_lock(:id)").bindparams(id=AUDIT_LOCK_ID)
_ENTRIES = insert(AuditEntry)
# The session's events not yet chained: (the savepoint they were appended in, if any; event).
_PENDING = "audit_pending"


def append_sync(session: Session, event: AuditEvent) -> None:
    """Append ``event`` to the log with the caller's transaction: it is chained when that
    transaction commits (and dropped if it, or the savepoint it was appended in, rolls back).

    Chaining takes the chain's lock, so it waits until the commit: a writer holds the lock
    for its commit alone, not for the rest of its transaction (every audited write used to
    queue behind the slowest one in flight)."""
    if session.get_transaction() is None:
        session.connection()  # begun, so that closing the session without a commit drops it
    _pend(session, event)


async def append(session: AsyncSession, event: AuditEvent) -> None:
    """The same as :func:`append_sync` for the async session."""
    if session.get_transaction() is None:
        await session.connection()
    _pend(session.sync_session, event)


def _pend(session: Session, event: AuditEvent) -> None:
    savepoint = session.get_nested_transaction()
    session.info.setdefault(_PENDING, []).append((savepoint, event))


def _chain_pending(session: Session) -> None:
    """``before_commit`` of the session's transaction: give its pending events their places
    in the chain. A savepoint's release leaves them pending: rows written inside a savepoint
    would go with a rollback of one around it, whoever's events they were."""
    if session.get_nested_transaction() is not None:
        return
    pending = session.info.pop(_PENDING, None)
    if not pending:
        return
    # The transaction's own changes first: once the chain's lock is held, nothing but the
    # entries and the commit (no row lock another writer holds, waiting for this lock).
    session.flush()
    if session.get_bind().dialect.name == "postgresql":
        session.execute(_PG_LOCK)
    head = session.execute(_HEAD).first()
    last = (int(head[0]), str(head[1])) if head else None
    entries = []
    for _, event in pending:
        entry = _new_entry(last, event)
        entries.append(entry)
        last = (entry.seq, entry.hash)
    session.execute(_ENTRIES, [_entry_row(e) for e in entries])
    concerns = [row for e in entries for row in _concern_rows(e)]
    if concerns:
        session.execute(_CONCERNS, concerns)


def _drop_rolled_back(session: Session, previous: SessionTransaction) -> None:
    """``after_soft_rollback`` of a savepoint: forget the events appended in it (or in a
    savepoint inside it)."""
    pending = session.info.get(_PENDING)
    if pending and previous.nested:
        session.info[_PENDING] = [
            (t, e) for t, e in pending if not any(a is previous for a in _and_parents(t))
        ]


def _and_parents(transaction: SessionTransaction | None) -> Iterator[SessionTransaction]:
    while transaction is not None:
        yield transaction
        transaction = transaction.parent


def _forget_at_end(session: Session, transaction: SessionTransaction) -> None:
    """``after_transaction_end`` of the session's transaction: whatever was not chained by
    its commit (it rolled back, or the session closed) is dropped with it."""
    if transaction.parent is None:
        session.info.pop(_PENDING, None)


def _none_left(session: Session) -> None:
    """``after_commit``: a commit of the session's transaction while a savepoint was still
    open does not chain (the hook above sees the savepoint); say so rather than drop them."""
    if session.get_nested_transaction() is None and session.info.get(_PENDING):
        raise RuntimeError(
            "audit entries were appended but not chained: commit the savepoint first"
        )


orm_events.listen(Session, "before_commit", _chain_pending)
orm_events.listen(Session, "after_soft_rollback", _drop_rolled_back)
orm_events.listen(Session, "after_transaction_end", _forget_at_end)
orm_events.listen(Session, "after_commit", _none_left)


class SignedHead(msgspec.Struct):
    count: int
    head_hash: str
    signed_at: int
    kid: str
    signature: str  # JWS compact (Ed25519) over {"count", "head_hash", "signed_at"}


async def current_head(session: AsyncSession) -> tuple[int, str]:
    head = (await session.execute(_HEAD)).first()
    return (int(head[0]), str(head[1])) if head else (0, GENESIS)


def sign_head(keyring: Keyring, count: int, head_hash: str) -> SignedHead:
    signed_at = int(time.time())
    payload = json.dumps(
        {"count": count, "head_hash": head_hash, "signed_at": signed_at}, sort_keys=True
    )
    kid = keyring.audit_key.kid or ""
    token = jws.serialize_compact(
        {"alg": AUDIT_ALG, "kid": kid}, payload, keyring.audit_key, algorithms=[AUDIT_ALG]
    )
    return SignedHead(
        count=count, head_hash=head_hash, signed_at=signed_at, kid=kid, signature=token
    )


def verify_head_signature(keyring: Keyring, head: SignedHead) -> bool:
    try:
        obj = jws.deserialize_compact(
            head.signature, keyring.audit_public_keys(), algorithms=[AUDIT_ALG]
        )
    except (JoseError, ValueError):
        return False
    claimed = json.loads(obj.payload)
    return bool(
        claimed.get("count") == head.count
        and claimed.get("head_hash") == head.head_hash
        and claimed.get("signed_at") == head.signed_at
    )


class ChainReport(msgspec.Struct):
    ok: bool
    rows: int
    problems: list[str]


def verify_chain(
    entries: Iterable[AuditEntry], signed_head: SignedHead | None = None
) -> ChainReport:
    """Recompute the chain; report edited, deleted, reordered or truncated rows."""
    problems: list[str] = []
    prev = GENESIS
    expected_seq = 1
    hashes: dict[int, str] = {}
    count = 0
    for entry in entries:
        count += 1
        if entry.seq != expected_seq:
            problems.append(f"row {expected_seq} is missing (next row found is {entry.seq})")
            expected_seq = entry.seq
        if entry.prev_hash != prev:
            problems.append(f"row {entry.seq} does not link to the row before it")
        if chain_hash(entry.prev_hash, entry.seq, entry.at, entry) != entry.hash:
            problems.append(f"row {entry.seq} was altered: its content does not match its hash")
        hashes[entry.seq] = entry.hash
        prev = entry.hash
        expected_seq += 1
    if signed_head is not None:
        if signed_head.count > count:
            problems.append(
                f"the log holds {count} rows but a signed head attests {signed_head.count}: "
                "rows were removed from the tail"
            )
        elif signed_head.count and hashes.get(signed_head.count) != signed_head.head_hash:
            problems.append(f"row {signed_head.count} differs from the signed head's hash")
    return ChainReport(ok=not problems, rows=count, problems=problems)


class Actor(msgspec.Struct, frozen=True):
    """Who acts, as the audit log names them: a client, a console user, or the system."""

    name: str
    partner_id: str | None = None
    request_id: str | None = None

    def event(
        self,
        action: str,
        target_type: str,
        target_id: str | None = None,
        *,
        concerns: Iterable[object] | None = None,
        **details: Any,
    ) -> AuditEvent:
        """``concerns``: the partners (ids) the entry concerns; by default the actor's own.
        Pass both members for partnership and offer actions, the partner acted upon for an
        admin's action on a partner."""
        return AuditEvent(
            actor=self.name,
            action=action,
            target_type=target_type,
            target_id=target_id,
            partner_id=self.partner_id,
            details=details,
            request_id=self.request_id,
            concerns=None if concerns is None else tuple(str(p) for p in concerns),
        )


SYSTEM = Actor(name="system")


# -- entries without a partner: key operations and job runs ----------------------------------
CLI_ADMIN = "cli:admin"


def key_operation_event(
    operation: str, kind: str, key_id: str | None = None, *, actor: str = CLI_ADMIN, **details: Any
) -> AuditEvent:
    """The entry for one ``hub admin keys`` operation (``keys.<operation>``, e.g.
    ``keys.signing_rotated``): ``kind`` is the key's kind (signing, audit, match, data),
    ``key_id`` its kid or version; details never hold key material. It concerns no partner."""
    return AuditEvent(
        actor=actor,
        action=f"keys.{operation}",
        target_type="keyring",
        target_id=key_id or kind,
        details={"kind": kind, **details},
        concerns=(),
    )


# Counts that say how much is left or that nothing ran, not that anything changed.
NO_CHANGE_COUNTS = frozenset({"skipped", "remaining"})


def job_run_event(
    name: str,
    run_id: int,
    status: str,
    counts: dict[str, int] | None,
    *,
    failed: bool,
    error: str | None = None,
) -> AuditEvent | None:
    """The entry for a finished job run (``job.<status>``), or None for a run that neither
    changed nor disclosed anything and did not fail (most runs, every few seconds). It
    concerns no partner."""
    counts = counts or {}
    changed = any(v for k, v in counts.items() if k not in NO_CHANGE_COUNTS)
    if not (changed or failed):
        return None
    details: dict[str, Any] = {"run_id": run_id, "counts": counts}
    if error:
        details["error"] = error
    return AuditEvent(
        actor=SYSTEM.name,
        action=f"job.{status}",
        target_type="job",
        target_id=name,
        details=details,
        concerns=(),
    )

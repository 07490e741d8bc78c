"""Loading a brand's customer base as identifier records, in bulk.

A brand's first load meets no records, so it is what the upload processor's apply does for a
partner's first upload (``UploadApplier``, "a first upload skips every join"): every record
is new, and each person gets one consent event granting what they consented to. The demo
writes those rows straight into ``identifier_records`` and ``consent_events`` -- ``COPY``
on PostgreSQL, one ``executemany`` per batch on SQLite -- in key order, so the primary key
is written front to back; staging them first would write and read every row twice, which
on SQLite is most of the load time. The rows hold what an upload's rows hold: the match key
(HMAC under the keyring's newest match key) and the digest sealed under the data key, bound
to the partner and id type (:class:`~partners.identifiers.crypto.IdentifierCrypto`'s batch
helpers), never a digest in clear.

Like every writer of a partner's records, the load raises the partner's change counter first
(``IdentifierService.touch``: the partner's lock), and is one transaction: a brand is loaded
whole or not at all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import msgspec
import numpy as np
from sqlalchemy import Column, Dialect, Table, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.core import audit
from hub.core.audit import Actor
from hub.demo.brands import CITIES, TIERS
from hub.demo.people import CustomerBase, Population
from partners.identifiers.crypto import IdentifierCrypto
from partners.identifiers.models import ID_TYPE_CODES
from partners.identifiers.records import current
from partners.identifiers.service import EVENTS, RECORD_COLUMNS, RECORDS, IdentifierService
from partners.identifiers.uploads.apply import apply_settings

EMAIL, PHONE = ID_TYPE_CODES["email"], ID_TYPE_CODES["phone"]
WRITE_ROWS = 20_000  # rows per executemany / progress step
EVENT_COLUMNS = ("partner_id", "customer_ref", "granted", "withdrawn", "cause", "at")


@dataclass
class MatchKeys:
    """The population's match keys, computed once and shared by every brand (a match key
    does not depend on the partner; only the sealed digest does)."""

    version: int
    email: list[bytes | None]
    phone: list[bytes | None]


def match_keys(crypto: IdentifierCrypto, population: Population) -> MatchKeys:
    version = crypto.keys.match_version
    keyer = crypto.keyer(version)
    return MatchKeys(
        version=version,
        email=[None if d is None else keyer(d) for d in population.email],
        phone=[None if d is None else keyer(d) for d in population.phone],
    )


def _attribute_texts(base: CustomerBase) -> list[list[list[str]]]:
    """JSON of every (tier, city, extra) combination, encoded once: [tier][city][extra]."""
    brand = base.brand
    return [
        [
            [
                msgspec.json.encode({"tier": tier, "city": city, brand.extra_name: extra}).decode()
                for extra in brand.extra_values
            ]
            for city in CITIES
        ]
        for tier in TIERS
    ]


def _key_order(keys: list[bytes | None], people: list[int]) -> list[int]:
    """Positions of ``people`` sorted by their match key (numpy sorts fixed-width bytes fast)."""
    column = np.array([keys[p] for p in people], dtype="S32")
    return [int(i) for i in np.argsort(column, kind="stable")]


@dataclass
class PreparedLoad:
    """A brand's rows, keyed and sealed, ready to write (columns as ``RECORD_COLUMNS`` and
    ``EVENT_COLUMNS``, values as the driver takes them)."""

    partner_id: UUID
    records: list[tuple[Any, ...]]
    events: list[tuple[Any, ...]]


def prepare_load(
    base: CustomerBase,
    population: Population,
    keys: MatchKeys,
    crypto: IdentifierCrypto,
    partner_id: UUID,
    dialect: Dialect,
) -> PreparedLoad:
    """The brand's records sorted by (id type, match key), and one consent event per person
    who consented to anything (CPU only: runs in a thread while the previous brand is
    written).

    Customers are numbered in the order of their email's key, so the person index
    (partner, customer_ref) is written front to back too.
    """
    partner = _bound(RECORDS.c.partner_id, partner_id, dialect)
    now = _bound(RECORDS.c.updated_at, datetime.now(UTC), dialect)
    texts = _attribute_texts(base)
    data_version, seal_email = crypto.sealer(partner_id, EMAIL)
    _, seal_phone = crypto.sealer(partner_id, PHONE)
    version = keys.version
    city = population.city.tolist()
    people = base.people.tolist()
    tiers, extras = base.tier.tolist(), base.extra.tolist()
    consents, phones = base.consents.tolist(), base.holds_phone.tolist()
    emails, email_keys = population.email, keys.email
    phone_digests, phone_keys = population.phone, keys.phone
    prefix = base.brand.ref_prefix
    refs = [""] * len(people)
    records: list[tuple[Any, ...]] = []
    append = records.append
    for number, i in enumerate(_key_order(email_keys, people), start=1):
        p = people[i]
        refs[i] = ref = f"{prefix}-{number:07d}"
        append(
            (partner, EMAIL, email_keys[p], version, seal_email(emails[p]), data_version, ref,
             consents[i], texts[tiers[i]][city[p]][extras[i]], now)
        )  # fmt: skip
    with_phone = [i for i in range(len(people)) if phones[i]]
    for j in _key_order(phone_keys, [people[i] for i in with_phone]):
        i = with_phone[j]
        p = people[i]
        append(
            (partner, PHONE, phone_keys[p], version, seal_phone(phone_digests[p]), data_version,
             refs[i], consents[i], texts[tiers[i]][city[p]][extras[i]], now)
        )  # fmt: skip
    events = [
        (partner, ref, mask, 0, "upload", now)
        for ref, mask in zip(refs, consents, strict=True)
        if mask
    ]
    return PreparedLoad(partner_id, records, events)


def _bound(column: Column[Any], value: Any, dialect: Any) -> Any:
    """``value`` as the column's type hands it to the driver (for raw driver writes)."""
    processor = column.type.dialect_impl(dialect).bind_processor(dialect)
    return processor(value) if processor else value


async def _write(
    session: AsyncSession,
    table: Table,
    columns: Sequence[str],
    rows: Sequence[tuple[Any, ...]],
    on_progress: Callable[[int], None],
) -> None:
    """Rows into ``table`` on the session's connection, in its transaction: ``COPY`` on
    PostgreSQL, ``executemany`` on SQLite, ``WRITE_ROWS`` at a time."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver: Any = raw.driver_connection
    names = ", ".join(columns)
    if connection.dialect.name == "postgresql":
        async with (
            driver.cursor() as cursor,
            cursor.copy(f"COPY {table.name} ({names}) FROM STDIN") as copy,
        ):
            for start in range(0, len(rows), WRITE_ROWS):
                chunk = rows[start : start + WRITE_ROWS]
                for row in chunk:
                    await copy.write_row(row)
                on_progress(len(chunk))
        return
    marks = ", ".join("?" for _ in columns)
    statement = f"INSERT INTO {table.name} ({names}) VALUES ({marks})"  # noqa: S608 (our names)
    for start in range(0, len(rows), WRITE_ROWS):
        chunk = rows[start : start + WRITE_ROWS]
        await driver.executemany(statement, chunk)
        on_progress(len(chunk))


async def record_count(session: AsyncSession, partner_id: UUID) -> int:
    found = await session.scalar(
        select(func.count()).select_from(RECORDS).where(current(RECORDS, partner_id))
    )
    return int(found or 0)


async def load_customer_base(
    session: AsyncSession,
    crypto: IdentifierCrypto,
    prepared: PreparedLoad,
    actor: Actor,
    on_progress: Callable[[int], None],
) -> int:
    """Write the brand's records and consent events and commit. Returns the records created:
    none when the partner holds records already (another process loaded them)."""
    partner_id = prepared.partner_id
    await IdentifierService(session, crypto).touch(partner_id)
    if await record_count(session, partner_id):
        await session.rollback()
        return 0
    async with apply_settings(session):
        await _write(session, RECORDS, RECORD_COLUMNS, prepared.records, on_progress)
        await _write(session, EVENTS, EVENT_COLUMNS, prepared.events, lambda _: None)
        created = len(prepared.records)
        await audit.append(
            session,
            actor.event(
                "identifiers.uploaded",
                "partner",
                str(partner_id),
                accepted=created,
                created=created,
                updated=0,
            ),
        )
        await session.commit()
    return created

"""``matching.loader._build`` against a reference computed row by row in Python, on both
databases: the records that count (generation, retired, partner; or as a pending generation
will leave them), people in bytewise reference order, a person's attributes from their last
record that has each (``merged_attributes``), an attribute with more than 100 values left out,
records under an older match-key version keyed again, and batches that end in the middle of a
person (the build takes rows a batch at a time)."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import numpy as np
import pytest
from sqlalchemy import BigInteger, Column, MetaData, Table, insert

from hub.core.db import create_hub_sync_engine
from matching import loader
from matching.engine import Attribute, make_side
from partners.identifiers.crypto import IdentifierCrypto
from partners.identifiers.records import RECORDS
from partners.identifiers.records import STATE as REAL_STATE
from tests.conftest import drop_pg_database, make_database

METADATA = MetaData()
RECORDS.to_metadata(METADATA)
STATE = Table(  # what the build reads of identifier_state (the real one needs partners)
    "identifier_state",
    METADATA,
    Column("partner_id", REAL_STATE.c.partner_id.type, primary_key=True),
    Column("generation", BigInteger, nullable=False),
    Column("version", BigInteger, nullable=False),
)
NOW = 2


class Keys:
    """Two match-key versions (1 older, 2 newest) and one data key."""

    match_version = 2
    data_version = 1

    def match_secret(self, version: int) -> bytes:
        return bytes([version]) * 32

    def data_secret(self, version: int) -> bytes:
        return b"d" * 32

    def live_match_versions(self) -> list[int]:
        return [1, 2]


@pytest.fixture
def database(backend: str, tmp_path: Path) -> Iterator[str]:
    url = make_database(backend, tmp_path)
    engine = create_hub_sync_engine(url, writer=True)
    try:
        METADATA.create_all(engine)
        yield url
    finally:
        engine.dispose()
        if backend == "postgres":
            drop_pg_database(url)


def records(partner: UUID, crypto: IdentifierCrypto, rng: random.Random) -> list[dict[str, Any]]:
    """People with one to four records each: keys under both match-key versions, equal and
    unequal change times, attribute sets that overlap and override each other, some records
    retired or only in the next (pending) generation, references that are not ASCII."""
    base = datetime(2026, 12, 1, tzinfo=UTC)
    refs = [f"p{n:03d}" for n in range(60)] + ["Zoë", "zoe", "ümlaut", "Ω-7", "a b"]
    rows = []
    for ref in refs:
        for _ in range(rng.randint(1, 4)):
            id_type = rng.choice((1, 2))
            digest = rng.randbytes(32)
            version = rng.choice((1, 2))
            data_version, sealed = crypto.encrypt(digest, partner, id_type)
            attributes: dict[str, str] | None = rng.choice(
                (
                    None,
                    {"tier": rng.choice(("gold", "silver"))},
                    {"city": rng.choice(("Paris", "Rome")), "tier": "blue"},
                    {"code": f"c{rng.randrange(150)}"},
                    {},
                )
            )
            rows.append(
                {
                    "partner_id": partner,
                    "id_type": id_type,
                    "match_key": crypto.match_key(digest, version),
                    "generation": rng.choice((0, 1, NOW, NOW + 1)),
                    "retired": rng.choice((None, None, NOW, NOW + 1)),
                    "key_version": version,
                    "digest_enc": sealed,
                    "data_version": data_version,
                    "customer_ref": ref,
                    "consents": rng.randrange(0, 8),
                    "attributes": attributes,
                    "updated_at": base + timedelta(seconds=rng.choice((0, 0, 1, 2))),
                    "_digest": digest,
                }
            )
    for n in range(110):  # 110 people with a code each: "code" has more than 100 values
        digest = rng.randbytes(32)
        data_version, sealed = crypto.encrypt(digest, partner, 1)
        rows.append(
            rows[0]
            | {
                "id_type": 1,
                "match_key": crypto.match_key(digest, 2),
                "generation": 0,
                "retired": None,
                "key_version": 2,
                "digest_enc": sealed,
                "data_version": data_version,
                "customer_ref": f"q{n:03d}",
                "attributes": {"code": f"c{n}"},
                "_digest": digest,
            }
        )
    return rows


def reference(rows: list[dict[str, Any]], crypto: IdentifierCrypto, as_of: int) -> Any:
    """What the build must give, row by row."""
    counted = [
        r
        for r in rows
        if r["generation"] <= as_of and (r["retired"] is None or r["retired"] > as_of)
    ]
    counted.sort(
        key=lambda r: (r["customer_ref"].encode(), r["updated_at"], r["id_type"], r["match_key"])
    )
    refs = sorted({r["customer_ref"] for r in counted}, key=str.encode)
    index = {ref: n for n, ref in enumerate(refs)}
    keys = [crypto.match_key(r["_digest"], Keys.match_version)[:16] for r in counted]
    pairs = np.frombuffer(b"".join(keys), dtype=">u8").reshape(-1, 2).astype(np.uint64)
    merged: dict[str, dict[str, str]] = {ref: {} for ref in refs}
    for r in counted:
        text = None if r["attributes"] is None else json.dumps(r["attributes"])
        merged[r["customer_ref"]].update(loader.merged_attributes([text]))
    seen: dict[str, set[str]] = {}
    for r in counted:
        for name, value in (r["attributes"] or {}).items():
            seen.setdefault(name, set()).add(value)
    over = frozenset(name for name, values in seen.items() if len(values) > 100)
    attributes = {}
    for name in sorted(set(seen) - over):
        vocabulary = tuple(sorted({m[name] for m in merged.values() if name in m}))
        codes = np.array(
            [vocabulary.index(merged[ref][name]) if name in merged[ref] else -1 for ref in refs],
            dtype=np.int16,
        )
        attributes[name] = Attribute(codes, vocabulary)
    side = make_side(
        pairs[:, 0],
        pairs[:, 1],
        np.array([index[r["customer_ref"]] for r in counted], dtype=np.int32),
        np.array([r["consents"] for r in counted], dtype=np.uint8),
        len(refs),
        attributes,
    )
    return side, refs, over


@pytest.mark.parametrize("batch", [3, 7, 50_000])
def test_the_build_equals_a_row_by_row_reference(
    database: str, batch: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loader, "FETCH_ROWS", batch)
    crypto = IdentifierCrypto(Keys())
    rng = random.Random(batch)
    partner, other = uuid4(), uuid4()
    rows = records(partner, crypto, rng)
    assert any(r["key_version"] == 1 for r in rows)
    engine = create_hub_sync_engine(database, writer=True)
    try:
        with engine.begin() as conn:
            conn.execute(insert(STATE), [{"partner_id": partner, "generation": NOW, "version": 5}])
            stored = [{k: v for k, v in r.items() if k != "_digest"} for r in rows]
            theirs = [
                r | {"partner_id": other} for r in stored[:40]
            ]  # the same keys, another brand
            conn.execute(insert(RECORDS), stored + theirs)
        for generation in (None, NOW + 1):
            with loader._snapshot(engine) as conn:
                side, people, over = loader._build(
                    conn, partner, crypto, Keys.match_version, generation=generation
                )
            want, refs, want_over = reference(rows, crypto, NOW if generation is None else NOW + 1)
            assert people.refs(range(len(people))) == refs
            assert side.n_people == want.n_people == len(refs)
            for column in ("hi", "lo", "person", "consent"):
                got, expected = getattr(side, column), getattr(want, column)
                assert got.dtype == expected.dtype, column
                np.testing.assert_array_equal(got, expected, err_msg=column)
            assert over == want_over
            assert "code" in over  # the quota case was exercised
            assert sorted(side.attributes) == sorted(want.attributes)
            for name, attribute in want.attributes.items():
                assert side.attributes[name].values == attribute.values, name
                np.testing.assert_array_equal(side.attributes[name].codes, attribute.codes)
    finally:
        engine.dispose()

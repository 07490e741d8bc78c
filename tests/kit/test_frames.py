"""hash_frame agrees with the kit's per-row path (files.parse_person + hash_identifier) on
the published UID2 vectors, on messy rows and on random ones; its shortcut past the contact
detector never lets a contact detail through; digests are encoded exactly as base64/hex."""

from __future__ import annotations

import base64
import hashlib
import io
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from partners.kit import hash_identifier, looks_like_contact
from partners.kit.files import InvalidRow, parse_person
from partners.kit.frame_files import read_table
from partners.kit.frames import encode_digests, hash_frame, plainly_no_contact
from partners.kit.normalize import InvalidIdentifier
from tests.kit.uid2_vectors import EMAIL_INVALID, EMAIL_VALID, PHONE_INVALID, PHONE_VALID
from tests.unit.contact_corpus import PASSED, REFUSED


def per_row(frame: pd.DataFrame) -> tuple[list[tuple[Any, ...]], dict[Any, tuple[str, str]]]:
    """The reference: each row through parse_person and hash_identifier, as `hub hash` does."""
    records: list[tuple[Any, ...]] = []
    refused: dict[Any, tuple[str, str]] = {}
    for label, row in zip(frame.index, frame.to_dict("records"), strict=True):
        cleaned = {k: (None if v is None or v != v else v) for k, v in row.items()}
        try:
            person = parse_person(cleaned)
            hashed = []
            for id_type, raw in person.identifiers:
                try:
                    hashed.append((id_type, hash_identifier(id_type, raw)))
                except InvalidIdentifier as exc:
                    raise InvalidRow(id_type, exc.reason) from None
        except InvalidRow as exc:
            refused[label] = (exc.field, exc.reason)
            continue
        attributes = tuple(sorted(person.attributes.items()))
        records += [
            (id_type, digest, person.customer_ref, "|".join(person.consents), attributes)
            for id_type, digest in hashed
        ]
    return records, refused


def by_frame(frame: pd.DataFrame) -> tuple[list[tuple[Any, ...]], dict[Any, tuple[str, str]]]:
    records, refused = hash_frame(frame)
    attributes = [c for c in records.columns if c.startswith("attr.")]
    rows = [
        (
            r["id_type"],
            r["id_hash"],
            r["customer_ref"],
            r["consents"],
            tuple(
                sorted(
                    (a.removeprefix("attr."), r[a])
                    for a in attributes
                    if isinstance(r[a], str) and r[a]
                )
            ),
        )
        for r in records.to_dict("records")
    ]
    return rows, {r.row: (r.field, r.reason) for r in refused.itertuples()}


def test_published_uid2_vectors_hash_as_the_per_identifier_function_does() -> None:
    emails = [raw for raw, *_ in EMAIL_VALID] + [raw for raw, _ in EMAIL_INVALID]
    phones = [raw for raw, *_ in PHONE_VALID] + [raw for raw, _ in PHONE_INVALID if raw]
    frame = pd.DataFrame(
        {
            "customer_ref": [f"c{n}" for n in range(len(emails) + len(phones))],
            "email": emails + [None] * len(phones),
            "phone": [None] * len(emails) + phones,
        }
    )
    expected, expected_refused = per_row(frame)
    got, got_refused = by_frame(frame)
    assert sorted(got) == sorted(expected)  # emails first, then phones: order differs
    assert got_refused == expected_refused
    # The published digests themselves, not only agreement with the scalar path.
    published = {raw: b64 for raw, _, _, b64, _ in EMAIL_VALID if b64}
    records = hash_frame(frame).records
    for raw, b64 in published.items():
        position = emails.index(raw)
        assert records.loc[records.customer_ref == f"c{position}", "id_hash"].item() == b64


MESSY = pd.DataFrame(
    {
        "customer_ref": [
            "C-1",
            " C-2 ",
            "",
            None,
            "john@example.com",
            "(415) 555-2671",
            "C-7",
            "C-8",
            "C-9",
            "C-10",
            "C-11",
            "C-12",
            "C-13",
        ],
        "email": [
            " Jane.Doe+news@GMAIL.com ",
            "x@y.org",
            "a@b.org",
            "a@b.org",
            "a@b.org",
            "a@b.org",
            "no-at-sign",
            "two@@ats.org",
            "ÉLODIE@Exemple.FR",
            None,
            "",
            "c@d.org",
            "e@f.org",
        ],
        "phone": [
            "+14155552671",
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            "+44 20 7946 0958",
            "+123",
            None,
            "+441234567890",
        ],
        "consents": [
            "analytics|joint_offers",
            "rewards_sharing",
            "",
            None,
            "analytics",
            "analytics",
            "analytics",
            "analytics",
            "analytics",
            "analytics",
            "analytics",
            "marketing",
            "joint_offers|analytics|analytics",
        ],
        "attr.tier": [
            "gold",
            "silver",
            "gold",
            "gold",
            "gold",
            "gold",
            "gold",
            "gold",
            "jane@example.com",
            "gold",
            "gold",
            "gold",
            None,
        ],
    }
)


def test_messy_rows_are_hashed_or_refused_exactly_as_row_by_row() -> None:
    expected, expected_refused = per_row(MESSY)
    got, got_refused = by_frame(MESSY)
    assert sorted(got) == sorted(expected)  # emails first, then phones: order differs
    assert got_refused == expected_refused
    assert set(got_refused) == {2, 3, 4, 5, 6, 7, 8, 9, 10, 11}


def test_refused_rows_never_carry_a_value() -> None:
    refused = hash_frame(MESSY).refused
    assert list(refused.columns) == ["row", "field", "reason"]
    text = refused.to_csv()
    for value in ("john@example.com", "555-2671", "no-at-sign", "jane@example.com", "7946"):
        assert value not in text


def test_a_row_with_an_email_and_a_phone_gives_two_records() -> None:
    records = hash_frame(MESSY.iloc[[0]]).records
    assert list(records.id_type) == ["email", "phone"]
    assert list(records.customer_ref) == ["C-1", "C-1"]
    assert records.id_hash[0] == hash_identifier("email", "janedoe@gmail.com")


def test_named_columns_and_hex_digests() -> None:
    frame = pd.DataFrame({"ref": ["a1"], "mail": ["A@B.org"], "tier": ["gold"]})
    records, refused = hash_frame(
        frame, customer_ref="ref", email="mail", attributes=["tier"], encoding="hex"
    )
    assert refused.empty
    assert records.to_dict("records") == [
        {
            "id_type": "email",
            "id_hash": hashlib.sha256(b"a@b.org").hexdigest(),
            "customer_ref": "a1",
            "consents": "",
            "attr.tier": "gold",
        }
    ]


def test_an_attribute_column_named_like_an_address_is_refused_without_echoing_it() -> None:
    frame = pd.DataFrame({"customer_ref": ["a"], "email": ["a@b.org"], "jo@x.org": ["y"]})
    with pytest.raises(ValueError, match="looks like an email") as caught:
        hash_frame(frame, attributes=["jo@x.org"])
    assert "jo@x.org" not in str(caught.value)


texts = st.text(
    alphabet=st.sampled_from(list("abcdeATDOTat0123456789 .-_:/@+()[]%&#\u200b\uff20")),
    max_size=30,
)


@settings(max_examples=400, deadline=None)
@given(texts)
def test_the_shortcut_past_the_contact_detector_only_passes_what_it_would_pass(
    text: str,
) -> None:
    if plainly_no_contact(text):
        assert not looks_like_contact(text)


@pytest.mark.parametrize("text", REFUSED)
def test_every_contact_detail_of_the_corpus_goes_to_the_detector(text: str) -> None:
    assert not plainly_no_contact(text)


def test_the_shortcut_covers_ordinary_references() -> None:
    assert plainly_no_contact("C-000123456")
    assert plainly_no_contact("loyalty:9912-77")
    assert sum(plainly_no_contact(t) for t in PASSED) > 0


rows = st.fixed_dictionaries(
    {
        "customer_ref": st.one_of(
            st.none(), st.sampled_from(["c1", " c2", "", "a@b.com", "(415) 555-2671", "é"])
        ),
        "email": st.one_of(
            st.none(),
            st.text(alphabet=st.sampled_from(list("aB.+@ É")), max_size=8),
            st.sampled_from(["x.y+z@gmail.com", "A@B.c", " @x"]),
        ),
        "phone": st.one_of(
            st.none(),
            st.text(alphabet=st.sampled_from(list("+0123456789 -")), max_size=17),
        ),
        "consents": st.sampled_from(["", "analytics", "joint_offers|analytics", "bogus"]),
        "attr.tier": st.sampled_from(["", "gold", "a@b.com", "+14155552671"]),
    }
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(rows, min_size=1, max_size=25))
def test_random_frames_agree_with_the_per_row_path(batch: list[dict[str, Any]]) -> None:
    frame = pd.DataFrame(batch)
    expected, expected_refused = per_row(frame)
    got, got_refused = by_frame(frame)
    assert sorted(got) == sorted(expected)  # emails first, then phones: order differs
    assert got_refused == expected_refused


def test_digests_are_encoded_as_standard_base64_and_hex() -> None:
    digests = [hashlib.sha256(str(n).encode()).digest() for n in range(1000)]
    joined = b"".join(digests)
    assert [v.decode() for v in encode_digests(joined, "base64")] == [
        base64.b64encode(d).decode() for d in digests
    ]
    assert [v.decode() for v in encode_digests(joined, "hex")] == [d.hex() for d in digests]
    with pytest.raises(ValueError, match="encoding"):
        encode_digests(joined, "base32")


def test_read_table_reads_csv_ndjson_parquet_and_excel(tmp_path: Any) -> None:
    frame = pd.DataFrame(
        {"customer_ref": ["a", "b"], "email": ["a@x.org", "b@x.org"], "consents": ["", "x"]}
    )
    frame.to_csv(tmp_path / "f.csv", index=False)
    frame.to_json(tmp_path / "f.ndjson", orient="records", lines=True)
    frame.to_parquet(tmp_path / "f.parquet")
    frame.to_excel(tmp_path / "f.xlsx", index=False)
    for name in ("f.csv", "f.ndjson", "f.parquet", "f.xlsx"):
        read = read_table(tmp_path / name).fillna("")
        assert read.astype(str).to_dict("records") == frame.to_dict("records"), name


def test_the_digest_column_is_arrow_strings_and_writes_as_csv() -> None:
    """The encoded column is Arrow-backed strings built from one buffer (no Python string
    per digest), and it writes out like any column."""
    frame = pd.DataFrame(
        {
            "customer_ref": [f"c{n}" for n in range(2000)],
            "email": [f"u{n}@x.org" for n in range(2000)],
        }
    )
    records = hash_frame(frame).records
    assert str(records["id_hash"].dtype) == "string"
    assert records["id_hash"].array.__class__.__name__ == "ArrowStringArray"
    assert np.all(records["id_hash"].str.len() == 44)
    buffer = io.StringIO()
    records.to_csv(buffer, index=False)
    assert buffer.getvalue().count("\n") == 2001


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(texts, min_size=1, max_size=40))
def test_references_are_refused_exactly_when_the_detector_refuses_them(refs: list[str]) -> None:
    """The frame's shortcut runs in Arrow, not through plainly_no_contact: same answers."""
    frame = pd.DataFrame({"customer_ref": refs, "email": "a@b.org"})
    _, expected_refused = per_row(frame)
    _, got_refused = by_frame(frame)
    assert got_refused == expected_refused

"""The contact-details detector (partners/kit/contact.py) against fixed corpora, and every
place that refuses contact details asking it (one rule for the hub and the kit)."""

from __future__ import annotations

import base64
import hashlib
import string

import msgspec
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from partners.identifiers.uploads.rows import check_lines
from partners.identifiers.validation import MAX_REF, RecordError, check_record
from partners.kit import looks_like_contact
from partners.kit.contact import has_email, has_phone, visible_text
from partners.kit.files import InvalidRow, parse_person
from tests.unit.contact_corpus import LOYALTY_NUMBERS, PASSED, REFUSED

ID_HASH = base64.b64encode(hashlib.sha256(b"someone@example.org").digest()).decode()
INVISIBLE = st.sampled_from(("\u200b", "\u200c", "\u200d", "\u2060", "\u00ad", "\ufeff"))


def test_the_corpora_are_large_enough() -> None:
    assert len(set(REFUSED)) == len(REFUSED) >= 100
    assert len(set(PASSED)) == len(PASSED) == 100
    assert len(LOYALTY_NUMBERS) >= 20
    assert all(len(n.strip("\ufeff")) <= 19 for n in LOYALTY_NUMBERS)


@pytest.mark.parametrize("text", REFUSED, ids=[f"refused-{i}" for i in range(len(REFUSED))])
def test_an_obfuscated_email_or_phone_is_refused(text: str) -> None:
    assert looks_like_contact(text)


@pytest.mark.parametrize("text", PASSED, ids=[f"passed-{i}" for i in range(len(PASSED))])
def test_a_look_alike_passes(text: str) -> None:
    assert not looks_like_contact(text)


@given(st.text("0123456789", min_size=1, max_size=19))
def test_a_digits_only_loyalty_number_always_passes(number: str) -> None:
    assert not looks_like_contact(number)


@given(st.text("0123456789", min_size=10, max_size=15), st.sampled_from(("", " ", "-", ".")))
def test_a_plus_and_ten_to_fifteen_digits_is_a_phone(digits: str, separator: str) -> None:
    grouped = separator.join(digits[i : i + 3] for i in range(0, len(digits), 3))
    assert looks_like_contact("+" + grouped)


@given(st.sampled_from(REFUSED), st.lists(st.tuples(st.integers(0, 60), INVISIBLE), max_size=4))
# Found by hypothesis: a mark inside "%40" was taken for one splitting two digit groups.
@example("john%40example.com", [(6, "\u200b")])
@example("john&#64;example.com", [(7, "\u200b")])
@example("john&#x40;example.com", [(8, "\u2060")])
# Found by hypothesis: a mark inside a date's year turned the date into digit groups.
@example("2026-11-03 415 555 2671", [(1, "\u200b")])
def test_invisible_characters_never_hide_a_refused_text(
    text: str, marks: list[tuple[int, str]]
) -> None:
    for at, mark in marks:
        text = text[:at] + mark + text[at:]
    assert looks_like_contact(text)


@given(st.text(string.ascii_letters + string.digits, min_size=1, max_size=200))
def test_ascii_letters_and_digits_alone_are_never_contact_details(text: str) -> None:
    # The bulk fast path accepts such a customer_ref without asking the detector.
    visible = visible_text(text)
    assert not has_email(visible)
    assert not has_phone(visible)


HOSTILE = "0123456789 +-.()@atdoxm\u200b\u00ad\uff20\uff10\uff0e\u3002"


@given(st.lists(st.text(HOSTILE, min_size=1, max_size=24), min_size=1, max_size=4))
def test_the_bulk_fast_path_and_the_full_check_agree_on_any_ref(refs: list[str]) -> None:
    lines = [
        msgspec.json.encode({"id_type": "email", "id_hash": ID_HASH, "customer_ref": ref})
        for ref in refs
    ]
    batch = check_lines((1, b"\n".join(lines)))
    accepted = [
        number
        for number, ref in enumerate(refs, start=1)
        if check_record(number, {"id_type": "email", "id_hash": ID_HASH, "customer_ref": ref}, [])
    ]
    assert [number for number, _ in batch.records] == accepted


@pytest.mark.parametrize("text", [t for t in REFUSED + PASSED if len(t) <= MAX_REF])
def test_records_rows_and_the_kit_refuse_exactly_what_the_detector_refuses(text: str) -> None:
    refused = looks_like_contact(text)
    as_ref = {"id_type": "email", "id_hash": ID_HASH, "customer_ref": text}
    as_value = {**as_ref, "customer_ref": "C1", "attributes": {"tier": text}}
    for record in (as_ref, as_value):
        errors: list[RecordError] = []
        assert (check_record(1, record, errors) is None) == refused
        assert text.strip() not in repr(errors) or not text.strip()
        batch = check_lines((1, msgspec.json.encode(record)))  # the bulk fast path
        assert (not batch.records) == refused
    for row in ({"customer_ref": text}, {"customer_ref": "C1", "attr.tier": text}):
        if refused:
            with pytest.raises(InvalidRow) as caught:
                parse_person({**row, "email": "someone@example.org"})
            assert text.strip() not in caught.value.reason
        else:
            parse_person({**row, "email": "someone@example.org"})


@pytest.mark.parametrize(
    "name", ["john_at_example_dot_com", "john-at-example-dot-com", "jane.at.mail.dot.org"]
)
def test_an_attribute_name_that_spells_an_address_is_refused_without_being_named(
    name: str,
) -> None:
    record = {"id_type": "email", "id_hash": ID_HASH, "customer_ref": "C1"}
    errors: list[RecordError] = []
    check_record(0, {**record, "attributes": {name: "gold"}}, errors)
    assert [e.field for e in errors] == ["attributes"]
    assert name not in repr(errors)
    batch = check_lines((1, msgspec.json.encode({**record, "attributes": {name: "gold"}})))
    assert not batch.records
    assert name not in repr(batch.errors)

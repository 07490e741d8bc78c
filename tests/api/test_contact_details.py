"""Obfuscated contact details are refused like raw ones, on every way into the hub.

Identifier records (POST /v1/identifiers and bulk NDJSON/CSV uploads, consent updates and
erasures), offer titles, descriptions and filters, partner and client names: a full-width '@',
'[at]', words, spacing, zero-width characters or look-alike digits change nothing. Each
refusal is a problem detail naming the field, never echoing the value, and nothing is
stored. A digits-only loyalty number is no phone: it is accepted end to end.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

import pytest

from partners.kit import hash_identifier
from tests.api.matching_helpers import Member, members
from tests.api.uploads_helpers import (
    NDJSON_TYPE,
    csv_body,
    email_record,
    ndjson,
    records_of,
    upload_and_wait,
)
from tests.conftest import Hub, table_counts
from tests.unit.contact_corpus import full_width

PROBLEM = "application/problem+json"
LOYALTY_NUMBER = "1234567890123456789"  # 19 digits, no '+', no separator

# (value, a fragment of it that must never come back, whatever its spelling)
OBFUSCATED = {
    "full-width-at": ("jane.doe\uff20example.com", "jane.doe"),
    "brackets": ("jane.doe [at] example [dot] com", "jane.doe"),
    "words": ("jane.doe at example dot com", "jane.doe"),
    "spaced-out": ("j a n e @ e x a m p l e . c o m", "j a n e"),
    "zero-width-email": ("ja\u200bne@exa\u200cmple\u2060.com", "mple"),
    "phone-parentheses": ("(415) 555-2671", "555-2671"),
    "phone-plus": ("+44 20 7946 0958", "7946"),
    "phone-full-width": (full_width("+44 20 7946 0958"), "7946"),
    "phone-zero-width": ("415\u200b555\u00ad2671", "2671"),
    "phone-spaced-out": ("4 1 5 5 5 5 2 6 7 1", "2 6 7 1"),
}
CASES = list(OBFUSCATED.values())
IDS = list(OBFUSCATED)
# Attribute names are ASCII letters, digits, '_', '.' and '-': only the word forms fit.
OBFUSCATED_NAMES = ["jane_at_example_dot_com", "jane.at.example.dot.com"]


def assert_refusal_names(response: Any, field: str, fragment: str) -> dict[str, Any]:
    """A 422 problem detail naming ``field`` that echoes no part of the value."""
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == 422
    assert body["type"] == "urn:hub:problem:invalid-input"
    assert field in {error["field"] for error in body["errors"]}, body
    assert_not_echoed(response.text, fragment)
    return dict(body)


GENERATED = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"  # UUIDs
    r"|\b[0-9a-f]{32}\b"  # request ids
    r"|\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})?",  # times
    re.IGNORECASE,
)


def assert_not_echoed(text: str, fragment: str) -> None:
    # The body is JSON: read its escapes back, then look for every spelling of the fragment.
    seen = unicodedata.normalize("NFKC", json.dumps(json.loads(text), ensure_ascii=False))
    # Ids, request ids and times the hub makes can hold any four digits by chance.
    seen = GENERATED.sub("", seen)
    for form in (fragment, unicodedata.normalize("NFKC", fragment)):
        assert form.casefold() not in seen.casefold()
    assert fragment.replace("\u200b", "") not in seen


@pytest.fixture(scope="module")
def pair(hub: Hub) -> tuple[Member, Member, str]:
    return members(hub)


def record(ref: str = "C1", **attributes: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id_type": "email",
        "id_hash": hash_identifier("email", "someone@example.org"),
        "customer_ref": ref,
        "consents": ["analytics"],
    }
    if attributes:
        out["attributes"] = attributes
    return out


# -- identifier records, synchronous -------------------------------------------------------


@pytest.mark.parametrize(("value", "fragment"), CASES, ids=IDS)
def test_an_obfuscated_customer_ref_is_refused(
    hub: Hub, pair: tuple[Member, Member, str], value: str, fragment: str
) -> None:
    a = pair[0]
    before = table_counts(hub.database_url)
    response = a.post(hub, "/v1/identifiers", {"records": [record("C0"), record(value)]})
    body = assert_refusal_names(response, "customer_ref", fragment)
    assert [(e["index"], e["field"]) for e in body["errors"]] == [(1, "customer_ref")]
    assert table_counts(hub.database_url) == before


@pytest.mark.parametrize(("value", "fragment"), CASES, ids=IDS)
def test_an_obfuscated_attribute_value_is_refused(
    hub: Hub, pair: tuple[Member, Member, str], value: str, fragment: str
) -> None:
    a = pair[0]
    before = table_counts(hub.database_url)
    response = a.post(hub, "/v1/identifiers", {"records": [record(tier=value)]})
    assert_refusal_names(response, "attributes", fragment)
    assert table_counts(hub.database_url) == before


@pytest.mark.parametrize("name", OBFUSCATED_NAMES)
def test_an_attribute_name_spelling_an_address_is_refused(
    hub: Hub, pair: tuple[Member, Member, str], name: str
) -> None:
    a = pair[0]
    before = table_counts(hub.database_url)
    response = a.post(hub, "/v1/identifiers", {"records": [record(**{name: "gold"})]})
    assert_refusal_names(response, "attributes", name)
    assert "jane" not in response.text
    assert table_counts(hub.database_url) == before


@pytest.mark.parametrize(("value", "fragment"), CASES, ids=IDS)
def test_consent_updates_and_erasures_refuse_an_obfuscated_customer_ref(
    hub: Hub, pair: tuple[Member, Member, str], value: str, fragment: str
) -> None:
    a = pair[0]
    before = table_counts(hub.database_url)
    for path, body, field in (
        (
            "/v1/identifiers/consents",
            {"updates": [{"customer_ref": value, "consents": []}]},
            "customer_ref",
        ),
        ("/v1/identifiers/erase", {"customer_refs": [value]}, "customer_refs"),
    ):
        assert_refusal_names(a.post(hub, path, body), field, fragment)
    assert table_counts(hub.database_url) == before


# -- identifier records, bulk ----------------------------------------------------------------


def refused_upload(hub: Hub, headers: dict[str, str], body: bytes, content_type: str) -> Any:
    """Upload one bad row: the upload fails whole (over the refused limit) and stores nothing."""
    before = table_counts(hub.database_url)["identifier_records"]
    done = upload_and_wait(hub, headers, body, content_type=content_type)
    assert (done["status"], done["refused"], done["accepted"]) == ("failed", 1, 0), done
    assert table_counts(hub.database_url)["identifier_records"] == before
    errors = hub.http.get(f"/v1/identifiers/uploads/{done['id']}/errors", headers=headers)
    assert errors.status_code == 200, errors.text
    return done, errors


@pytest.mark.parametrize(("value", "fragment"), CASES, ids=IDS)
@pytest.mark.parametrize("fmt", ["ndjson", "csv"])
def test_a_bulk_upload_refuses_obfuscated_refs_and_values(
    hub: Hub, pair: tuple[Member, Member, str], fmt: str, value: str, fragment: str
) -> None:
    a = pair[0]
    for field, row in (
        ("customer_ref", email_record(1, ref=value)),
        ("attributes", email_record(2, attributes={"tier": value})),
    ):
        if fmt == "csv":
            body, content_type = csv_body([row], attributes=("tier",)), "text/csv"
        else:
            body, content_type = ndjson([row]), NDJSON_TYPE
        done, errors = refused_upload(hub, a.headers, body, content_type)
        assert [(e["row"], e["field"]) for e in errors.json()["items"]] == [(1, field)]
        for text in (json.dumps(done), errors.text):
            assert_not_echoed(text, fragment)


@pytest.mark.parametrize("name", OBFUSCATED_NAMES)
def test_a_bulk_upload_refuses_an_attribute_name_spelling_an_address(
    hub: Hub, pair: tuple[Member, Member, str], name: str
) -> None:
    a = pair[0]
    row = email_record(3, attributes={name: "gold"})
    for body, content_type in (
        (ndjson([row]), NDJSON_TYPE),
        (csv_body([row], attributes=(name,)), "text/csv"),
    ):
        done, errors = refused_upload(hub, a.headers, body, content_type)
        assert [e["field"] for e in errors.json()["items"]] == ["attributes"]
        for text in (json.dumps(done), errors.text):
            assert_not_echoed(text, name)
            assert "jane" not in text


# -- offers, partners, clients ---------------------------------------------------------------


def offer(pair: tuple[Member, Member, str], **fields: str) -> dict[str, Any]:
    a, b, partnership = pair
    return {
        "partnership_id": partnership,
        "title": "Fly and stay",
        "points": {a.id: 1000, b.id: 1000},
        **fields,
    }


@pytest.mark.parametrize(("value", "fragment"), CASES, ids=IDS)
@pytest.mark.parametrize("field", ["title", "description"])
def test_an_offer_with_contact_details_in_its_text_is_refused(
    hub: Hub, pair: tuple[Member, Member, str], field: str, value: str, fragment: str
) -> None:
    a = pair[0]
    before = table_counts(hub.database_url)
    text = f"Fly and stay, ask {value}"
    response = a.post(hub, "/v1/offers", offer(pair, **{field: text}))
    assert_refusal_names(response, field, fragment)
    assert table_counts(hub.database_url) == before


@pytest.mark.parametrize(("value", "fragment"), CASES, ids=IDS)
def test_offer_filters_with_contact_details_are_refused_on_proposal_and_approval(
    hub: Hub, pair: tuple[Member, Member, str], value: str, fragment: str
) -> None:
    a, b, _ = pair
    before = table_counts(hub.database_url)
    proposed = a.post(hub, "/v1/offers", offer(pair, filters={a.id: {"tier": ["gold", value]}}))
    assert_refusal_names(proposed, "filters.tier", fragment)
    assert table_counts(hub.database_url) == before
    clean = a.post(hub, "/v1/offers", offer(pair))
    assert clean.status_code == 201, clean.text
    before = table_counts(hub.database_url)
    path = f"/v1/offers/{clean.json()['id']}/approve"
    approval = b.post(hub, path, {"filters": {"city": [value]}})
    assert_refusal_names(approval, "filters.city", fragment)
    assert table_counts(hub.database_url) == before


@pytest.mark.parametrize(("value", "fragment"), CASES, ids=IDS)
def test_a_partner_named_with_contact_details_is_refused(
    hub: Hub, value: str, fragment: str
) -> None:
    before = table_counts(hub.database_url)
    response = hub.as_admin("POST", "/v1/partners", json={"name": value, "category": "hotel"})
    assert_refusal_names(response, "name", fragment)
    assert table_counts(hub.database_url) == before


@pytest.mark.parametrize(("value", "fragment"), CASES, ids=IDS)
def test_renaming_a_partner_to_contact_details_is_refused(
    hub: Hub, pair: tuple[Member, Member, str], value: str, fragment: str
) -> None:
    a = pair[0]
    before = table_counts(hub.database_url)
    name = hub.as_admin("GET", f"/v1/partners/{a.id}").json()["name"]
    response = hub.as_admin("PATCH", f"/v1/partners/{a.id}", json={"name": value})
    assert_refusal_names(response, "name", fragment)
    assert table_counts(hub.database_url) == before
    assert hub.as_admin("GET", f"/v1/partners/{a.id}").json()["name"] == name


@pytest.mark.parametrize(("value", "fragment"), CASES, ids=IDS)
def test_a_client_named_with_contact_details_is_refused(
    hub: Hub, pair: tuple[Member, Member, str], value: str, fragment: str
) -> None:
    a = pair[0]
    before = table_counts(hub.database_url)
    response = hub.as_admin(
        "POST", f"/v1/partners/{a.id}/clients", json={"name": value, "scopes": ["overlap:read"]}
    )
    assert_refusal_names(response, "name", fragment)
    assert table_counts(hub.database_url) == before


def test_texts_using_at_as_a_word_and_dates_are_accepted(
    hub: Hub, pair: tuple[Member, Member, str]
) -> None:
    a = pair[0]
    partner = hub.as_admin("POST", "/v1/partners", json={"name": "Coffee @ Home", "category": "x1"})
    assert partner.status_code == 201, partner.text
    client = hub.as_admin(
        "POST",
        f"/v1/partners/{partner.json()['id']}/clients",
        json={"name": "till 2026 11 03", "scopes": ["overlap:read"]},
    )
    assert client.status_code == 201, client.text
    created = a.post(
        hub,
        "/v1/offers",
        offer(
            pair,
            title="2 coffees @ 3 EUR",
            description="Meet us @ the lounge from 03 11 2026; book at booking.com",
        ),
    )
    assert created.status_code == 201, created.text
    assert created.json()["title"] == "2 coffees @ 3 EUR"


# -- a loyalty number is no phone --------------------------------------------------------------


def test_a_19_digit_loyalty_number_is_accepted_end_to_end(hub: Hub) -> None:
    partner, _, headers = hub.partner_with_token("coffee")
    sync = hub.http.post(
        "/v1/identifiers",
        json={"records": [record(LOYALTY_NUMBER, tier="4155552671")]},
        headers=headers,
    )
    assert sync.status_code == 200, sync.text
    assert sync.json()["accepted"] == 1
    bulk = [email_record(n, ref=f"{n}" * 19) for n in range(1, 4)]
    assert upload_and_wait(hub, headers, ndjson(bulk[:2]))["accepted"] == 2
    done = upload_and_wait(hub, headers, csv_body(bulk[2:]), content_type="text/csv")
    assert done["accepted"] == 1
    consents = hub.http.post(
        "/v1/identifiers/consents",
        json={"updates": [{"customer_ref": LOYALTY_NUMBER, "consents": ["analytics"]}]},
        headers=headers,
    )
    assert consents.status_code == 200, consents.text
    stored = records_of(hub, partner["name"])
    assert set(stored) == {LOYALTY_NUMBER, "1" * 19, "2" * 19, "3" * 19}

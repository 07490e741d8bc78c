"""POST /v1/identifiers, /consents, /erase: all-or-nothing uploads of hashed records, consent,
erasure, and what is (and is never) stored."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from hub.core.db import normalise_url
from partners.kit import HEX, hash_identifier
from tests.conftest import Hub, execute_sql, table_counts


def email(n: int | str, encoding: str = "base64") -> str:
    return hash_identifier("email", f"person{n}@example.org", encoding)


def phone(n: int) -> str:
    return hash_identifier("phone", f"+1415555{n:04d}")


def record(n: int | str, ref: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "id_type": "email",
        "id_hash": email(n),
        "customer_ref": ref or f"cust-{n}",
        "consents": ["analytics", "joint_offers"],
        **extra,
    }


@pytest.fixture
def brand(hub: Hub) -> tuple[dict[str, Any], dict[str, str]]:
    partner, _, headers = hub.partner_with_token("coffee")
    return partner, headers


def upload(hub: Hub, headers: dict[str, str], records: list[dict[str, Any]]) -> Any:
    return hub.http.post("/v1/identifiers", json={"records": records}, headers=headers)


def summary(hub: Hub, headers: dict[str, str]) -> dict[str, Any]:
    response = hub.http.get("/v1/identifiers/summary", headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_upload_creates_then_updates_and_moves_records(hub: Hub, brand: Any) -> None:
    _, headers = brand
    first = upload(hub, headers, [record(1), record(2, attributes={"tier": "gold"})])
    assert first.status_code == 200, first.text
    assert first.json() == {"accepted": 2, "created": 2, "updated": 0, "unchanged": 0}
    # The same key again, now under another customer_ref and with hex encoding: it moves.
    moved = record(1, ref="cust-1b")
    moved["id_hash"] = email(1, HEX).upper()
    again = upload(hub, headers, [moved, record(3)])
    assert again.json() == {"accepted": 2, "created": 1, "updated": 1, "unchanged": 0}
    assert summary(hub, headers)["records"] == 3
    assert summary(hub, headers)["people"] == 3


def test_one_bad_record_refuses_the_request_and_lists_every_bad_one(hub: Hub, brand: Any) -> None:
    _, headers = brand
    before = table_counts(hub.database_url)
    records = [
        record(10),
        {**record(11), "id_hash": "person11@example.org"},
        record(12),
        {**record(13), "id_type": "fax", "consents": ["spam"]},
        {**record(14), "id_hash": "+14155550100"},
        {**record(15), "customer_ref": "jane@example.org"},
        {**record(16), "attributes": {f"a{i}": "x" for i in range(21)}},
        {**record(17), "surname": "Doe"},
        record(10),  # a duplicate of the first
    ]
    response = upload(hub, headers, records)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["detail"] == "7 of 9 records are invalid; nothing was stored."
    found = {(e["index"], e["field"]) for e in problem["errors"]}
    assert found == {
        (1, "id_hash"),
        (3, "id_type"),
        (3, "consents"),
        (4, "id_hash"),
        (5, "customer_ref"),
        (6, "attributes"),
        (7, "surname"),
        (8, "id_hash"),
    }
    reasons = {(e["index"], e["field"]): e["reason"] for e in problem["errors"]}
    assert "raw email" in reasons[(1, "id_hash")]
    assert "raw phone" in reasons[(4, "id_hash")]
    assert "record 0" in reasons[(8, "id_hash")]
    body = response.text
    for raw in ("person11@example.org", "+14155550100", "jane@example.org", "Doe"):
        assert raw not in body
    assert table_counts(hub.database_url) == before


@pytest.mark.parametrize(
    "body",
    [
        {"records": "nope"},
        {"records": [], "extra": 1},
        {},
        [record(1)],
    ],
)
def test_malformed_bodies_are_400_and_change_nothing(hub: Hub, brand: Any, body: Any) -> None:
    _, headers = brand
    before = table_counts(hub.database_url)
    response = hub.http.post("/v1/identifiers", json=body, headers=headers)
    assert response.status_code == 400, response.text
    assert table_counts(hub.database_url) == before


def test_more_than_10000_records_is_413(hub: Hub, brand: Any) -> None:
    _, headers = brand
    records = [record(1)] * 10_001
    response = upload(hub, headers, records)
    assert response.status_code == 413
    assert response.json()["fix"] == "Split it into requests of at most 10,000 records."


def test_the_database_holds_no_digest_in_clear(hub: Hub, brand: Any) -> None:
    _, headers = brand
    records = [record(f"clear{i}") for i in range(20)]
    assert upload(hub, headers, records).status_code == 200
    digests = [hashlib.sha256(f"personclear{i}@example.org".encode()).digest() for i in range(20)]
    engine = create_engine(normalise_url(hub.database_url))
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM identifier_records")).all()
        events = conn.execute(text("SELECT * FROM consent_events")).all()
        audit_rows = conn.execute(text("SELECT * FROM audit_log")).all()
    engine.dispose()
    blob = repr(rows + events + audit_rows).encode()
    dump = b"".join(
        bytes(v) if isinstance(v, bytes | memoryview) else str(v).encode() for r in rows for v in r
    )
    for d in digests:
        for form in (d, d.hex().encode(), d.hex().upper().encode(), hash_b64(d)):
            assert form not in dump
            assert form not in blob
    if hub.database_url.startswith("sqlite"):
        path = hub.database_url.split("///", 1)[1]
        execute_sql(hub.database_url, "PRAGMA wal_checkpoint(FULL)")
        with open(path, "rb") as fh:
            raw = fh.read()
        for d in digests:
            for form in (d, d.hex().encode(), hash_b64(d)):
                assert form not in raw


def hash_b64(d: bytes) -> bytes:
    import base64

    return base64.b64encode(d)


def test_consent_update_applies_to_all_records_of_a_person_and_is_recorded(
    hub: Hub, brand: Any
) -> None:
    partner, headers = brand
    two = [record("c1", ref="p-1"), {**record("c2", ref="p-1"), "id_type": "phone"}]
    two[1]["id_hash"] = phone(1)
    assert upload(hub, headers, two).status_code == 200
    response = hub.http.post(
        "/v1/identifiers/consents",
        json={
            "updates": [
                {"customer_ref": "p-1", "consents": ["analytics"]},
                {"customer_ref": "nobody", "consents": []},
            ]
        },
        headers=headers,
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"people": 1, "records": 2, "unknown_customer_refs": ["nobody"]}
    rows = execute_sql(
        hub.database_url,
        "SELECT consents FROM identifier_records WHERE customer_ref = 'p-1'",
    )
    assert [r[0] for r in rows] == [1, 1]
    events = execute_sql(
        hub.database_url,
        "SELECT cause, granted, withdrawn FROM consent_events WHERE customer_ref = 'p-1' "
        "ORDER BY seq",
    )
    assert [tuple(e) for e in events] == [("upload", 3, 0), ("update", 0, 2)]
    del partner


def test_erase_by_ref_and_by_hash_removes_records_and_audits_only_counts(
    hub: Hub, brand: Any
) -> None:
    partner, headers = brand
    assert (
        upload(hub, headers, [record("e1", ref="gone"), record("e2"), record("e3")]).status_code
        == 200
    )
    by_ref = hub.http.post(
        "/v1/identifiers/erase", json={"customer_refs": ["gone"]}, headers=headers
    )
    assert by_ref.json() == {"records_removed": 1, "people": 1}
    by_hash = hub.http.post(
        "/v1/identifiers/erase", json={"id_hashes": [email("e2", HEX)]}, headers=headers
    )
    assert by_hash.json() == {"records_removed": 1, "people": 1}
    assert summary(hub, headers)["records"] == 1
    both = hub.http.post(
        "/v1/identifiers/erase", json={"customer_refs": [], "id_hashes": []}, headers=headers
    )
    assert both.status_code == 422
    entries = hub.as_admin(
        "GET", "/v1/audit", params={"action": "identifiers.erased", "target_id": partner["id"]}
    ).json()["items"]
    assert len(entries) == 2
    text_of_entries = repr(entries)
    assert "gone" not in text_of_entries
    assert email("e2") not in text_of_entries
    assert entries[0]["details"]["records_removed"] == 1


def test_identifiers_are_strictly_the_uploading_partners(hub: Hub) -> None:
    _, _, a = hub.partner_with_token("airline")
    _, _, b = hub.partner_with_token("hotel")
    assert upload(hub, a, [record("iso1", ref="shared-ref")]).status_code == 200
    # B cannot see A's counts, erase A's people, or change A's consents.
    assert summary(hub, b)["records"] == 0
    erased = hub.http.post(
        "/v1/identifiers/erase", json={"customer_refs": ["shared-ref"]}, headers=b
    )
    assert erased.json() == {"records_removed": 0, "people": 0}
    consent = hub.http.post(
        "/v1/identifiers/consents",
        json={"updates": [{"customer_ref": "shared-ref", "consents": []}]},
        headers=b,
    )
    assert consent.json()["unknown_customer_refs"] == ["shared-ref"]
    assert summary(hub, a)["records"] == 1
    # The same digest uploaded by B is B's own record, not A's.
    assert upload(hub, b, [record("iso1", ref="b-ref")]).json()["created"] == 1
    assert summary(hub, a)["people"] == 1


def test_uploads_need_the_scope_and_a_partner(hub: Hub) -> None:
    _, _, reader = hub.partner_with_token("bank", scopes=["overlap:read"])
    assert upload(hub, reader, [record(1)]).status_code == 403
    assert hub.as_admin("POST", "/v1/identifiers", json={"records": [record(1)]}).status_code == 403
    assert hub.http.post("/v1/identifiers", json={"records": []}).status_code == 401

"""POST /v1/identifiers/uploads: bulk NDJSON/CSV (gzip or plain), processed in the background,
applied whole or not at all, with a per-row error report that never echoes a value."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from partners.identifiers.uploads import staging
from tests.api.uploads_helpers import (
    csv_body,
    email_record,
    ndjson,
    records_of,
    send,
    upload_and_wait,
)
from tests.conftest import Hub, execute_sql, launch_hub, table_counts


@pytest.fixture
def brand(hub: Hub) -> tuple[dict[str, Any], dict[str, str]]:
    partner, _, headers = hub.partner_with_token("coffee")
    return partner, headers


def errors_of(hub: Hub, headers: dict[str, str], upload_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = hub.http.get(
            f"/v1/identifiers/uploads/{upload_id}/errors", params=params, headers=headers
        )
        assert page.status_code == 200, page.text
        items += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return items


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_ndjson_upload_is_applied_and_counted(hub: Hub, brand: Any, compress: bool) -> None:
    partner, headers = brand
    records = [email_record(i, attributes={"tier": "gold"}) for i in range(1200)]
    done = upload_and_wait(hub, headers, ndjson(records), compress=compress)
    assert done["status"] == "completed", done
    assert (done["rows_read"], done["accepted"], done["refused"]) == (1200, 1200, 0)
    assert (done["created"], done["matched"], done["removed"]) == (1200, 0, 0)
    assert done["gzip"] is compress
    assert done["format"] == "ndjson"
    stored = records_of(hub, partner["name"])
    assert len(stored) == 1200
    ref, (id_type, consents, attributes) = next(iter(stored.items()))
    assert (id_type, consents) == ("1", 3)
    assert (json.loads(attributes) if isinstance(attributes, str) else attributes) == {
        "tier": "gold"
    }
    assert ref.startswith("cust-")
    # The staging rows are gone once the upload is applied.
    left = execute_sql(hub.database_url, "SELECT count(*) FROM identifier_staging")
    assert left[0][0] == 0


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_csv_upload_with_attributes_and_consents(hub: Hub, brand: Any, compress: bool) -> None:
    partner, headers = brand
    records = [
        email_record(f"csv{i}", attributes={"tier": "silver", "city": "Lyon"}) for i in range(30)
    ]
    records[0]["consents"] = []
    body = csv_body(records, attributes=("tier", "city"))
    done = upload_and_wait(hub, headers, body, content_type="text/csv", compress=compress)
    assert done["status"] == "completed", done
    assert done["accepted"] == 30
    stored = records_of(hub, partner["name"])
    assert stored["cust-csv0"][1] == 0
    attributes = stored["cust-csv1"][2]
    parsed = json.loads(attributes) if isinstance(attributes, str) else attributes
    assert parsed == {"tier": "silver", "city": "Lyon"}


def test_a_malformed_line_is_a_row_error_with_a_reason_and_no_value(hub: Hub, brand: Any) -> None:
    _, headers = brand
    good = [email_record(f"m{i}") for i in range(300)]
    lines: list[Any] = [*good[:100], b'{"id_type": "email", "id_hash": ', *good[100:]]
    lines.insert(200, {**email_record("raw"), "id_hash": "jane.doe@example.org"})
    done = upload_and_wait(hub, headers, ndjson(lines))
    assert done["status"] == "completed", done
    assert (done["rows_read"], done["accepted"], done["refused"]) == (302, 300, 2)
    errors = errors_of(hub, headers, done["id"])
    assert [(e["row"], e["field"]) for e in errors] == [(101, ""), (201, "id_hash")]
    assert errors[0]["reason"].startswith("not valid JSON")
    assert "raw email" in errors[1]["reason"]
    assert "jane.doe" not in json.dumps(errors)


# SQLite indexes an upload's staged rows in parts (staging.INDEX_PART_ROWS ids each, 2M by
# default): with parts of 23 rows, a repeat and its first row, or a kept record and the row
# holding it, sit in different parts.
IN_PARTS = pytest.mark.parametrize("part_rows", [None, 23], ids=["one-part", "parts-of-23"])


@pytest.fixture
def parts(part_rows: int | None, monkeypatch: pytest.MonkeyPatch) -> None:
    if part_rows is not None:
        monkeypatch.setattr(staging, "INDEX_PART_ROWS", part_rows)


@IN_PARTS
def test_repeated_identifiers_in_one_upload_are_refused_after_the_first(
    hub: Hub, brand: Any, parts: None
) -> None:
    partner, headers = brand
    records = [email_record(f"d{i}") for i in range(200)]
    records.append(email_record("d5", ref="someone-else"))
    done = upload_and_wait(hub, headers, ndjson(records))
    assert (done["accepted"], done["refused"]) == (200, 1)
    errors = errors_of(hub, headers, done["id"])
    assert errors == [
        {"row": 201, "field": "id_hash", "reason": "the same identifier as row 6; send it once"}
    ]
    assert "someone-else" not in records_of(hub, partner["name"])


def test_one_digest_under_two_id_types_is_not_a_repeat(hub: Hub, brand: Any) -> None:
    """Equal match keys under different id types: the census asks for the exact check, which
    finds no repeat (identifiers are unique per id type)."""
    partner, headers = brand
    records = [email_record(f"t{i}") for i in range(20)]
    records.append({**email_record("t7", ref="cust-t7-phone"), "id_type": "phone"})
    done = upload_and_wait(hub, headers, ndjson(records))
    assert (done["status"], done["accepted"], done["refused"]) == ("completed", 21, 0)
    assert errors_of(hub, headers, done["id"]) == []
    assert "cust-t7-phone" in records_of(hub, partner["name"])


def test_too_many_refused_rows_fail_the_upload_and_keep_the_old_data(hub: Hub, brand: Any) -> None:
    partner, headers = brand
    first = upload_and_wait(hub, headers, ndjson([email_record(f"k{i}") for i in range(50)]))
    assert first["status"] == "completed"
    before = records_of(hub, partner["name"])
    records: list[Any] = [email_record(f"k{i}", ref=f"moved-{i}") for i in range(50)]
    records += [{**email_record(f"bad{i}"), "id_type": "fax"} for i in range(5)]
    done = upload_and_wait(hub, headers, ndjson(records))
    assert done["status"] == "failed"
    assert "5 of 55 rows were refused" in done["error"]
    assert "nothing was applied" in done["error"]
    assert records_of(hub, partner["name"]) == before
    assert len(errors_of(hub, headers, done["id"])) == 5
    audited = hub.as_admin(
        "GET", "/v1/audit", params={"action": "identifiers.upload_failed", "target_id": done["id"]}
    ).json()["items"]
    assert [e["details"]["reason"] for e in audited] == [done["error"]]
    assert audited[0]["partner_id"] == partner["id"]


def test_a_truncated_gzip_is_refused_and_keeps_the_old_data(hub: Hub, brand: Any) -> None:
    partner, headers = brand
    assert upload_and_wait(hub, headers, ndjson([email_record("t0")]))["status"] == "completed"
    before = records_of(hub, partner["name"])
    body = gzip.compress(ndjson([email_record(f"t{i}", ref=f"new-{i}") for i in range(3000)]))
    response = hub.http.post(
        "/v1/identifiers/uploads",
        content=body[: len(body) // 2],
        headers={**headers, "Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"},
    )
    # The body is inflated as it arrives (to measure it): one cut short is refused at once.
    assert response.status_code == 400, response.text
    assert "cut short" in response.json()["detail"]
    assert records_of(hub, partner["name"]) == before


@IN_PARTS
def test_replace_removes_exactly_the_missing_records(hub: Hub, brand: Any, parts: None) -> None:
    partner, headers = brand
    phones = [{**email_record(f"p{i}", ref=f"phone-{i}"), "id_type": "phone"} for i in range(3)]
    for i, p in enumerate(phones):
        from partners.kit import hash_identifier

        p["id_hash"] = hash_identifier("phone", f"+3361234567{i}")
    first = [email_record(f"r{i}") for i in range(200)] + phones
    assert upload_and_wait(hub, headers, ndjson(first))["status"] == "completed"
    # Tomorrow's email snapshot: r0-r9 gone, r10-r199 kept, r200 new; the row of r5's person
    # is refused (so r5 stays); phones are another id type (untouched).
    snapshot: list[Any] = [email_record(f"r{i}") for i in range(10, 201)]
    snapshot.append({**email_record("x", ref="cust-r5"), "consents": ["spam"]})
    done = upload_and_wait(hub, headers, ndjson(snapshot), mode="replace")
    assert done["status"] == "completed", done
    assert (done["created"], done["matched"], done["removed"], done["refused"]) == (1, 190, 9, 1)
    stored = records_of(hub, partner["name"])
    assert {f"cust-r{i}" for i in range(10)} & set(stored) == {"cust-r5"}
    assert {f"cust-r{i}" for i in range(10, 201)} <= set(stored)
    assert {f"phone-{i}" for i in range(3)} <= set(stored)
    withdrawn = execute_sql(
        hub.database_url,
        "SELECT customer_ref, withdrawn FROM consent_events e JOIN partners p "
        "ON p.id = e.partner_id WHERE p.name = :name AND withdrawn <> 0",
        name=partner["name"],
    )
    assert sorted(ref for ref, _ in withdrawn) == sorted(f"cust-r{i}" for i in range(10) if i != 5)


def test_reuploading_the_same_file_changes_nothing(hub: Hub, brand: Any) -> None:
    partner, headers = brand
    body = ndjson([email_record(f"i{i}") for i in range(100)])
    assert upload_and_wait(hub, headers, body)["created"] == 100
    before = records_of(hub, partner["name"])
    stamps = updated_at_of(hub, partner["name"])
    again = upload_and_wait(hub, headers, body)
    assert (again["created"], again["matched"]) == (0, 100)
    assert records_of(hub, partner["name"]) == before
    assert updated_at_of(hub, partner["name"]) == stamps  # no record was rewritten
    changed = [email_record(f"i{i}") for i in range(100)]
    changed[7]["consents"] = ["analytics"]
    upload_and_wait(hub, headers, ndjson(changed))
    after = updated_at_of(hub, partner["name"])
    assert [ref for ref in after if after[ref] != stamps[ref]] == ["cust-i7"]
    assert records_of(hub, partner["name"])["cust-i7"][1] == 1


def updated_at_of(hub: Hub, partner_name: str) -> dict[str, Any]:
    rows = execute_sql(
        hub.database_url,
        "SELECT r.customer_ref, r.updated_at FROM identifier_records r "
        "JOIN partners p ON p.id = r.partner_id WHERE p.name = :name",
        name=partner_name,
    )
    return dict(rows)


def test_idempotency_key_returns_the_first_upload(hub: Hub, brand: Any) -> None:
    _, headers = brand
    body = ndjson([email_record(f"ik{i}") for i in range(10)])
    key = {"Idempotency-Key": "f5b3a1c2-upload-1"}
    first = send(hub, headers, body, extra_headers=key)
    assert first.status_code == 202
    again = send(hub, headers, body, extra_headers=key)
    assert again.status_code in (200, 202)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    other = send(hub, headers, body + ndjson([email_record("ik-x")]), extra_headers=key)
    assert other.status_code == 409
    assert other.headers["content-type"].startswith("application/problem+json")


def test_consent_events_follow_a_moved_record(hub: Hub, brand: Any) -> None:
    partner, headers = brand
    upload_and_wait(hub, headers, ndjson([email_record("mv", ref="old-person")]))
    done = upload_and_wait(hub, headers, ndjson([email_record("mv", ref="new-person")]))
    assert (done["created"], done["matched"]) == (0, 1)
    events = execute_sql(
        hub.database_url,
        "SELECT customer_ref, granted, withdrawn FROM consent_events e JOIN partners p "
        "ON p.id = e.partner_id WHERE p.name = :name ORDER BY seq",
        name=partner["name"],
    )
    assert [tuple(e) for e in events] == [
        ("old-person", 3, 0),
        ("new-person", 3, 0),
        ("old-person", 0, 3),
    ] or [tuple(e) for e in events] == [
        ("old-person", 3, 0),
        ("old-person", 0, 3),
        ("new-person", 3, 0),
    ]


@pytest.mark.parametrize(
    ("headers_extra", "body", "status"),
    [
        ({"Content-Type": "application/json"}, b"{}", 415),
        ({"Content-Type": "application/x-ndjson", "Content-Encoding": "br"}, b"x", 415),
        ({"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"}, b"plain", 400),
        ({"Content-Type": "text/csv"}, b"", 400),
    ],
    ids=["json", "brotli", "not-gzip", "empty"],
)
def test_bad_upload_requests_are_refused_and_change_nothing(
    hub: Hub, brand: Any, headers_extra: dict[str, str], body: bytes, status: int
) -> None:
    _, headers = brand
    before = table_counts(hub.database_url)
    response = hub.http.post(
        "/v1/identifiers/uploads", content=body, headers={**headers, **headers_extra}
    )
    assert response.status_code == status, response.text
    problem = response.json()
    assert problem["detail"]
    assert problem["fix"]
    assert table_counts(hub.database_url) == before


def test_unknown_mode_is_400(hub: Hub, brand: Any) -> None:
    _, headers = brand
    response = send(hub, headers, ndjson([email_record(1)]), mode="merge")
    assert response.status_code == 400
    assert "mode" in response.text


def test_an_unknown_csv_column_fails_the_upload_without_showing_it(hub: Hub, brand: Any) -> None:
    _, headers = brand
    body = b"id_type,id_hash,customer_ref,jane@example.org\nemail,x,y,z\n"
    done = upload_and_wait(hub, headers, body, content_type="text/csv")
    assert done["status"] == "failed"
    assert "unknown or repeated column" in done["error"]
    assert "jane@example.org" not in done["error"]


def test_a_partner_cannot_read_another_partners_upload(hub: Hub) -> None:
    _, _, a = hub.partner_with_token("airline")
    _, _, b = hub.partner_with_token("hotel")
    lines: list[Any] = [email_record(f"iso{i}") for i in range(200)] + [b"not json"]
    done = upload_and_wait(hub, a, ndjson(lines))
    path = f"/v1/identifiers/uploads/{done['id']}"
    assert hub.http.get(path, headers=b).status_code == 404
    assert hub.http.get(f"{path}/errors", headers=b).status_code == 404
    assert hub.http.get("/v1/identifiers/uploads", headers=b).json()["items"] == []
    listed = hub.http.get("/v1/identifiers/uploads", headers=a).json()["items"]
    assert [u["id"] for u in listed] == [done["id"]]
    assert hub.http.get("/v1/identifiers/summary", headers=b).json()["records"] == 0
    assert hub.as_admin("GET", path).status_code == 403


def test_the_database_holds_no_digest_in_clear_after_a_bulk_upload(hub: Hub, brand: Any) -> None:
    import base64
    import hashlib

    _, headers = brand
    records: list[Any] = [email_record(f"clear{i}") for i in range(300)]
    records.append({**email_record("clear-bad"), "consents": ["nope"]})  # staged as refused
    done = upload_and_wait(hub, headers, ndjson(records))
    assert done["status"] == "completed"
    digests = [hashlib.sha256(f"bulkclear{i}@example.org".encode()).digest() for i in range(300)]
    digests.append(hashlib.sha256(b"bulkclear-bad@example.org").digest())
    dump = b""
    for table in (
        "identifier_records",
        "identifier_staging",
        "identifier_uploads",
        "identifier_upload_errors",
        "consent_events",
        "audit_log",
    ):
        for row in execute_sql(hub.database_url, f"SELECT * FROM {table}"):
            dump += b"|".join(
                bytes(v) if isinstance(v, bytes | memoryview) else str(v).encode() for v in row
            )
    forms = [
        form
        for d in digests
        for form in (d, d.hex().encode(), d.hex().upper().encode(), base64.b64encode(d))
    ]
    assert not [f for f in forms if f in dump]
    if hub.database_url.startswith("sqlite"):
        execute_sql(hub.database_url, "PRAGMA wal_checkpoint(FULL)")
        raw = Path(hub.database_url.split("///", 1)[1]).read_bytes()
        assert not [f for f in forms if f in raw]
    assert not list(Path(hub.data_dir, "uploads").glob("*.body"))  # the spool is emptied


@pytest.fixture(scope="module")
def small_hub(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """A hub with a 2,000-byte upload limit and 3,000 bytes of spool space per partner, that
    leaves uploads waiting (so their bodies stay in the spool)."""
    with launch_hub(
        backend,
        tmp_path_factory.mktemp(f"small-{backend}"),
        HUB_UPLOADS_MAX_BYTES="2000",
        HUB_UPLOADS_SPOOL_BYTES_PER_PARTNER="3000",
        HUB_UPLOADS_PROCESS_IN_SERVE="false",
    ) as running:
        yield running


def test_bodies_over_the_limits_are_413_and_change_nothing(small_hub: Hub) -> None:
    hub = small_hub
    _, _, headers = hub.partner_with_token("hotel")
    before = table_counts(hub.database_url)
    big = ndjson([email_record(f"big{i}") for i in range(30)])
    assert len(big) > 2000
    too_big = send(hub, headers, big)
    assert too_big.status_code == 413
    assert "at most 2,000 bytes" in too_big.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while streaming
        yield big[:1000]
        yield big[1000:]

    streamed = hub.http.post(
        "/v1/identifiers/uploads",
        content=chunks(),
        headers={**headers, "Content-Type": "application/x-ndjson"},
    )
    assert streamed.status_code == 413
    assert table_counts(hub.database_url) == before
    assert not list(Path(hub.data_dir, "uploads").iterdir())
    small = ndjson([email_record(f"s{i}") for i in range(8)])
    assert 1000 < len(small) <= 2000
    assert send(hub, headers, small).status_code == 202
    assert send(hub, headers, small + b"\n").status_code == 202
    full = send(hub, headers, small)
    assert full.status_code == 413
    assert "spool space" in full.json()["detail"]


def test_an_unknown_field_named_like_an_address_is_not_echoed(hub: Hub, brand: Any) -> None:
    _, headers = brand
    lines: list[Any] = [email_record(f"u{i}") for i in range(200)]
    lines.append({**email_record("u-bad"), "jane.doe@example.org": "x"})
    done = upload_and_wait(hub, headers, ndjson(lines))
    assert done["refused"] == 1
    errors = errors_of(hub, headers, done["id"])
    assert [e["row"] for e in errors] == [201]
    assert "jane.doe" not in json.dumps(errors)
    assert errors[0]["reason"].startswith("unknown field")


def test_the_sweep_removes_orphaned_bodies_but_not_one_about_to_be_committed(hub: Hub) -> None:
    import os
    import uuid

    spool = Path(hub.data_dir, "uploads")
    fresh = spool / f"{uuid.uuid4()}.body"
    old = spool / f"{uuid.uuid4()}.body"
    fresh.write_bytes(b"{}\n")
    old.write_bytes(b"{}\n")
    os.utime(old, (0, 0))  # named long ago by a request that then failed
    hub.app.state.upload_processor.sweep()
    assert fresh.exists()
    assert not old.exists()
    fresh.unlink()


def test_the_parsing_processes_run_at_a_lower_cpu_priority(hub: Hub, brand: Any) -> None:
    """A bulk upload is background work: its parsers yield the CPU to the answers."""
    _, headers = brand
    done = upload_and_wait(hub, headers, ndjson([email_record(n) for n in range(50)]))
    assert done["status"] == "completed", done
    pool = hub.app.state.upload_processor._pool
    assert pool is not None  # the upload was parsed in the processes
    own = os.getpriority(os.PRIO_PROCESS, 0)
    parsers = list(pool._processes)
    assert parsers
    for pid in parsers:
        assert os.getpriority(os.PRIO_PROCESS, pid) == min(own + 10, 19)

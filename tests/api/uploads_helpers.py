"""Helpers for bulk upload tests: build NDJSON/CSV bodies, send them, wait for the outcome."""

from __future__ import annotations

import csv
import gzip
import io
import time
from typing import Any

import msgspec

from partners.kit import hash_identifier
from tests.conftest import Hub

NDJSON_TYPE = "application/x-ndjson"


def email_record(n: int | str, ref: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "id_type": "email",
        "id_hash": hash_identifier("email", f"bulk{n}@example.org"),
        "customer_ref": ref or f"cust-{n}",
        "consents": ["analytics", "joint_offers"],
        **extra,
    }


def ndjson(records: list[Any]) -> bytes:
    return b"".join(
        (r if isinstance(r, bytes) else msgspec.json.encode(r)) + b"\n" for r in records
    )


def csv_body(records: list[dict[str, Any]], attributes: tuple[str, ...] = ()) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        ["id_type", "id_hash", "customer_ref", "consents", *(f"attr.{a}" for a in attributes)]
    )
    for r in records:
        attrs = r.get("attributes") or {}
        writer.writerow(
            [
                r["id_type"],
                r["id_hash"],
                r["customer_ref"],
                "|".join(r["consents"]),
                *(attrs.get(a, "") for a in attributes),
            ]
        )
    return out.getvalue().encode()


def send(
    hub: Hub,
    headers: dict[str, str],
    body: bytes,
    *,
    content_type: str = NDJSON_TYPE,
    compress: bool = False,
    mode: str = "upsert",
    extra_headers: dict[str, str] | None = None,
) -> Any:
    all_headers = {**headers, "Content-Type": content_type, **(extra_headers or {})}
    if compress:
        body = gzip.compress(body)
        all_headers["Content-Encoding"] = "gzip"
    return hub.http.post(
        "/v1/identifiers/uploads", params={"mode": mode}, content=body, headers=all_headers
    )


def wait_for(hub: Hub, headers: dict[str, str], upload_id: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        status = hub.http.get(f"/v1/identifiers/uploads/{upload_id}", headers=headers)
        assert status.status_code == 200, status.text
        body = status.json()
        if body["status"] in ("completed", "failed"):
            return body
        assert time.monotonic() < deadline, f"upload still {body['status']}"
        time.sleep(0.05)


def upload_and_wait(hub: Hub, headers: dict[str, str], body: bytes, **kw: Any) -> Any:
    response = send(hub, headers, body, **kw)
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "pending"
    return wait_for(hub, headers, response.json()["id"])


# The current-records rule (partners.identifiers.records.current) in plain SQL, for tests that
# read the table as a reader must: a bulk upload's rows not flipped yet, and the rows it
# retired, do not count.
CURRENT_SQL = (
    "r.generation <= COALESCE((SELECT s.generation FROM identifier_state s "
    "WHERE s.partner_id = r.partner_id), 0) AND (r.retired IS NULL OR r.retired > "
    "COALESCE((SELECT s.generation FROM identifier_state s WHERE s.partner_id = r.partner_id), 0))"
)


def records_of(hub: Hub, partner_name: str) -> dict[str, tuple[str, int, Any]]:
    """customer_ref -> (id_type code as str, consents, attributes) of a partner's records,
    keyed by customer_ref (tests give each record its own ref)."""
    from tests.conftest import execute_sql

    rows = execute_sql(
        hub.database_url,
        "SELECT r.customer_ref, r.id_type, r.consents, r.attributes FROM identifier_records r "
        f"JOIN partners p ON p.id = r.partner_id WHERE p.name = :name AND {CURRENT_SQL}",
        name=partner_name,
    )
    return {ref: (str(t), c, a) for ref, t, c, a in rows}

"""`hub admin keys add-match-key` / `rotate-match-key`: every record re-keyed online, matches
kept across partners, uploads during the rotation neither duplicate nor lose a record."""

from __future__ import annotations

import json
import time
from typing import Any

from partners.kit import hash_identifier
from tests.conftest import Hub, execute_sql, run_cli


def records(refs: range, prefix: str) -> list[dict[str, Any]]:
    return [
        {
            "id_type": "email",
            "id_hash": hash_identifier("email", f"shared{i}@example.org"),
            "customer_ref": f"{prefix}-{i}",
            "consents": ["analytics"],
        }
        for i in refs
    ]


def keys_by_partner(hub: Hub, partner_id: str) -> dict[str, tuple[bytes, int]]:
    rows = execute_sql(
        hub.database_url,
        "SELECT r.customer_ref, r.match_key, r.key_version FROM identifier_records r "
        "JOIN partners p ON p.id = r.partner_id WHERE p.name = :name",
        name=partner_id,
    )
    return {ref.split("-", 1)[1]: (bytes(key), version) for ref, key, version in rows}


def partnership(hub: Hub, a: tuple[str, dict[str, str]], b: tuple[str, dict[str, str]]) -> str:
    created = hub.as_admin(
        "POST",
        "/v1/partnerships",
        json={"members": [a[0], b[0]], "purposes": ["analytics"], "min_audience": 10},
    )
    assert created.status_code == 201, created.text
    for _, headers in (a, b):
        accepted = hub.http.post(f"/v1/partnerships/{created.json()['id']}/accept", headers=headers)
        assert accepted.status_code == 200
    return str(created.json()["id"])


def overlap(hub: Hub, partnership_id: str, headers: dict[str, str]) -> Any:
    response = hub.http.get(
        f"/v1/partnerships/{partnership_id}/overlap",
        params={"purpose": "analytics"},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    return response.json()["count"]


def test_rotation_rekeys_everything_and_keeps_every_match(hub: Hub) -> None:
    airline, _, a = hub.partner_with_token("airline")
    hotel, _, b = hub.partner_with_token("hotel")
    shared_with = partnership(hub, (airline["id"], a), (hotel["id"], b))
    start = int(hub.app.state.keyring.match_version)
    assert (
        hub.http.post(
            "/v1/identifiers", json={"records": records(range(30), "a")}, headers=a
        ).status_code
        == 200
    )
    assert (
        hub.http.post(
            "/v1/identifiers", json={"records": records(range(10, 40), "h")}, headers=b
        ).status_code
        == 200
    )

    added = run_cli(hub, "admin", "keys", "add-match-key", "--json")
    assert added.exit_code == 0, added.output
    assert json.loads(added.output)["match_version"] == start + 1
    refused = run_cli(hub, "admin", "keys", "add-match-key")
    assert refused.exit_code == 1  # one rotation at a time
    assert "unfinished" in refused.output
    deadline = time.monotonic() + 5
    while hub.app.state.keyring.match_version != start + 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert hub.app.state.keyring.match_version == start + 1

    # During the rotation: a known record re-uploaded is updated in place (not duplicated),
    # a new one is keyed with the new version.
    during = hub.http.post(
        "/v1/identifiers", json={"records": records(range(35, 45), "h")}, headers=b
    ).json()
    assert during == {"accepted": 10, "created": 5, "updated": 0, "unchanged": 5}
    # Matching is correct while the two sides' records are under different versions: the
    # loader keys old-version records under the newest one.
    assert overlap(hub, shared_with, a) == 20

    rotated = run_cli(hub, "admin", "keys", "rotate-match-key", "--batch-size", "7", "--json")
    assert rotated.exit_code == 0, rotated.output
    report = json.loads(rotated.output)
    assert report["remaining"] == 0
    assert report["retired_versions"] == [start]
    assert report["rekeyed"] == 30 + 30 - 5

    a_keys = keys_by_partner(hub, airline["name"])
    h_keys = keys_by_partner(hub, hotel["name"])
    assert {v for _, v in a_keys.values()} == {start + 1}
    assert {v for _, v in h_keys.values()} == {start + 1}
    assert len(h_keys) == 35
    shared = set(a_keys) & set(h_keys)
    assert shared == {str(i) for i in range(10, 30)}
    assert all(a_keys[i][0] == h_keys[i][0] for i in shared)
    assert overlap(hub, shared_with, b) == 20
    # Erasure by hash still finds a record after the rotation.
    erased = hub.http.post(
        "/v1/identifiers/erase",
        json={"id_hashes": [hash_identifier("email", "shared0@example.org")]},
        headers=a,
    )
    assert erased.json() == {"records_removed": 1, "people": 1}
    listed = json.loads(run_cli(hub, "admin", "keys", "list", "--json").output)
    match = {row["id"]: row["retired_at"] for row in listed if row["kind"] == "match"}
    assert match[f"v{start}"] is not None
    assert match[f"v{start + 1}"] is None


def test_a_bulk_upload_during_a_rotation_neither_duplicates_nor_loses_a_record(hub: Hub) -> None:
    from tests.api.uploads_helpers import ndjson, upload_and_wait

    airline, _, a = hub.partner_with_token("airline")
    hotel, _, b = hub.partner_with_token("hotel")
    start = int(hub.app.state.keyring.match_version)
    ids = range(1000, 1040)
    done = upload_and_wait(hub, a, ndjson(records(ids, "a")))
    assert done["created"] == 40
    assert upload_and_wait(hub, b, ndjson(records(ids, "h")))["created"] == 40
    assert run_cli(hub, "admin", "keys", "add-match-key").exit_code == 0
    deadline = time.monotonic() + 5
    while hub.app.state.keyring.match_version != start + 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    # The hotel's snapshot during the rotation: 30 known (still under the old key), 10 gone
    # (replace removes them whatever their key version), 5 new.
    snapshot = records(range(1010, 1045), "h")
    during = upload_and_wait(hub, b, ndjson(snapshot), mode="replace")
    assert during["status"] == "completed", during
    assert (during["created"], during["matched"], during["removed"]) == (5, 30, 10)
    rotated = run_cli(hub, "admin", "keys", "rotate-match-key", "--json")
    assert json.loads(rotated.output)["remaining"] == 0
    a_keys = keys_by_partner(hub, airline["name"])
    h_keys = keys_by_partner(hub, hotel["name"])
    assert len(h_keys) == 35
    assert {v for _, v in h_keys.values()} == {start + 1}
    shared = set(a_keys) & set(h_keys)
    assert shared == {str(i) for i in range(1010, 1040)}
    assert all(a_keys[i][0] == h_keys[i][0] for i in shared)

"""An erasure wins over the bulk uploads sent before it: an upload waiting (or being staged)
when a person or identifier is erased must not bring them back when it is applied. An
upload sent after the erasure is the brand's newer statement and may."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from hub.core.db import create_hub_sync_engine
from partners.identifiers.uploads.erasures import forget_erasures
from partners.kit import HEX, hash_identifier
from tests.api.uploads_helpers import email_record, ndjson, records_of, send, wait_for
from tests.conftest import Hub, execute_sql, launch_hub, table_counts
from tests.e2e.test_upload_crash import start_processor


@pytest.fixture(scope="module")
def waiting_hub(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """A hub that leaves uploads waiting until a processor is started."""
    with launch_hub(
        backend, tmp_path_factory.mktemp(f"erasure-{backend}"), HUB_UPLOADS_PROCESS_IN_SERVE="false"
    ) as running:
        yield running


def erasures(hub: Hub, partner: dict[str, str]) -> int:
    rows = execute_sql(
        hub.database_url,
        "SELECT count(*) FROM identifier_erasures e JOIN partners p ON p.id = e.partner_id "
        "WHERE p.name = :name",
        name=partner["name"],
    )
    return int(rows[0][0])


def test_people_erased_after_an_upload_was_sent_are_left_out_of_it(waiting_hub: Hub) -> None:
    hub = waiting_hub
    partner, _, headers = hub.partner_with_token("hotel")
    first = send(hub, headers, ndjson([email_record(f"w{i}") for i in range(20)]))
    assert first.status_code == 202
    # While it waits: one person erased by customer_ref, one identifier by its digest.
    erased_hash = hash_identifier("email", "bulkw5@example.org", HEX)
    for body in ({"customer_refs": ["cust-w3"]}, {"id_hashes": [erased_hash]}):
        response = hub.http.post("/v1/identifiers/erase", json=body, headers=headers)
        assert response.status_code == 200, response.text
    # Sent after the erasure: the brand brings cust-w3 back on purpose.
    second = send(hub, headers, ndjson([email_record("w3")]))
    assert second.status_code == 202
    engine = create_hub_sync_engine(hub.database_url)
    try:
        assert erasures(hub, partner) == 2
        forget_erasures(engine, timedelta(0))  # an upload sent before them still waits
        assert erasures(hub, partner) == 2
        processor = start_processor(hub)
        try:
            done = wait_for(hub, headers, first.json()["id"])
            again = wait_for(hub, headers, second.json()["id"])
        finally:
            processor.terminate()
            processor.wait(timeout=30)
        forget_erasures(engine, timedelta(0))
        assert erasures(hub, partner) == 0  # nothing waits any more: forgotten
    finally:
        engine.dispose()
    assert (done["status"], done["accepted"], done["skipped"], done["created"]) == (
        "completed",
        20,
        2,
        18,
    )
    assert "erased after this upload was sent" in done["notice"]
    assert (again["status"], again["skipped"], again["created"]) == ("completed", 0, 1)
    refs = records_of(hub, partner["name"])
    assert "cust-w5" not in refs
    assert "cust-w3" in refs
    assert len(refs) == 19
    grants = execute_sql(
        hub.database_url,
        "SELECT customer_ref FROM consent_events WHERE cause = 'upload' "
        "AND customer_ref IN ('cust-w3', 'cust-w5')",
    )
    assert sorted(ref for (ref,) in grants) == ["cust-w3"]  # from the second upload only


def test_an_erasure_is_forgotten_only_after_its_hold(waiting_hub: Hub) -> None:
    hub = waiting_hub
    partner, _, headers = hub.partner_with_token("bank")
    response = hub.http.post(
        "/v1/identifiers/erase", json={"customer_refs": ["nobody"]}, headers=headers
    )
    assert response.status_code == 200
    engine = create_hub_sync_engine(hub.database_url)
    try:
        forget_erasures(engine, timedelta(minutes=60))  # a body may still be streaming in
        assert erasures(hub, partner) == 1
        forget_erasures(engine, timedelta(0))
        assert erasures(hub, partner) == 0
    finally:
        engine.dispose()


def test_erasing_existing_people_keeps_their_identifiers_out_of_an_older_upload(
    waiting_hub: Hub,
) -> None:
    """A partner with records: the older upload updates the others, and does not bring back
    an erased person's identifier even under another customer_ref."""
    hub = waiting_hub
    partner, _, headers = hub.partner_with_token("coffee")
    first = send(hub, headers, ndjson([email_record(f"x{i}") for i in range(10)]))
    processor = start_processor(hub)
    try:
        assert wait_for(hub, headers, first.json()["id"])["created"] == 10
    finally:
        processor.terminate()
        processor.wait(timeout=30)
    update = [email_record(f"x{i}", consents=["analytics"]) for i in range(10)]
    update[4] = email_record("x4", ref="moved-x4")  # the erased person's identifier, moved
    update.append(email_record("x10"))
    older = send(hub, headers, ndjson(update))
    assert older.status_code == 202
    for who in (["cust-x2"], ["cust-x4"]):
        erased = hub.http.post(
            "/v1/identifiers/erase", json={"customer_refs": who}, headers=headers
        )
        assert erased.status_code == 200, erased.text
    processor = start_processor(hub)
    try:
        done = wait_for(hub, headers, older.json()["id"])
    finally:
        processor.terminate()
        processor.wait(timeout=30)
    assert (done["status"], done["accepted"], done["skipped"]) == ("completed", 11, 2)
    assert (done["matched"], done["created"]) == (8, 1)
    refs = records_of(hub, partner["name"])
    assert sorted(refs) == sorted([f"cust-x{i}" for i in (0, 1, 3, 5, 6, 7, 8, 9, 10)])
    assert refs["cust-x0"][1] == 1  # updated: analytics only


@pytest.fixture(scope="module")
def impatient_hub(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """Bodies must arrive within 1.2 s (uploads.erasure_hold_minutes = 0.02)."""
    with launch_hub(
        backend,
        tmp_path_factory.mktemp(f"impatient-{backend}"),
        HUB_UPLOADS_ERASURE_HOLD_MINUTES="0.02",
        HUB_UPLOADS_PROCESS_IN_SERVE="false",
    ) as running:
        yield running


def test_a_body_slower_than_the_erasure_hold_is_refused_and_nothing_kept(
    impatient_hub: Hub,
) -> None:
    hub = impatient_hub
    _, _, headers = hub.partner_with_token("airline")
    body = ndjson([email_record(f"slow{i}") for i in range(50)])
    before = table_counts(hub.database_url)

    def slowly() -> Iterator[bytes]:
        yield body[:100]
        time.sleep(2.5)
        yield body[100:]

    response = hub.http.post(
        "/v1/identifiers/uploads",
        content=slowly(),
        headers={**headers, "Content-Type": "application/x-ndjson"},
    )
    assert response.status_code == 408, response.text
    problem = response.json()
    assert problem["type"].endswith("request-timeout")
    assert "did not arrive within" in problem["detail"]
    assert table_counts(hub.database_url) == before
    assert not list(Path(hub.data_dir, "uploads").iterdir())
    quick = send(hub, headers, body)  # the same body, sent at once, is taken
    assert quick.status_code == 202, quick.text

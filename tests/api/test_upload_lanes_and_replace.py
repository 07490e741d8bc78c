"""Uploads are processed fairly across partners (one lane per partner), and a ``replace``
removes many records in one set operation, exactly the ones the snapshot no longer holds."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from hub.core.db import create_hub_sync_engine
from partners.identifiers.uploads.staging import UPLOADS
from tests.api.uploads_helpers import email_record, ndjson, records_of, send, wait_for
from tests.conftest import Hub, execute_sql, launch_hub


@pytest.fixture(scope="module")
def slow_slices_hub(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """Uploads staged 50 rows a slice in the processing thread: a large one takes a while."""
    data_dir = tmp_path_factory.mktemp(f"lanes-{backend}")
    with launch_hub(
        backend, data_dir, HUB_UPLOADS_BATCH_ROWS="50", HUB_UPLOADS_PARSE_PROCESSES="0"
    ) as running:
        yield running


# Rows of the large upload: enough that a one-row upload sent once it is being staged is
# done well before it is read whole. At 20,000 the one-row upload was done by 12,000-13,000
# rows on a quiet machine, and once, under the full suite's load, only after all of them.
LARGE = 50_000


def status_of(hub: Hub, headers: dict[str, str], upload_id: str) -> dict[str, Any]:
    response = hub.http.get(f"/v1/identifiers/uploads/{upload_id}", headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_a_small_upload_completes_while_another_partners_large_one_runs(
    slow_slices_hub: Hub,
) -> None:
    hub = slow_slices_hub
    big, _, big_headers = hub.partner_with_token("airline")
    small, _, small_headers = hub.partner_with_token("hotel")
    large = [email_record(f"big{i}") for i in range(LARGE)]
    large_id = send(hub, big_headers, ndjson(large)).json()["id"]
    deadline = time.monotonic() + 30
    while True:  # the large upload is being staged: the processor is busy with it
        now = status_of(hub, big_headers, large_id)
        if now["status"] == "processing" and now["rows_read"] > 0:
            break
        assert now["status"] in ("pending", "processing"), now
        assert time.monotonic() < deadline, "the large upload was not picked up"
        time.sleep(0.02)
    assert now["phase"] == "staging"

    tiny = send(hub, small_headers, ndjson([email_record("solo", ref="solo")])).json()["id"]
    done = wait_for(hub, small_headers, tiny)
    meanwhile = status_of(hub, big_headers, large_id)

    assert done["status"] == "completed", done
    assert (done["created"], done["phase"]) == (1, None)
    assert meanwhile["status"] == "processing", "the one-row upload waited for the large one"
    assert 0 < meanwhile["rows_read"] < LARGE
    final = wait_for(hub, big_headers, large_id, timeout=300)
    assert final["status"] == "completed", final
    assert (final["accepted"], final["created"], final["matched"]) == (LARGE, LARGE, 0)
    assert final["finished_at"] > done["finished_at"]
    # Nothing lost, nothing applied twice: every record once, one grant per person.
    assert set(records_of(hub, big["name"])) == {f"cust-big{i}" for i in range(LARGE)}
    assert set(records_of(hub, small["name"])) == {"solo"}
    grants = execute_sql(
        hub.database_url,
        "SELECT p.name, count(*) FROM consent_events e JOIN partners p ON p.id = e.partner_id "
        "WHERE p.name IN (:a, :b) GROUP BY p.name",
        a=big["name"],
        b=small["name"],
    )
    assert dict(grants) == {big["name"]: LARGE, small["name"]: 1}


def test_a_partners_uploads_are_applied_one_after_another_in_order(slow_slices_hub: Hub) -> None:
    hub = slow_slices_hub
    partner, _, headers = hub.partner_with_token("coffee")
    first = [email_record(f"ord{i}", ref=f"first-{i}") for i in range(600)]
    second = [email_record(f"ord{i}", ref=f"second-{i}") for i in range(600)]
    one = send(hub, headers, ndjson(first)).json()["id"]
    two = send(hub, headers, ndjson(second)).json()["id"]
    first_done, second_done = wait_for(hub, headers, one), wait_for(hub, headers, two)
    assert first_done["status"] == second_done["status"] == "completed"
    assert second_done["started_at"] >= first_done["finished_at"]
    assert (second_done["created"], second_done["matched"]) == (0, 600)
    assert set(records_of(hub, partner["name"])) == {f"second-{i}" for i in range(600)}


def test_a_replace_removing_thousands_of_records_removes_exactly_those(
    slow_slices_hub: Hub,
) -> None:
    hub = slow_slices_hub
    partner, _, headers = hub.partner_with_token("bank")
    first = [email_record(f"many{i}") for i in range(4_000)]
    loaded = wait_for(hub, headers, send(hub, headers, ndjson(first)).json()["id"])
    assert loaded["status"] == "completed", loaded
    # The snapshot keeps every fourth record, brings 10 new ones, and refuses a row of
    # cust-many1's person (so that person's record stays).
    snapshot: list[Any] = [email_record(f"many{i}") for i in range(0, 4_000, 4)]
    snapshot += [email_record(f"fresh{i}") for i in range(10)]
    snapshot.append({**email_record("odd", ref="cust-many1"), "consents": ["spam"]})
    done = wait_for(hub, headers, send(hub, headers, ndjson(snapshot), mode="replace").json()["id"])
    assert done["status"] == "completed", done
    assert (done["created"], done["matched"], done["refused"]) == (10, 1_000, 1)
    kept = {f"cust-many{i}" for i in range(0, 4_000, 4)} | {"cust-many1"}
    assert done["removed"] == 4_000 - len(kept)
    assert set(records_of(hub, partner["name"])) == kept | {f"cust-fresh{i}" for i in range(10)}
    withdrawn = execute_sql(
        hub.database_url,
        "SELECT e.customer_ref FROM consent_events e JOIN partners p ON p.id = e.partner_id "
        "WHERE p.name = :name AND e.withdrawn <> 0",
        name=partner["name"],
    )
    assert sorted(ref for (ref,) in withdrawn) == sorted(
        f"cust-many{i}" for i in range(4_000) if f"cust-many{i}" not in kept
    )


@pytest.fixture(scope="module")
def pausing_hub(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """Every apply holds its transaction open 3 s before it commits (test-only setting).
    The tests poll an upload's phase closely: a busy machine's slow staging must not exhaust
    the per-client rate limit."""
    data_dir = tmp_path_factory.mktemp(f"pausing-{backend}")
    # The processor reads the pause from the process environment (the hub runs in-process).
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HUB_UPLOADS_TEST_APPLY_PAUSE_SECONDS", "3")
        with launch_hub(
            backend,
            data_dir,
            HUB_LIMITS_REQUESTS_PER_MINUTE="100000",
            HUB_LIMITS_BURST="10000",
        ) as running:
            yield running


def test_a_withdrawal_and_an_erasure_sent_mid_apply_are_not_lost(pausing_hub: Hub) -> None:
    hub = pausing_hub
    partner, _, headers = hub.partner_with_token("airline")
    first = [email_record(f"mid{i}") for i in range(100)]
    loaded = wait_for(hub, headers, send(hub, headers, ndjson(first)).json()["id"])
    assert loaded["status"] == "completed", loaded
    # The brand's snapshot (sent first) still grants cust-mid1 and names cust-mid2.
    snapshot = [email_record(f"mid{i}") for i in range(50)]
    upload_id = send(hub, headers, ndjson(snapshot), mode="replace").json()["id"]
    # The phase read from the database itself: a status request may queue behind the apply's
    # write lock on SQLite and answer only once it is over.
    engine = create_hub_sync_engine(hub.database_url, writer=False)
    deadline = time.monotonic() + 120
    try:
        while True:
            with engine.connect() as conn:
                status, phase = conn.execute(
                    select(UPLOADS.c.status, UPLOADS.c.phase).where(
                        UPLOADS.c.id == uuid.UUID(upload_id)
                    )
                ).one()
            if phase == "applying":
                break
            assert status in ("pending", "processing"), status  # not ended before its apply
            assert time.monotonic() < deadline, f"the upload never reached its apply: {status}"
            time.sleep(0.02)
    finally:
        engine.dispose()

    answers: dict[str, Any] = {}

    def call(name: str, path: str, body: dict[str, Any]) -> None:
        with httpx.Client(base_url=hub.url, timeout=60) as client:
            answers[name] = client.post(path, json=body, headers=headers)

    calls = [
        threading.Thread(
            target=call,
            args=(
                "withdrawal",
                "/v1/identifiers/consents",
                {"updates": [{"customer_ref": "cust-mid1", "consents": []}]},
            ),
        ),
        threading.Thread(
            target=call,
            args=("erasure", "/v1/identifiers/erase", {"customer_refs": ["cust-mid2"]}),
        ),
    ]
    for thread in calls:
        thread.start()
    for thread in calls:
        thread.join()
    assert answers["withdrawal"].status_code == 200, answers["withdrawal"].text
    assert answers["erasure"].json() == {"records_removed": 1, "people": 1}

    done = wait_for(hub, headers, upload_id)
    assert done["status"] == "completed", done
    stored = records_of(hub, partner["name"])
    assert set(stored) == {f"cust-mid{i}" for i in range(50)} - {"cust-mid2"}
    assert stored["cust-mid1"][1] == 0  # the withdrawal stands
    assert stored["cust-mid3"][1] == 3  # analytics and joint_offers, as uploaded

"""A bulk upload is applied in slices into a new generation of the partner's records: readers
see none of it until the flip, and what the partner (or a hostile one) does meanwhile is not
lost at the flip: withdrawals and erasures win, a synchronous write is refused, not undone."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from hub.core.db import create_hub_sync_engine
from partners.identifiers.models import CONSENT_BITS
from partners.identifiers.uploads import generation, sliced
from partners.identifiers.uploads.staging import UPLOADS, LeaseLost
from partners.kit import hash_identifier
from tests.api.uploads_helpers import (
    CURRENT_SQL,
    email_record,
    ndjson,
    records_of,
    send,
    upload_and_wait,
    wait_for,
)
from tests.conftest import Hub, execute_sql, launch_hub

GATE = "HUB_UPLOADS_TEST_APPLY_GATE"


@pytest.fixture(scope="module")
def sliced_hub(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """Slices of 100 staged rows. Between two slices the apply waits while a gate file
    exists (test-only; the in-process processor reads its path from the environment)."""
    data_dir = tmp_path_factory.mktemp(f"sliced-{backend}")
    with (
        pytest.MonkeyPatch.context() as env,
        launch_hub(
            backend,
            data_dir,
            HUB_UPLOADS_APPLY_SLICE_ROWS="100",
            HUB_LIMITS_REQUESTS_PER_MINUTE="100000",
            HUB_LIMITS_BURST="10000",
        ) as running,
    ):
        env.setenv(GATE, str(data_dir / "gate"))
        yield running


def upload_row(hub: Hub, upload_id: str) -> Any:
    """The upload's status, phase and progress read from the database itself."""
    engine = create_hub_sync_engine(hub.database_url, writer=False)
    try:
        with engine.connect() as conn:
            return conn.execute(
                select(UPLOADS.c.status, UPLOADS.c.phase, UPLOADS.c.applied).where(
                    UPLOADS.c.id == uuid.UUID(upload_id)
                )
            ).one()
    finally:
        engine.dispose()


def folded_consents(hub: Hub, partner_name: str) -> dict[str, int]:
    """Each person's consents as a reader of consent events sees them: every event applied
    in order (grants then withdrawals of each)."""
    rows = execute_sql(
        hub.database_url,
        "SELECT e.customer_ref, e.granted, e.withdrawn FROM consent_events e "
        "JOIN partners p ON p.id = e.partner_id WHERE p.name = :name ORDER BY e.seq",
        name=partner_name,
    )
    state: dict[str, int] = defaultdict(int)
    for ref, granted, withdrawn in rows:
        state[ref] = (state[ref] | granted) & ~withdrawn
    return {ref: mask for ref, mask in state.items() if mask}


def test_a_sliced_replace_is_invisible_until_its_flip_and_loses_nothing_sent_meanwhile(
    sliced_hub: Hub,
) -> None:
    hub = sliced_hub
    gate = Path(os.environ[GATE])
    partner, _, headers = hub.partner_with_token("airline")
    first = [email_record(f"m{i}", ref=f"cust-m{i}") for i in range(1_000)]
    loaded = wait_for(hub, headers, send(hub, headers, ndjson(first)).json()["id"])
    assert loaded["status"] == "completed", loaded

    # The snapshot: m0-m99 move to new people, m100-m899 stay, m900-m999 go, n0-n99 arrive.
    # Ten slices of 100 rows, in file order.
    snapshot = (
        [email_record(f"m{i}", ref=f"moved-m{i}") for i in range(100)]
        + [email_record(f"m{i}", ref=f"cust-m{i}") for i in range(100, 900)]
        + [email_record(f"n{i}", ref=f"cust-n{i}") for i in range(100)]
    )
    gate.touch()  # the apply stops after its first slice until the writes below are done
    try:
        upload_id = send(hub, headers, ndjson(snapshot), mode="replace").json()["id"]
        deadline = time.monotonic() + 120
        while True:
            row = upload_row(hub, upload_id)
            if row.phase == "applying" and row.applied > 0:
                break
            assert row.status in ("pending", "processing"), row
            assert time.monotonic() < deadline, f"the upload never began its apply: {row}"
            time.sleep(0.02)

        # Mid-apply, readers see the old records, all of them.
        summary = hub.http.get("/v1/identifiers/summary", headers=headers)
        assert summary.status_code == 200, summary.text
        assert summary.json()["records"] == 1_000
        assert set(records_of(hub, partner["name"])) == {f"cust-m{i}" for i in range(1_000)}

        # A synchronous write would be overwritten by the older snapshot: refused, with when
        # to retry, and nothing written.
        sync = hub.http.post(
            "/v1/identifiers",
            json={"records": [email_record("m850", ref="sync-m850")]},
            headers=headers,
        )
        assert sync.status_code == 409, sync.text
        assert sync.headers["content-type"].startswith("application/problem+json")
        assert int(sync.headers["Retry-After"]) >= 1
        # Another partner is not held back by this partner's upload: its write goes through.
        _, _, other = hub.partner_with_token("hotel")
        theirs = hub.http.post(
            "/v1/identifiers", json={"records": [email_record("m850", ref="h-1")]}, headers=other
        )
        assert theirs.status_code == 200, theirs.text
        # A withdrawal and erasures of people whose rows come in later slices.
        withdrawal = hub.http.post(
            "/v1/identifiers/consents",
            json={"updates": [{"customer_ref": "cust-m850", "consents": ["analytics"]}]},
            headers=headers,
        )
        assert withdrawal.status_code == 200, withdrawal.text
        erased = hub.http.post(
            "/v1/identifiers/erase", json={"customer_refs": ["cust-m860"]}, headers=headers
        )
        assert erased.json() == {"records_removed": 1, "people": 1}
        # A person only the upload holds: nothing current to erase, yet the erasure wins.
        erased_new = hub.http.post(
            "/v1/identifiers/erase", json={"customer_refs": ["cust-n50"]}, headers=headers
        )
        assert erased_new.status_code == 200, erased_new.text
        progress = upload_row(hub, upload_id)
        assert progress.phase == "applying", "the apply ended before the writes"
        assert progress.applied == 100  # one slice written, held at the gate
        # Slices are ranges of staging ids, whose order need not be the file's (PostgreSQL's
        # parsing processes copy in parallel): which erased rows had been written already?
        staged = dict(
            execute_sql(
                hub.database_url,
                "SELECT customer_ref, id FROM identifier_staging WHERE stage_key LIKE :key",
                key=f"{upload_id}.%",
            )
        )
        first_slice = min(staged.values()) + 99
        written = {ref for ref in ("cust-m860", "cust-n50") if staged[ref] <= first_slice}
    finally:
        gate.unlink()

    done = wait_for(hub, headers, upload_id, timeout=120)
    assert done["status"] == "completed", done
    # A row erased before its slice is skipped; one written before its erasure was created
    # (or matched) and then erased.
    assert (done["created"], done["matched"], done["removed"], done["skipped"]) == (
        99 + ("cust-n50" in written),
        899 + ("cust-m860" in written),
        100,
        2 - len(written),
    )
    assert done["applied"] == len(snapshot)
    records = records_of(hub, partner["name"])
    expected = (
        {f"moved-m{i}" for i in range(100)}
        | {f"cust-m{i}" for i in range(100, 900)}
        | {f"cust-n{i}" for i in range(100)}
    ) - {"cust-m860", "cust-n50"}
    assert set(records) == expected
    assert records["cust-m850"][1] == 1, "the withdrawal of joint_offers was undone at the flip"
    assert all(consents == 3 for ref, (_, consents, _) in records.items() if ref != "cust-m850")
    # What a reader of consent events concludes equals the records, person by person.
    assert folded_consents(hub, partner["name"]) == {
        ref: consents for ref, (_, consents, _) in records.items()
    }
    # Tidy: no retired or pending row is left, and the sync write can go now.
    leftovers = execute_sql(
        hub.database_url,
        "SELECT count(*) FROM identifier_records r JOIN partners p ON p.id = r.partner_id "
        "WHERE p.name = :name AND r.retired IS NOT NULL",
        name=partner["name"],
    )
    assert leftovers[0][0] == 0
    assert execute_sql(hub.database_url, "SELECT count(*) FROM identifier_pending_events") == [(0,)]
    sync = hub.http.post(
        "/v1/identifiers",
        json={"records": [email_record("m850", ref="sync-m850")]},
        headers=headers,
    )
    assert sync.status_code == 200, sync.text
    assert "sync-m850" in records_of(hub, partner["name"])


def test_a_first_load_in_slices_publishes_one_upload_event_per_person_with_all_their_consents(
    sliced_hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A partner's first upload (no records yet) is applied without reading its slices back:
    each person's consents are aggregated by the database. On PostgreSQL its slices are
    written on two connections at once. A person's two identifiers sit in different slices
    with different consents: the consent events still say, once per person, everything the
    upload granted; someone who granted nothing has no event. The tidying publishes them 37
    people at a time, each slice starting where the one before stopped."""
    monkeypatch.setattr(generation, "TIDY_ROWS", 37)
    hub = sliced_hub
    applier = hub.app.state.upload_processor.applier
    writers: list[int] = []

    async def note_the_connection() -> None:  # which connection wrote the slice just done
        writers.append(id(sliced._CONNECTION.get()))

    # Another brand already holds some of the same people (the same digests): that does not
    # make this brand's upload anything but a first load, nor does the load touch theirs.
    other, _, other_headers = hub.partner_with_token("bank")
    theirs = [email_record(f"fl{i}", ref=f"bank-{i}", consents=[]) for i in range(20)]
    sent = send(hub, other_headers, ndjson(theirs)).json()["id"]
    assert wait_for(hub, other_headers, sent)["status"] == "completed"
    partner, _, headers = hub.partner_with_token("coffee")
    monkeypatch.setattr(applier, "between_slices", note_the_connection)
    first = (["analytics"], ["joint_offers"], [], ["rewards_sharing", "analytics"])
    second = (["joint_offers"], [], [], ["analytics"])
    rows = [email_record(f"fl{i}", ref=f"fl-{i}", consents=first[i % 4]) for i in range(300)]
    rows += [
        {
            "id_type": "phone",
            "id_hash": hash_identifier("phone", f"+3361{i:07d}"),
            "customer_ref": f"fl-{i}",
            "consents": second[i % 4],
        }
        for i in range(100)
    ]  # the phone rows come three slices of 100 after the first of their people's rows
    done = wait_for(hub, headers, send(hub, headers, ndjson(rows)).json()["id"], timeout=120)
    assert done["status"] == "completed", done
    assert (done["created"], done["matched"], done["applied"]) == (400, 0, 400)
    assert len(writers) == 4  # four slices of 100, each written once
    assert len(set(writers)) == (2 if hub.database_url.startswith("postgresql") else 1)

    def mask(names: list[str]) -> int:
        return sum(CONSENT_BITS[name] for name in names)

    expected = {f"fl-{i}": mask(first[i % 4]) | (mask(second[i % 4]) if i < 100 else 0)
                for i in range(300)}  # fmt: skip
    held = execute_sql(
        hub.database_url,
        "SELECT r.customer_ref, r.consents FROM identifier_records r "
        "JOIN partners p ON p.id = r.partner_id WHERE p.name = :name",
        name=partner["name"],
    )
    assert len(held) == 400
    per_person: dict[str, int] = defaultdict(int)
    for ref, consents in held:
        per_person[ref] |= consents
    assert per_person == expected
    events = execute_sql(
        hub.database_url,
        "SELECT e.customer_ref, e.granted, e.withdrawn, e.cause FROM consent_events e "
        "JOIN partners p ON p.id = e.partner_id WHERE p.name = :name",
        name=partner["name"],
    )
    refs = [ref for ref, *_ in events]
    assert len(refs) == len(set(refs)), "a person's upload event was published twice"
    assert {ref: (granted, withdrawn, cause) for ref, granted, withdrawn, cause in events} == {
        ref: (granted, 0, "upload") for ref, granted in expected.items() if granted
    }
    assert execute_sql(hub.database_url, "SELECT count(*) FROM identifier_pending_events") == [(0,)]
    assert records_of(hub, other["name"]) == {
        f"bank-{i}": ("1", 0, None) for i in range(20)
    }  # the other brand's records as they were: their refs, no consents

    # The next upload meets these records (the path that reads them back): one withdrawal.
    changed = [email_record("fl0", ref="fl-0", consents=[])]
    again = wait_for(hub, headers, send(hub, headers, ndjson(changed)).json()["id"], timeout=60)
    assert (again["status"], again["created"], again["matched"]) == ("completed", 0, 1)
    assert folded_consents(hub, partner["name"])["fl-0"] == mask(second[0])  # its phone's


def person_consents(hub: Hub, partner_name: str) -> dict[str, int]:
    """Each person's consents as their records hold them (people with none left out)."""
    held: dict[str, int] = defaultdict(int)
    for ref, consents in execute_sql(
        hub.database_url,
        "SELECT r.customer_ref, r.consents FROM identifier_records r "
        "JOIN partners p ON p.id = r.partner_id WHERE p.name = :name",
        name=partner_name,
    ):
        held[ref] |= consents
    return {ref: mask for ref, mask in held.items() if mask}


def upload_events(hub: Hub, partner_name: str) -> list[str]:
    return [
        ref
        for (ref,) in execute_sql(
            hub.database_url,
            "SELECT e.customer_ref FROM consent_events e JOIN partners p ON p.id = e.partner_id "
            "WHERE p.name = :name AND e.cause = 'upload' ORDER BY e.seq",
            name=partner_name,
        )
    ]


def publishing_state(hub: Hub, partner_name: str) -> list[tuple[Any, ...]]:
    """The first load still being published, and the last person published so far."""
    return [
        tuple(row)
        for row in execute_sql(
            hub.database_url,
            "SELECT s.publishing, s.published_after FROM identifier_state s "
            "JOIN partners p ON p.id = s.partner_id WHERE p.name = :name",
            name=partner_name,
        )
    ]


class TidyPause:
    """A hook between two slices of the tidying: at the ``at``-th it tells the test thread
    and waits until the test has done its writes (the hub keeps answering meanwhile)."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.calls = 0
        self.reached = threading.Event()
        self.released = threading.Event()

    async def __call__(self) -> None:
        self.calls += 1
        if self.calls == self.at:
            self.reached.set()
            await asyncio.to_thread(self.released.wait, 60)


def test_consent_changes_while_a_first_load_is_published_are_neither_lost_nor_undone(
    sliced_hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first load's consents are published from its records after the flip, 37 people a
    slice. Between two slices the partner withdraws, grants and erases, both for people
    already published and for people not yet published. Every person's events, folded in
    order, end at what their records hold; each person gets at most one upload event; an
    erased person, or one left with nothing, gets none; another brand sees nothing of it."""
    monkeypatch.setattr(generation, "TIDY_ROWS", 37)
    hub = sliced_hub
    applier = hub.app.state.upload_processor.applier
    other, _, other_headers = hub.partner_with_token("bank")
    theirs = [email_record(f"pub{i}", ref=f"pub-{i:03d}") for i in range(40)]
    sent = send(hub, other_headers, ndjson(theirs)).json()["id"]
    assert wait_for(hub, other_headers, sent)["status"] == "completed"
    their_events = upload_events(hub, other["name"])
    assert len(their_events) == 40

    partner, _, headers = hub.partner_with_token("coffee")
    pause = TidyPause(at=2)  # after two slices: pub-000 .. pub-073 published
    monkeypatch.setattr(applier, "between_tidy_slices", pause)
    rows = [email_record(f"pub{i}", ref=f"pub-{i:03d}") for i in range(300)]
    upload_id = send(hub, headers, ndjson(rows)).json()["id"]
    assert pause.reached.wait(60), "the tidying never reached its second slice"
    try:
        assert publishing_state(hub, partner["name"])[0][1] == "pub-073"
        published_so_far = set(upload_events(hub, partner["name"]))
        assert published_so_far == {f"pub-{i:03d}" for i in range(74)}

        def set_consents(ref: str, consents: list[str]) -> None:
            answer = hub.http.post(
                "/v1/identifiers/consents",
                json={"updates": [{"customer_ref": ref, "consents": consents}]},
                headers=headers,
            )
            assert answer.status_code == 200, answer.text

        set_consents("pub-005", ["joint_offers"])  # published: a withdrawal after it
        set_consents("pub-250", ["analytics"])  # not yet: a withdrawal before its grant
        set_consents("pub-260", ["analytics", "joint_offers", "rewards_sharing"])  # a grant
        set_consents("pub-270", [])  # not yet, and left with nothing
        erased = hub.http.post(
            "/v1/identifiers/erase", json={"customer_refs": ["pub-280", "pub-010"]}, headers=headers
        )
        assert erased.status_code == 200, erased.text
    finally:
        pause.released.set()
    done = wait_for(hub, headers, upload_id, timeout=120)
    assert done["status"] == "completed", done

    held = person_consents(hub, partner["name"])
    assert folded_consents(hub, partner["name"]) == held
    everything = CONSENT_BITS["analytics"] | CONSENT_BITS["joint_offers"]
    assert held["pub-250"] == CONSENT_BITS["analytics"]
    assert held["pub-260"] == everything | CONSENT_BITS["rewards_sharing"]
    assert held["pub-005"] == CONSENT_BITS["joint_offers"]
    assert not {"pub-270", "pub-280", "pub-010"} & set(held)
    assert len(held) == 300 - 3
    published = upload_events(hub, partner["name"])
    assert len(published) == len(set(published)), "a person's upload event was published twice"
    assert set(published) == set(held) | {"pub-010"}  # pub-010 was published, then erased
    assert publishing_state(hub, partner["name"]) == [(None, None)]
    # The other brand's events and records: as they were.
    assert upload_events(hub, other["name"]) == their_events
    assert person_consents(hub, other["name"]) == {f"pub-{i:03d}": everything for i in range(40)}


def test_a_first_load_whose_publishing_stops_midway_publishes_each_person_once(
    sliced_hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The apply loses its claim after three slices of publishing (as when its process
    stops): the upload is claimed again once its lease runs out and only the tidying is
    resumed, from the last person published (kept with the partner's state, in the same
    transaction as the events), so no one's upload event is published twice or skipped."""
    monkeypatch.setattr(generation, "TIDY_ROWS", 37)
    hub = sliced_hub
    applier = hub.app.state.upload_processor.applier
    calls = 0

    async def lose_the_claim() -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise LeaseLost("test: the claim is lost mid-publication")

    monkeypatch.setattr(applier, "between_tidy_slices", lose_the_claim)
    partner, _, headers = hub.partner_with_token("hotel")
    rows = [email_record(f"stop{i}", ref=f"stop-{i:03d}") for i in range(250)]
    upload_id = send(hub, headers, ndjson(rows)).json()["id"]
    done = wait_for(hub, headers, upload_id, timeout=120)
    assert done["status"] == "completed", done
    assert calls > 3, "the tidying was not resumed after the claim was lost"
    engine = create_hub_sync_engine(hub.database_url, writer=False)
    try:
        with engine.connect() as conn:
            attempts = conn.scalar(
                select(UPLOADS.c.attempts).where(UPLOADS.c.id == uuid.UUID(upload_id))
            )
    finally:
        engine.dispose()
    assert attempts == 2  # claimed again, and only tidied: the apply ran once
    published = upload_events(hub, partner["name"])
    assert sorted(published) == [f"stop-{i:03d}" for i in range(250)]
    held = person_consents(hub, partner["name"])
    assert len(held) == 250
    assert folded_consents(hub, partner["name"]) == held
    assert publishing_state(hub, partner["name"]) == [(None, None)]


def test_a_snapshot_mostly_unchanged_rewrites_only_what_changed(sliced_hub: Hub) -> None:
    """The daily snapshot again, in slices of 100: whole slices unchanged (only their counts
    are read back), and slices mixing unchanged records with new attributes, new consents,
    records moved to another person and new people. What changed is in the records, with its
    consent events; what did not is not rewritten (it keeps its generation); the counts
    cover every row."""
    hub = sliced_hub
    partner, _, headers = hub.partner_with_token("coffee")
    gold = {"tier": "gold"}
    every = ["analytics", "joint_offers", "rewards_sharing"]

    def row(n: int, **extra: Any) -> dict[str, Any]:
        return email_record(f"daily{n}", ref=f"d-{n}", **{"attributes": gold, **extra})

    first = upload_and_wait(hub, headers, ndjson([row(n) for n in range(400)]))
    assert (first["status"], first["created"]) == ("completed", 400)
    before = generations_of(hub, partner["name"])
    snapshot = (
        [row(n) for n in range(100)]  # a whole slice unchanged
        + [row(n, attributes={"tier": "silver"}) for n in range(100, 130)]
        + [row(n) for n in range(130, 160)]
        + [row(n, consents=every) for n in range(160, 180)]
        + [row(n, consents=["analytics"]) for n in range(180, 200)]
        + [email_record(f"daily{n}", ref=f"moved-{n}", attributes=gold) for n in range(200, 220)]
        + [row(n) for n in range(220, 400)]
        + [row(n) for n in range(400, 450)]  # new people
    )
    done = upload_and_wait(hub, headers, ndjson(snapshot))
    assert (done["status"], done["created"], done["matched"], done["removed"]) == (
        "completed",
        50,
        400,
        0,
    )
    records = records_of(hub, partner["name"])
    expected = {
        **{f"d-{n}": (["analytics", "joint_offers"], gold) for n in range(450)},
        **{f"d-{n}": (["analytics", "joint_offers"], {"tier": "silver"}) for n in range(100, 130)},
        **{f"d-{n}": (every, gold) for n in range(160, 180)},
        **{f"d-{n}": (["analytics"], gold) for n in range(180, 200)},
        **{f"moved-{n}": (["analytics", "joint_offers"], gold) for n in range(200, 220)},
    }
    for n in range(200, 220):
        del expected[f"d-{n}"]
    assert set(records) == set(expected)
    for ref, (consents, attributes) in expected.items():
        _, mask, held = records[ref]
        assert mask == sum(CONSENT_BITS[c] for c in consents), ref
        assert (held if isinstance(held, dict) else json.loads(held)) == attributes, ref
    after = generations_of(hub, partner["name"])
    changed = {f"d-{n}" for n in range(100, 130)} | {f"d-{n}" for n in range(160, 200)}
    unchanged = {f"d-{n}" for n in range(400)} - changed - {f"d-{n}" for n in range(200, 220)}
    assert all(after[ref] == before[ref] for ref in unchanged)
    assert all(after[ref] > before[ref] for ref in changed)
    folded = folded_consents(hub, partner["name"])
    assert folded == {ref: mask for ref, (_, mask, _) in records.items() if mask}


def generations_of(hub: Hub, partner_name: str) -> dict[str, int]:
    rows = execute_sql(
        hub.database_url,
        "SELECT r.customer_ref, r.generation FROM identifier_records r "
        f"JOIN partners p ON p.id = r.partner_id WHERE p.name = :name AND {CURRENT_SQL}",
        name=partner_name,
    )
    return {ref: int(generation) for ref, generation in rows}

"""The kit's HubClient against a live hub (SQLite, and PostgreSQL when configured), through
every method: tokens (secret and private_key_jwt, renewed when revoked), DataFrame uploads and
their round trip through overlaps and audiences, a failed upload's error report, pagination
past one page, rewards (events, feed, balances) and settlement statements with their finance
CSV -- and the hostile partner who asks for what is not its own."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from joserfc.jwk import RSAKey

from hub.cli import main as hub_main
from partners.kit import hash_identifier
from partners.kit.cli import main as hubkit_main
from partners.kit.client import HubClient
from partners.kit.errors import AuthenticationFailed, InvalidInput, NotFound
from partners.kit.frames import hash_frame
from partners.kit.uploads import RowsRefused
from partners.rewards.jobs import period_of
from tests.conftest import Hub
from tests.kit.client_helpers import brand, customers, partnership, raw_pages
from tests.rewards.helpers import launch_jobs_hub, ledger_problems, move_uses_to, run_job


@pytest.fixture(scope="module")
def hub(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with launch_jobs_hub(backend, tmp_path_factory.mktemp(f"kit-{backend}")) as running:
        yield running


@pytest.fixture(autouse=True)
def ledger_balances_after_each_test(hub: Hub) -> Iterator[None]:
    yield
    assert ledger_problems(hub.database_url) == []


# -- tokens ------------------------------------------------------------------------------------
def test_a_secret_client_and_a_key_file_client_each_read_their_own_partner(
    hub: Hub, tmp_path: Path
) -> None:
    airline = brand(hub, "airline")
    assert airline.kit.me()["partner"]["id"] == airline.id

    key = RSAKey.generate_key(2048, parameters={"kid": "brand-key-1", "alg": "RS256"})
    key_file = tmp_path / "brand.pem"
    key_file.write_bytes(key.as_pem(private=True))
    partner = hub.create_partner("coffee")
    creds = hub.create_client(
        partner["id"],
        ["rewards:read"],
        auth_method="private_key_jwt",
        jwks={"keys": [key.as_dict(private=False)]},
    )
    with HubClient(hub.url, creds["client_id"], private_key=key_file, progress=False) as kit:
        me = kit.me()
    assert me["partner"]["id"] == partner["id"]
    assert me["scopes"] == ["rewards:read"]


def test_wrong_credentials_are_an_authentication_error_not_a_crash(hub: Hub) -> None:
    airline = brand(hub, "airline")
    with (
        HubClient(hub.url, airline.client_id, "not-the-secret", progress=False) as kit,
        pytest.raises(AuthenticationFailed) as refused,
    ):
        kit.me()
    assert refused.value.title == "invalid_client"


def test_a_token_revoked_at_the_hub_is_renewed_once_and_the_call_goes_through(hub: Hub) -> None:
    airline = brand(hub, "airline")
    airline.kit.me()
    first = airline.kit.token
    assert first is not None
    revoked = hub.http.post(
        "/oauth/revoke",
        data={"token": first["access_token"]},
        auth=(airline.client_id, airline.secret),
    )
    assert revoked.status_code == 200
    fetched = airline.kit.token_fetches
    assert airline.kit.me()["partner"]["id"] == airline.id
    assert airline.kit.token_fetches == fetched + 1
    assert airline.kit.token["access_token"] != first["access_token"]  # type: ignore[index]


def test_a_token_marked_expired_is_renewed_before_the_request(hub: Hub) -> None:
    airline = brand(hub, "airline")
    airline.kit.me()
    before = airline.kit.token
    airline.kit.expire_token()
    airline.kit.me()
    assert airline.kit.token["access_token"] != before["access_token"]  # type: ignore[index]


# -- uploads and their round trip ------------------------------------------------------------
def test_a_dataframe_goes_up_hashed_and_comes_back_as_overlap_and_audience(
    hub: Hub, tmp_path: Path
) -> None:
    airline, hotel = brand(hub, "airline"), brand(hub, "hotel")
    pid = partnership(hub, airline, hotel, ["analytics", "joint_offers"])
    ours = customers("a", 40, 5, tier=["gold", "gold", "silver"])
    done = airline.kit.upload(ours)
    assert (done.status, done.rows_read, done.accepted, done.refused) == ("completed", 45, 45, 0)
    # The partner sends Parquet from disk: hashed by the kit on the way.
    theirs = customers("h", 40, 7, city=["paris", "rome"])
    theirs.to_parquet(tmp_path / "hotel.parquet")
    sent = hotel.kit.upload(tmp_path / "hotel.parquet")
    assert (sent.status, sent.accepted) == ("completed", 47)

    overlap = airline.kit.overlap(pid, by=["self.tier"])
    assert overlap.count == 40
    by_tier = overlap.to_pandas().set_index("self.tier")["count"].to_dict()
    tiers = ours.head(40)["attr.tier"].value_counts().to_dict()
    assert by_tier == tiers

    offer = airline.kit.post(
        "/v1/offers",
        {
            "partnership_id": pid,
            "title": "Fly and stay",
            "points": {airline.id: 500, hotel.id: 500},
            "holdout": 0,  # a small audience: no control group to keep above min_audience
        },
    )
    hotel.kit.post(f"/v1/offers/{offer['id']}/approve", creates=False)
    audience = airline.kit.audience_frame(offer["id"], page_size=7)  # many pages of 7
    expected = raw_pages(hub, airline.headers, f"/v1/offers/{offer['id']}/audience")
    assert len(audience) > 7
    assert list(audience["customer_ref"]) == [item["customer_ref"] for item in expected]
    assert set(audience["customer_ref"]) <= {f"a{n:02d}" for n in range(40)}

    # A hotel customer withdraws joint offers: the airline hears it through its changes.
    cursor = airline.kit.audience_changes(offer["id"]).next_cursor
    leaving = audience["customer_ref"].iloc[0]
    hotel.kit.update_consents([{"customer_ref": "h" + leaving[1:], "consents": ["analytics"]}])
    changes = airline.kit.audience_changes(offer["id"], cursor)
    assert [c["customer_ref"] for c in changes] == [leaving]
    assert changes.to_pandas()["customer_ref"].tolist() == [leaving]
    assert leaving not in set(airline.kit.audience(offer["id"]))


def test_an_upload_the_hub_fails_comes_back_with_its_error_report(hub: Hub, tmp_path: Path) -> None:
    airline = brand(hub, "airline")
    records = hash_frame(customers("e", 0, 30)).records
    records.loc[[3, 17], "id_hash"] = ["not-a-digest", "a" * 63]  # 2 of 30: over the 1 % limit
    failed = airline.kit.upload(records)
    assert failed.status == "failed"
    assert failed.refused == 2
    report = failed.errors_to_pandas()
    assert report["row"].tolist() == [4, 18]
    assert (report["field"] == "id_hash").all()
    assert "64 hex characters" in report["reason"].iloc[1]
    assert failed.error

    # The same file through `hub upload` and `hubkit upload`: exit 1 and the report on disk.
    path = tmp_path / "hashed.csv"
    records.to_csv(path, index=False)
    env = {"HUB_URL": hub.url, "HUB_CLIENT_ID": airline.client_id}
    env["HUB_CLIENT_SECRET"] = airline.secret
    result = CliRunner(env=env).invoke(
        hub_main, ["upload", str(path), "--errors", str(tmp_path / "report.csv"), "--quiet"]
    )
    assert result.exit_code == 1, result.output
    assert "failed" in result.output
    rows = list(csv.DictReader((tmp_path / "report.csv").open()))
    assert [(r["row"], r["field"]) for r in rows] == [("4", "id_hash"), ("18", "id_hash")]
    status = CliRunner(env=env).invoke(hub_main, ["status", failed.id])
    assert status.exit_code == 1
    assert f"upload {failed.id}: failed" in status.output


def test_hubkit_hashes_and_uploads_a_raw_file(
    hub: Hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    airline = brand(hub, "airline")
    customers("k", 0, 12).to_csv(tmp_path / "raw.csv", index=False)
    monkeypatch.setenv("HUB_URL", hub.url)
    monkeypatch.setenv("HUB_CLIENT_ID", airline.client_id)
    monkeypatch.setenv("HUB_CLIENT_SECRET", airline.secret)
    assert hubkit_main(["upload", str(tmp_path / "raw.csv"), "--quiet"]) == 0
    (latest,) = list(airline.kit.pages("/v1/identifiers/uploads"))
    assert (latest["status"], latest["accepted"]) == ("completed", 12)
    assert hubkit_main(["status", latest["id"]]) == 0


def test_rows_the_kit_refuses_stop_the_upload_before_anything_is_sent(hub: Hub) -> None:
    airline = brand(hub, "airline")
    frame = customers("r", 0, 5)
    frame.loc[2, "email"] = "no-at-sign"
    with pytest.raises(RowsRefused) as refused:
        airline.kit.upload(frame)
    assert refused.value.refused == [
        {"row": 2, "field": "email", "reason": "an email address needs an '@'"}
    ]
    assert list(airline.kit.pages("/v1/identifiers/uploads")) == []
    sent = airline.kit.upload(frame, allow_refused=True)
    assert (sent.status, sent.accepted) == ("completed", 4)


def test_a_partner_cannot_read_another_partners_upload(hub: Hub) -> None:
    airline, rival = brand(hub, "airline"), brand(hub, "airline")
    done = airline.kit.upload(customers("i", 0, 3))
    with pytest.raises(NotFound):
        rival.kit.upload_status(done.id)
    with pytest.raises(NotFound):
        list(rival.kit.upload_errors(done.id))


def test_a_bad_record_is_an_invalid_input_error_listing_it(hub: Hub) -> None:
    airline = brand(hub, "airline")
    good = {
        "id_type": "email",
        "id_hash": hash_identifier("email", "ok@example.org"),
        "customer_ref": "ok-1",
        "consents": ["analytics"],
    }
    bad = {**good, "id_hash": "jane@example.org", "customer_ref": "bad-1"}
    with pytest.raises(InvalidInput) as refused:
        airline.kit.send_records([good, bad])
    assert refused.value.status == 422
    assert refused.value.errors[0]["index"] == 1
    assert "raw email" in refused.value.errors[0]["reason"]
    assert "jane@example.org" not in str(refused.value)


# -- rewards and settlements -------------------------------------------------------------------
def test_events_feed_balances_and_settlement_statements(hub: Hub) -> None:
    airline, hotel = brand(hub, "airline"), brand(hub, "hotel")
    outsider = brand(hub, "bank")
    partnership(hub, airline, hotel, ["analytics", "rewards_sharing"])
    airline.kit.upload(customers("a", 3, 0))
    hotel.kit.upload(customers("h", 3, 0))
    digest = hash_identifier("email", "shopper.0@example.org")

    def event(event_id: str, kind: str, points: int, when: str | None = None) -> dict[str, object]:
        return {
            "event_id": event_id,
            "id_type": "email",
            "id_hash": digest,
            "kind": kind,
            "points": points,
            "occurred_at": when or "2026-11-20T10:00:00+00:00",
        }

    airline.kit.send_events([event("e1", "earn", 100, "2026-01-01T00:00:00Z")])
    airline.kit.send_events([event("e1", "earn", 100, "2026-01-01T00:00:00Z")])  # a replay
    hotel.kit.send_events([event("e2", "redeem", 70), event("e3", "earn", 5)])
    run_job(hub, "rewards_sync")

    feed = hotel.kit.feed(page_size=1)  # one item a page: the client follows the cursor
    frame = feed.to_pandas()
    assert frame[["customer_ref", "kind", "points"]].values.tolist() == [["h00", "earn", 100]]
    assert str(frame["occurred_at"].dtype).startswith("datetime64")
    assert hotel.kit.feed(feed.next_cursor).items == []
    balance = hotel.kit.balances(customer_ref="h00")
    assert (balance.points, balance.coalition_points) == (35, 35)
    balances = hotel.kit.balances_frame(["h00", "h01", "nobody"])
    assert balances["customer_ref"].tolist() == ["h00", "h01"]

    last_month = datetime.now(UTC).replace(day=1) - timedelta(days=3)
    move_uses_to(hub, last_month)
    run_job(hub, "settlement")
    start, _ = period_of(last_month, "month")
    (statement,) = [
        s for s in hotel.kit.settlements() if s.period_start.startswith(start.date().isoformat())
    ]
    mine = hotel.kit.settlement(statement.id)
    lines = mine.to_pandas()
    assert lines[
        ["from_partner_name", "to_partner_name", "points", "amount_minor"]
    ].values.tolist() == [[airline.name, hotel.name, 70, 70]]
    assert (lines["settlement_id"] == statement.id).all()
    exported = list(csv.DictReader(io.StringIO(hotel.kit.settlement_csv(statement.id))))
    assert [(r["from_partner_name"], r["to_partner_name"], r["points"]) for r in exported] == [
        (airline.name, hotel.name, "70")
    ]
    raw_csv = hub.http.get(
        f"/v1/rewards/settlements/{statement.id}",
        headers={**hotel.headers, "Accept": "text/csv"},
    )
    assert raw_csv.headers["content-type"].startswith("text/csv")
    assert raw_csv.text.splitlines()[0].startswith("settlement_id,period_start,period_end")
    frame = hotel.kit.settlements_frame()
    assert statement.id in set(frame["settlement_id"])

    # A partner that is no party to the statement learns nothing of it: 404, JSON or CSV.
    with pytest.raises(NotFound):
        outsider.kit.settlement(statement.id)
    with pytest.raises(NotFound):
        outsider.kit.settlement_csv(statement.id)
    seen = [s for s in outsider.kit.settlements() if s.id == statement.id]
    assert [s.lines for s in seen] == [[]]
    # The coalition admin reads any statement whole.
    with HubClient(hub.url, hub.admin_id, hub.admin_secret, progress=False) as admin:
        whole = list(csv.DictReader(io.StringIO(admin.settlement_csv(statement.id))))
        assert (airline.name, hotel.name, "70") in {
            (r["from_partner_name"], r["to_partner_name"], r["points"]) for r in whole
        }
        for unknown in (10**9, 2**63, 10**30, 0, -1):  # beyond a BIGINT too: 404, not 500
            with pytest.raises(NotFound):
                admin.settlement(unknown)


def test_offer_results_come_back_as_a_frame(hub: Hub) -> None:
    airline, hotel = brand(hub, "airline"), brand(hub, "hotel")
    pid = partnership(hub, airline, hotel, ["analytics", "joint_offers"])
    airline.kit.upload(customers("a", 300, 0, tier=["gold", "silver"]))
    hotel.kit.upload(customers("h", 300, 0))
    offer = airline.kit.post(
        "/v1/offers",
        {
            "partnership_id": pid,
            "title": "Measured",
            "points": {airline.id: 10, hotel.id: 10},
            "holdout": 0.3,
        },
    )
    hotel.kit.post(f"/v1/offers/{offer['id']}/approve", creates=False)
    results = airline.kit.offer_results(offer["id"])
    raw = hub.http.get(f"/v1/offers/{offer['id']}/results", headers=airline.headers).json()
    assert results.raw == raw  # the second read is the stored answer, served again
    frame = results.to_pandas().set_index("partner_id")
    assert set(frame.index) == {airline.id, hotel.id}
    for side in raw["sides"]:
        row = frame.loc[side["partner_id"]]
        assert row["treated.people"] == side["treated"]["people"]
        assert row["control.people"] == side["control"]["people"]
        assert row["treated.people"] + row["control.people"] == 300  # everyone, in one arm
        assert row["lift.p_value"] == side["lift"]["p_value"] or side["lift"]["suppressed"]
    segments = airline.kit.offer_results(offer["id"], by="self.tier").to_pandas()
    mine = segments[segments["partner_id"] == airline.id]
    assert sorted(mine["values.self.tier"]) == ["gold", "silver"]
    assert mine["treated.people"].sum() + mine["control.people"].sum() == 300

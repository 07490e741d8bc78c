"""`hub demo`: a demo coalition built in-process on a fresh database, then served and queried
over the API with the credentials it printed; a second run reuses the data and rotates the
credentials."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from hub.cli import main
from tests.conftest import (
    ROOT,
    LiveServer,
    drop_pg_database,
    execute_sql,
    make_database,
    start_hub,
)
from tests.console.helpers import csrf_of

CUSTOMERS = 3000  # per brand: the demo then asks a min_audience of 30 (a hundredth)
BRANDS = {"airline", "hotel", "coffee", "bank"}
JOBS = {
    "rewards_sync",
    "webhook_redelivery",
    "settlement",
    "points_expiry",
    "retention_purge",
    "match_key_rotation",
    "signing_key_rotation",
}
RAW_MARKERS = (b"@example.com", b"@example.org", b"@example.net", b"+447700")


@dataclass
class Demo:
    database_url: str
    data_dir: Path
    backend: str
    first: Result
    summary: dict[str, Any]
    customers: int = CUSTOMERS

    def run(self) -> Result:
        env = {
            "HUB_CONFIG": str(ROOT / "config" / "test.toml"),
            "HUB_DATABASE_URL": self.database_url,
            "HUB_SERVER_DATA_DIR": str(self.data_dir),
        }
        return CliRunner(env=env).invoke(
            main, ["demo", "--customers", str(self.customers), "--json"], catch_exceptions=False
        )

    def partner(self, key: str, summary: dict[str, Any] | None = None) -> dict[str, Any]:
        return next(p for p in (summary or self.summary)["partners"] if p["key"] == key)


@pytest.fixture(scope="module")
def demo(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    data_dir = tmp_path_factory.mktemp(f"demo-{backend}")
    database_url = make_database(backend, data_dir)  # empty: the demo migrates it
    demo = Demo(database_url, data_dir, backend, None, {})  # type: ignore[arg-type]
    demo.first = demo.run()
    assert demo.first.exit_code == 0, demo.first.output
    demo.summary = json.loads(demo.first.stdout)
    try:
        yield demo
    finally:
        if backend == "postgres":
            drop_pg_database(database_url)


@pytest.fixture(scope="module")
def served(demo: Demo) -> Iterator[LiveServer]:
    server = start_hub(demo.database_url, demo.data_dir)
    try:
        yield server
    finally:
        server.stop()


def token(http: httpx.Client, client_id: str, secret: str) -> httpx.Response:
    return http.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
    )


def bearer(http: httpx.Client, partner: dict[str, Any]) -> dict[str, str]:
    response = token(http, partner["client_id"], partner["client_secret"])
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def console_sign_in(server: LiveServer, user: dict[str, str]) -> int:
    with httpx.Client(base_url=server.url, follow_redirects=False, timeout=30) as http:
        form = http.get("/admin/sign-in")
        response = http.post(
            "/admin/sign-in",
            data={
                "_csrf": csrf_of(form.text),
                "username": user["username"],
                "password": user["password"],
            },
        )
        return response.status_code


def test_demo_builds_the_coalition_and_reports_its_counts(demo: Demo) -> None:
    summary = demo.summary
    assert {p["key"] for p in summary["partners"]} == BRANDS
    for partner in summary["partners"]:
        # Every customer has an email record; some a phone record too.
        assert partner["records"] >= CUSTOMERS
        assert partner["created_records"] == partner["records"]
        assert partner["client_id"]
        assert partner["client_secret"]
    assert summary["admin"]["client_secret"]
    assert [sorted(p["members"]) for p in summary["partnerships"]] == [
        ["airline", "hotel"],
        ["bank", "coffee"],
        ["airline", "bank"],
    ]
    assert {p["status"] for p in summary["partnerships"]} == {"active"}
    offer = summary["offer"]
    assert offer["status"] == "active"
    assert offer["holdout"] == 0.1
    assert set(offer["audience_sizes"]) == {"airline", "hotel"}
    assert min(offer["audience_sizes"].values()) >= 50
    assert summary["reward_events"] > 0
    assert {j["name"] for j in summary["jobs"]} == JOBS
    assert {j["status"] for j in summary["jobs"]} == {"succeeded"}
    sync = next(j for j in summary["jobs"] if j["name"] == "rewards_sync")
    assert sync["counts"]["events"] == summary["reward_events"]
    assert sync["counts"]["feed_items"] > 0


def test_no_raw_identifier_is_stored_or_printed(demo: Demo) -> None:
    for marker in RAW_MARKERS:
        assert marker.decode() not in demo.first.output
    if demo.backend != "sqlite":
        return
    for path in demo.data_dir.glob("hub.db*"):  # the database, its WAL and shared memory
        content = path.read_bytes()
        assert not [m for m in RAW_MARKERS if m in content], path.name


def test_the_api_answers_overlaps_and_feeds_for_the_demo_partners(
    demo: Demo, served: LiveServer
) -> None:
    airline_hotel = demo.summary["partnerships"][0]["id"]
    with httpx.Client(base_url=served.url, timeout=30) as http:
        airline = bearer(http, demo.partner("airline"))
        overlap = http.get(
            f"/v1/partnerships/{airline_hotel}/overlap",
            params={"purpose": "analytics"},
            headers=airline,
        )
        assert overlap.status_code == 200, overlap.text
        assert overlap.json()["suppressed"] is False
        assert overlap.json()["count"] >= 50
        hotel = bearer(http, demo.partner("hotel"))
        feed = http.get("/v1/rewards/feed", headers=hotel)
        assert feed.status_code == 200, feed.text
        items = feed.json()["items"]
        assert items
        assert {item["source_partner_id"] for item in items} == {demo.partner("airline")["id"]}
        audience = http.get(f"/v1/offers/{demo.summary['offer']['id']}/audience", headers=hotel)
        assert audience.status_code == 200, audience.text
        assert all(i["customer_ref"].startswith("HBR-") for i in audience.json()["items"])


def test_the_printed_console_account_signs_in(demo: Demo, served: LiveServer) -> None:
    assert demo.summary["console_user"]["username"] == "demo-admin"
    assert console_sign_in(served, demo.summary["console_user"]) == 303


def test_running_it_again_reuses_the_data_and_rotates_the_credentials(
    demo: Demo, served: LiveServer
) -> None:
    again = demo.run()
    assert again.exit_code == 0, again.output
    second = json.loads(again.stdout)
    assert second["reused"] is True
    assert second["reward_events"] == 0
    assert [p["id"] for p in second["partners"]] == [p["id"] for p in demo.summary["partners"]]
    assert [p["records"] for p in second["partners"]] == [
        p["records"] for p in demo.summary["partners"]
    ]
    assert [p["id"] for p in second["partnerships"]] == [
        p["id"] for p in demo.summary["partnerships"]
    ]
    assert second["offer"]["id"] == demo.summary["offer"]["id"]
    assert execute_sql(demo.database_url, "SELECT count(*) FROM partners") == [(4,)]
    assert execute_sql(demo.database_url, "SELECT count(*) FROM partnerships") == [(3,)]
    assert execute_sql(demo.database_url, "SELECT count(*) FROM offers") == [(1,)]
    with httpx.Client(base_url=served.url, timeout=30) as http:
        old = demo.partner("airline")
        assert token(http, old["client_id"], old["client_secret"]).status_code == 401
        new = demo.partner("airline", second)
        assert new["client_id"] != old["client_id"]
        assert bearer(http, new)
    assert second["console_user"]["username"] == "demo-admin-2"
    assert console_sign_in(served, demo.summary["console_user"]) == 401
    assert console_sign_in(served, second["console_user"]) == 303

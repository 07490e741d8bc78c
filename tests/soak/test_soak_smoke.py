"""A short soak run (bench/soak) on PostgreSQL: two `hub serve --no-worker`, a `hub worker`,
a webhook receiver and four brands and an admin under a small mixed load for a minute,
then the consistency audit. Timings are reported, never asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PG_URL, ROOT

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.skipif(
        not PG_URL,
        reason="the soak runs the scale-out deployment, which is PostgreSQL only: "
        "set HUB_TEST_POSTGRES_URL",
    ),
]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("soak") / "report.json"
    env = {**os.environ, "BENCH_PG_URL": str(PG_URL)}
    done = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--smoke", "--minutes", "1", "--json", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.exists(), (
        f"no report (exit {done.returncode}): {done.stdout[-3000:]}{done.stderr[-3000:]}"
    )
    return dict(json.loads(Path(out).read_text()))


def test_the_load_really_ran_on_every_route(report: dict[str, Any]) -> None:
    routes = report["routes"]
    for name in (
        "POST /v1/rewards/events",
        "POST /v1/rewards/events (replay)",
        "GET /v1/partnerships/{id}/overlap?by=",
        "GET /v1/offers/{id}/audience",
        "GET /v1/rewards/feed",
        "POST /v1/identifiers/consents",
        "POST /v1/identifiers/erase",
        "POST /v1/identifiers/uploads",
        "GET /admin/partners (console)",
    ):
        assert routes.get(name, {}).get("requests", 0) > 0, name
    assert report["tokens_issued"] > 5  # tokens expire within the run and are renewed
    assert report["audit"]["ledger"]["events"] > 0
    assert report["audit"]["feeds"]["stable_events"] > 0
    assert report["audit"]["webhooks"]["items_received"] > 0
    assert report["audit"]["feeds"]["withdrawn_items"] > 0  # consent changes reached the feeds


def test_no_request_is_answered_with_a_5xx(report: dict[str, Any]) -> None:
    failing = {n: r["statuses"] for n, r in report["routes"].items() if r["status_5xx"]}
    assert report["status_5xx"] == 0, failing


def test_every_hub_process_stayed_up(report: dict[str, Any]) -> None:
    assert report["processes_alive_throughout"]
    assert set(report["exit_codes"]) == {"serve-1", "serve-2", "worker"}


def test_the_ledger_sums_to_zero_and_every_lot_agrees_with_its_postings(
    report: dict[str, Any],
) -> None:
    ledger = report["audit"]["ledger"]
    assert ledger["postings_sum"] == 0
    assert ledger["unbalanced_transactions"] == []
    assert ledger["lots_disagreeing_with_postings"] == []
    assert ledger["ok"]


def test_every_event_is_in_exactly_one_feed_item_per_reader(report: dict[str, Any]) -> None:
    feeds = report["audit"]["feeds"]
    summary = {k: v for k, v in feeds.items() if k != "readers"}
    assert feeds["reader_event_pairs_doubled"] == 0, summary
    # Open (tests/rewards/test_sync_late_commit.py): a sync between two event requests that
    # commit out of id order loses the first one's events, so this can fail until it is fixed.
    assert feeds["stable_items_missing"] == 0, (summary, report["catch_up"])
    for code, reader in feeds["readers"].items():
        assert reader["api_items"] == reader["db_items"], code
        assert reader["api_items_repeated"] == 0, code
        assert reader["seen_twice_during_run"] == 0, code
        assert reader["foreign_refs"] == 0, code  # never another brand's customer_ref
    assert feeds["ok"]


def test_every_webhook_item_is_delivered_once_with_a_valid_signature(
    report: dict[str, Any],
) -> None:
    hooks = report["audit"]["webhooks"]
    assert hooks["feed_items_never_delivered"] == 0
    assert hooks["delivered_items_not_in_feed"] == 0
    assert hooks["webhook_ids_accepted_more_than_once"] == 0
    assert hooks["items_in_more_than_one_webhook"] == 0
    assert hooks["invalid_signatures"] == 0
    assert hooks["ok"]


def test_balances_equal_a_recomputation_from_the_postings(report: dict[str, Any]) -> None:
    balances = report["audit"]["balances"]
    assert balances["checked"] > 0
    assert balances["wrong"] == []


def test_replayed_event_requests_apply_nothing_twice(report: dict[str, Any]) -> None:
    replays = report["audit"]["replays"]
    assert replays.get("replayed", 0) > 0
    assert not replays.get("applied_again")


def test_the_audit_chain_verifies_against_the_signed_head(report: dict[str, Any]) -> None:
    chain = report["audit"]["audit_chain"]
    assert chain["verify"]["ok"], chain["verify"]
    assert chain["chain_links_ok"]
    assert chain["chain_reaches_signed_head"]


def test_every_upload_completed(report: dict[str, Any]) -> None:
    uploads = report["audit"]["uploads"]["runs"]
    assert uploads
    assert all(u["status"] == "completed" and u["refused"] == 0 for u in uploads), uploads

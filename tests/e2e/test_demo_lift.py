"""`hub demo` plants a lift at the hotel (hub/demo/campaign.py): the results endpoint finds it.

A demo large enough for the control arm's responders to pass the partnership's min_audience
(50) at the hotel: 30,000 customers per brand (about 650 held out per side). SQLite only: the
results' plumbing on PostgreSQL is covered by tests/api/test_offer_results.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from hub.demo.campaign import CONTROL_RATE, TREATED_RATE
from tests.conftest import LiveServer, make_database, start_hub
from tests.e2e.test_demo import Demo, bearer

CUSTOMERS = 30_000


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Demo, LiveServer]]:
    data_dir = tmp_path_factory.mktemp("demo-lift")
    demo = Demo(make_database("sqlite", data_dir), data_dir, "sqlite", None, {}, CUSTOMERS)  # type: ignore[arg-type]
    demo.first = demo.run()
    assert demo.first.exit_code == 0, demo.first.output
    demo.summary = json.loads(demo.first.stdout)
    server = start_hub(demo.database_url, demo.data_dir)
    try:
        yield demo, server
    finally:
        server.stop()


def test_the_offer_results_find_the_planted_lift_at_the_hotel(
    measured: tuple[Demo, LiveServer],
) -> None:
    demo, served = measured
    offer = demo.summary["offer"]
    assert offer["holdout"] == 0.1
    with httpx.Client(base_url=served.url, timeout=60) as http:
        hotel = bearer(http, demo.partner("hotel"))
        results = http.get(f"/v1/offers/{offer['id']}/results", headers=hotel)
        assert results.status_code == 200, results.text
        sides = {s["partner_id"]: s for s in results.json()["sides"]}
    lift = sides[demo.partner("hotel")["id"]]["lift"]
    assert lift["suppressed"] is False, json.dumps(sides)
    low, high = lift["absolute_ci"]
    standard_error = (high - low) / (2 * 1.96)
    # The planted lift, within four standard errors (a miss is a 1-in-15,000 event) ...
    assert abs(lift["absolute"] - (TREATED_RATE - CONTROL_RATE)) < 4 * standard_error
    # ... and significant: about six standard errors from zero at this size.
    assert lift["p_value"] < 0.001
    assert low > 0
    # The airline got no extra behaviour: its lift, when its counts are shown, is about 0.
    airline = sides[demo.partner("airline")["id"]]["lift"]
    if not airline["suppressed"]:
        a_low, a_high = airline["absolute_ci"]
        assert abs(airline["absolute"]) < 4 * (a_high - a_low) / (2 * 1.96)

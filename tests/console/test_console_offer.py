"""The console's offer page: the holdout split per side, and the measured lift with its
interval drawn as SVG, shown from the stored answer (viewing spends nothing) and measured
again only on a CSRF-protected post."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.api.test_offer_results import PEOPLE, earns, side_of, world
from tests.conftest import Hub
from tests.console.helpers import PYTHON_REPR, Console, create_console_user, visible_text


@pytest.fixture(scope="module")
def admin_user(hub: Hub) -> str:
    create_console_user(hub, "olga")
    return "olga"


@pytest.fixture
def console(hub: Hub, admin_user: str) -> Iterator[Console]:
    signed_in = Console(hub).signed_in(admin_user)
    yield signed_in
    signed_in.close()


def test_the_offer_page_shows_the_split_and_measures_lift_only_when_asked(
    hub: Hub, console: Console
) -> None:
    w = world(hub, holdout=0.2, epsilon=1.0, epsilon_budget=10.0)
    earns(hub, w, w.a, list(range(0, PEOPLE, 2)))
    path = f"/admin/offers/{w.offer['id']}"

    def spent() -> float:
        body = hub.as_admin("GET", f"/v1/partnerships/{w.partnership}/budget").json()
        return float(body["spent"])

    listed = console.http.get("/admin/offers").text
    assert path in listed
    before = console.http.get(path)
    assert before.status_code == 200, before.text
    text = visible_text(before.text)
    control = hub.as_admin("GET", f"/v1/offers/{w.offer['id']}").json()
    split = w.a.get(hub, f"/v1/offers/{w.offer['id']}").json()
    assert f"{split['audience_size']:,}" in text
    assert f"{split['control_size']:,}" in text
    assert control["holdout"] == 0.2
    assert "Not measured yet" in text
    assert spent() == 0.0
    forged = console.http.post(f"{path}/measure", data={"by": ""})
    assert forged.status_code == 403
    assert spent() == 0.0

    measured = console.post(f"{path}/measure", {"by": ""})
    assert measured.status_code == 303, measured.text
    assert spent() == 1.0
    page = console.http.get(measured.headers["location"])
    assert 'id="lift-chart"' in page.text
    assert "<circle" in page.text or "suppressed" in page.text
    shown = visible_text(page.text)
    assert "two-proportion" in shown
    assert not PYTHON_REPR.search(shown)
    for _ in range(3):  # viewing again spends nothing
        assert console.http.get(path).status_code == 200
    assert spent() == 1.0
    # The stored answer is the one the API serves again (free) at the same data.
    api = w.results(hub, w.a).json()
    assert api["epsilon_spent"] == 0.0
    treated = side_of(api, w.a)["treated"]
    assert f"{treated['people']:,}" in shown

    by_tier = console.post(f"{path}/measure", {"by": f"{w.a.id}.tier"})
    assert by_tier.status_code == 303
    segmented = visible_text(console.http.get(by_tier.headers["location"]).text)
    assert "gold" in segmented
    assert "silver" in segmented

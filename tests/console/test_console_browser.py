"""The console in a real browser (Debian's Chromium driven by Playwright): an admin signs in,
onboards a partner, creates its client, proposes a partnership the members accept, reads the
matrix and runs a job. Every page is saved as a screenshot under test-artifacts/console/."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.matching_helpers import Member, email, rec
from tests.conftest import ROOT, Hub, launch_hub
from tests.console.helpers import PASSWORD, create_console_user

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = ROOT / "test-artifacts" / "console"
NARROW = 800

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's Chromium (/usr/bin/chromium) is not installed"
)

if CHROMIUM.exists():
    from playwright.sync_api import Page, expect, sync_playwright


@pytest.fixture(scope="module")
def scheduled_hub(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with launch_hub(
        backend,
        tmp_path_factory.mktemp(f"console-{backend}"),
        HUB_JOBS_RUN_IN_SERVE="true",
        HUB_JOBS_REWARDS_SYNC_SECONDS="86400",
        HUB_JOBS_WEBHOOK_REDELIVERY_SECONDS="86400",
    ) as running:
        # The CLI runs its own event loop: before Playwright's sync API starts one.
        create_console_user(running, "ana")
        yield running


@pytest.fixture
def page(scheduled_hub: Hub) -> Iterator[Page]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox"], headless=True
        )
        context = browser.new_context(
            base_url=scheduled_hub.url, viewport={"width": 1366, "height": 860}
        )
        yield context.new_page()
        context.close()
        browser.close()


def shot(page: Page, backend: str, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{backend}-{name}.png"), full_page=True)


def assert_fits(page: Page) -> None:
    """The page is no wider than the window, give or take a scrollbar."""
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= NARROW + 20, f"{page.url} is {width} px wide in an {NARROW} px window"


def partner_member(hub: Hub, name: str, category: str) -> Member:
    response = hub.as_admin("POST", "/v1/partners", json={"name": name, "category": category})
    assert response.status_code == 201, response.text
    partner = response.json()
    client = hub.create_client(partner["id"], ["identifiers:write", "overlap:read"])
    token = hub.token(client["client_id"], client["client_secret"])
    return Member(partner["id"], {"Authorization": f"Bearer {token}"})


def test_an_admin_runs_the_coalition_from_the_console(
    scheduled_hub: Hub, page: Page, backend: str
) -> None:
    hub = scheduled_hub
    hotel = partner_member(hub, "Harbour Hotels", "hotel")
    coffee = partner_member(hub, "Beanery", "coffee")
    hotel.upload(hub, [rec(email(n), f"h{n}") for n in range(200)])
    coffee.upload(hub, [rec(email(n), f"c{n}") for n in range(150, 400)])

    # Sign in (the console sends a signed-out browser to the sign-in page).
    page.goto("/admin/partners")
    expect(page).to_have_url(f"{hub.url}/admin/sign-in?next=/admin/partners")
    shot(page, backend, "01-sign-in")
    page.get_by_label("Username").fill("ana")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{hub.url}/admin/partners")
    page.goto("/admin")
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    shot(page, backend, "02-overview")

    # Onboard a partner.
    page.goto("/admin/partners")
    page.get_by_label("Name").fill("Skyways")
    page.get_by_label("Category").fill("airline")
    page.get_by_role("button", name="Onboard").click()
    expect(page.get_by_text("Partner onboarded.")).to_be_visible()
    skyways_id = page.url.split("/admin/partners/")[1].split("?")[0]
    shot(page, backend, "03-partner-onboarded")
    page.goto("/admin/partners")
    expect(page.get_by_role("link", name="Skyways")).to_be_visible()
    shot(page, backend, "04-partners")

    # Create its client: the secret is shown once.
    page.goto(f"/admin/partners/{skyways_id}")
    page.get_by_label("Name").fill("crm-sync")
    page.check("input[name=scopes][value='identifiers:write']")
    page.check("input[name=scopes][value='overlap:read']")
    page.get_by_role("button", name="Create client").click()
    expect(page.get_by_role("heading", name="Client created")).to_be_visible()
    client_id = page.locator("#client-id").inner_text()
    secret = page.locator("#client-secret").inner_text()
    assert secret.startswith("cs_")
    shot(page, backend, "05-client-secret-shown-once")
    page.goto(f"/admin/partners/{skyways_id}")
    expect(page.get_by_text(client_id)).to_be_visible()
    assert secret not in page.content()
    shot(page, backend, "06-partner-with-client")

    # The brand uses its new client; its customers overlap the hotel's.
    skyways = Member(skyways_id, {"Authorization": f"Bearer {hub.token(client_id, secret)}"})
    skyways.upload(hub, [rec(email(n), f"s{n}") for n in range(120)])

    # Propose a partnership; each member accepts with its own token; the console shows it active.
    page.goto("/admin/partnerships")
    page.select_option("select[name=member_a]", skyways_id)
    page.select_option("select[name=member_b]", hotel.id)
    page.get_by_label("Minimum audience").fill("25")
    page.get_by_role("button", name="Propose").click()
    expect(page.locator("#partnership-status")).to_have_text("proposed")
    partnership_id = page.url.split("/admin/partnerships/")[1].split("?")[0]
    shot(page, backend, "07-partnership-proposed")
    for member in (skyways, hotel):
        accepted = member.post(hub, f"/v1/partnerships/{partnership_id}/accept")
        assert accepted.status_code == 200, accepted.text
    page.goto(f"/admin/partnerships/{partnership_id}")
    expect(page.locator("#partnership-status")).to_have_text("active")
    shot(page, backend, "08-partnership-active")
    page.goto("/admin/partnerships")
    shot(page, backend, "09-partnerships")

    # The coalition matrix: Skyways and Harbour (120 shared, min 25) shown, small pairs suppressed.
    page.goto("/admin/matrix")
    heatmap = page.locator("#heatmap")
    expect(heatmap).to_be_visible()
    expect(heatmap.locator("td", has_text="120").first).to_be_visible()
    expect(heatmap.locator("td.suppressed").first).to_be_visible()
    shot(page, backend, "10-matrix")

    # Run a job now and see its run appear once the scheduler picked the request up.
    page.goto("/admin/jobs")
    job = page.locator("#job-retention_purge")
    job.get_by_role("button", name="Run now").click()
    expect(page.get_by_text("A run of retention_purge was requested")).to_be_visible()
    deadline = time.monotonic() + 15
    while page.locator("#job-retention_purge tr.run").count() == 0:
        assert time.monotonic() < deadline, "the requested run never appeared"
        time.sleep(0.3)
        page.goto("/admin/jobs")
    expect(page.locator("#job-retention_purge tr.run").first).to_contain_text("request")
    shot(page, backend, "11-jobs-with-run")

    for name, path in (("12-offers", "/admin/offers"), ("13-rewards", "/admin/rewards")):
        page.goto(path)
        shot(page, backend, name)
    page.goto("/admin/audit?actor=console:ana")
    expect(page.locator("#chain-status")).to_contain_text("Chain intact")
    expect(page.get_by_role("link", name="partner.onboarded")).to_be_visible()
    shot(page, backend, "14-audit")

    # A laptop window split in two: the matrix and the audit log still fit 800 px (a wide
    # block scrolls inside its own box, never the page), the audit log names partners.
    for n in range(9):  # a matrix wider than the window
        partner_member(hub, f"Regional Partner {n + 1}", f"category{n}")
    page.set_viewport_size({"width": NARROW, "height": 900})
    page.goto("/admin/matrix")
    expect(page.locator("#heatmap")).to_be_visible()
    expect(page.locator("#heatmap th.row", has_text="Regional Partner 9")).to_be_attached()
    box = page.locator("#heatmap").locator("xpath=..")
    assert box.evaluate("e => e.scrollWidth > e.clientWidth"), "the matrix fits: nothing tested"
    assert_fits(page)
    shot(page, backend, "15-matrix-800px")
    page.goto("/admin/audit")
    expect(page.get_by_text("Harbour Hotels").first).to_be_visible()
    assert_fits(page)
    shot(page, backend, "16-audit-800px")
    page.goto(f"/admin/partnerships/{partnership_id}")
    expect(page.locator("#overlap")).to_contain_text("120 people")
    assert_fits(page)
    shot(page, backend, "17-partnership-800px")
    pages = ("", "/partners", f"/partners/{skyways_id}", "/partnerships", "/offers", "/rewards")
    for path in (*pages, "/jobs"):
        page.goto(f"/admin{path}")
        assert_fits(page)

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{hub.url}/admin/sign-in")
    page.goto("/admin")
    expect(page).to_have_url(f"{hub.url}/admin/sign-in?next=/admin")

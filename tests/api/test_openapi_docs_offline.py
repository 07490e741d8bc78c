"""/schema renders in a browser with no internet: the docs page's script, styles and icon come
from the hub itself (Swagger UI shipped by the swagger-ui-py package). Debian's Chromium driven
by Playwright, with every request to anything but the hub's loopback address refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import Hub

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's Chromium (/usr/bin/chromium) is not installed"
)

if CHROMIUM.exists():
    from playwright.sync_api import Page, Route, expect, sync_playwright


@pytest.fixture
def offline_page(hub: Hub) -> Iterator[tuple[Page, list[str]]]:
    refused: list[str] = []

    def only_loopback(route: Route) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
            return
        refused.append(route.request.url)
        route.abort("internetdisconnected")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            # A dead proxy for everything but loopback (Chromium bypasses proxies for loopback):
            # the network beyond the machine is gone even for requests the route misses.
            args=["--no-sandbox", "--proxy-server=http://127.0.0.1:9"],
            headless=True,
        )
        context = browser.new_context(base_url=hub.url)
        context.route("**/*", only_loopback)
        yield context.new_page(), refused
        context.close()
        browser.close()


def test_the_api_reference_renders_with_no_internet(
    offline_page: tuple[Page, list[str]],
) -> None:
    page, refused = offline_page
    page.goto("/schema")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Coalition hub API")
    # Operations of every kind are listed: admin, partner and OAuth endpoints.
    for path in ("/v1/partners", "/v1/identifiers", "/oauth/token"):
        expect(page.locator(f".opblock-summary-path[data-path='{path}']").first).to_be_visible()
    # The client-credentials scheme is offered for authorising the "try it out" requests.
    expect(page.locator("button.authorize")).to_be_visible()
    assert refused == [], f"the page reached outside the hub: {refused}"


def test_the_docs_assets_are_served_by_the_hub(hub: Hub) -> None:
    page = hub.http.get("/schema").text
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "swagger-ui-standalone-preset.js"):
        assert f"/schema/assets/{asset}" in page
        served = hub.http.get(f"/schema/assets/{asset}")
        assert served.status_code == 200, asset
        assert len(served.content) > 10_000
    assert "https://" not in page.split("<body>")[0]  # nothing in the head from elsewhere

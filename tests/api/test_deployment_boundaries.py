"""Trust boundaries of a deployment, over HTTP on both databases: proxy headers believed only
from listed proxies, console sign-in throttling that slows guessing but never locks an admin
out, webhook URLs only to public unicast addresses, private spool files removed after a crash;
and the small truths: `/` points somewhere, repeated records count as unchanged."""

from __future__ import annotations

import os
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hub.console import sign_in_throttle
from partners.identifiers.uploads.spool import create_private_body
from tests.api.uploads_helpers import email_record, ndjson
from tests.conftest import Hub, launch_hub, table_counts
from tests.console.helpers import PASSWORD, Console, create_console_user


# -- the index and the counts ------------------------------------------------------------------
def test_the_index_points_to_the_api_reference_and_the_console(hub: Hub) -> None:
    response = hub.http.get("/")
    assert response.status_code == 200
    links = response.json()["links"]
    assert links["api_reference"] == "/schema"
    assert links["console"] == "/admin"
    for path in links.values():  # every link leads somewhere
        assert hub.http.get(path, follow_redirects=False).status_code in {200, 303, 405}


def test_sending_the_same_records_again_counts_them_unchanged(hub: Hub) -> None:
    _, _, headers = hub.partner_with_token("airline", ["identifiers:write"])
    records = [email_record(f"same-{i}") for i in range(3)]
    first = hub.http.post("/v1/identifiers", json={"records": records}, headers=headers)
    assert first.json() == {"accepted": 3, "created": 3, "updated": 0, "unchanged": 0}
    again = hub.http.post("/v1/identifiers", json={"records": records}, headers=headers)
    assert again.json() == {"accepted": 3, "created": 0, "updated": 0, "unchanged": 3}
    records[1] = {**records[1], "consents": ["analytics"]}
    records[2] = {**records[2], "attributes": {"tier": "gold"}}
    changed = hub.http.post("/v1/identifiers", json={"records": records}, headers=headers)
    assert changed.json() == {"accepted": 3, "created": 0, "updated": 2, "unchanged": 1}


# -- webhook URLs --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("https://224.0.1.1/hooks", "multicast"),
        ("https://[ff0e::1]/hooks", "multicast"),
        ("https://239.255.255.250/hooks", "multicast"),
        ("https://0.0.0.0/hooks", "unspecified"),
        ("https://[::]/hooks", "unspecified"),
        ("https://255.255.255.255/hooks", "broadcast"),
        ("https://240.0.0.1/hooks", "reserved"),
        ("https://169.254.169.254/latest", "link-local"),
        ("https://[fe80::1]/hooks", "link-local"),
        ("https://[::ffff:224.0.1.1]/hooks", "reserved"),
    ],
)
def test_a_webhook_url_to_a_non_unicast_address_is_refused(hub: Hub, url: str, kind: str) -> None:
    before = table_counts(hub.database_url)
    body = {"name": f"hooked-{uuid.uuid4().hex[:8]}", "category": "hotel", "webhook_url": url}
    response = hub.as_admin("POST", "/v1/partners", json=body)
    assert response.status_code == 422, response.text
    assert kind in response.json()["detail"]
    assert response.json()["errors"][0]["field"] == "webhook_url"
    assert table_counts(hub.database_url) == before


# -- proxy headers -----------------------------------------------------------------------------
def failed_token_requests(hub: Hub, count: int, forwarded_for: str | None = None) -> list[int]:
    statuses = []
    for n in range(count):
        address = forwarded_for or f"198.51.100.{n + 1}"
        response = hub.http.post(
            "/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(f"nobody-{uuid.uuid4().hex[:8]}", "wrong"),
            headers={"X-Forwarded-For": address},
        )
        statuses.append(response.status_code)
    return statuses


def sign_in_cookie(hub: Hub) -> str:
    page = hub.http.get("/admin/sign-in", headers={"X-Forwarded-Proto": "https"})
    return str(page.headers["set-cookie"]).lower()


@pytest.fixture(scope="module")
def proxied(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """A hub behind a listed proxy (this machine), its spool left to a later process, and
    two partial bodies in its spool before it starts: one of a dead process, one held."""
    data_dir = tmp_path_factory.mktemp(f"proxied-{backend}")
    spool = data_dir / "uploads"
    spool.mkdir()
    dead = spool / f".incoming-{uuid.uuid4()}"
    dead.write_bytes(b'{"id_type": "email"}\n')
    held_path = spool / f".incoming-{uuid.uuid4()}"
    held = create_private_body(held_path)  # a live process still receiving it: this one
    long_ago = time.time() - 3600
    for path in (dead, held_path):
        os.utime(path, (long_ago, long_ago))
    env = {"HUB_SERVER_FORWARDED_ALLOW_IPS": "127.0.0.1", "HUB_UPLOADS_PROCESS_IN_SERVE": "false"}
    with launch_hub(backend, data_dir, **env) as running:
        running.partials = (dead, held_path)  # type: ignore[attr-defined]
        yield running
    held.close()


def test_forwarded_headers_are_ignored_unless_a_proxy_is_listed(
    backend: str, tmp_path: Path
) -> None:
    with launch_hub(backend, tmp_path) as direct:
        limit = direct.app.state.settings.oauth.failed_auth_limit_per_address
        statuses = failed_token_requests(direct, limit + 1)
        # Each request claimed another address; the hub counted the one that connected.
        assert statuses[:limit] == [401] * limit
        assert statuses[limit] == 429
        assert "secure" not in sign_in_cookie(direct)


def test_forwarded_headers_from_a_listed_proxy_name_the_client(proxied: Hub) -> None:
    limit = proxied.app.state.settings.oauth.failed_auth_limit_per_address
    assert set(failed_token_requests(proxied, limit + 5)) == {401}  # one failure per address
    one = failed_token_requests(proxied, limit + 1, forwarded_for="203.0.113.77")
    assert one[limit] == 429  # ... and all of them from one forwarded address
    assert "secure" in sign_in_cookie(proxied)


# -- console sign-in throttling ----------------------------------------------------------------
def sign_in_from(hub: Hub, address: str, username: str, password: str) -> httpx.Response:
    browser = Console(hub)
    browser.http.headers["X-Forwarded-For"] = address
    try:
        return browser.sign_in(username, password)
    finally:
        browser.close()


def sign_in_waiting(hub: Hub, address: str, username: str, cap: float) -> httpx.Response:
    """The right password from ``address``, waiting out a delay (never longer than ``cap``)."""
    for _ in range(5):
        response = sign_in_from(hub, address, username, PASSWORD)
        if response.status_code != 429:
            return response
        wait = int(response.headers["retry-after"])
        assert wait <= cap
        time.sleep(wait)
    return response


def test_failures_at_one_address_never_lock_the_admin_out_from_another(proxied: Hub) -> None:
    create_console_user(proxied, "dana")
    guesser = "203.0.113.9"
    failures = 0
    while failures < sign_in_throttle.FAILURES_PER_PAIR:
        response = sign_in_from(proxied, guesser, "dana", "guess")
        if response.status_code == 429:  # the name's growing delay: wait it out
            time.sleep(int(response.headers["retry-after"]))
            continue
        assert response.status_code == 401
        failures += 1
    # The guesser's address is paused for this name, even with the right password...
    paused = sign_in_from(proxied, guesser, "dana", PASSWORD)
    assert paused.status_code == 429
    assert int(paused.headers["retry-after"]) > sign_in_throttle.MAX_DELAY_SECONDS
    # ... while the admin elsewhere waits at most the name's delay (never the guesser's pause).
    admin = sign_in_waiting(proxied, "198.51.100.200", "dana", sign_in_throttle.MAX_DELAY_SECONDS)
    assert admin.status_code == 303


def test_guessing_from_many_addresses_only_delays_the_name(
    proxied: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sign_in_throttle, "MAX_DELAY_SECONDS", 1.0)  # the rule, sped up
    create_console_user(proxied, "emil")
    counted = 0
    waits: list[int] = []
    for n in range(40):
        response = sign_in_from(proxied, f"192.0.2.{n + 1}", "emil", "guess")
        if response.status_code == 429:
            waits.append(int(response.headers["retry-after"]))
            time.sleep(waits[-1])
            continue
        assert response.status_code == 401
        counted += 1
        if counted == 10:
            break
    assert counted == 10
    assert waits  # the name was delayed...
    assert max(waits) <= 1  # ... by at most the rule's maximum: never a lock
    admin = sign_in_waiting(proxied, "198.51.100.201", "emil", 1.0)
    assert admin.status_code == 303


# -- the spool ---------------------------------------------------------------------------------
def test_a_partial_body_left_by_a_dead_process_is_removed_at_start(proxied: Hub) -> None:
    dead, held = proxied.partials  # type: ignore[attr-defined]
    assert not dead.exists()
    assert held.exists()  # its process (this one) is alive and holds it


def test_spooled_bodies_are_readable_by_the_hub_alone(proxied: Hub) -> None:
    _, _, headers = proxied.partner_with_token("coffee", ["identifiers:write"])
    response = proxied.http.post(
        "/v1/identifiers/uploads",
        content=ndjson([email_record("spooled")]),
        headers={**headers, "Content-Type": "application/x-ndjson"},
    )
    assert response.status_code == 202, response.text
    body = proxied.data_dir / "uploads" / f"{response.json()['id']}.body"
    assert stat.S_IMODE(body.stat().st_mode) == 0o600


def test_the_name_delay_grows_and_never_passes_about_30_seconds() -> None:
    delays = [sign_in_throttle.username_delay(n) for n in range(10)]
    assert delays == [0, 0, 0, 1, 2, 4, 8, 16, 30, 30]
    assert max(sign_in_throttle.username_delay(n) for n in range(0, 100_000, 7)) == 30

"""The console over HTTP: sessions, CSRF, throttling, the bearer-token wall, the audit trail."""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest

from tests.conftest import Hub, execute_sql, launch_hub, run_cli, table_counts
from tests.console.helpers import (
    PASSWORD,
    PYTHON_REPR,
    Console,
    create_console_user,
    csrf_of,
    visible_text,
)


@pytest.fixture(scope="module")
def admin_user(hub: Hub) -> str:
    create_console_user(hub, "ana")
    return "ana"


@pytest.fixture
def console(hub: Hub, admin_user: str) -> Iterator[Console]:
    signed_in = Console(hub).signed_in(admin_user)
    yield signed_in
    signed_in.close()


def test_the_console_redirects_to_sign_in_without_a_session(hub: Hub) -> None:
    anonymous = Console(hub)
    response = anonymous.http.get("/admin/partners")
    assert response.status_code == 303
    assert response.headers["location"] == "/admin/sign-in?next=/admin/partners"
    anonymous.close()


def test_the_session_cookie_is_httponly_samesite_and_expires(hub: Hub, admin_user: str) -> None:
    browser = Console(hub)
    response = browser.sign_in(admin_user)
    assert response.status_code == 303
    cookie = next(c for c in response.headers.get_list("set-cookie") if "hub_console=" in c)
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "samesite", "max-age", "path"} <= attributes
    assert "samesite=strict" in cookie.lower()
    assert "path=/admin" in cookie.lower()
    browser.close()


def test_passwords_are_stored_as_argon2_hashes(hub: Hub, admin_user: str) -> None:
    rows = execute_sql(
        hub.database_url, "SELECT password_hash FROM console_users WHERE username = :u", u="ana"
    )
    stored = rows[0][0]
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored


def test_a_form_post_without_the_csrf_token_is_refused_and_changes_nothing(
    hub: Hub, console: Console
) -> None:
    before = table_counts(hub.database_url)
    without = console.http.post("/admin/partners", data={"name": "NoToken", "category": "hotel"})
    wrong = console.http.post(
        "/admin/partners", data={"_csrf": "forged", "name": "Forged", "category": "hotel"}
    )
    elsewhere = console.post(
        "/admin/partners",
        {"name": "CrossSite", "category": "hotel"},
        headers={"Origin": "https://evil.example"},
    )
    assert [without.status_code, wrong.status_code, elsewhere.status_code] == [403, 403, 403]
    assert "Form refused" in without.text
    assert table_counts(hub.database_url) == before


def test_an_expired_session_redirects_to_sign_in(hub: Hub, admin_user: str) -> None:
    browser = Console(hub).signed_in(admin_user)
    assert browser.http.get("/admin/partners").status_code == 200
    execute_sql(hub.database_url, "UPDATE console_sessions SET expires_at = created_at")
    response = browser.http.get("/admin/partners")
    assert response.status_code == 303
    assert response.headers["location"].startswith("/admin/sign-in")
    browser.close()


def test_a_partner_api_token_cannot_open_the_console(hub: Hub) -> None:
    _, _, partner_headers = hub.partner_with_token("coffee")
    before = table_counts(hub.database_url)
    for headers in (partner_headers, hub.admin_headers()):
        page = hub.http.get("/admin/partners", headers=headers, follow_redirects=False)
        assert page.status_code == 303
        assert page.headers["location"].startswith("/admin/sign-in")
        posted = hub.http.post(
            "/admin/partners",
            data={"name": "ViaToken", "category": "hotel"},
            headers=headers,
            follow_redirects=False,
        )
        assert posted.status_code == 303
    assert table_counts(hub.database_url) == before


def test_sign_in_is_throttled_after_repeated_failures(hub: Hub) -> None:
    create_console_user(hub, "bruno")
    browser = Console(hub)
    statuses = [browser.sign_in("bruno", "not the password").status_code for _ in range(5)]
    # Three tries are free; then each failure delays the next try for the name (1 s, 2 s …).
    assert statuses == [401, 401, 401, 429, 429]
    time.sleep(int(browser.sign_in("bruno", "not the password").headers["retry-after"]))
    assert browser.sign_in("bruno", "not the password").status_code == 401
    # Even the right password waits now: the guesser learns nothing more.
    refused = browser.sign_in("bruno")
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) > 0
    assert "Too many failed sign-ins" in refused.text
    browser.close()


def test_a_client_secret_is_shown_once(hub: Hub, console: Console) -> None:
    partner = hub.create_partner("hotel")
    created = console.post(
        f"/admin/partners/{partner['id']}/clients",
        {"name": "crm", "scopes": ["overlap:read", "offers:read"]},
    )
    assert created.status_code == 200
    secret = created.text.split('id="client-secret">')[1].split("<")[0]
    assert secret.startswith("cs_")
    client_id = created.text.split('id="client-id">')[1].split("<")[0]
    assert hub.token(client_id, secret)  # the secret works
    again = console.http.get(f"/admin/partners/{partner['id']}")
    assert client_id in again.text
    assert secret not in again.text
    # A reload resubmits the form with the token it was sent with: refused, no second client.
    resubmitted = console.post(
        f"/admin/partners/{partner['id']}/clients",
        {"name": "crm", "scopes": ["overlap:read", "offers:read"]},
    )
    assert resubmitted.status_code == 403
    listed = hub.as_admin("GET", f"/v1/partners/{partner['id']}/clients").json()["items"]
    assert len(listed) == 1


def test_every_console_action_is_audited_under_the_admins_name(hub: Hub, console: Console) -> None:
    onboarded = console.post("/admin/partners", {"name": "Audited Air", "category": "airline"})
    partner_id = onboarded.headers["location"].split("/")[-1].split("?")[0]
    other = hub.create_partner("bank_card")
    console.post(f"/admin/partners/{partner_id}/status", {"status": "suspended"})
    console.post(f"/admin/partners/{partner_id}/status", {"status": "active"})
    proposed = console.post(
        "/admin/partnerships",
        {"member_a": partner_id, "member_b": other["id"], "purposes": "analytics"},
    )
    assert proposed.status_code == 303, proposed.text
    partnership_id = proposed.headers["location"].split("/")[-1].split("?")[0]
    console.post(f"/admin/partnerships/{partnership_id}/status", {"status": "ended"})
    assert console.post("/admin/jobs/retention_purge/run", {}).status_code == 303
    entries = hub.as_admin("GET", "/v1/audit", params={"actor": "console:ana", "limit": 100})
    actions = {e["action"] for e in entries.json()["items"]}
    assert {
        "console.signed_in",
        "partner.onboarded",
        "partner.suspended",
        "partner.reactivated",
        "partnership.proposed",
        "partnership.ended",
        "job.run_requested",
    } <= actions


def test_a_refused_action_shows_the_rule_and_writes_nothing(hub: Hub, console: Console) -> None:
    before = table_counts(hub.database_url)
    response = console.post("/admin/partners", {"name": "Bad", "category": "Not A Slug!"})
    assert response.status_code == 422
    assert "category" in response.text
    after = table_counts(hub.database_url)
    assert after == before


def test_signing_out_ends_the_session(hub: Hub, admin_user: str) -> None:
    browser = Console(hub).signed_in(admin_user)
    cookie = browser.http.cookies.get("hub_console", path="/admin")
    assert browser.post("/admin/sign-out", {}).status_code == 303
    stale = Console(hub)
    stale.http.cookies.set("hub_console", cookie or "", path="/admin")
    assert stale.http.get("/admin").status_code == 303
    browser.close()
    stale.close()


def test_disabling_a_user_ends_its_sessions(hub: Hub) -> None:
    create_console_user(hub, "carla")
    browser = Console(hub).signed_in("carla")
    result = run_cli(hub, "admin", "users", "disable", "carla", "--json")
    assert result.exit_code == 0, result.output
    assert browser.http.get("/admin").status_code == 303
    assert browser.sign_in("carla").status_code == 401
    listed = run_cli(hub, "admin", "users", "list", "--json")
    assert '"disabled": true' in listed.output
    browser.close()


@pytest.mark.parametrize(
    "path",
    [
        "/admin",
        "/admin/partners",
        "/admin/partnerships",
        "/admin/matrix",
        "/admin/offers",
        "/admin/rewards",
        "/admin/jobs",
        "/admin/audit",
    ],
)
def test_every_page_renders(console: Console, path: str) -> None:
    response = console.http.get(path)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


def test_the_rewards_page_charts_activity_per_day_and_the_open_settlement(
    hub: Hub, console: Console
) -> None:
    from datetime import UTC, datetime, timedelta

    from tests.rewards.helpers import SHARE, brands, enrol, event, send

    pair = brands(hub)
    enrol(hub, pair.a, "r1", "a-r1", SHARE)
    enrol(hub, pair.b, "r1", "b-r1", SHARE)
    yesterday = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    now = datetime.now(UTC).isoformat()
    earned = send(hub, pair.a, [event("e1", "r1", "earn", 500, occurred_at=yesterday)])
    assert earned.status_code == 200, earned.text
    redeemed = send(hub, pair.b, [event("r1", "r1", "redeem", 200, occurred_at=now)])
    assert redeemed.status_code == 200, redeemed.text
    response = console.http.get("/admin/rewards")
    assert response.status_code == 200
    assert 'class="bar earn"' in response.text
    assert 'class="bar redeem"' in response.text
    assert "500 points" in response.text


def test_viewing_the_matrix_never_spends_epsilon_and_a_refresh_does(
    hub: Hub, console: Console
) -> None:
    from tests.api.matching_helpers import email, members, rec

    a, b, partnership = members(hub, epsilon=0.5, epsilon_budget=5.0)

    def share(start: int, n: int) -> None:
        a.upload(hub, [rec(email(f"view-{i}"), f"a{i}") for i in range(start, start + n)])
        b.upload(hub, [rec(email(f"view-{i}"), f"b{i}") for i in range(start, start + n)])

    def spent() -> float:
        body = hub.as_admin("GET", f"/v1/partnerships/{partnership}/budget").json()
        return float(body["spent"])

    share(0, 30)
    for _ in range(3):
        viewed = console.http.get("/admin/matrix")
        assert viewed.status_code == 200, viewed.text
        assert "Refresh (spends ε)" in viewed.text
    assert spent() == 0.0
    forged = console.http.post("/admin/matrix/refresh", data={"purpose": "analytics"})
    assert forged.status_code == 403
    assert spent() == 0.0
    refreshed = console.post("/admin/matrix/refresh", {"purpose": "analytics"})
    assert refreshed.status_code == 303
    assert refreshed.headers["location"] == "/admin/matrix?purpose=analytics&done=refreshed"
    assert spent() == 0.5
    assert "was refreshed" in console.http.get(refreshed.headers["location"]).text
    # Served again from the stored answer; after a change, shown stale until a refresh.
    share(30, 15)
    for _ in range(3):
        assert console.http.get("/admin/matrix").status_code == 200
    assert spent() == 0.5
    assert console.post("/admin/matrix/refresh", {"purpose": "analytics"}).status_code == 303
    assert spent() == 1.0


# -- names, readable values, the partnership's overlap and offers, a busy database ------------
STALE = '<span class="badge proposed">stale</span>'


def as_uuid(value: object) -> UUID:
    """A UUID column as read over plain SQL (16 bytes or hex on SQLite, a UUID on PostgreSQL)."""
    if isinstance(value, UUID):
        return value
    if isinstance(value, bytes):
        return UUID(bytes=value)
    return UUID(str(value))


def partner_name(hub: Hub, partner_id: str) -> str:
    return str(hub.as_admin("GET", f"/v1/partners/{partner_id}").json()["name"])


def test_the_audit_page_names_partners_and_clients_and_shows_no_python_reprs(
    hub: Hub, console: Console
) -> None:
    a, a_client, a_headers = hub.partner_with_token("hotel")
    b, _, b_headers = hub.partner_with_token("coffee")
    proposed = hub.as_admin(
        "POST", "/v1/partnerships", json={"members": [a["id"], b["id"]], "purposes": ["analytics"]}
    )
    assert proposed.status_code == 201, proposed.text
    partnership = proposed.json()["id"]
    for headers in (a_headers, b_headers):
        accepted = hub.http.post(f"/v1/partnerships/{partnership}/accept", headers=headers)
        assert accepted.status_code == 200, accepted.text
    # The entries hold what would print as reprs: a list, None and a boolean.
    entries = hub.as_admin("GET", "/v1/audit", params={"target_id": partnership}).json()["items"]
    details = [v for e in entries for v in e["details"].values()]
    assert any(isinstance(v, list) for v in details)
    assert any(v is None for v in details)
    assert any(isinstance(v, bool) for v in details)

    page = console.http.get("/admin/audit", params={"target": partnership})
    assert page.status_code == 200, page.text
    text = visible_text(page.text)
    assert "partnership.accepted" in text
    assert f"{a['name']} · {a_client['name']}" in text  # client:<id> as its partner and name
    pair = {f"members {a['name']}, {b['name']}", f"members {b['name']}, {a['name']}"}
    assert any(named in text for named in pair)  # ids inside the details are named too
    assert a["id"] not in text
    assert b["id"] not in text
    assert a_client["client_id"] not in text
    assert f'title="client:{a_client["client_id"]}"' in page.text  # the id stays at hand
    assert f'title="{a["id"]}"' in page.text
    assert not PYTHON_REPR.search(text), PYTHON_REPR.search(text)


def test_the_overview_names_actors_and_targets(hub: Hub, console: Console) -> None:
    partner = hub.create_partner("bakery")
    suspended = console.post(f"/admin/partners/{partner['id']}/status", {"status": "suspended"})
    assert suspended.status_code == 303
    text = visible_text(console.http.get("/admin").text)
    assert "partner.suspended" in text
    assert partner["name"] in text
    assert partner["id"] not in text


def test_a_long_detail_is_cut_with_the_whole_value_one_click_away(
    hub: Hub, console: Console
) -> None:
    tag = uuid.uuid4().hex[:8]
    names = [f"{brand} {tag}" + " International Holdings" * 3 for brand in ("North", "South")]
    ids = []
    for name, category in zip(names, ("hotel", "airline"), strict=True):
        created = hub.as_admin("POST", "/v1/partners", json={"name": name, "category": category})
        assert created.status_code == 201, created.text
        ids.append(created.json()["id"])
    proposed = hub.as_admin(
        "POST", "/v1/partnerships", json={"members": ids, "purposes": ["analytics"]}
    )
    assert proposed.status_code == 201, proposed.text
    page = console.http.get("/admin/audit", params={"target": proposed.json()["id"]}).text
    whole = ", ".join(names)
    assert len(whole) > 120
    cut = page.split("<dt>members</dt><dd>")[1].split("</dd>")[0]
    summary = cut.split("<summary>")[1].split("</summary>")[0]
    assert summary.endswith("…")
    assert len(summary) <= 120
    assert whole.startswith(summary[:-1])
    assert f"<span>{whole}</span>" in cut  # the whole value, inside the disclosure


def test_a_partnerships_page_shows_its_stored_overlap_without_spending(
    hub: Hub, console: Console
) -> None:
    from tests.api.matching_helpers import email, members, rec

    a, b, partnership = members(hub, epsilon=0.5, epsilon_budget=5.0)

    def share(start: int, n: int) -> None:
        a.upload(hub, [rec(email(f"pp-{i}"), f"a{i}") for i in range(start, start + n)])
        b.upload(hub, [rec(email(f"pp-{i}"), f"b{i}") for i in range(start, start + n)])

    def spent() -> float:
        body = hub.as_admin("GET", f"/v1/partnerships/{partnership}/budget").json()
        return float(body["spent"])

    def overlap_section() -> str:
        page = console.http.get(f"/admin/partnerships/{partnership}")
        assert page.status_code == 200, page.text
        return page.text.split('id="overlap"')[1].split("</section>")[0]

    share(0, 40)
    assert "analytics not answered yet" in visible_text(overlap_section())
    assert console.post("/admin/matrix/refresh", {"purpose": "analytics"}).status_code == 303
    assert spent() == 0.5
    rows = execute_sql(
        hub.database_url,
        "SELECT partnership_id, count FROM matrix_answers WHERE purpose = 'analytics'",
    )
    stored = [(count,) for pid, count in rows if pid and as_uuid(pid) == UUID(partnership)]
    assert len(stored) == 1
    for _ in range(3):
        shown = overlap_section()
        assert f"{stored[0][0]:,}</strong> people (noised)" in shown
        assert STALE not in shown
    # New data: the stored answer is shown as stale, and still nothing is spent.
    share(40, 10)
    shown = overlap_section()
    assert f"{stored[0][0]:,}</strong> people (noised)" in shown
    assert STALE in shown
    assert spent() == 0.5


def test_a_partnerships_page_lists_its_offers_with_audience_sizes(
    hub: Hub, console: Console
) -> None:
    from tests.api.matching_helpers import email, members, rec

    a, b, partnership = members(hub, min_audience=10)
    a.upload(hub, [rec(email(f"po-{i}"), f"a{i}") for i in range(30)])
    b.upload(hub, [rec(email(f"po-{i}"), f"b{i}") for i in range(25)])
    proposed = a.post(
        hub,
        "/v1/offers",
        {
            "partnership_id": partnership,
            "title": "Stay and fly: double points",
            "points": {a.id: 500, b.id: 500},
            "ends_at": "2099-01-31T00:00:00Z",
            "holdout": 0,
        },
    )
    assert proposed.status_code == 201, proposed.text
    offer = proposed.json()["id"]
    waiting = console.http.get(f"/admin/partnerships/{partnership}").text
    offers = visible_text(waiting.split('id="offers"')[1].split("</section>")[0])
    assert "Stay and fly: double points" in offers
    assert "proposed" in offers
    assert b.post(hub, f"/v1/offers/{offer}/approve").status_code == 200
    active = console.http.get(f"/admin/partnerships/{partnership}").text
    offers = visible_text(active.split('id="offers"')[1].split("</section>")[0])
    a_name, b_name = partner_name(hub, a.id), partner_name(hub, b.id)
    assert "active" in offers
    assert "→ 2099-01-31" in offers
    assert f"{a_name}: 25" in offers
    assert f"{b_name}: 25" in offers
    assert f"proposed by {a_name}" in offers
    assert not PYTHON_REPR.search(visible_text(active))


@pytest.fixture(scope="module")
def impatient_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with launch_hub(
        "sqlite", tmp_path_factory.mktemp("console-busy"), HUB_DATABASE_SQLITE_BUSY_TIMEOUT_MS="200"
    ) as running:
        create_console_user(running, "dora")
        yield running


def test_a_busy_database_during_sign_in_shows_a_page_and_changes_nothing(
    impatient_hub: Hub,
) -> None:
    hub = impatient_hub
    browser = Console(hub)
    form = browser.http.get("/admin/sign-in")
    before = table_counts(hub.database_url)
    holder = sqlite3.connect(Path(hub.database_url.split("///", 1)[1]), isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # as the apply of a large upload does
        response = browser.http.post(
            "/admin/sign-in",
            data={"_csrf": csrf_of(form.text), "username": "dora", "password": PASSWORD},
        )
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["retry-after"] == "5"
    assert "The hub is busy" in visible_text(response.text)
    assert "nothing was changed" in response.text
    assert table_counts(hub.database_url) == before
    assert browser.sign_in("dora").status_code == 303
    browser.close()

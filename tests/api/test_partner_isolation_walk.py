"""Partner against partner, on every operation of the OpenAPI document that takes an id.

The walker reads the live hub's document and, for each operation with path parameters, fills
them with a victim's real objects — the kind of each parameter is found from its name
(`partnership_id`, `offer_id`…) or else from the resource segment before it (`/v1/jobs/{name}`
is a job) — and sends the request with the tokens of every partner that has no right to the
object (a client with every partner scope and a client with one), then again with counterfeit
ids of the same shape. The two answers must not differ: status, and body shape (keys and
types, recursively; problem details by status, title and keys, since their detail names the
id). A difference tells the attacker that the object exists, or more: a leak. The walk counts
what it walked against the document, so an endpoint added later is walked too, or the test
fails saying why it could not build the request. Afterwards the victims read the same and no
table gained or lost a row.

Rights come from membership, not from the answers: a partner may reach its own partner record,
clients and uploads, the partnerships it is a member of and their offers, the settlements whose
lines name it and the deliveries sent to it; jobs belong to no partner. Ids in query strings
(`?partner_id=` filters) are not walked: a filter by a partner one shares a partnership with
rightly returns entries, so "differs from a counterfeit" would not mean a leak there.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hub.core.auth import PARTNER_SCOPES
from tests.api.matching_helpers import Member, email, rec
from tests.api.openapi_walk import (
    Operation,
    answer,
    body_of,
    counterfeit,
    id_operations,
    kind_of,
    path_for,
    query_of,
)
from tests.api.uploads_helpers import email_record, ndjson, upload_and_wait
from tests.conftest import Hub, execute_sql, launch_hub, table_counts
from tests.rewards.helpers import SHARE, enrol, event, run_job, send

NARROW_SCOPE = "identifiers:write"
SHARED_PEOPLE = 12  # above the partnership's min_audience, so an offer activates


@pytest.fixture(scope="module")
def hub(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """A hub whose scheduler runs in-process, so settlement and sync run when asked."""
    quiet = {
        "HUB_JOBS_REWARDS_SYNC_SECONDS": "86400",
        "HUB_JOBS_WEBHOOK_REDELIVERY_SECONDS": "86400",
        **{
            f"HUB_JOBS_{name.upper()}_CRON": "0 0 1 1 *"
            for name in (
                "settlement",
                "points_expiry",
                "retention_purge",
                "match_key_rotation",
            )
        },
    }
    with launch_hub(
        backend,
        tmp_path_factory.mktemp(f"isolation-walk-{backend}"),
        HUB_JOBS_RUN_IN_SERVE="true",
        **quiet,
    ) as running:
        yield running


@dataclass
class Brand:
    name: str
    id: str
    client_id: str
    headers: dict[str, str]
    narrow_headers: dict[str, str]

    @property
    def member(self) -> Member:
        return Member(self.id, self.headers)


@dataclass(frozen=True)
class Victim:
    """A real object, the ids its paths need (by kind), and the partners entitled to it."""

    kind: str
    ids: dict[str, str]
    entitled: frozenset[str]
    owner: Brand | None = None  # a partner that may read it, for the control requests


@dataclass
class Coalition:
    brands: dict[str, Brand]
    victims: list[Victim]
    views: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[Victim]:
        return [v for v in self.victims if v.kind == kind]

    def attackers(self) -> Iterator[tuple[str, str, dict[str, str]]]:
        """(who, partner id, headers): each partner's full token and its narrow one."""
        for brand in self.brands.values():
            yield brand.name, brand.id, brand.headers
            yield f"{brand.name} ({NARROW_SCOPE} only)", brand.id, brand.narrow_headers


def onboard(hub: Hub, name: str, category: str, **extra: Any) -> Brand:
    """A partner with a client holding every partner scope, and a narrow second client (one
    scope): an answer must not depend on whether the object exists before the scope check."""
    partner = hub.create_partner(category, **extra)
    tokens = []
    for scopes in (list(PARTNER_SCOPES), [NARROW_SCOPE]):
        client = hub.create_client(partner["id"], scopes)
        tokens.append((client, hub.token(client["client_id"], client["client_secret"])))
    (client, token), (_, narrow) = tokens
    return Brand(
        name,
        partner["id"],
        client["client_id"],
        {"Authorization": f"Bearer {token}"},
        {"Authorization": f"Bearer {narrow}"},
    )


def partnership(hub: Hub, a: Brand, b: Brand, accepted_by: tuple[Brand, ...] = ()) -> str:
    """A partnership of A and B, active once both accept (``accepted_by``)."""
    response = hub.as_admin(
        "POST",
        "/v1/partnerships",
        json={
            "members": [a.id, b.id],
            "purposes": ["analytics", "joint_offers", "rewards_sharing"],
            "min_audience": 10,
        },
    )
    assert response.status_code == 201, response.text
    partnership = str(response.json()["id"])
    for member in accepted_by:
        accepted = member.member.post(hub, f"/v1/partnerships/{partnership}/accept")
        assert accepted.status_code == 200, accepted.text
    return partnership


def propose_offer(hub: Hub, a: Brand, b: Brand, partnership: str, title: str) -> str:
    body: dict[str, Any] = {
        "partnership_id": partnership,
        "title": title,
        "points": {a.id: 1000, b.id: 1000},
    }
    schemas = hub.http.get("/schema/openapi.json").json()["components"]["schemas"]
    if "holdout" in schemas["OfferCreate"].get("properties", {}):
        body["holdout"] = 0  # everyone treated: a small shared audience still activates
    response = a.member.post(hub, "/v1/offers", body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def settle_and_sync(hub: Hub, a: Brand, b: Brand) -> None:
    """A issues points that B redeems last month; the settlement job closes that month, and
    the sync feeds the activity to the other brand (B's webhook gets a delivery)."""
    for brand in (a, b):
        enrol(hub, brand.member, "walk", f"{brand.name}-rewards", SHARE)
    earned = send(hub, a.member, [event("walk-earn", "walk", "earn", 100)])
    assert earned.status_code == 200, earned.text
    redeemed = send(hub, b.member, [event("walk-redeem", "walk", "redeem", 70)])
    assert redeemed.status_code == 200, redeemed.text
    last_month = datetime.now(UTC).replace(day=1) - timedelta(days=3)
    execute_sql(hub.database_url, "UPDATE reward_lot_uses SET at = :at", at=last_month)
    run_job(hub, "settlement")
    run_job(hub, "rewards_sync")


@pytest.fixture(scope="module")
def coalition(hub: Hub) -> Coalition:
    """A and B in an active partnership with offers, rewards, a settlement and a webhook
    delivery; A and C in a suspended one, with C's offer; B and C in one that B has not
    accepted; a client and an upload each. Statuses vary because a check of the status
    before the membership would answer 409 where a stranger must get 404."""
    a = onboard(hub, "a", "airline")
    b = onboard(hub, "b", "hotel", webhook_url="http://127.0.0.1:9/hook")
    c = onboard(hub, "c", "coffee")
    brands = {x.name: x for x in (a, b, c)}
    ab = partnership(hub, a, b, accepted_by=(a, b))
    ac = partnership(hub, a, c, accepted_by=(a, c))
    bc = partnership(hub, b, c, accepted_by=(c,))
    for brand in (a, b):
        brand.member.upload(
            hub, [rec(email(f"walk-{n}"), f"{brand.name}-{n}") for n in range(SHARED_PEOPLE)]
        )
    proposed = propose_offer(hub, a, b, ab, "Proposed: fly and stay")
    active = propose_offer(hub, a, b, ab, "Active: fly and stay")
    approved = b.member.post(hub, f"/v1/offers/{active}/approve")
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "active", approved.text
    c_offer = propose_offer(hub, c, a, ac, "Proposed: coffee with your flight")
    suspended = hub.as_admin("PATCH", f"/v1/partnerships/{ac}", json={"status": "suspended"})
    assert suspended.status_code == 200, suspended.text
    settle_and_sync(hub, a, b)

    victims = [
        Victim("partnership", {"partnership": ab}, frozenset((a.id, b.id)), a),
        Victim("partnership", {"partnership": ac}, frozenset((a.id, c.id)), c),
        Victim("partnership", {"partnership": bc}, frozenset((b.id, c.id)), c),
        Victim("offer", {"offer": proposed, "partnership": ab}, frozenset((a.id, b.id)), a),
        Victim("offer", {"offer": active, "partnership": ab}, frozenset((a.id, b.id)), b),
        Victim("offer", {"offer": c_offer, "partnership": ac}, frozenset((a.id, c.id)), c),
    ]
    for brand in brands.values():
        own = frozenset({brand.id})
        records = [email_record(f"walk-{brand.name}-{n}") for n in range(3)]
        upload = upload_and_wait(hub, brand.headers, ndjson(records))
        victims += [
            Victim("partner", {"partner": brand.id}, own, brand),
            Victim("client", {"partner": brand.id, "client": brand.client_id}, own, brand),
            Victim("upload", {"upload": upload["id"], "partner": brand.id}, own, brand),
        ]
    victims += settlements(hub) + deliveries(hub)
    staging_cleared(hub)
    for job in hub.as_admin("GET", "/v1/jobs").json()["items"]:
        victims.append(Victim("job", {"job": job["name"]}, frozenset()))
    return Coalition(brands, victims, views=admin_views(brands, victims, hub))


def staging_cleared(hub: Hub) -> None:
    """Wait for the uploads' staging rows to be cleared (after they finish), so the row
    counts compared around the walk move only if the walk writes."""
    deadline = time.monotonic() + 30
    while execute_sql(hub.database_url, "SELECT count(*) FROM identifier_staging")[0][0]:
        assert time.monotonic() < deadline, "staging rows were never cleared"
        time.sleep(0.05)


def settlements(hub: Hub) -> list[Victim]:
    """Closed statements, each entitled to the partners its lines name."""
    items = hub.as_admin("GET", "/v1/rewards/settlements").json()["items"]
    assert items, "the settlement job closed no statement"
    return [
        Victim(
            "settlement",
            {"settlement": str(statement["id"])},
            frozenset(
                side
                for line in statement["lines"]
                for side in (line["from_partner_id"], line["to_partner_id"])
            ),
        )
        for statement in items
    ]


def deliveries(hub: Hub) -> list[Victim]:
    """Webhook deliveries, each entitled to the partner it is sent to."""
    items = hub.as_admin("GET", "/v1/webhooks/deliveries").json()["items"]
    assert items, "the sync queued no webhook delivery"
    return [
        Victim("delivery", {"delivery": str(d["id"])}, frozenset({str(d["partner_id"])}))
        for d in items
    ]


def admin_views(
    brands: dict[str, Brand], victims: list[Victim], hub: Hub
) -> list[tuple[str, str, dict[str, str]]]:
    """What to read before and after the walk to see that no victim changed."""
    admin = hub.admin_headers()
    owner_of = {b.id: b.headers for b in brands.values()}
    views = [
        ("GET", "/v1/rewards/settlements", admin),
        ("GET", "/v1/webhooks/deliveries", admin),
    ]
    for victim in victims:
        ids = victim.ids
        if victim.kind == "partner":
            views.append(("GET", f"/v1/partners/{ids['partner']}", admin))
            views.append(("GET", f"/v1/partners/{ids['partner']}/clients", admin))
        elif victim.kind == "partnership":
            views.append(("GET", f"/v1/partnerships/{ids['partnership']}", admin))
        elif victim.kind == "offer":
            views.append(("GET", f"/v1/offers/{ids['offer']}", admin))
        elif victim.kind == "upload":
            owner = owner_of[ids["partner"]]
            views.append(("GET", f"/v1/identifiers/uploads/{ids['upload']}", owner))
    return views


def rows(hub: Hub) -> dict[str, int]:
    """Rows per table, but for the scheduler's own bookkeeping (a scheduled run may start
    during the walk; a run asked for by a request would show as a run request)."""
    counts = table_counts(hub.database_url)
    return {table: n for table, n in counts.items() if table not in {"job_runs", "job_leases"}}


def snapshot(hub: Hub, coalition: Coalition) -> list[Any]:
    out = []
    for method, path, headers in coalition.views:
        response = hub.http.request(method, path, headers=headers)
        assert response.status_code == 200, (path, response.text)
        out.append((path, response.json()))
    return out


@dataclass
class Walk:
    """Sends an operation with a victim's real ids and with counterfeits of them, and keeps
    what differed."""

    hub: Hub
    doc: dict[str, Any]
    findings: list[str] = field(default_factory=list)

    def send(self, operation: Operation, ids: dict[str, str], headers: dict[str, str]) -> Any:
        body = body_of(self.doc, operation)
        response = self.hub.http.request(
            operation.method,
            path_for(operation, ids),
            params=query_of(self.doc, operation),
            headers={**headers, "Idempotency-Key": str(uuid.uuid4())},
            **({} if body is None else {"json": body}),
        )
        if response.status_code >= 500:
            self.findings.append(f"{operation} answered {response.status_code}: {response.text}")
        return response

    def differs(self, operation: Operation, victim: Victim, headers: dict[str, str]) -> str | None:
        """How the answer on the victim's ids differs from the answer on counterfeits."""
        real = self.send(operation, victim.ids, headers)
        fake_ids = {kind: counterfeit(value) for kind, value in victim.ids.items()}
        fake = self.send(operation, fake_ids, headers)
        if answer(real) == answer(fake):
            return None
        return f"{answer(real)} != {answer(fake)}: {real.text[:300]}"


def victims_for(coalition: Coalition, operation: Operation) -> list[Victim]:
    """The victims whose ids fill every path parameter of ``operation``."""
    kinds = [kind_of(operation.path, p["name"]) for p in operation.path_parameters]
    assert None not in kinds, f"the walker cannot tell what {operation} takes: add its kind"
    primary = str(kinds[-1])
    fitting = [v for v in coalition.of_kind(primary) if all(k in v.ids for k in kinds)]
    assert fitting, f"the walker has no {primary} to try {operation} on: create one"
    return fitting


def test_no_partner_tells_another_partners_objects_from_ids_that_do_not_exist(
    hub: Hub, coalition: Coalition
) -> None:
    doc = hub.http.get("/schema/openapi.json").json()
    operations = id_operations(doc)
    walk = Walk(hub, doc)
    before, counts = snapshot(hub, coalition), rows(hub)
    walked: set[str] = set()
    for operation in operations:
        for victim in victims_for(coalition, operation):
            for who, partner_id, headers in coalition.attackers():
                if partner_id in victim.entitled:
                    continue  # members read their partnership and offers, owners their own
                walked.add(str(operation))
                difference = walk.differs(operation, victim, headers)
                if difference:
                    walk.findings.append(
                        f"{operation} by {who} on a {victim.kind} of "
                        f"{sorted(victim.entitled)}: {difference}"
                    )
    assert not walk.findings, "\n".join(walk.findings)
    assert len(walked) == len(operations), {str(o) for o in operations} - walked
    assert {o.path for o in operations if str(o) in walked} == {p for p in doc["paths"] if "{" in p}
    assert snapshot(hub, coalition) == before
    assert rows(hub) == counts  # nothing written, not even an audit entry or a run request


def test_the_walkers_reads_reach_the_real_objects(hub: Hub, coalition: Coalition) -> None:
    """The control: for a caller entitled to the object (its owner, else an admin), every
    read on the victim's ids differs from the same read on counterfeits — so the walk asks
    about live objects with well-formed requests, and its "no difference" means something."""
    doc = hub.http.get("/schema/openapi.json").json()
    walk = Walk(hub, doc)
    unproven = []
    for operation in id_operations(doc):
        if operation.method != "GET":
            continue  # writes are not replayed with rights: they would change the victims
        pairs = [
            (victim, caller)
            for victim in victims_for(coalition, operation)
            for caller in [*([victim.owner.headers] if victim.owner else []), hub.admin_headers()]
        ]
        if not any(walk.differs(operation, victim, caller) for victim, caller in pairs):
            unproven.append(str(operation))
    assert not walk.findings, "\n".join(walk.findings)
    assert unproven == []


@pytest.mark.parametrize(
    ("path", "name", "kind"),
    [
        ("/v1/partners/{id}", "id", "partner"),
        ("/v1/partners/{partner_id}/clients/{client_id}", "client_id", "client"),
        ("/v1/offers/{id}/results", "id", "offer"),
        ("/v1/identifiers/uploads/{id}", "id", "upload"),
        ("/v1/rewards/settlements/{id}", "id", "settlement"),
        ("/v1/webhooks/deliveries/{id}/replay", "id", "delivery"),
        ("/v1/jobs/{name}/run", "name", "job"),
        ("/v1/widgets/{widget_id}", "widget_id", None),
    ],
)
def test_the_walker_tells_an_ids_kind_by_its_name_or_segment(
    path: str, name: str, kind: str | None
) -> None:
    assert kind_of(path, name) == kind


def test_the_walker_fails_loudly_on_a_path_it_cannot_fill() -> None:
    unknown = Operation("GET", "/v1/widgets/{widget_id}", [{"name": "widget_id", "in": "path"}], {})
    nothing = Coalition({}, [])
    with pytest.raises(AssertionError, match="cannot tell what GET /v1/widgets"):
        victims_for(nothing, unknown)
    settlement = Operation(
        "GET", "/v1/rewards/settlements/{id}", [{"name": "id", "in": "path"}], {}
    )
    with pytest.raises(AssertionError, match="has no settlement"):
        victims_for(nothing, settlement)

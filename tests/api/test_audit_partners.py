"""To each its own: a partner with scope audit:read reads the audit entries that concern it —
never another partner's — and verifies them itself, from the HTTP answers alone, up to the
signed head. Job runs and key operations concern no partner: only admins see them."""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from joserfc import jws
from joserfc.jwk import KeySet
from sqlalchemy.ext.asyncio import async_sessionmaker

from hub.core.db import create_hub_async_engine
from hub.jobs.context import JobContext, JobFailed
from hub.jobs.registry import JobSpec
from hub.jobs.runner import JobRunner
from tests.api.matching_helpers import SCOPES, Member, email, members, rec
from tests.conftest import Hub, run_cli

GENESIS = "0" * 64


@dataclass
class Scene:
    a: Member  # reads its audit entries (audit:read)
    b: Member  # its partner in the partnership and the offer
    c: Member  # a third partner, in nothing with A
    a_blind: dict[str, str]  # headers of an A client without audit:read
    partnership: str
    offer: str


@pytest.fixture(scope="module")
def scene(hub: Hub) -> Scene:
    a, b, partnership = members(hub, min_audience=10, scopes=[*SCOPES, "audit:read"])
    c_partner, _, c_headers = hub.partner_with_token("coffee", [*SCOPES, "audit:read"])
    c = Member(c_partner["id"], c_headers)
    blind = hub.create_client(a.id, SCOPES)
    a_blind = {"Authorization": f"Bearer {hub.token(blind['client_id'], blind['client_secret'])}"}
    a.upload(hub, [rec(email(f"s{n}"), f"a{n:02d}", tier="gold") for n in range(30)])
    b.upload(hub, [rec(email(f"s{n}"), f"b{n:02d}", city="rome") for n in range(30)])
    c.upload(hub, [rec(email(f"c{n}"), f"c{n:02d}") for n in range(5)])
    overlap = a.get(hub, f"/v1/partnerships/{partnership}/overlap", purpose="analytics")
    assert overlap.status_code == 200, overlap.text
    proposed = a.post(
        hub,
        "/v1/offers",
        {
            "partnership_id": partnership,
            "title": "Fly and stay",
            "points": {a.id: 500, b.id: 500},
            "filters": {a.id: {"tier": ["gold"]}},
            "holdout": 0,
        },
    )
    assert proposed.status_code == 201, proposed.text
    offer = proposed.json()["id"]
    approved = b.post(hub, f"/v1/offers/{offer}/approve", {"filters": {"city": ["rome"]}})
    assert approved.status_code == 200, approved.text
    assert a.get(hub, f"/v1/offers/{offer}/audience").status_code == 200
    assert a.get(hub, f"/v1/offers/{offer}/audience", format="csv").status_code == 200
    assert b.get(hub, f"/v1/offers/{offer}/audience/changes").status_code == 200
    return Scene(a, b, c, a_blind, partnership, offer)


def entries(hub: Hub, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    """Every page of GET /v1/audit."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**params, "limit": 100, **({"cursor": cursor} if cursor else {})}
        response = hub.http.get("/v1/audit", params=query, headers=headers)
        assert response.status_code == 200, response.text
        items += response.json()["items"]
        cursor = response.json()["next_cursor"]
        if not cursor:
            return items


def admin_entries(hub: Hub, **params: Any) -> list[dict[str, Any]]:
    return entries(hub, hub.admin_headers(), **params)


# -- what a partner reads ----------------------------------------------------------------------


def test_a_partner_reads_its_partnership_and_offer_entries(hub: Hub, scene: Scene) -> None:
    mine = entries(hub, scene.a.headers)
    actions = {e["action"] for e in mine}
    assert {
        "partnership.proposed",
        "partnership.accepted",
        "partnership.activated",
        "overlap.answered",
        "offer.proposed",
        "offer.approved",
        "offer.activated",
        "offer.audience_read",
        "offer.audience_exported",
        "offer.audience_changes_read",
        "identifiers.uploaded",
        "token.issued",
    } <= actions
    assert all(scene.a.id in e["concerns"] for e in mine)
    # B's approval and B's audience reads concern A too: offer actions concern both members.
    assert any(e["action"] == "offer.approved" and e["partner_id"] == scene.b.id for e in mine)
    assert any(
        e["action"] == "offer.audience_changes_read" and e["partner_id"] == scene.b.id for e in mine
    )


def test_a_partner_never_reads_another_partners_own_entries(hub: Hub, scene: Scene) -> None:
    mine = entries(hub, scene.a.headers)
    seqs = {e["seq"] for e in mine}
    b_own = [e for e in admin_entries(hub, partner_id=scene.b.id) if e["concerns"] == [scene.b.id]]
    assert {e["action"] for e in b_own} >= {"identifiers.uploaded", "token.issued"}
    assert not seqs & {e["seq"] for e in b_own}
    c_all = admin_entries(hub, concerns=scene.c.id)
    assert c_all
    assert not seqs & {e["seq"] for e in c_all}
    assert all(set(e["concerns"]) & {scene.a.id} for e in mine)


def test_a_sides_filters_and_audience_size_reach_only_that_side(hub: Hub, scene: Scene) -> None:
    a_reads = entries(hub, scene.a.headers, target_id=scene.offer)
    b_reads = entries(hub, scene.b.headers, target_id=scene.offer)
    a_only = {e["seq"] for e in a_reads} - {e["seq"] for e in b_reads}
    b_only = {e["seq"] for e in b_reads} - {e["seq"] for e in a_reads}
    by_seq = {e["seq"]: e for e in a_reads + b_reads}
    assert {by_seq[s]["action"] for s in a_only} == {"offer.filters_set", "offer.audience_fixed"}
    assert {by_seq[s]["action"] for s in b_only} == {"offer.filters_set", "offer.audience_fixed"}
    fixed = [by_seq[s] for s in a_only if by_seq[s]["action"] == "offer.audience_fixed"]
    assert fixed[0]["details"] == {"side": scene.a.id, "audience_size": 30, "control_size": 0}
    shared = [e for e in a_reads if e["seq"] not in a_only]
    assert not any("audience_size" in json.dumps(e["details"]) for e in shared)
    assert not any("control_size" in json.dumps(e["details"]) for e in shared)
    assert not any("tier" in json.dumps(e) or "city" in json.dumps(e) for e in shared)


def test_a_partner_cannot_widen_its_view_with_filters(hub: Hub, scene: Scene) -> None:
    for name in ("partner_id", "concerns"):
        response = hub.http.get("/v1/audit", params={name: scene.b.id}, headers=scene.a.headers)
        assert response.status_code == 403, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
    own = entries(hub, scene.a.headers, partner_id=scene.a.id)
    assert own
    assert all(e["partner_id"] == scene.a.id for e in own)
    # Narrowing filters stay inside the partner's entries.
    uploads = entries(hub, scene.a.headers, action="identifiers.uploaded")
    assert uploads
    assert all(e["partner_id"] == scene.a.id for e in uploads)
    assert entries(hub, scene.a.headers, target_id=scene.b.id) == []


def test_without_audit_read_a_partner_gets_403(hub: Hub, scene: Scene) -> None:
    for path, params in (
        ("/v1/audit", {}),
        ("/v1/audit/head", {}),
        ("/v1/audit/chain", {"from": 1}),
        ("/v1/audit/keys", {}),
    ):
        response = hub.http.get(path, params=params, headers=scene.a_blind)
        assert response.status_code == 403, (path, response.text)
        assert "insufficient_scope" in response.headers["www-authenticate"]


def test_admins_still_read_everything_and_filter_by_concerned_partner(
    hub: Hub, scene: Scene
) -> None:
    everything = admin_entries(hub)
    assert {e["seq"] for e in everything} >= {e["seq"] for e in entries(hub, scene.a.headers)}
    concerning_a = admin_entries(hub, concerns=scene.a.id)
    assert {e["seq"] for e in concerning_a} == {e["seq"] for e in entries(hub, scene.a.headers)}
    onboarded = admin_entries(hub, action="partner.onboarded", target_id=scene.c.id)
    assert onboarded[0]["concerns"] == [scene.c.id]


# -- verifying as a partner would ----------------------------------------------------------------


def recomputed_hash(entry: dict[str, Any]) -> str:
    """The README's recipe, from the entry's JSON alone."""
    at = datetime.fromisoformat(entry["at"].replace("Z", "+00:00")).astimezone(UTC)
    body = {
        k: entry[k]
        for k in (
            "seq",
            "actor",
            "partner_id",
            "action",
            "target_type",
            "target_id",
            "details",
            "request_id",
        )
    }
    body["at"] = at.isoformat(timespec="microseconds")
    if entry["concerns"] is not None:
        body["concerns"] = entry["concerns"]
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{entry['prev_hash']}\n{canonical}".encode()).hexdigest()


def chain(hub: Hub, headers: dict[str, str], upto: int) -> list[dict[str, Any]]:
    links: list[dict[str, Any]] = []
    start: int | None = 1
    while start is not None and start <= upto:
        response = hub.http.get(
            "/v1/audit/chain", params={"from": start, "to": min(upto, start + 999)}, headers=headers
        )
        assert response.status_code == 200, response.text
        links += response.json()["items"]
        start = response.json()["next_from"]
    return links


def signed_head(hub: Hub, headers: dict[str, str]) -> dict[str, Any]:
    head = hub.http.get("/v1/audit/head", headers=headers).json()
    keys = KeySet.import_key_set(hub.http.get("/v1/audit/keys", headers=headers).json())
    payload = json.loads(
        jws.deserialize_compact(head["signature"], keys, algorithms=["Ed25519"]).payload
    )
    assert payload == {k: head[k] for k in ("count", "head_hash", "signed_at")}
    return dict(head)


def test_a_partner_verifies_its_entries_up_to_the_signed_head(hub: Hub, scene: Scene) -> None:
    headers = scene.a.headers
    head = signed_head(hub, headers)
    mine = [e for e in entries(hub, headers) if e["seq"] <= head["count"]]
    links = chain(hub, headers, head["count"])
    assert [link["seq"] for link in links] == list(range(1, head["count"] + 1))
    previous = GENESIS
    for link in links:
        assert link["prev_hash"] == previous
        previous = link["hash"]
    assert previous == head["head_hash"]
    by_seq = {link["seq"]: link for link in links}
    for entry in mine:
        assert recomputed_hash(entry) == entry["hash"], entry
        assert (by_seq[entry["seq"]]["prev_hash"], by_seq[entry["seq"]]["hash"]) == (
            entry["prev_hash"],
            entry["hash"],
        )


def test_an_altered_entry_would_not_recompute(scene: Scene, hub: Hub) -> None:
    entry = entries(hub, scene.a.headers, action="offer.proposed")[0]
    assert recomputed_hash(entry) == entry["hash"]
    for field, value in (("concerns", [scene.a.id]), ("details", {"title": "other"})):
        assert recomputed_hash({**entry, field: value}) != entry["hash"]


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"from": 0}, "before the first row"),
        ({"from": 5, "to": 4}, "before from"),
        ({"from": 1, "to": 1001}, "more than 1000 rows"),
        ({"from": 2**63}, "beyond any row"),
        ({"from": 1, "to": 2**70}, "beyond any row"),
        ({"from": "x"}, ""),
        ({}, ""),
    ],
)
def test_a_bad_chain_range_is_a_400(
    hub: Hub, scene: Scene, params: dict[str, Any], reason: str
) -> None:
    response = hub.http.get("/v1/audit/chain", params=params, headers=scene.a.headers)
    assert response.status_code == 400, response.text
    assert reason in response.json()["detail"]


def test_the_chain_beyond_the_head_is_empty(hub: Hub, scene: Scene) -> None:
    count = hub.as_admin("GET", "/v1/audit/head").json()["count"]
    beyond = hub.http.get(
        "/v1/audit/chain", params={"from": count + 100}, headers=scene.a.headers
    ).json()
    assert beyond == {"items": [], "next_from": None}
    paged = hub.as_admin("GET", "/v1/audit/chain", params={"from": 1, "to": 2}).json()
    assert [link["seq"] for link in paged["items"]] == [1, 2]
    assert paged["next_from"] == 3


# -- entries that concern no partner ---------------------------------------------------------------


def run_job(hub: Hub, spec: JobSpec) -> None:
    async def main() -> None:
        state = hub.app.state
        engine = create_hub_async_engine(hub.database_url)
        try:
            runner = JobRunner(
                async_sessionmaker(engine, expire_on_commit=False),
                state.settings,
                state.keyring,
                state.identifier_crypto,
                {spec.name: spec},
            )
            await runner.run(spec.name)
        finally:
            await engine.dispose()

    asyncio.run(main())


def test_job_runs_that_change_data_or_fail_are_entries_concerning_no_partner(
    hub: Hub, scene: Scene
) -> None:
    async def idle(ctx: JobContext) -> dict[str, int]:
        return {"purged": 0, "remaining": 4}

    async def purges(ctx: JobContext) -> dict[str, int]:
        return {"purged": 3, "remaining": 0}

    async def fails(ctx: JobContext) -> dict[str, int]:
        raise JobFailed("The partner's endpoint refused the batch.")

    for name, func in (("idle_test", idle), ("purges_test", purges), ("fails_test", fails)):
        run_job(hub, JobSpec(name, func, "test"))
    assert admin_entries(hub, target_id="idle_test") == []
    (changed,) = admin_entries(hub, target_id="purges_test")
    assert changed["action"] == "job.succeeded"
    assert changed["details"]["counts"] == {"purged": 3, "remaining": 0}
    (failed,) = admin_entries(hub, target_id="fails_test")
    assert failed["action"] == "job.failed"
    assert failed["details"]["error"] == "The partner's endpoint refused the batch."
    assert changed["concerns"] == failed["concerns"] == []
    seen_by_a = {e["seq"] for e in entries(hub, scene.a.headers)}
    assert changed["seq"] not in seen_by_a
    assert failed["seq"] not in seen_by_a


def test_a_keys_operation_is_an_entry_concerning_no_partner(hub: Hub, scene: Scene) -> None:
    rotated = run_cli(hub, "admin", "keys", "rotate-signing", "--json")
    assert rotated.exit_code == 0, rotated.output
    new_kid = json.loads(rotated.output)["new_kid"]
    (entry,) = admin_entries(hub, action="keys.signing_rotated", target_id=new_kid)
    assert entry["actor"] == "cli:admin"
    assert entry["concerns"] == []
    assert entry["details"]["kind"] == "signing"
    assert entry["details"]["keyring"] == "file"
    assert new_kid in entry["details"]["verifying_kids"]
    assert entry["seq"] not in {e["seq"] for e in entries(hub, scene.a.headers)}


@pytest.mark.parametrize("name", ["concerns", "partner_id"])
def test_a_nul_in_an_audit_filter_is_a_4xx_not_a_500(hub: Hub, scene: Scene, name: str) -> None:
    assert hub.as_admin("GET", "/v1/audit", params={name: "a\x00b"}).status_code in (200, 400)
    mine = hub.http.get("/v1/audit", params={name: "a\x00b"}, headers=scene.a.headers)
    assert mine.status_code in (400, 403)

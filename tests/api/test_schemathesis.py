"""Schemathesis against a live hub: the OpenAPI document is the contract, and the hub keeps it.

Every operation of /schema/openapi.json gets generated requests (valid and invalid ones) with
every check on: no 5xx, only documented statuses, content types, headers and bodies that match
the document, valid data accepted (the documented 404/409/422 count: a generated id names no
object, a generated rule may not hold), invalid data refused, authentication not ignored.

Pinned (pyproject), seeded, and sized by ``HUB_SCHEMATHESIS_EXAMPLES`` per operation (the
default keeps a database's run to a few minutes; raise it for a big run). Path ids are replaced
by real objects made for the case: reads see the world below, writes that change or remove an
object (suspend, end, delete, rotate) get a throwaway one made for them, so no case disturbs
another. Rate limits are raised for this hub.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import pytest
import schemathesis
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.config import SchemathesisConfig
from schemathesis.core.parameters import ParameterLocation

from tests.api.matching_helpers import ALL, email, rec
from tests.conftest import Hub, launch_hub


def _import_schemathesis_eagerly() -> None:
    """Import every module of Schemathesis now, at the top of the stack.

    Schemathesis imports some of its modules on first use, deep inside Hypothesis's draw. pytest
    rewrites the asserts of plugin packages, so such an import runs ``ast.parse``, and CPython
    3.11's AST constructor can then fail with ``SystemError: AST constructor recursion depth
    mismatch`` (CPython gh-106905): a CI run lost a case of this test to it. Imported here, no
    module is parsed during a case. Modules needing extras not installed (allure) are skipped.
    """
    for module in pkgutil.walk_packages(schemathesis.__path__, "schemathesis."):
        try:
            importlib.import_module(module.name)
        except ModuleNotFoundError:
            continue


_import_schemathesis_eagerly()

EXAMPLES = int(os.environ.get("HUB_SCHEMATHESIS_EXAMPLES", "20"))
SEED = int(os.environ.get("HUB_SCHEMATHESIS_SEED", "20261203"))
PARTNER_SCOPES = [
    "identifiers:write",
    "overlap:read",
    "offers:read",
    "offers:write",
    "rewards:write",
    "rewards:read",
    "audit:read",
]
CONFIG = f"""
seed = {SEED}
suppress-health-check = ["all"]
# The first overlap matrix compiles the engine's kernels: allow it time on a busy machine.
request-timeout = 120

[generation]
max-examples = {EXAMPLES}
database = "none"
# Unknown query parameters are ignored, as HTTP APIs do; the document does not forbid them.
allow-extra-parameters = false

[checks]
positive_data_acceptance.expected-statuses = ["2xx", "404", "409", "422"]
negative_data_rejection.expected-statuses = [
    "400", "401", "403", "404", "405", "409", "413", "415", "422"
]

# OAuth speaks RFC 6749: a well-formed request that breaks a rule (a scope the client does not
# hold) is a 400 invalid_scope or invalid_request, never a 422.
[[operations]]
include-path-regex = "^/oauth/"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400"]

# A partner naming another partner's entries (partner_id, concerns) is refused: 403.
[[operations]]
include-path-regex = "^/v1/audit$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "403", "404", "409", "422"]

# Rules across parameters the document cannot state (either id_type and id_hash or
# customer_ref; from <= to): the hub answers them 400 (tests/rewards, tests/api/test_audit_*).
[[operations]]
include-path-regex = "^/v1/(rewards/balances|audit/chain)$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "404", "409", "422"]
"""
RAISED_LIMITS = {
    "HUB_LIMITS_REQUESTS_PER_MINUTE": "10000000",
    "HUB_LIMITS_BURST": "1000000",
    "HUB_OAUTH_FAILED_AUTH_LIMIT": "1000000",
    "HUB_OAUTH_FAILED_AUTH_LIMIT_PER_ADDRESS": "1000000",
    # A long run outlives the default 15-minute tokens the world holds.
    "HUB_OAUTH_ACCESS_TOKEN_TTL_SECONDS": "86400",
}
SAFE_JOB = "webhook_redelivery"
RAW_MEDIA_TYPES = ("text/csv", "application/x-ndjson")


@dataclass
class World:
    """Objects the generated requests name: one partnership of two partners with identifiers,
    an offer, an upload, and factories of throwaway objects for the writes that change them."""

    hub: Hub
    airline: dict[str, Any]
    client: dict[str, Any]  # the airline's, with its secret
    hotel: dict[str, Any]
    airline_headers: dict[str, str]
    hotel_headers: dict[str, str]
    partnership_id: str
    offer_id: str
    upload_id: str
    cases: int = 0  # requests sent, for the run's record
    made: list[str] = field(default_factory=list)  # partners made for the current case

    def throwaway_partner(self, category: str = "coffee") -> dict[str, Any]:
        partner = self.hub.create_partner(category)
        self.made.append(str(partner["id"]))
        return partner

    def retire(self) -> None:
        """Suspend the partners made for (or by) the case just sent: a long run makes thousands,
        and every active partner is a row and a column of the admin's overlap matrix."""
        for partner_id in self.made:
            suspended = self.hub.as_admin(
                "PATCH", f"/v1/partners/{partner_id}", json={"status": "suspended"}
            )
            assert suspended.status_code in (200, 404), suspended.text
        self.made.clear()

    def throwaway_partnership(self) -> str:
        other = self.throwaway_partner()
        created = self.hub.as_admin(
            "POST",
            "/v1/partnerships",
            json={"members": [self.airline["id"], other["id"]], "purposes": ["analytics"]},
        )
        assert created.status_code == 201, created.text
        return str(created.json()["id"])

    def throwaway_offer(self) -> str:
        return propose_offer(self.hub, self, self.partnership_id)

    def throwaway_client(self, partner_id: str) -> str:
        return str(self.hub.create_client(partner_id, ["overlap:read"])["client_id"])


def propose_offer(hub: Hub, world: World, partnership_id: str) -> str:
    proposed = hub.http.post(
        "/v1/offers",
        json={
            "partnership_id": partnership_id,
            "title": f"Fly and stay {uuid.uuid4().hex[:6]}",
            "points": {world.airline["id"]: 1000, world.hotel["id"]: 1000},
            "holdout": 0,
        },
        headers=world.airline_headers,
    )
    assert proposed.status_code == 201, proposed.text
    return str(proposed.json()["id"])


def build_world(hub: Hub) -> World:
    airline, client, airline_headers = hub.partner_with_token("airline", PARTNER_SCOPES)
    hotel, _, hotel_headers = hub.partner_with_token("hotel", PARTNER_SCOPES)
    created = hub.as_admin(
        "POST",
        "/v1/partnerships",
        json={
            "members": [airline["id"], hotel["id"]],
            "purposes": ["analytics", "joint_offers", "rewards_sharing"],
            "min_audience": 10,
        },
    )
    assert created.status_code == 201, created.text
    partnership_id = str(created.json()["id"])
    for headers in (airline_headers, hotel_headers):
        accepted = hub.http.post(f"/v1/partnerships/{partnership_id}/accept", headers=headers)
        assert accepted.status_code == 200, accepted.text
    for prefix, headers in (("a", airline_headers), ("h", hotel_headers)):
        records = [rec(email(f"fuzz{n}"), f"{prefix}{n:03d}", ALL, tier="gold") for n in range(30)]
        stored = hub.http.post("/v1/identifiers", json={"records": records}, headers=headers)
        assert stored.status_code == 200, stored.text
    upload = hub.http.post(
        "/v1/identifiers/uploads",
        content=b'{"id_type": "email", "id_hash": "' + email("up").encode() + b'", '
        b'"customer_ref": "up-1", "consents": ["analytics"]}\n',
        headers={**airline_headers, "Content-Type": "application/x-ndjson"},
    )
    assert upload.status_code == 202, upload.text
    world = World(
        hub,
        airline,
        client,
        hotel,
        airline_headers,
        hotel_headers,
        partnership_id,
        offer_id="",
        upload_id=str(upload.json()["id"]),
    )
    world.offer_id = propose_offer(hub, world, partnership_id)
    approved = hub.http.post(f"/v1/offers/{world.offer_id}/approve", headers=hotel_headers)
    assert approved.status_code == 200, approved.text
    return world


@pytest.fixture(scope="module")
def fuzzed_hub(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with launch_hub(
        backend, tmp_path_factory.mktemp(f"schemathesis-{backend}"), **RAISED_LIMITS
    ) as running:
        yield running


@pytest.fixture(scope="module")
def world(fuzzed_hub: Hub) -> World:
    return build_world(fuzzed_hub)


@pytest.fixture(scope="module")
def api_schema(fuzzed_hub: Hub, world: World) -> Any:
    config = SchemathesisConfig.from_str(CONFIG)
    return schemathesis.openapi.from_url(f"{fuzzed_hub.url}/schema/openapi.json", config=config)


def scopes_of(case: Case) -> list[list[str]]:
    security = case.operation.definition.raw.get("security") or []
    return [list(requirement.get("oauth2", [])) for requirement in security]


def headers_for(case: Case, world: World) -> dict[str, str]:
    """The admin's token where only the admin may call, a partner's where a partner may
    (operations open to both alternate by the generated data, so both are exercised)."""
    alternatives = scopes_of(case)
    if not alternatives:
        return {}
    partner_may = any("admin" not in scopes for scopes in alternatives)
    admin_may = any("admin" in scopes for scopes in alternatives)
    if admin_may and (not partner_may or zlib.crc32(repr(case.query).encode()) % 2):
        return world.hub.admin_headers()
    return world.airline_headers


def client_auth(case: Case, world: World) -> dict[str, Any]:
    """The OAuth endpoints: a real client authenticates by HTTP Basic, so the generated form's
    own authentication fields are dropped (two methods at once is refused, RFC 6749 §2.3)."""
    if not case.operation.path.startswith("/oauth/"):
        return {}
    if isinstance(case.body, dict):
        for name in ("client_id", "client_secret", "client_assertion_type", "client_assertion"):
            case.body.pop(name, None)
    return {"auth": (world.client["client_id"], world.client["client_secret"])}


def real_ids(case: Case, world: World) -> None:
    """Path ids naming real objects; changed or removed ones are throwaways made now."""
    path = case.operation.path
    method = case.method.upper()
    params = case.path_parameters or {}
    if not params:
        return
    writes = method != "GET"
    if "partner_id" in params:
        params["partner_id"] = (
            world.throwaway_partner()["id"]
            if writes or "client_id" in params
            else world.airline["id"]
        )
    if "client_id" in params:
        params["client_id"] = world.throwaway_client(params["partner_id"])
    if "partnership_id" in params:
        params["partnership_id"] = world.throwaway_partnership() if writes else world.partnership_id
    if "offer_id" in params:
        params["offer_id"] = world.throwaway_offer() if writes else world.offer_id
    if "upload_id" in params:
        params["upload_id"] = world.upload_id
    if "name" in params and path.startswith("/v1/jobs"):
        params["name"] = SAFE_JOB


def exercise(operation: APIOperation, mode: GenerationMode, world: World) -> None:
    @hypothesis.settings(
        max_examples=EXAMPLES,
        database=None,
        deadline=None,
        suppress_health_check=list(hypothesis.HealthCheck),
        phases=(hypothesis.Phase.explicit, hypothesis.Phase.generate),
    )
    @hypothesis.seed(SEED)
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    def one_case(case: Case) -> None:
        transport: dict[str, Any] = {}
        if case.media_type in RAW_MEDIA_TYPES and case.meta is not None:
            # A file's bytes have no JSON shape to violate: a "negative" body (a number, a
            # list) is sent as the text it prints as, which is a valid file.
            hypothesis.assume(not case.meta.is_negative_at(ParameterLocation.BODY))
        if mode is GenerationMode.POSITIVE:
            # Valid ids, cursors and client credentials are the ones the hub handed out; a
            # negative case keeps its generated ones, which are what makes it invalid.
            real_ids(case, world)
            if case.query and "cursor" in case.query:
                del case.query["cursor"]
            transport = client_auth(case, world)
        world.cases += 1
        case.call_and_validate(headers=headers_for(case, world), **transport)

    try:
        one_case()
    except hypothesis.errors.Unsatisfiable:
        # Nothing about the operation can be made invalid (no parameters, no body).
        assert mode is GenerationMode.NEGATIVE


def test_the_hub_keeps_its_openapi_contract(
    api_schema: Any,
    world: World,
    subtests: pytest.Subtests,
    record_property: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) > 40  # the walker found the document's operations
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            with subtests.test(msg=f"{operation.label} {mode.value}"):
                exercise(operation, mode, world)
    record_property("schemathesis_cases", world.cases)
    with capsys.disabled():
        print(f"\nschemathesis: {world.cases} cases over {len(operations)} operations")

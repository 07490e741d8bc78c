"""The `hub` command: tables for people, --json for scripts, one-line errors, key rotation."""

from __future__ import annotations

import json
import time

from joserfc import jws
from joserfc.jwk import KeySet

from tests.conftest import Hub, run_cli


def test_partner_client_and_partnership_commands(hub: Hub) -> None:
    airline = json.loads(
        run_cli(
            hub,
            "admin",
            "partners",
            "create",
            "--name",
            "CLI Air",
            "--category",
            "airline",
            "--json",
        ).output
    )
    hotel = json.loads(
        run_cli(
            hub, "admin", "partners", "create", "--name", "CLI Inn", "--category", "hotel", "--json"
        ).output
    )
    assert airline["status"] == "active"
    client = json.loads(
        run_cli(
            hub,
            "admin",
            "clients",
            "create",
            airline["id"],
            "--name",
            "crm",
            "--scope",
            "overlap:read",
            "--json",
        ).output
    )
    assert client["client_secret"]
    assert hub.token(client["client_id"], client["client_secret"])
    partnership = json.loads(
        run_cli(
            hub,
            "admin",
            "partnerships",
            "create",
            airline["id"],
            hotel["id"],
            "--purpose",
            "analytics",
            "--json",
        ).output
    )
    assert partnership["status"] == "proposed"
    listed = json.loads(run_cli(hub, "admin", "partners", "list", "--json").output)
    assert {"CLI Air", "CLI Inn"} <= {p["name"] for p in listed}
    table = run_cli(hub, "admin", "partners", "list")
    assert "CLI Air" in table.output
    assert "category" in table.output
    suspended = json.loads(
        run_cli(hub, "admin", "partners", "suspend", airline["id"], "--json").output
    )
    assert suspended["status"] == "suspended"
    # The CLI acts through the same services, so it is audited like the API.
    actions = hub.as_admin("GET", "/v1/audit", params={"target_id": airline["id"]}).json()["items"]
    assert {a["actor"] for a in actions} == {"cli:admin"}


def test_errors_are_one_line_and_a_non_zero_exit(hub: Hub) -> None:
    missing = run_cli(hub, "admin", "partners", "suspend", "01a20000-0000-7000-8000-000000000000")
    assert missing.exit_code == 1
    assert missing.output.startswith("error: No partner")
    assert len(missing.output.strip().splitlines()) <= 2
    bad_id = run_cli(hub, "admin", "clients", "list", "not-an-id")
    assert bad_id.exit_code == 1
    assert "not an id" in bad_id.output
    bad_category = run_cli(
        hub, "admin", "partners", "create", "--name", "X", "--category", "Bad Slug"
    )
    assert bad_category.exit_code == 1
    assert "invalid input" in bad_category.output


def test_rotating_the_signing_key_keeps_old_tokens_valid(hub: Hub) -> None:
    _, client, headers = hub.partner_with_token("coffee")
    old_kid = jws.extract_compact(headers["Authorization"].split()[1].encode()).headers()["kid"]
    rotated = json.loads(run_cli(hub, "admin", "keys", "rotate-signing", "--json").output)
    assert rotated["new_kid"] != old_kid
    assert old_kid in rotated["verifying_kids"]

    deadline = time.monotonic() + 5
    while True:  # the server picks up the new keyring file at its next poll
        jwks = KeySet.import_key_set(hub.http.get("/.well-known/jwks.json").json())
        kids = {k.kid for k in jwks.keys}
        if rotated["new_kid"] in kids or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert {old_kid, rotated["new_kid"]} <= kids
    new_token = hub.token(client["client_id"], client["client_secret"])
    assert jws.extract_compact(new_token.encode()).headers()["kid"] == rotated["new_kid"]
    assert (
        hub.http.get("/v1/me", headers={"Authorization": f"Bearer {new_token}"}).status_code == 200
    )
    assert hub.http.get("/v1/me", headers=headers).status_code == 200
    listed = json.loads(run_cli(hub, "admin", "keys", "list", "--json").output)
    assert {k["id"] for k in listed if k["kind"] == "signing"} >= {old_kid, rotated["new_kid"]}
    assert all(set(row) == {"kind", "id", "created_at", "retired_at"} for row in listed)
    private = json.loads((hub.data_dir / "keyring.json").read_text())["signing"][-1]["jwk"]["d"]
    assert private not in run_cli(hub, "admin", "keys", "list").output


def test_bootstrap_prints_a_working_admin_client(hub: Hub) -> None:
    result = run_cli(hub, "admin", "bootstrap", "--json")
    created = json.loads(result.output)
    assert set(created) == {"client_id", "client_secret"}
    token = hub.token(created["client_id"], created["client_secret"])
    me = hub.http.get("/v1/me", headers={"Authorization": f"Bearer {token}"}).json()
    assert me["scopes"] == ["admin"]

"""The OpenAPI document is exact (DESIGN.md "HTTP API (v1)"): the OAuth 2.0 client-credentials
scheme with each operation's scopes read from its guards, every status with the problem shape,
the OAuth endpoints as forms, typed request items with examples, no schema nothing satisfies."""

from __future__ import annotations

from typing import Any

import pytest

from hub.core.auth import ALL_SCOPES, ScopeGuard
from hub.core.openapi import guards_of, scope_requirements
from tests.conftest import Hub

HTTP_METHODS = ("get", "put", "post", "patch", "delete")
PUBLIC = ("/health/", "/oauth/", "/.well-known/", "/metrics")


@pytest.fixture(scope="module")
def document(hub: Hub) -> dict[str, Any]:
    response = hub.http.get("/schema/openapi.json")
    assert response.status_code == 200
    return dict(response.json())


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    ]


def resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = document["components"]["schemas"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def test_the_client_credentials_scheme_lists_every_scope(document: dict[str, Any]) -> None:
    scheme = document["components"]["securitySchemes"]["oauth2"]
    flow = scheme["flows"]["clientCredentials"]
    assert flow["tokenUrl"] == "/oauth/token"
    assert sorted(flow["scopes"]) == sorted(ALL_SCOPES)


def test_every_protected_operation_names_the_scopes_its_guards_check(
    hub: Hub, document: dict[str, Any]
) -> None:
    checked = 0
    for route in hub.app.routes:
        for method, (handler, _) in getattr(route, "route_handler_map", {}).items():
            operation = document["paths"].get(route.path_format, {}).get(method.lower())
            if operation is None or route.path_format.startswith(PUBLIC):
                continue
            expected = [{"oauth2": scopes} for scopes in scope_requirements(handler)]
            assert operation["security"] == expected, f"{method} {route.path_format}"
            if any(isinstance(guard, ScopeGuard) for guard in guards_of(handler)):
                assert all(r["oauth2"] for r in operation["security"])
            checked += 1
    assert checked > 40


def test_scopes_of_a_few_operations_read_as_the_design_says(document: dict[str, Any]) -> None:
    def security(path: str, method: str) -> list[list[str]]:
        return [r["oauth2"] for r in document["paths"][path][method]["security"]]

    assert security("/v1/partners", "post") == [["admin"]]
    assert security("/v1/identifiers", "post") == [["identifiers:write"]]
    assert security("/v1/rewards/events", "post") == [["rewards:write"]]
    assert sorted(security("/v1/audit", "get")) == [["admin"], ["audit:read"]]
    assert security("/v1/me", "get") == [[]]  # any valid token
    assert "security" not in document["paths"]["/health/live"]["get"]


def test_every_operation_documents_its_errors_as_problem_details(
    document: dict[str, Any],
) -> None:
    problem = document["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "detail", "fix"} <= set(problem["required"])
    error_item = problem["properties"]["errors"]["items"]["properties"]
    assert {"index", "field", "reason"} <= set(error_item)
    for path, method, operation in operations(document):
        responses = operation["responses"]
        if path.startswith(PUBLIC):
            continue
        for status in ("401", "429", "503"):
            assert status in responses, f"{method} {path} lacks {status}"
        for status, response in responses.items():
            if status.startswith(("4", "5")):
                assert list(response["content"]) == ["application/problem+json"], (path, status)
        assert "Retry-After" in responses["429"]["headers"]
        assert "WWW-Authenticate" in responses["401"]["headers"]
        if "{" in path:
            assert "404" in responses, f"{method} {path}"
        if method in ("post", "patch", "put", "delete"):
            assert {"403", "409"} <= set(responses), f"{method} {path}"
        if "requestBody" in operation:
            assert {"400", "413", "415", "422"} <= set(responses), f"{method} {path}"


def test_the_oauth_endpoints_are_forms_answering_200_or_rfc_6749_errors(
    document: dict[str, Any],
) -> None:
    for path, required in (
        ("/oauth/token", "grant_type"),
        ("/oauth/introspect", "token"),
        ("/oauth/revoke", "token"),
    ):
        operation = document["paths"][path]["post"]
        form = operation["requestBody"]["content"]["application/x-www-form-urlencoded"]
        assert required in resolve(document, form["schema"])["required"]
        assert "200" in operation["responses"]
        assert "201" not in operation["responses"]
        error = operation["responses"]["401"]["content"]["application/json"]["schema"]
        assert resolve(document, error)["required"] == ["error"]
    token = document["paths"]["/oauth/token"]["post"]["responses"]["200"]
    answer = resolve(document, token["content"]["application/json"]["schema"])
    assert {"access_token", "token_type", "expires_in"} <= set(answer["required"])


def test_request_items_are_typed_with_examples(document: dict[str, Any]) -> None:
    def body(path: str) -> dict[str, Any]:
        content = document["paths"][path]["post"]["requestBody"]["content"]
        return resolve(document, content["application/json"]["schema"])

    records = body("/v1/identifiers")["properties"]["records"]
    record = resolve(document, records["items"])
    assert set(record["required"]) == {"id_type", "id_hash", "customer_ref"}
    assert record["properties"]["id_type"]["enum"] == ["email", "phone"]
    assert record["additionalProperties"] is False
    assert records["examples"]
    event = resolve(document, body("/v1/rewards/events")["properties"]["events"]["items"])
    assert event["properties"]["kind"]["enum"] == ["adjust", "earn", "redeem"]
    assert event["properties"]["occurred_at"]["format"] == "date-time"
    assert event["properties"]["event_id"]["examples"]
    offer = body("/v1/offers")
    assert offer["properties"]["points"]["propertyNames"] == {"format": "uuid"}
    filters = offer["properties"]["filters"]["anyOf"][0]["additionalProperties"]
    assert filters["examples"]
    update = resolve(document, body("/v1/identifiers/consents")["properties"]["updates"]["items"])
    assert update["required"] == ["customer_ref", "consents"]


def test_no_schema_is_one_nothing_can_satisfy(document: dict[str, Any]) -> None:
    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for keyword in ("oneOf", "anyOf", "allOf"):
                for branch in node.get(keyword, []):
                    assert branch != {}, f"{keyword} with {{}} at {where}"
            assert node.get("not") != {}, where
            for key, value in node.items():
                walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{where}/{index}")

    walk(document, "")

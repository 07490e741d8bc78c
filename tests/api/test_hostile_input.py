"""The hostile-input corpus: every write endpoint (and a few reads) is sent what an attacker or
a broken client sends — deep nesting, huge numbers, bad encodings, bombs, oversized headers,
wrong or missing content types, empty bodies, NUL bytes — and answers a 4xx (a problem detail,
or an RFC 6749 error on /oauth), never a 5xx, writing nothing but the audit log and the auth
throttle's own rows.

The cases are built from a valid-looking body per endpoint with one hostile value put into
it, so that the value reaches the endpoint's own checks and not only the JSON decoder.
tests/api/test_bad_input.py holds the single-endpoint cases and their messages.
"""

from __future__ import annotations

import gzip
import socket
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from hub.core.auth import PARTNER_SCOPES
from tests.api.uploads_helpers import email_record, ndjson, upload_and_wait
from tests.conftest import Hub, launch_hub, table_counts

PROBLEM = "application/problem+json"
DIGEST = "ab" * 32
VALUE = b"@@"  # where a template takes the hostile value
FORM = {"content-type": "application/x-www-form-urlencoded"}
RFC6749_ERRORS = {  # RFC 6749 §5.2, RFC 7009 §2.2.1
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
    "unsupported_token_type",
}


@pytest.fixture(scope="module")
def hub(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    # The corpus fails client authentication hundreds of times from one address: raise the
    # throttle so that each case reaches the check it is aimed at (the throttle has its tests).
    with launch_hub(
        backend,
        tmp_path_factory.mktemp(f"hostile-{backend}"),
        HUB_OAUTH_FAILED_AUTH_LIMIT="100000",
        HUB_OAUTH_FAILED_AUTH_LIMIT_PER_ADDRESS="100000",
        HUB_LIMITS_REQUESTS_PER_MINUTE="100000",
        HUB_LIMITS_BURST="100000",
    ) as running:
        yield running


@dataclass(frozen=True)
class World:
    partner: dict[str, Any]
    client: dict[str, Any]
    partner_headers: dict[str, str]
    other_partner: dict[str, Any]
    partnership_id: str


@pytest.fixture(scope="module")
def world(hub: Hub) -> World:
    partner, client, headers = hub.partner_with_token("airline", list(PARTNER_SCOPES))
    other = hub.create_partner("hotel")
    created = hub.as_admin(
        "POST",
        "/v1/partnerships",
        json={"members": [partner["id"], other["id"]], "purposes": ["analytics", "joint_offers"]},
    )
    assert created.status_code == 201, created.text
    return World(partner, client, headers, other, str(created.json()["id"]))


@dataclass(frozen=True)
class Endpoint:
    name: str
    method: str
    path: str  # {partner}, {other}, {partnership} and {random} are filled in from the world
    as_admin: bool
    template: bytes  # a plausible body with VALUE where the hostile value goes


ENDPOINTS = [
    Endpoint(
        "identifiers",
        "POST",
        "/v1/identifiers",
        False,
        b'{"records": [{"id_type": "email", "id_hash": "%s", "customer_ref": @@, '
        b'"consents": ["analytics"]}]}' % DIGEST.encode(),
    ),
    Endpoint(
        "consents",
        "POST",
        "/v1/identifiers/consents",
        False,
        b'{"updates": [{"customer_ref": @@, "consents": ["analytics"]}]}',
    ),
    Endpoint("erase", "POST", "/v1/identifiers/erase", False, b'{"customer_refs": [@@]}'),
    Endpoint(
        "rewards events",
        "POST",
        "/v1/rewards/events",
        False,
        b'{"events": [{"event_id": "e-1", "id_type": "email", "id_hash": "%s", '
        b'"kind": "earn", "points": @@, "occurred_at": "2026-01-01T00:00:00+00:00"}]}'
        % DIGEST.encode(),
    ),
    Endpoint(
        "offers",
        "POST",
        "/v1/offers",
        False,
        b'{"partnership_id": "{partnership}", "title": "Fly and stay", '
        b'"points": {"{partner}": @@, "{other}": 10}}',
    ),
    Endpoint(
        "approve", "POST", "/v1/offers/{random}/approve", False, b'{"filters": {"tier": [@@]}}'
    ),
    Endpoint("partners", "POST", "/v1/partners", True, b'{"name": @@, "category": "airline"}'),
    Endpoint("partner update", "PATCH", "/v1/partners/{other}", True, b'{"name": @@}'),
    Endpoint(
        "clients",
        "POST",
        "/v1/partners/{other}/clients",
        True,
        b'{"name": @@, "scopes": ["overlap:read"]}',
    ),
    Endpoint(
        "partnerships",
        "POST",
        "/v1/partnerships",
        True,
        b'{"members": ["{partner}", "{other}"], "purposes": ["analytics"], "min_audience": @@}',
    ),
    Endpoint(
        "partnership update", "PATCH", "/v1/partnerships/{partnership}", True, b'{"status": @@}'
    ),
]

# Values no endpoint may store: numbers beyond any column, literals JSON does not have,
# strings no database takes, and nesting deeper than any request shape.
HOSTILE_VALUES = {
    "1e400": b"1e400",
    "-1e400": b"-1e400",
    "2**70": str(2**70).encode(),
    "-(2**70)": str(-(2**70)).encode(),
    "a 400-digit integer": b"9" * 400,
    "-0": b"-0",
    "NaN": b"NaN",
    "Infinity": b"Infinity",
    "lone high surrogate": b'"\\ud800"',
    "lone low surrogate": b'"\\udfff"',
    "reversed surrogates": b'"\\udc00\\ud800"',
    "escaped NUL": b'"a\\u0000b"',
    "raw NUL": b'"a\x00b"',
    "invalid UTF-8": b'"\xff\xfe"',
    "overlong UTF-8 slash": b'"\xc0\xaf"',
    "UTF-8 encoded surrogate": b'"\xed\xa0\x80"',
    "truncated UTF-8": b'"\xe2\x82"',
    "nested 1000 deep": b"[" * 1000 + b"]" * 1000,
    "objects nested 1000 deep": b'{"a": ' * 1000 + b"1" + b"}" * 1000,
    "nested 40 deep": b"[" * 40 + b"]" * 40,
    "unclosed 5000 deep": b"[" * 5000,
}

# Whole bodies and headers, whatever the endpoint.
WHOLE_BODIES: dict[str, tuple[bytes, dict[str, str]]] = {
    "empty body": (b"", {"content-type": "application/json"}),
    "whitespace": (b"  \n ", {"content-type": "application/json"}),
    "null": (b"null", {"content-type": "application/json"}),
    "a bare string": (b'"x"', {"content-type": "application/json"}),
    "truncated JSON": (b'{"a": [1, 2', {"content-type": "application/json"}),
    "deep array": (b"[" * 100_000 + b"]" * 100_000, {"content-type": "application/json"}),
    "NUL bytes": (b"\x00" * 64, {"content-type": "application/json"}),
    "UTF-16 with BOM": ('{"name": "x"}'.encode("utf-16"), {"content-type": "application/json"}),
    "UTF-8 BOM": (b'\xef\xbb\xbf{"name": "x"}', {"content-type": "application/json"}),
    "no content type": (b'{"name": "x"}', {}),
    "text/plain": (b'{"name": "x"}', {"content-type": "text/plain"}),
    "form": (b"name=x", {"content-type": "application/x-www-form-urlencoded"}),
    "json with a charset": (b"{", {"content-type": "application/json; charset=utf-16"}),
    "gzip JSON": (
        gzip.compress(b'{"name": "x"}'),
        {"content-type": "application/json", "content-encoding": "gzip"},
    ),
    "brotli": (
        b"\x0b\x02\x80{}\x03",
        {"content-type": "application/json", "content-encoding": "br"},
    ),
}


def gzip_bomb(inflated: int) -> bytes:
    """Blank lines, gzipped: about a thousandth of ``inflated`` bytes on the wire."""
    deflater = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b"\n" * (1 << 20)
    parts = [deflater.compress(block) for _ in range(inflated >> 20)]
    return b"".join([*parts, deflater.flush()])


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return gzip_bomb(400 << 20)  # ~400 KB that inflate to 400 MB, as in the issue


def fill(text: bytes, world: World) -> bytes:
    for name, value in (
        (b"{partnership}", world.partnership_id),
        (b"{partner}", world.partner["id"]),
        (b"{other}", world.other_partner["id"]),
        (b"{random}", str(uuid.uuid4())),
    ):
        text = text.replace(name, value.encode())
    return text


def send(
    hub: Hub, world: World, endpoint: Endpoint, body: bytes, headers: dict[str, str]
) -> httpx.Response:
    auth = hub.admin_headers() if endpoint.as_admin else world.partner_headers
    path = fill(endpoint.path.encode(), world).decode()
    return hub.http.request(endpoint.method, path, content=body, headers={**headers, **auth})


def assert_refused(response: httpx.Response) -> None:
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.text
    problem = response.json()
    assert problem["status"] == response.status_code
    assert problem["detail"]
    assert problem["fix"]


def spooled(hub: Hub) -> list[Path]:
    spool = hub.data_dir / "uploads"
    return sorted(spool.iterdir()) if spool.exists() else []


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=[e.name for e in ENDPOINTS])
@pytest.mark.parametrize("value", list(HOSTILE_VALUES.values()), ids=list(HOSTILE_VALUES))
def test_a_hostile_value_is_refused_and_writes_nothing(
    hub: Hub, world: World, endpoint: Endpoint, value: bytes
) -> None:
    body = fill(endpoint.template, world).replace(VALUE, value)
    before = table_counts(hub.database_url)
    response = send(hub, world, endpoint, body, {"content-type": "application/json"})
    assert_refused(response)
    assert table_counts(hub.database_url) == before


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=[e.name for e in ENDPOINTS])
@pytest.mark.parametrize("case", list(WHOLE_BODIES), ids=list(WHOLE_BODIES))
def test_a_hostile_body_is_refused_and_writes_nothing(
    hub: Hub, world: World, endpoint: Endpoint, case: str
) -> None:
    body, headers = WHOLE_BODIES[case]
    if endpoint.name == "approve" and not body.strip():
        pytest.skip("an approval without a body is valid (the offer is unknown: 404 below)")
    before = table_counts(hub.database_url)
    response = send(hub, world, endpoint, body, headers)
    assert_refused(response)
    assert table_counts(hub.database_url) == before


def test_an_empty_approval_of_an_unknown_offer_is_a_404(hub: Hub, world: World) -> None:
    approve = next(e for e in ENDPOINTS if e.name == "approve")
    before = table_counts(hub.database_url)
    response = send(hub, world, approve, b"", {"content-type": "application/json"})
    assert response.status_code == 404, response.text
    assert table_counts(hub.database_url) == before


def test_a_gzip_bomb_on_a_json_endpoint_is_refused(hub: Hub, world: World, bomb: bytes) -> None:
    before = table_counts(hub.database_url)
    for endpoint in ENDPOINTS:
        headers = {"content-type": "application/json", "content-encoding": "gzip"}
        response = send(hub, world, endpoint, bomb, headers)
        assert_refused(response)
        assert response.status_code in (413, 415), endpoint.name
    assert table_counts(hub.database_url) == before


# --- bulk uploads --------------------------------------------------------------------------

NDJSON = "application/x-ndjson"
UPLOAD_CASES: dict[str, tuple[bytes, dict[str, str], int]] = {
    "no content type, empty body": (b"", {}, 415),
    "no content type": (b'{"id_type": "email"}\n', {}, 415),
    "text/plain": (b"id_type\n", {"content-type": "text/plain"}, 415),
    "json": (b"{}", {"content-type": "application/json"}, 415),
    "empty NDJSON": (b"", {"content-type": NDJSON}, 400),
    "empty gzip": (b"", {"content-type": NDJSON, "content-encoding": "gzip"}, 400),
    "declared gzip, plain": (b"{}\n", {"content-type": NDJSON, "content-encoding": "gzip"}, 400),
    "gzip broken after its header": (
        gzip.compress(b"{}\n" * 1000)[:12] + b"\xff" * 64,
        {"content-type": NDJSON, "content-encoding": "gzip"},
        400,
    ),
    "gzip followed by garbage": (
        gzip.compress(b"{}\n") + b"garbage",
        {"content-type": NDJSON, "content-encoding": "gzip"},
        400,
    ),
    "gzip cut short": (
        gzip.compress(b"{}\n" * 1000)[:-20],
        {"content-type": NDJSON, "content-encoding": "gzip"},
        400,
    ),
    "brotli": (b"\x0b\x02\x80{}\x03", {"content-type": NDJSON, "content-encoding": "br"}, 415),
}


@pytest.mark.parametrize("case", list(UPLOAD_CASES), ids=list(UPLOAD_CASES))
def test_a_hostile_upload_is_refused_and_keeps_nothing(hub: Hub, world: World, case: str) -> None:
    body, headers, status = UPLOAD_CASES[case]
    before, files = table_counts(hub.database_url), spooled(hub)
    response = hub.http.post(
        "/v1/identifiers/uploads", content=body, headers={**headers, **world.partner_headers}
    )
    assert_refused(response)
    assert response.status_code == status, response.text
    assert table_counts(hub.database_url) == before
    assert spooled(hub) == files


def test_an_upload_announcing_a_terabyte_is_refused_before_its_body(hub: Hub, world: World) -> None:
    before, files = table_counts(hub.database_url), spooled(hub)
    head = (
        f"POST /v1/identifiers/uploads HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: {NDJSON}\r\nContent-Length: {1 << 40}\r\n"
        f"Authorization: {world.partner_headers['Authorization']}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", hub.server.port), timeout=10) as conn:
        conn.sendall(head.encode())
        status_line = conn.makefile("rb").readline()
    assert status_line.split()[1] == b"413", status_line
    assert table_counts(hub.database_url) == before
    assert spooled(hub) == files


def test_a_gzip_bomb_upload_is_a_413_and_keeps_nothing(hub: Hub, world: World, bomb: bytes) -> None:
    before, files = table_counts(hub.database_url), spooled(hub)
    headers = {"content-type": NDJSON, "content-encoding": "gzip", **world.partner_headers}
    response = hub.http.post("/v1/identifiers/uploads", content=bomb, headers=headers)
    assert_refused(response)
    assert response.status_code == 413
    assert "inflates" in response.json()["detail"]
    assert table_counts(hub.database_url) == before
    assert spooled(hub) == files


def test_a_gzip_upload_of_records_is_still_accepted(hub: Hub, world: World) -> None:
    # The control case: the limits refuse bombs, not files of records.
    records = [email_record(n) for n in range(2_000)]
    done = upload_and_wait(hub, world.partner_headers, ndjson(records), compress=True)
    assert done["status"] == "completed", done
    assert done["rows_read"] == len(records)


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_blank_lines_are_reported_not_skipped_silently(
    hub: Hub, world: World, compress: bool
) -> None:
    records = ndjson([email_record(f"blank-{n}") for n in range(3)]).splitlines(keepends=True)
    body = b"\n" + records[0] + b"  \n\r\n" + records[1] + b"\n\n" + records[2] + b"\t"
    done = upload_and_wait(hub, world.partner_headers, body, compress=compress)
    assert done["status"] == "completed", done
    assert done["rows_read"] == 3
    assert done["blank_lines"] == 6


# --- headers -------------------------------------------------------------------------------

HEADER_CASES: dict[str, dict[str, str]] = {
    "a 100 KB header": {"x-padding": "a" * 100_000},
    "a 100 KB authorization": {"authorization": "Bearer " + "a" * 100_000},
    "500 headers": {f"x-h{n}": "v" for n in range(500)},
    "a 100 KB content type": {"content-type": "application/json; x=" + "a" * 100_000},
    "a 100 KB Idempotency-Key": {"idempotency-key": "k" * 100_000},
}


@pytest.mark.parametrize("case", list(HEADER_CASES), ids=list(HEADER_CASES))
def test_oversized_headers_on_an_api_write_are_refused(hub: Hub, case: str) -> None:
    # Authenticated, with a body one field short: the headers are all that could go wrong.
    before = table_counts(hub.database_url)
    headers = {"content-type": "application/json", **hub.admin_headers(), **HEADER_CASES[case]}
    try:
        response = hub.http.post("/v1/partners", content=b'{"name": "x"}', headers=headers)
    except httpx.RemoteProtocolError:
        pass  # the HTTP server closed the connection before the app saw the request
    else:
        assert_refused(response)
    assert table_counts(hub.database_url) == before


@pytest.mark.parametrize("case", list(HEADER_CASES), ids=list(HEADER_CASES))
def test_oversized_headers_on_the_token_endpoint_are_refused(hub: Hub, case: str) -> None:
    before = table_counts(hub.database_url)
    headers = {**FORM, **HEADER_CASES[case]}
    form = b"grant_type=client_credentials&client_id=cl_nobody&client_secret=x"
    try:
        response = hub.http.post("/oauth/token", content=form, headers=headers)
    except httpx.RemoteProtocolError:
        pass  # the HTTP server closed the connection before the app saw the request
    else:
        assert 400 <= response.status_code < 500, response.text
        assert response.json()["error"] in RFC6749_ERRORS
    assert table_counts(hub.database_url) == before


# --- reads with query parameters -----------------------------------------------------------

READ_CASES = [
    ("/v1/partners", "limit=1e400"),
    ("/v1/partners", f"limit={2**70}"),
    ("/v1/partners", "limit=NaN"),
    ("/v1/partners", "limit=-0"),
    ("/v1/partners", "cursor=%ff%fe"),
    ("/v1/partners", "cursor=%00"),
    ("/v1/partners", "cursor=" + "A" * 20_000),
    ("/v1/audit", "limit=%ed%a0%80"),
    ("/v1/offers", "limit=%c0%af"),
    ("/v1/identifiers/uploads", f"limit={2**70}"),
    ("/v1/rewards/feed", "cursor=%ff"),
]


@pytest.mark.parametrize(
    ("path", "query"), READ_CASES, ids=[f"{p}?{q[:30]}" for p, q in READ_CASES]
)
def test_hostile_query_parameters_are_refused(
    hub: Hub, world: World, path: str, query: str
) -> None:
    before = table_counts(hub.database_url)
    auth = world.partner_headers if "identifiers" in path or "rewards" in path else None
    headers = auth or hub.admin_headers()
    response = hub.http.get(f"{path}?{query}", headers=headers)
    assert_refused(response)
    assert table_counts(hub.database_url) == before


# --- OAuth endpoints -----------------------------------------------------------------------

OAUTH_CASES: dict[str, tuple[bytes, dict[str, str]]] = {
    "empty body": (b"", FORM),
    "no content type": (b"grant_type=client_credentials", {}),
    "JSON": (b'{"grant_type": "client_credentials"}', {"content-type": "application/json"}),
    "invalid UTF-8 raw": (b"grant_type=client_credentials&client_id=\xff\xfe", FORM),
    "invalid UTF-8 escaped": (b"grant_type=client_credentials&client_id=%ff%fe", FORM),
    "overlong UTF-8": (b"grant_type=client_credentials&client_id=%c0%af", FORM),
    "NUL in client_id": (b"grant_type=client_credentials&client_id=a%00b&client_secret=x", FORM),
    "NUL in token": (b"token=a%00b&client_id=x&client_secret=y", FORM),
    "a 10 KB client_id": (
        b"grant_type=client_credentials&client_id=" + b"a" * 10_000 + b"&client_secret=x",
        FORM,
    ),
    "a 1 MB body": (b"grant_type=client_credentials&x=" + b"a" * 1_000_000, FORM),
    "garbage assertion": (
        b"grant_type=client_credentials&client_assertion_type="
        b"urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer"
        b"&client_assertion=a.b.c",
        FORM,
    ),
    "gzip form": (
        gzip.compress(b"grant_type=client_credentials"),
        {**FORM, "content-encoding": "gzip"},
    ),
    "Basic with invalid UTF-8": (
        b"grant_type=client_credentials",
        {**FORM, "authorization": "Basic " + "/w==" * 2},
    ),
}


@pytest.mark.parametrize("case", list(OAUTH_CASES), ids=list(OAUTH_CASES))
@pytest.mark.parametrize("path", ["/oauth/token", "/oauth/introspect", "/oauth/revoke"])
def test_a_hostile_oauth_request_is_an_rfc6749_error(hub: Hub, case: str, path: str) -> None:
    body, headers = OAUTH_CASES[case]
    before = table_counts(hub.database_url)
    response = hub.http.post(path, content=body, headers=headers)
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"] in RFC6749_ERRORS, response.text
    assert table_counts(hub.database_url) == before


def test_an_upload_whose_client_hangs_up_mid_body_is_a_4xx_and_keeps_nothing(
    hub: Hub, world: World
) -> None:
    """A client that goes away mid-body (a crash, a timeout of its own) costs the hub nothing:
    no spool file, no row, and no 5xx in the metrics (it was logged as an unhandled error)."""

    def answered(status: str) -> float:
        """Requests to the upload route answered with a status starting with ``status``."""
        text = hub.http.get("/metrics").text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("hub_requests_total{")
            and 'path="/v1/identifiers/uploads"' in line
            and f'status_code="{status}' in line
        )

    def server_errors() -> float:
        return answered("5")

    def client_errors() -> float:
        return answered("400")

    before, files = table_counts(hub.database_url), spooled(hub)
    errors_before, refused_before = server_errors(), client_errors()
    head = (
        f"POST /v1/identifiers/uploads HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: {NDJSON}\r\nContent-Length: 100000\r\n"
        f"Authorization: {world.partner_headers['Authorization']}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", hub.server.port), timeout=10) as conn:
        conn.sendall(head.encode() + ndjson([email_record("gone")]))
        time.sleep(0.3)  # the hub is reading the body when the client goes
    deadline = time.monotonic() + 10
    while client_errors() == refused_before:
        assert time.monotonic() < deadline, "the hub never finished the abandoned request"
        time.sleep(0.05)
    assert server_errors() == errors_before
    assert table_counts(hub.database_url) == before
    assert spooled(hub) == files

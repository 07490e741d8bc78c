"""What each layer of the hub's request path costs in CPU, without network or wrk noise.

Companion to bench/auth_layer.py. It calls the ASGI apps directly (no socket, no uvicorn, no
HTTP parsing), one request after another on uvloop, and reports the CPU time per request of

  bare          bench/bare_app.py, GET /bench/bare
  bare-claims   a bare Litestar app (no middleware) with a route shaped like /bench/claims
                (takes the scope, returns a token's ten claims): what the route itself costs
  bare-claims-hubresponse  the same with the hub's response class (hub.core.responses): what
                the hub's request middleware costs is hub-claims minus this
  hub-live      the hub app, GET /health/live (public path: whole request path, no auth)
  hub-claims    the hub app, GET /bench/claims (whole path with bearer auth) -- the "auth" case
  hub-me        the hub app, GET /v1/me for a partner's token (read cache warm) -- the "me" case

and, as micro-benchmarks, the auth layer's own functions (bearer_token, TokenVerifier.verify on
a cached token, ClientRateLimiter.check). The hub runs on a throw-away SQLite file (only the
lifespan's revocation refresh and /v1/me's read cache read it, once a second each; the job
scheduler is off).

    .venv/bin/python bench/asgi_breakdown.py [--requests 20000] [--repeat 5]

The numbers are lower than in the HTTP benchmark (no uvicorn/httptools/socket cost) but the
differences between rows are what each layer costs per request.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import uvloop  # noqa: E402
from litestar import Litestar, get  # noqa: E402
from litestar.types import Scope  # noqa: E402

RESULTS_DIR = ROOT / "bench" / "results"


def scope_for(path: str, token: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"authorization", f"Bearer {token}".encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def per_request_cpu(
    app: Litestar, path: str, token: str, n: int, repeat: int
) -> tuple[float, int]:
    """Median over ``repeat`` runs of CPU µs per request; and the last status code."""
    template = scope_for(path, token)
    status = [0]

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status[0] = message["status"]

    async def one() -> None:
        scope = dict(template)
        scope["headers"] = list(template["headers"])
        scope["state"] = {}
        await app(scope, receive, send)  # type: ignore[arg-type]

    for _ in range(min(n, 2000)):  # warm-up
        await one()
    runs = []
    for _ in range(repeat):
        t0 = time.process_time()
        for _ in range(n):
            await one()
        runs.append((time.process_time() - t0) / n * 1e6)
    return statistics.median(runs), status[0]


def micro(fn: Callable[[], Any], n: int, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        t0 = time.process_time()
        for _ in range(n):
            fn()
        runs.append((time.process_time() - t0) / n * 1e6)
    return statistics.median(runs)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix="bench-asgi-"))
    os.environ.update(
        {
            "HUB_SERVER_DATA_DIR": str(data_dir),
            "HUB_DATABASE_URL": f"sqlite:///{data_dir / 'hub.db'}",
            "HUB_OAUTH_ISSUER": "http://127.0.0.1:8000",
            "HUB_LOGGING_ACCESS_LOG": "false",
            "HUB_LIMITS_REQUESTS_PER_MINUTE": "100000000",
            "HUB_LIMITS_BURST": "100000000",
            "HUB_JOBS_RUN_IN_SERVE": "false",  # no scheduler ticks in the measured process
        }
    )
    os.environ.pop("HUB_CONFIG", None)
    from bench.bare_app import app as bare_app
    from bench.hub_bench_app import build
    from bench.me_breakdown import make_partner
    from hub.core.auth import bearer_token
    from hub.migrate import upgrade
    from hub.oauth.tokens import AccessTokenIssuer

    upgrade(os.environ["HUB_DATABASE_URL"])
    hub = build()
    state = hub.state
    issuer = AccessTokenIssuer(
        state.keyring,
        issuer=state.settings.oauth.issuer,
        audience=state.settings.oauth.resource,
        ttl_seconds=3600,
    )
    token = issuer.issue("cl_bench", "01a20934-00ef-70af-bcfd-b7336d5444d4", "overlap:read")[
        "access_token"
    ]
    partner_id = await make_partner(os.environ["HUB_DATABASE_URL"])
    me_token = issuer.issue("cl_bench", str(partner_id), "overlap:read")["access_token"]
    claims = state.verifier.verify(token).claims

    def claims_handler() -> Any:
        # A new handler object per app: Litestar memoizes a handler's response path on it, so
        # two apps sharing one handler would share its response class too.
        @get("/bench/claims")
        async def bare_claims(scope: Scope) -> dict[str, Any]:
            return claims

        return bare_claims

    bare_claims_app = Litestar(route_handlers=[claims_handler()], debug=False)
    variants: list[tuple[str, Litestar, str, str]] = [
        ("bare", bare_app, "/bench/bare", token),
        ("bare-claims", bare_claims_app, "/bench/claims", token),
    ]
    try:  # absent before the hub had its own response class: measure older trees too
        from hub.core.responses import HubResponse

        bare_claims_hub_response = Litestar(
            route_handlers=[claims_handler()], response_class=HubResponse, debug=False
        )
        variants.append(
            ("bare-claims-hubresponse", bare_claims_hub_response, "/bench/claims", token)
        )
    except ImportError:
        pass
    variants += [
        ("hub-live", hub, "/health/live", token),
        ("hub-claims", hub, "/bench/claims", token),
        ("hub-me", hub, "/v1/me", me_token),
    ]

    results: dict[str, Any] = {"requests": {}, "functions": {}}
    apps = {id(app): app for _, app, _, _ in variants}
    lifespans = [app.lifespan() for app in apps.values()]
    for cm in lifespans:
        await cm.__aenter__()
    try:
        for name, app, path, bearer in variants:
            cpu, status = await per_request_cpu(app, path, bearer, args.requests, args.repeat)
            if status != 200:
                raise RuntimeError(f"{name}: GET {path} answered {status}")
            results["requests"][name] = round(cpu, 1)
            print(f"{name:40} GET {path:14} {cpu:7.1f} µs CPU/request", flush=True)
    finally:
        for cm in reversed(lifespans):
            await cm.__aexit__(None, None, None)

    # The auth layer's own functions.
    verifier, limiter = state.verifier, state.rate_limiter
    conn_scope = scope_for("/bench/claims", token)

    verifier.verify(token)
    fns: dict[str, Callable[[], Any]] = {
        "bearer_token (header parse)": lambda: bearer_token(conn_scope),
        "TokenVerifier.verify (cached token)": lambda: verifier.verify(token),
        "ClientRateLimiter.check": lambda: limiter.check("cl_bench"),
    }
    for name, fn in fns.items():
        us = micro(fn, args.requests, args.repeat)
        results["functions"][name] = round(us, 2)
        print(f"{name:40} {us:7.2f} µs CPU/call", flush=True)
    verifier.forget(token)
    t0 = time.process_time()
    for _ in range(50):
        verifier.forget(token)
        verifier.verify(token)
    cold = (time.process_time() - t0) / 50 * 1e6
    results["functions"]["TokenVerifier.verify (first sight: RS256 + claims)"] = round(cold, 1)
    print(f"{'TokenVerifier.verify (first sight)':40} {cold:7.1f} µs CPU/call")
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--requests", type=int, default=20000, help="requests per measured run")
    p.add_argument("--repeat", type=int, default=5, help="runs per variant (median reported)")
    args = p.parse_args()
    results = uvloop.run(run(args))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"asgi_breakdown-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps({"args": vars(args), **results}, indent=2))
    print(f"results written to {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What each layer of the hub's request path costs in CPU, without network or wrk noise.

Companion to bench/auth_layer.py. It calls the ASGI apps directly (no socket, no uvicorn, no
HTTP parsing), one request after another on uvloop, and reports the CPU time per request of

  bare          bench/bare_app.py, GET /bench/bare
  hub-live      the hub app, GET /health/live (public path: whole middleware stack, no auth)
  hub-claims    the hub app, GET /bench/claims (whole stack with bearer auth) -- the "auth" case
  ...-no-X      the same with the Prometheus and/or request-context middleware replaced by a
                pass-through (bench/hub_bench_app.build; hub/ itself is not changed)

and, as micro-benchmarks, the auth layer's own functions (bearer_token, TokenVerifier.verify on
a cached token, ClientRateLimiter.check). The hub runs on a throw-away SQLite file (these routes
never read the database; the lifespan's revocation refresh does, once a second).

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
from litestar import Litestar  # noqa: E402

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
        }
    )
    os.environ.pop("HUB_CONFIG", None)
    from bench.bare_app import app as bare_app
    from bench.hub_bench_app import build
    from hub.core.auth import bearer_token
    from hub.migrate import upgrade
    from hub.oauth.tokens import AccessTokenIssuer

    upgrade(os.environ["HUB_DATABASE_URL"])
    variants: list[tuple[str, Litestar, str]] = [("bare", bare_app, "/bench/bare")]
    for ablate, suffix in [
        (frozenset(), ""),
        (frozenset({"request_context"}), "-no-request-context"),
    ]:
        app = build(ablate)
        variants.append((f"hub-live{suffix}", app, "/health/live"))
        variants.append((f"hub-claims{suffix}", app, "/bench/claims"))

    first_hub = variants[1][1]
    state = first_hub.state
    issuer = AccessTokenIssuer(
        state.keyring,
        issuer=state.settings.oauth.issuer,
        audience=state.settings.oauth.resource,
        ttl_seconds=3600,
    )
    token = issuer.issue("cl_bench", "01a20934-00ef-70af-bcfd-b7336d5444d4", "overlap:read")[
        "access_token"
    ]

    results: dict[str, Any] = {"requests": {}, "functions": {}}
    apps = {id(app): app for _, app, _ in variants}
    lifespans = [app.lifespan() for app in apps.values()]
    for cm in lifespans:
        await cm.__aenter__()
    try:
        for name, app, path in variants:
            cpu, status = await per_request_cpu(app, path, token, args.requests, args.repeat)
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

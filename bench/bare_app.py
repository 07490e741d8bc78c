"""The baseline: a minimal Litestar app with one GET route returning a small constant JSON dict.

No middleware, no plugins, no dependencies: what Litestar + uvicorn cost on this machine.
Run by bench/auth_layer.py as ``uvicorn bench.bare_app:app``.
"""

from __future__ import annotations

from litestar import Litestar, get

PAYLOAD = {"status": "ok", "service": "bare"}


@get("/bench/bare")
async def bare() -> dict[str, str]:
    return PAYLOAD


app = Litestar(route_handlers=[bare], debug=False)

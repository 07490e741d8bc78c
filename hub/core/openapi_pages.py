"""The pages of /schema: the refined document as JSON, and Swagger UI served from the hub's own
files (the swagger-ui-py package ships them), so the docs page works with no internet."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from litestar import Request
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin
from litestar.router import Router
from litestar.static_files import create_static_files_router

from hub.core.openapi import ExactDocument


class ExactJsonRenderPlugin(JsonRenderPlugin):
    """/schema/openapi.json: the refined document."""

    def __init__(self, document: ExactDocument) -> None:
        super().__init__()
        self.document = document

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        exact = self.document.of(request.app, openapi_schema)
        return self.render_json(request, exact)


SWAGGER_ASSETS = "/assets"
NO_FAVICON = "<link rel='icon' href='data:,'>"


class OfflineSwaggerRenderPlugin(SwaggerRenderPlugin):
    """/schema: Swagger UI served from the hub's own files (it must work with no internet)."""

    def __init__(self, document: ExactDocument, schema_path: str, asset_dir: str) -> None:
        base = f"{schema_path}{SWAGGER_ASSETS}"
        super().__init__(
            js_url=f"{base}/swagger-ui-bundle.js",
            css_url=f"{base}/swagger-ui.css",
            standalone_preset_js_url=f"{base}/swagger-ui-standalone-preset.js",
            path="/swagger",
            favicon=NO_FAVICON,
        )
        self.document = document
        self.asset_dir = asset_dir

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        return super().render(request, self.document.of(request.app, openapi_schema))

    def receive_router(self, router: Router) -> None:
        router.register(
            create_static_files_router(
                path=SWAGGER_ASSETS,
                directories=[self.asset_dir],
                include_in_schema=False,
                send_as_attachment=False,
            )
        )


def swagger_ui_assets() -> str:
    """The folder of Swagger UI's JS and CSS, shipped by the swagger-ui-py package (found, not
    imported: its module wires itself to web frameworks we do not use)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("swagger-ui-py is not installed; reinstall the hub's dependencies.")
    return str(Path(next(iter(spec.submodule_search_locations))) / "static")


def render_plugins(
    public_prefixes: Iterable[str], schema_path: str
) -> list[JsonRenderPlugin | SwaggerRenderPlugin]:
    document = ExactDocument(tuple(public_prefixes))
    return [
        OfflineSwaggerRenderPlugin(document, schema_path, swagger_ui_assets()),
        ExactJsonRenderPlugin(document),
    ]


__all__ = ["ExactJsonRenderPlugin", "OfflineSwaggerRenderPlugin", "render_plugins"]

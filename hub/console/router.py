"""The console's router, its templates and its static files, as ``hub.app`` mounts them."""

from __future__ import annotations

from pathlib import Path

from litestar import Router
from litestar.di import Provide
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from hub.console.display import register_filters
from hub.console.insights import InsightPages
from hub.console.offer_page import OfferPages
from hub.console.operations import OperationPages
from hub.console.partners import PartnerPages
from hub.console.partnerships import PartnershipPages
from hub.console.sign_in import SignInController
from hub.console.web import (
    EXCEPTION_HANDLERS,
    PREFIX,
    SECURITY_HEADERS,
    provide_console_actor,
    provide_signed_in,
    requires_console_session,
)

HERE = Path(__file__).resolve().parent
# Paths the API's bearer-token middleware leaves alone: the console has its own sessions and
# never reads an Authorization header.
CONSOLE_PUBLIC_PREFIX = PREFIX


def console_router() -> Router:
    return Router(
        path=PREFIX,
        route_handlers=[
            SignInController,
            OperationPages,
            PartnerPages,
            PartnershipPages,
            InsightPages,
            OfferPages,
        ],
        guards=[requires_console_session],
        dependencies={
            "signed_in": Provide(provide_signed_in, sync_to_thread=False),
            # The API's `actor` names a client; here it names the console user.
            "actor": Provide(provide_console_actor, sync_to_thread=False),
        },
        exception_handlers=EXCEPTION_HANDLERS,
        response_headers=SECURITY_HEADERS,
        include_in_schema=False,
    )


def console_static_files() -> Router:
    return create_static_files_router(
        path=f"{PREFIX}/static",
        directories=[HERE / "static"],
        name="console-static",
        include_in_schema=False,
    )


def console_template_config() -> TemplateConfig[JinjaTemplateEngine]:
    return TemplateConfig(
        directory=HERE / "templates",
        engine=JinjaTemplateEngine,
        engine_callback=lambda engine: register_filters(engine.engine),
    )

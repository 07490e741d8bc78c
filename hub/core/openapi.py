"""The OpenAPI document at /schema/openapi.json, made exact from the route handlers.

Litestar derives paths, parameters and response bodies from the handlers' signatures. What a
signature cannot say is added here, once, from the handlers themselves, so the document cannot
drift from what the service does (DESIGN.md "HTTP API (v1)"):

* security: the OAuth 2.0 client-credentials scheme, and each protected operation's scopes read
  from its :class:`~hub.core.auth.ScopeGuard` guards (a guard's scopes are alternatives);
* errors: every status the request pipeline can answer for an operation — 401/429 for a
  token and its rate limit, 403 for a guard, 400/422 for input, 404 for an id, 409 for a write,
  408/413/415 for a body, 503 for the database — as ``application/problem+json`` of one
  ``Problem`` schema (RFC 9457; hub/core/openapi_errors.py);
* bodies a handler decodes leniently so as to report every bad item (route opt
  ``openapi_body``), forms (``openapi_form``), raw bodies (``content_types``), answers that are
  not a typed return value (``openapi_response``) and other error shapes (``openapi_error``,
  the OAuth endpoints' RFC 6749 errors).

Route opts name msgspec types; their JSON schemas join the document's components. The pages
serving the document are in hub/core/openapi_pages.py.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import msgspec
from litestar import Litestar
from litestar.handlers import HTTPRouteHandler
from litestar.routes import HTTPRoute

from hub.core.auth import ALL_SCOPES, ScopeGuard, requires_partner
from hub.core.content_type import BODY_METHODS, CONTENT_TYPES_OPT
from hub.core.instants import UNIX_BEYOND, UNIX_MINIMUM
from hub.core.openapi_errors import PROBLEM_SCHEMA, error_response

OPENAPI_BODY_OPT = "openapi_body"  # the JSON body's documented type (decoded leniently)
OPENAPI_BODY_OPTIONAL_OPT = "openapi_body_optional"  # the body may be left out
OPENAPI_FORM_OPT = "openapi_form"  # an application/x-www-form-urlencoded body's fields
OPENAPI_RESPONSE_OPT = "openapi_response"  # the success body's type, for Response[Any] handlers
OPENAPI_ERROR_OPT = "openapi_error"  # the error body's type when it is not a problem detail
OPENAPI_ALSO_AS_OPT = "openapi_also_as"  # other media types of the success body (CSV, NDJSON)
OPENAPI_STATUSES_OPT = "openapi_statuses"  # error statuses the pipeline's rules cannot foresee

SCHEME = "oauth2"
CLIENT_BASIC = "clientBasic"
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
REF = "#/components/schemas/{name}"
HTTP_METHODS = ("get", "put", "post", "patch", "delete")
SCOPE_DESCRIPTIONS = {
    "identifiers:write": "Send, update and erase the partner's own identifier records",
    "overlap:read": "Read consented overlaps with partnered brands",
    "offers:read": "Read joint offers and their audiences",
    "offers:write": "Propose, approve and end joint offers",
    "rewards:write": "Record reward events",
    "rewards:read": "Read balances, the rewards feed and settlements",
    "audit:read": "Read the audit entries that concern the partner",
    "admin": "Coalition administration (coalition-admin clients only)",
}
assert set(SCOPE_DESCRIPTIONS) == set(ALL_SCOPES)


def guards_of(handler: HTTPRouteHandler) -> list[Any]:
    """The handler's guards of every layer, as declared (Litestar wraps them to call them)."""
    return [getattr(guard, "func", guard) for guard in handler.resolve_guards()]


def scope_requirements(handler: HTTPRouteHandler) -> list[list[str]]:
    """The scope sets any one of which lets a token through the handler's guards.

    Each ScopeGuard is a choice among its scopes; several guards must all pass, so the
    alternatives are their product (deduplicated, in the guards' order).
    """
    alternatives: list[list[str]] = [[]]
    for guard in guards_of(handler):
        if isinstance(guard, ScopeGuard):
            alternatives = [
                [*chosen, scope] if scope not in chosen else chosen
                for chosen in alternatives
                for scope in guard.any_of
            ]
    return alternatives


def _error_statuses(
    handler: HTTPRouteHandler, method: str, operation: dict[str, Any], protected: bool
) -> set[int]:
    parameters = operation.get("parameters", [])
    has_body = "requestBody" in operation
    writes = method.upper() in BODY_METHODS or method == "delete"
    statuses = {503} if protected else set()
    statuses |= set(handler.opt.get(OPENAPI_STATUSES_OPT, ()))
    if protected:
        statuses |= {401, 429}
        if guards_of(handler) or writes:
            statuses.add(403)
        if writes:
            statuses.add(409)
        if method.upper() in BODY_METHODS:
            statuses.add(415)
    if parameters or has_body:
        statuses |= {400, 422}
    if any(p.get("in") == "path" for p in parameters) or (protected and has_body):
        statuses.add(404)  # an id in the path, or in the body, names no object visible
    if has_body:
        statuses |= {408, 413}
    if writes and protected:
        statuses.add(400)  # an Idempotency-Key of the wrong shape
    return statuses


class ExactDocument:
    """Litestar's generated document, refined once per app from its route handlers."""

    def __init__(self, public_prefixes: tuple[str, ...]) -> None:
        self.public_prefixes = public_prefixes
        self._document: dict[str, Any] | None = None

    def of(self, app: Litestar, generated: dict[str, Any]) -> dict[str, Any]:
        if self._document is None:
            self._document = self.refine(app, generated)
        return self._document

    def refine(self, app: Litestar, generated: dict[str, Any]) -> dict[str, Any]:
        document = copy.deepcopy(generated)
        components = document.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        schemas["Problem"] = PROBLEM_SCHEMA
        components["securitySchemes"] = {
            SCHEME: {
                "type": "oauth2",
                "description": "OAuth 2.0 client credentials (RFC 6749 §4.4). Clients "
                "authenticate with client_secret_basic, client_secret_post or private_key_jwt.",
                "flows": {
                    "clientCredentials": {
                        "tokenUrl": "/oauth/token",
                        "scopes": dict(SCOPE_DESCRIPTIONS),
                    }
                },
            }
        }
        components["securitySchemes"][CLIENT_BASIC] = {
            "type": "http",
            "scheme": "basic",
            "description": "client_secret_basic (RFC 6749 §2.3.1) on the OAuth endpoints; "
            "client_secret_post and private_key_jwt send their credentials in the form instead.",
        }
        for path, method, handler in _operations(app):
            operation = document["paths"].get(path, {}).get(method)
            if operation is not None:
                self._refine_operation(path, method, handler, operation, schemas)
        _prune_unreferenced(document)
        return document

    def _refine_operation(
        self,
        path: str,
        method: str,
        handler: HTTPRouteHandler,
        operation: dict[str, Any],
        schemas: dict[str, Any],
    ) -> None:
        opt = handler.opt
        protected = not path.startswith(self.public_prefixes)
        if protected:
            operation["security"] = [{SCHEME: scopes} for scopes in scope_requirements(handler)]
            if requires_partner in guards_of(handler):
                operation["description"] = (
                    operation.get("description", "") + "\n\nActs for the token's partner: a "
                    "coalition-admin token is refused (403)."
                ).strip()
        decoded = _decoded_body_type(handler)
        if decoded is not None and OPENAPI_BODY_OPT not in opt:
            # The decoder's own schema: it says exactly what msgspec accepts (unknown fields
            # refused, lengths and ranges), where Litestar's rendering of the Struct does not.
            operation["requestBody"]["content"][JSON]["schema"] = _schema_of(decoded, schemas)
        if OPENAPI_BODY_OPT in opt:
            operation["requestBody"] = {
                "required": not opt.get(OPENAPI_BODY_OPTIONAL_OPT, False),
                "content": {JSON: {"schema": _schema_of(opt[OPENAPI_BODY_OPT], schemas)}},
            }
        if OPENAPI_FORM_OPT in opt:
            # The client authenticates by Basic credentials or by fields of the form.
            operation["security"] = [{CLIENT_BASIC: []}, {}]
            operation["requestBody"] = {
                "required": True,
                "content": {FORM: {"schema": _schema_of(opt[OPENAPI_FORM_OPT], schemas)}},
            }
        if CONTENT_TYPES_OPT in opt:
            binary = {
                "type": "string",
                "minLength": 1,
                "description": "The file's bytes (Content-Encoding: gzip allowed)",
            }
            operation["requestBody"] = {
                "required": True,
                "content": {media: {"schema": binary} for media in opt[CONTENT_TYPES_OPT]},
            }
        for parameter in operation.get("parameters", []):
            parameter["schema"] = _parameter_schema(parameter.get("schema", {}))
        responses = operation.setdefault("responses", {})
        success = str(handler.status_code)
        if OPENAPI_RESPONSE_OPT in opt:
            responses[success] = {
                "description": responses.get(success, {}).get("description", "OK"),
                "content": {JSON: {"schema": _schema_of(opt[OPENAPI_RESPONSE_OPT], schemas)}},
            }
        for media in opt.get(OPENAPI_ALSO_AS_OPT, ()):
            content = responses.setdefault(success, {"description": "OK"}).setdefault("content", {})
            content[media] = {"schema": {"type": "string"}}
        error_type = opt.get(OPENAPI_ERROR_OPT)
        error_schema = _schema_of(error_type, schemas) if error_type else None
        statuses = (
            set(opt.get(OPENAPI_STATUSES_OPT, ()))
            if error_type
            else _error_statuses(handler, method, operation, protected)
        )
        for status in sorted(statuses):
            responses[str(status)] = error_response(status, error_schema)
        for response in responses.values():
            for media in response.get("content", {}).values():
                media["schema"] = _without_any_branch(media.get("schema", {}))


def _parameter_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A date-time parameter may also be given as Unix time, which the decoder accepts (and an
    optional one as ``null``, which it reads as left out: the null branch stays)."""
    branches = schema.get("oneOf")
    if branches is None:
        return _with_unix_time(schema)
    if schema.get("format") == "date-time":  # a ``str | None`` parsed as a time by its handler
        schema = {k: v for k, v in schema.items() if k != "format"}
        branches = [
            {**branch, "format": "date-time"} if branch.get("type") == "string" else branch
            for branch in branches
        ]
    return {**schema, "oneOf": [_with_unix_time(branch) for branch in branches]}


def _with_unix_time(schema: dict[str, Any]) -> dict[str, Any]:
    if schema.get("format") != "date-time":
        return schema
    unix = {
        "type": "number",
        "minimum": UNIX_MINIMUM,
        "exclusiveMaximum": UNIX_BEYOND,  # the years 1 to 9999 (hub.core.instants)
        "description": "Unix time, in seconds",
    }
    return {"anyOf": [schema, unix]}


def _without_any_branch(schema: dict[str, Any]) -> dict[str, Any]:
    """``T | Response[...]`` return types come out as ``oneOf [T, {}]``: a oneOf that nothing
    matching T can satisfy. The other media types of such an answer are documented as such."""
    branches = schema.get("oneOf")
    if not branches or {} not in branches:
        return schema
    kept = [branch for branch in branches if branch != {}]
    if len(kept) == 1:
        return dict(kept[0])
    return {**schema, "oneOf": kept}


def _decoded_body_type(handler: HTTPRouteHandler) -> type | None:
    """The msgspec Struct a handler's JSON body is decoded into, if it is one."""
    data = handler.parsed_fn_signature.parameters.get("data")
    if data is None or not isinstance(data.type_, type):
        return None
    return data.type_ if issubclass(data.type_, msgspec.Struct) else None


def _operations(app: Litestar) -> Iterator[tuple[str, str, HTTPRouteHandler]]:
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for method, (handler, _) in route.route_handler_map.items():
            if method.lower() in HTTP_METHODS and handler.resolve_include_in_schema():
                yield route.path_format or "/", method.lower(), handler


class AnnotatedForm:
    """A typing form (``Annotated[T, msgspec.Meta(...)]``) named in a route opt.

    Litestar deep-copies route opts, and such forms cannot be copied: this holder is shared.
    """

    __slots__ = ("form",)

    def __init__(self, form: Any) -> None:
        self.form = form

    def __deepcopy__(self, memo: dict[int, Any]) -> AnnotatedForm:
        return self


def _schema_of(type_: Any, schemas: dict[str, Any]) -> dict[str, Any]:
    if isinstance(type_, AnnotatedForm):
        type_ = type_.form
    (schema,), components = msgspec.json.schema_components([type_], ref_template=REF)
    schemas.update(components)
    return dict(schema)


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            yield ref.rsplit("/", 1)[-1]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _prune_unreferenced(document: dict[str, Any]) -> None:
    """Drop component schemas nothing reaches (those a refinement replaced)."""
    schemas = document["components"]["schemas"]
    reached: set[str] = set()
    pending = list(_refs(document["paths"]))
    while pending:
        name = pending.pop()
        if name in reached or name not in schemas:
            continue
        reached.add(name)
        pending.extend(_refs(schemas[name]))
    for name in [n for n in schemas if n not in reached]:
        del schemas[name]


__all__ = [
    "OPENAPI_ALSO_AS_OPT",
    "OPENAPI_BODY_OPT",
    "OPENAPI_BODY_OPTIONAL_OPT",
    "OPENAPI_ERROR_OPT",
    "OPENAPI_FORM_OPT",
    "OPENAPI_RESPONSE_OPT",
    "OPENAPI_STATUSES_OPT",
    "AnnotatedForm",
    "ExactDocument",
    "scope_requirements",
]

"""Reading the hub's OpenAPI document to attack it: which operations take an id, what kind of
object each path parameter names, the minimal request for an operation, counterfeit ids of a
real id's shape, and what an attacker can tell from an answer (its status and shape).

Used by tests/api/test_partner_isolation_walk.py; knows nothing of the hub but its document.
"""

from __future__ import annotations

import random
import re
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

HTTP_METHODS = ("get", "post", "put", "patch", "delete")
KIND_BY_PARAMETER = {
    "partner_id": "partner",
    "client_id": "client",
    "partnership_id": "partnership",
    "offer_id": "offer",
    "upload_id": "upload",
    "settlement_id": "settlement",
    "delivery_id": "delivery",
}
KIND_BY_SEGMENT = {
    "partners": "partner",
    "clients": "client",
    "partnerships": "partnership",
    "offers": "offer",
    "uploads": "upload",
    "settlements": "settlement",
    "deliveries": "delivery",
    "jobs": "job",
}


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    parameters: list[dict[str, Any]]
    spec: dict[str, Any]

    @property
    def path_parameters(self) -> list[dict[str, Any]]:
        return [p for p in self.parameters if p["in"] == "path"]

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def resolve(doc: dict[str, Any], node: Any) -> Any:
    """``node`` with its local ``$ref`` (a JSON pointer into the document) followed."""
    while isinstance(node, dict) and "$ref" in node:
        target: Any = doc
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


def id_operations(doc: dict[str, Any]) -> list[Operation]:
    """Every operation (method of a path) that takes a path parameter."""
    found = []
    for path, item in doc["paths"].items():
        shared = item.get("parameters", [])
        for method, spec in item.items():
            if method not in HTTP_METHODS:
                continue
            parameters = [resolve(doc, p) for p in [*shared, *spec.get("parameters", [])]]
            if any(p["in"] == "path" for p in parameters):
                found.append(Operation(method.upper(), path, parameters, spec))
    return found


def kind_of(path: str, name: str) -> str | None:
    """The kind of object a path parameter names: by its name, else by the segment before it."""
    if name in KIND_BY_PARAMETER:
        return KIND_BY_PARAMETER[name]
    segments = path.split("/")
    index = segments.index("{" + name + "}")
    return KIND_BY_SEGMENT.get(segments[index - 1])


def sample(doc: dict[str, Any], schema: Any) -> Any:
    """A minimal value that satisfies ``schema``: its example, enum, pattern or type."""
    schema = resolve(doc, schema or {})
    if schema.get("examples"):
        return schema["examples"][0]
    if "example" in schema:
        return schema["example"]
    if "enum" in schema:
        return schema["enum"][0]
    for variant in schema.get("oneOf", []) + schema.get("anyOf", []):
        if resolve(doc, variant).get("type") != "null":
            return sample(doc, variant)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties", {})
        return {name: sample(doc, properties[name]) for name in schema.get("required", [])}
    if kind == "array":
        return [sample(doc, schema.get("items"))] * schema.get("minItems", 0)
    if kind == "integer":
        return max(1, schema.get("minimum", 1))
    if kind == "number":
        return 1.0
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    pattern = re.fullmatch(r"\^\(?([\w.:-]+)(\|[\w.:|-]+)?\)?\$", schema.get("pattern", ""))
    if pattern:
        return pattern.group(1)
    if schema.get("format") == "uuid":
        return str(uuid.uuid4())
    if schema.get("format") == "date-time":
        return "2026-01-01T00:00:00+00:00"
    return "walk"


def body_of(doc: dict[str, Any], operation: Operation) -> Any:
    """The same minimal body for both requests: the JSON example or a sample of the schema."""
    request_body = resolve(doc, operation.spec.get("requestBody"))
    if not request_body:
        return None
    content = request_body.get("content", {}).get("application/json")
    if content is None:
        return {}
    for example in (content.get("examples") or {}).values():
        return resolve(doc, example).get("value", {})
    if "example" in content:
        return content["example"]
    return sample(doc, content.get("schema"))


def query_of(doc: dict[str, Any], operation: Operation) -> dict[str, Any]:
    return {
        p["name"]: sample(doc, p.get("schema"))
        for p in operation.parameters
        if p["in"] == "query" and p.get("required")
    }


def counterfeit(real: str) -> str:
    """An id of the same shape as ``real`` that names nothing: a UUID of the same version
    (and, for time-ordered UUIDs, the same millisecond), an integer that fits 32 bits, or the
    same prefix (``cl_``, ``whd_``…) before random characters."""
    try:
        parsed = uuid.UUID(real)
    except ValueError:
        pass
    else:
        noise = uuid.uuid4().hex
        variant = random.choice("89ab")
        return str(uuid.UUID(parsed.hex[:13] + noise[13:16] + variant + noise[17:]))
    if real.isdigit():
        return str(random.randint(10**8, 2**31 - 1))
    prefix = real.rsplit("_", 1)[0] + "_" if "_" in real else ""
    return prefix + uuid.uuid4().hex[: max(8, len(real) - len(prefix))]


def path_for(operation: Operation, ids: dict[str, str]) -> str:
    path = operation.path
    for parameter in operation.path_parameters:
        kind = kind_of(operation.path, parameter["name"])
        path = path.replace("{" + parameter["name"] + "}", ids[str(kind)])
    return path


def shape(value: Any) -> Any:
    """The JSON structure: keys and types, recursively (list lengths count)."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in sorted(value.items())}
    if isinstance(value, list):
        return [shape(item) for item in value]
    return type(value).__name__


def answer(response: httpx.Response) -> Any:
    """What an attacker can tell from a response, besides ids quoted back in the text."""
    media = response.headers.get("content-type", "").split(";")[0].strip()
    if media == "application/problem+json":
        problem = response.json()
        return (response.status_code, media, problem.get("title"), sorted(problem))
    if media.endswith("json"):
        return (response.status_code, media, shape(response.json()))
    return (response.status_code, media)

"""The hub's OpenAPI document as the hub really answers: bearer security and problem-details errors.

FastAPI describes each route's success and a 422 validation error. The hub never answers 422: every
refusal is an RFC 9457 problem (`application/problem+json`, see `medcloud.hub.problems`) with the
status of the `MedcloudError` raised (400 invalid input, 401, 403, 404, 408, 409, 413, 415, ...). This
module rewrites the generated document once, so that a client generator or a conformance tester
(schemathesis) reads what it will get: which statuses each operation may answer, in which shape, and
that every operation but the liveness probe needs `Authorization: Bearer <token>`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details; `errors` lists the fields of an invalid input.",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"loc": {"type": "array"}, "msg": {"type": "string"}},
            },
        },
    },
}

# Why each status is answered (the description an operation's response carries).
STATUS_TEXT: dict[int, str] = {
    400: "Invalid input (a parameter, header or body the hub cannot accept)",
    401: "No token, or a token that is wrong, expired or revoked",
    403: "The token's role or grants do not allow this",
    404: "No such resource (or not visible to this token)",
    406: "None of the media types in Accept can be produced",
    408: "The request body stopped arriving",
    409: "Conflicts with what is stored (same identifier, other content)",
    413: "The body is over the configured limit",
    415: "The body's media type is not one this operation takes",
    503: "A service this operation needs is not available",
}
# Every authenticated operation may answer these.
COMMON = (400, 401, 403, 404)
# And an operation that reads a request body these.
WITH_BODY = (408, 413, 415)
# DICOMweb negotiates its answers from Accept (PS3.18 8.7): 406 when it cannot.
PREFIX_EXTRA: dict[str, tuple[int, ...]] = {"/dicom-web/": (406,)}
PUBLIC_PATHS = frozenset({"/healthz", "/api/v1/auth/config", "/api/v1/auth/session"})
SECURITY_SCHEME = "bearerAuth"


def media(*types: str, status: int = 200, description: str = "Successful Response") -> dict[int | str, Any]:
    """A route's `responses=` entry for a success answered in `types` (not JSON): one empty schema each."""
    return {status: {"description": description, "content": {t: {} for t in types}}}


def _problem_response(status: int) -> dict[str, Any]:
    return {
        "description": STATUS_TEXT.get(status, "Refused"),
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def _takes_body(method: str, operation: dict[str, Any]) -> bool:
    return "requestBody" in operation or method in ("post", "put", "patch")


def document(schema: dict[str, Any], extra: dict[tuple[str, str], tuple[int, ...]] | None = None) -> dict[str, Any]:
    """Rewrite `schema` (in place, and return it): problem-details errors and bearer security.

    `extra` adds statuses to one operation, keyed by (method, path) in lower/raw form.
    """
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    components.setdefault("securitySchemes", {})[SECURITY_SCHEME] = {
        "type": "http",
        "scheme": "bearer",
        "description": "A medcloud token (`medcloud hub token create`): Authorization: Bearer <token>",
    }
    schema["security"] = [{SECURITY_SCHEME: []}]
    for path, item in schema.get("paths", {}).items():
        for method, operation in item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            responses.pop("422", None)
            if path in PUBLIC_PATHS:
                # No token needed; the problem answers below still apply (e.g. 401 for a missing hand-over
                # cookie, 404 where sign-in is not configured).
                operation["security"] = []
            statuses = set(COMMON)
            if _takes_body(method, operation):
                statuses.update(WITH_BODY)
            statuses.update((extra or {}).get((method, path), ()))
            for prefix, more in PREFIX_EXTRA.items():
                if path.startswith(prefix):
                    statuses.update(more)
            for status in sorted(statuses):
                responses.setdefault(str(status), _problem_response(status))
    return schema


def install(app: Any, extra: dict[tuple[str, str], tuple[int, ...]] | None = None) -> None:
    """Make `app.openapi()` return the rewritten document (built once, then cached by FastAPI)."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(generate(), extra)
        schema: dict[str, Any] = app.openapi_schema
        return schema

    app.openapi = openapi


def allowed_methods(app: Any, path: str) -> str | None:
    """The methods the OpenAPI document lists for `path` (HEAD with GET), for a 405's Allow header.

    The most specific template names the resource: `/cohorts/preview` is that path's, not `/cohorts/{cohort}`'s.
    """
    table: list[tuple[re.Pattern[str], int, set[str]]] | None = getattr(app.state, "allow_table", None)
    if table is None:
        table = []
        for template, item in app.openapi().get("paths", {}).items():
            methods = {m.upper() for m, op in item.items() if isinstance(op, dict) and "responses" in op}
            if "GET" in methods:
                methods.add("HEAD")
            regex = re.compile("^" + re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(template)) + "$")
            table.append((regex, template.count("{"), methods))
        app.state.allow_table = table
    matches = [(params, methods) for regex, params, methods in table if regex.match(path)]
    if not matches:
        return None
    fewest = min(params for params, _ in matches)
    allowed = set().union(*(methods for params, methods in matches if params == fewest))
    return ", ".join(sorted(allowed))

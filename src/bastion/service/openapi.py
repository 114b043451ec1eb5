"""The OpenAPI document, completed centrally: error responses and the bearer security scheme.

Routes declare only what they return. :func:`complete_schema` then gives every
operation of the document (FastAPI routes, the hand-written fast paths, and any
route added later) the responses the web layer can answer with, all in the one
error shape ``{"error": code, "detail": text}``:

* 400, 404, 405, 413, 422, 431 and a ``default`` for everything else, on every operation;
* 401 and 403 on operations that take an operator token, which also carry
  ``security: [{"bearerAuth": []}]``;
* 429 with ``Retry-After`` on the rate-limited device endpoints.

An operation takes an operator token when one of its dependencies is an auth
dependency: a callable named ``require_*`` (:func:`bastion.service.auth.deps.require_role`)
or one marked with ``bastion_auth = True``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import fastapi.routing
from fastapi.dependencies.models import Dependant
from starlette.routing import BaseRoute

__all__ = [
    "ERROR_SCHEMA_NAME",
    "SECURITY_SCHEME_NAME",
    "MethodIndex",
    "authenticated_operations",
    "complete_schema",
]

ERROR_SCHEMA_NAME = "Error"
SECURITY_SCHEME_NAME = "bearerAuth"

_ERROR_REF = {"$ref": f"#/components/schemas/{ERROR_SCHEMA_NAME}"}
_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": ERROR_SCHEMA_NAME,
    "required": ["error", "detail"],
    "properties": {
        "error": {"type": "string", "description": "a stable, machine-readable code (snake_case)"},
        "detail": {"type": "string", "description": "what went wrong and what to do next"},
    },
}
_COMMON = {
    "400": "malformed request (body, parameter or header)",
    "404": "no such object for your tenant, or no such route",
    "405": "method not allowed on this path",
    "413": "request body larger than its bound",
    "422": "a field or parameter is out of its bounds",
    "431": "request header section too large or too many headers",
    "default": "any other error, in the same shape",
}
_AUTH = {
    "401": "missing, malformed, unknown, expired or revoked operator token (`bastion login`)",
    "403": "the token's role is too low for this operation",
}
_HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def _error_response(description: str, *, retry_after: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": _ERROR_REF}}}
    if retry_after:
        response["headers"] = {
            "Retry-After": {"description": "seconds to wait", "schema": {"type": "integer", "minimum": 1}}
        }
    return response


def _dependencies(dependant: Dependant) -> Iterator[Dependant]:
    for sub in dependant.dependencies:
        yield sub
        yield from _dependencies(sub)


def _is_auth(dependant: Dependant) -> bool:
    call = dependant.call
    if call is None:
        return False
    return bool(getattr(call, "bastion_auth", False)) or getattr(call, "__name__", "").startswith("require_")


def _route_views(routes: Sequence[BaseRoute]) -> Iterable[Any]:
    """Every route with its effective path: FastAPI >= 0.130 keeps included routers as one route each."""
    iterate = getattr(fastapi.routing, "iter_route_contexts", None)
    return iterate(routes) if iterate is not None else routes


def authenticated_operations(routes: Sequence[BaseRoute]) -> set[tuple[str, str]]:
    """``(path, method)`` of every route whose dependencies include an auth dependency."""
    found: set[tuple[str, str]] = set()
    for view in _route_views(routes):
        dependant = getattr(view, "dependant", None)
        path = getattr(view, "path_format", None)
        if not isinstance(dependant, Dependant) or not isinstance(path, str):
            continue
        if any(_is_auth(d) for d in _dependencies(dependant)):
            found.update((path, method.lower()) for method in getattr(view, "methods", None) or ())
    return found


def complete_schema(
    schema: dict[str, Any], *, authenticated: set[tuple[str, str]], rate_limited_prefixes: tuple[str, ...]
) -> dict[str, Any]:
    """Return ``schema`` with error responses, the error schema and the security scheme on every operation."""
    schema = copy.deepcopy(schema)
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {})[ERROR_SCHEMA_NAME] = _ERROR_SCHEMA
    components.setdefault("securitySchemes", {})[SECURITY_SCHEME_NAME] = {
        "type": "http",
        "scheme": "bearer",
        "description": "an operator API token (`bastion login`); the role it needs is per operation",
    }
    for path, item in schema.get("paths", {}).items():
        for method in _HTTP_METHODS:
            operation = item.get(method)
            if not isinstance(operation, dict):
                continue
            responses = operation.setdefault("responses", {})
            for status, description in _COMMON.items():
                _set_error(responses, status, description)
            if (path, method) in authenticated:
                operation["security"] = [{SECURITY_SCHEME_NAME: []}]
                for status, description in _AUTH.items():
                    _set_error(responses, status, description)
            if path.startswith(rate_limited_prefixes):
                responses["429"] = _error_response("too many requests from this client", retry_after=True)
    # FastAPI's own validation-error schemas are no longer referenced: 422 uses the one error shape.
    for name in ("HTTPValidationError", "ValidationError"):
        components["schemas"].pop(name, None)
    return schema


def _set_error(responses: dict[str, Any], status: str, description: str) -> None:
    """Declare an error response, keeping a route's own description but always the one error shape."""
    existing = responses.get(status)
    if isinstance(existing, dict) and existing.get("description") and status != "422":
        description = str(existing["description"])
    responses[status] = _error_response(description)


class MethodIndex:
    """The documented methods of each path of a schema, for the ``Allow`` header of a 405.

    Starlette's router names only the methods of the first route that matches
    the path, so a path with ``GET`` and ``POST`` routes would answer a
    ``DELETE`` with ``Allow: GET``; the schema knows them all.
    """

    def __init__(self, schema: dict[str, Any]) -> None:
        """Index the paths of ``schema``."""
        self._paths: list[tuple[int, re.Pattern[str], list[str]]] = []
        for path, item in schema.get("paths", {}).items():
            methods = [m.upper() for m in _HTTP_METHODS if isinstance(item.get(m), dict)]
            pattern = re.sub(r"\\\{[^}]*\\\}", "[^/]+", re.escape(path))
            self._paths.append((path.count("{"), re.compile(pattern), methods))

    def allowed(self, path: str) -> list[str]:
        """The methods documented for ``path`` (empty when no documented path matches).

        When several documented paths match (``/devices/claim`` and
        ``/devices/{device_id}``), the one with the fewest parameters names the
        resource, as a client reading the document would take it.
        """
        matches = [(params, methods) for params, pattern, methods in self._paths if pattern.fullmatch(path)]
        if not matches:
            return []
        fewest = min(params for params, _ in matches)
        found: list[str] = []
        for params, methods in matches:
            if params == fewest:
                found.extend(m for m in methods if m not in found)
        return found

"""Every error the HTTP layer answers has the one shape ``{"error", "detail"}``, and the OpenAPI
document declares it (issue 7, section 6): FastAPI's and Starlette's own 404, 405, 422 and
body-parse answers, an unexpected exception, and the hand-written fast paths."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi import FastAPI

from bastion.service.tenants.service import CreatedTenant
from conftest import TestClient, bearer


def _shape(body: Any) -> None:
    assert isinstance(body, dict)
    assert set(body) == {"error", "detail"}, body
    assert isinstance(body["error"], str)
    assert body["error"]
    assert isinstance(body["detail"], str)
    assert body["detail"]


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/no/such/route", 404, "not_found"),
        ("GET", "/api/v1/nothing-here", 404, "not_found"),
        ("DELETE", "/api/v1/devices", 405, "method_not_allowed"),
        ("PUT", "/api/v1/products", 405, "method_not_allowed"),
        ("GET", "/api/v1/attestation", 405, "method_not_allowed"),  # a fast path
        ("GET", "/api/v1/attestation/challenge", 405, "method_not_allowed"),  # a fast path
        ("POST", "/tuf/nope/metadata/1.root.json", 405, "method_not_allowed"),  # the TUF static path
        ("GET", "/tuf/nope/metadata/timestamp.json", 404, "not_found"),
    ],
)
def test_routing_errors_have_the_error_shape(
    client: TestClient, tenant: CreatedTenant, *, method: str, path: str, status: int, code: str
) -> None:
    r = client.request(method, path, headers=bearer(tenant.admin_token))
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    _shape(r.json())
    assert r.json()["error"] == code


def test_405_allow_names_every_method_of_the_path(client: TestClient, tenant: CreatedTenant) -> None:
    # Starlette names only the first matching route's methods (GET), though POST exists too.
    r = client.request("DELETE", "/api/v1/products", headers=bearer(tenant.admin_token))
    assert r.status_code == 405
    assert sorted(m.strip() for m in r.headers["allow"].split(",")) == ["GET", "POST"]
    assert "GET, POST" in r.json()["detail"]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"{not json", "application/json"),
        (b"", "application/json"),
        (b"\xff\xfe\x00", "application/json"),
        (b'{"name": ', "application/json"),
        (b"[1, 2, 3]", "application/json"),
        (b'"a string"', "application/json"),
        (b"name=x", "application/x-www-form-urlencoded"),
    ],
)
def test_unparseable_bodies_are_4xx_with_the_error_shape(
    client: TestClient, tenant: CreatedTenant, body: bytes, content_type: str
) -> None:
    r = client.post(
        "/api/v1/products", content=body, headers=bearer(tenant.admin_token) | {"content-type": content_type}
    )
    assert 400 <= r.status_code < 500, r.text
    _shape(r.json())


def test_malformed_json_names_the_problem(client: TestClient, tenant: CreatedTenant) -> None:
    r = client.post(
        "/api/v1/products", content=b"{bad", headers=bearer(tenant.admin_token) | {"content-type": "application/json"}
    )
    assert r.status_code == 422
    assert r.json() == {
        "error": "invalid_request",
        "detail": "the body is not valid JSON; send the JSON object the operation documents",
    }


def test_query_validation_is_422_with_the_error_shape(client: TestClient, tenant: CreatedTenant) -> None:
    for query in ("limit=abc", "limit=0", "offset=-1", "offset=1.5"):
        r = client.get(f"/api/v1/devices?{query}", headers=bearer(tenant.admin_token))
        assert r.status_code == 422, (query, r.text)
        _shape(r.json())
        assert r.json()["error"] == "invalid_request"


def test_an_unexpected_exception_is_a_500_in_the_error_shape_without_internals(app: FastAPI) -> None:
    def boom() -> dict[str, str]:
        raise RuntimeError("secret internal state /etc/bastion")

    app.add_api_route("/boom", boom)
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/boom")
    assert r.status_code == 500
    assert r.json() == {"error": "internal_error", "detail": "the service could not complete this request"}
    assert "secret" not in r.text


def test_a_busy_database_is_a_503_to_retry_not_a_500(app: FastAPI) -> None:
    from sqlalchemy.exc import OperationalError

    def locked() -> dict[str, str]:
        raise OperationalError("INSERT INTO error_events ...", {}, Exception("database is locked"))

    app.add_api_route("/locked", locked)
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/locked")
    assert r.status_code == 503
    assert r.headers["retry-after"] == "5"
    assert r.json()["error"] == "database_unavailable"
    assert "INSERT" not in r.text


def _operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    methods = ("get", "put", "post", "delete", "patch")
    return [(p, m, op) for p, item in schema["paths"].items() for m, op in item.items() if m in methods]


def test_openapi_declares_the_bearer_scheme_and_the_errors_of_every_operation(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "an operator API token (`bastion login`); the role it needs is per operation",
    }
    error = schema["components"]["schemas"]["Error"]
    assert error["required"] == ["error", "detail"]
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    operations = _operations(schema)
    assert len(operations) > 20
    for path, method, op in operations:
        responses = op["responses"]
        for status in ("400", "404", "405", "413", "422", "431", "default"):
            assert status in responses, (path, method, status)
            assert responses[status]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/Error"
            }, (path, method, status)


def test_openapi_marks_exactly_the_token_operations_as_secured(client: TestClient) -> None:
    # Behaviour is the reference: an operation is secured in the document iff it answers 401 without a token.
    # This covers whatever routes exist when it runs, with no list to keep up to date.
    schema = client.get("/openapi.json").json()
    for path, method, op in _operations(schema):
        concrete = re.sub(r"\{[^}]*\}", "x", path)
        r = client.request(method.upper(), concrete)
        secured = op.get("security") == [{"bearerAuth": []}]
        assert secured == (r.status_code == 401), (path, method, r.status_code, op.get("security"))
        if secured:
            assert {"401", "403"} <= set(op["responses"]), (path, method)
            assert r.headers["www-authenticate"] == "Bearer"
        else:
            assert "security" not in op, (path, method)
    # The public ones today: health and the device endpoints (the evidence or the signature authenticates).
    public = {(p, m) for p, m, op in _operations(schema) if "security" not in op}
    assert {
        ("/healthz", "get"),
        ("/api/v1/attestation", "post"),
        ("/api/v1/attestation/challenge", "post"),
        ("/api/v1/device/status", "post"),
        ("/api/v1/device/error-reports", "post"),
    } <= public
    assert ("/api/v1/devices", "get") not in public


def test_openapi_declares_429_on_the_rate_limited_device_endpoints(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    for path in (
        "/api/v1/attestation",
        "/api/v1/attestation/challenge",
        "/api/v1/device/status",
        "/api/v1/device/error-reports",
    ):
        response = schema["paths"][path]["post"]["responses"]["429"]
        assert "Retry-After" in response["headers"]
    assert "429" not in schema["paths"]["/api/v1/devices"]["get"]["responses"]


def test_a_routes_own_http_exception_keeps_its_detail_in_the_error_shape(app: FastAPI) -> None:
    from fastapi import HTTPException

    def gone() -> None:
        raise HTTPException(status_code=410, detail="this export moved; use 'bastion audit'")

    def bare() -> None:
        raise HTTPException(status_code=404)

    app.add_api_route("/gone", gone)
    app.add_api_route("/bare", bare)
    with TestClient(app) as client:
        r = client.get("/gone")
        assert (r.status_code, r.json()) == (
            410,
            {"error": "http_error", "detail": "this export moved; use 'bastion audit'"},
        )
        r = client.get("/bare")
        assert r.status_code == 404
        assert r.json()["error"] == "not_found"
        assert "documented at /openapi.json" in r.json()["detail"]

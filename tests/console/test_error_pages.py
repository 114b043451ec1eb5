"""A console page that fails is an HTML 500 page with a request ID, logged with that ID; the API keeps its JSON.

The failure here is a real template rendering error: the products page's template
reads an attribute that raises while the page is drawn, with a secret in the
exception's message. Neither the secret nor a traceback may reach the browser.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi import FastAPI

from bastion.service.console.pages import products as products_page
from bastion.service.tenants.service import CreatedTenant
from conftest import TestClient, bearer
from console.conftest import sign_in

SECRET = "s3cr3t-db-password-do-not-show"


class _Exploding:
    """A product row whose name raises while the template draws it."""

    id = "p1"
    description = ""
    groups = ()

    @property
    def name(self) -> str:
        raise RuntimeError(f"connection to postgresql://admin:{SECRET}@db failed")


@dataclass(frozen=True)
class _Boom:
    """What the patched view returns: one row that breaks the template."""

    products: tuple[_Exploding, ...] = (_Exploding(),)
    total: int = 1
    offset: int = 0
    limit: int = 50


@pytest.fixture
def lenient_client(app: FastAPI) -> Iterator[TestClient]:
    """A client that gets the app's answer to an unhandled error instead of the exception."""
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def test_a_template_error_is_an_html_500_with_a_request_id_and_no_internals(
    lenient_client: TestClient,
    tenant: CreatedTenant,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sign_in(lenient_client, tenant.admin_token)
    monkeypatch.setattr(products_page, "products_page", lambda *_a, **_k: _Boom())
    with caplog.at_level(logging.ERROR, logger="bastion.service.console"):
        r = lenient_client.get("/console/products", headers={"X-Request-ID": "console-req-42"})
    assert r.status_code == 500
    assert r.headers["content-type"].startswith("text/html")
    assert r.headers["x-request-id"] == "console-req-42"
    assert "content-security-policy" in r.headers
    body = r.text
    assert "<h1>Error</h1>" in body
    assert "console-req-42" in body  # the ID to quote
    assert SECRET not in body
    assert "Traceback" not in body
    assert "RuntimeError" not in body
    assert '"internal_error"' not in body  # not the API's JSON
    failed = [rec for rec in caplog.records if rec.levelno == logging.ERROR and "console page failed" in rec.message]
    assert failed, caplog.records
    assert "console-req-42" in failed[0].getMessage()
    assert getattr(failed[0], "request_id", None) == "console-req-42"
    assert failed[0].exc_info is not None  # the traceback stays in the service log


def test_a_failing_error_template_still_gives_an_html_page(
    lenient_client: TestClient, tenant: CreatedTenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the error page cannot be drawn either (a broken base template), a fixed HTML page answers."""
    from bastion.service.console import deps

    sign_in(lenient_client, tenant.admin_token)
    monkeypatch.setattr(products_page, "products_page", lambda *_a, **_k: _Boom())

    def broken_problem(*_a: object, **_k: object) -> None:
        raise RuntimeError(SECRET)

    monkeypatch.setattr(deps, "_problem", broken_problem)
    r = lenient_client.get("/console/products", headers={"X-Request-ID": "req-77"})
    assert r.status_code == 500
    assert r.headers["content-type"].startswith("text/html")
    assert "req-77" in r.text
    assert SECRET not in r.text


def test_a_console_page_that_works_is_unaffected(lenient_client: TestClient, tenant: CreatedTenant) -> None:
    sign_in(lenient_client, tenant.admin_token)
    r = lenient_client.get("/console/products")
    assert r.status_code == 200
    assert "request-id" not in r.text


def test_api_errors_keep_the_apis_json_shape(
    lenient_client: TestClient, tenant: CreatedTenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bastion.service.fleet import service as fleet_service

    def boom(*_a: object, **_k: object) -> None:
        raise RuntimeError(SECRET)

    monkeypatch.setattr(fleet_service, "list_products", boom)
    r = lenient_client.get("/api/v1/products", headers=bearer(tenant.admin_token))
    assert r.status_code == 500
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["error"] == "internal_error"
    assert SECRET not in r.text

"""The session and sign-in cookies: ``__Host-`` names over TLS, unprefixed names over plain http.

A browser takes a ``__Host-`` cookie only with Secure, ``Path=/`` and no ``Domain``
(RFC 6265bis §4.1.3.2), and refuses it over plain http, so the console names its
cookies by the scheme it is served over. Sign-in, CSRF and sign-out work in both.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI

from bastion.service.console.csrf import SECURE_SIGNIN_COOKIE, SIGNIN_COOKIE
from bastion.service.console.session import COOKIE_NAME, SECURE_COOKIE_NAME
from bastion.service.tenants.service import CreatedTenant
from conftest import TestClient
from console.conftest import csrf_from


@pytest.fixture
def tls_client(app: FastAPI) -> Iterator[TestClient]:
    """A client of the app as served over https (the request's scheme is https)."""
    with TestClient(app, base_url="https://testserver") as test_client:
        yield test_client


def _set_cookies(response: object, name: str) -> list[str]:
    headers = response.headers  # type: ignore[attr-defined]
    return [v for k, v in headers.multi_items() if k == "set-cookie" and v.startswith(name + "=")]


def _attributes(set_cookie: str) -> dict[str, str]:
    attrs: dict[str, str] = {}
    for part in set_cookie.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        attrs[key.lower()] = value
    return attrs


def _sign_in(client: TestClient, token: str) -> tuple[object, str]:
    form = client.get("/console/signin")
    assert form.status_code == 200, form.text
    r = client.post(
        "/console/signin",
        data={"token": token, "csrf_token": csrf_from(form.text), "next": "/console/"},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    return form, r.headers["location"]


def test_over_tls_the_cookies_are_host_prefixed_secure_and_path_root(
    tls_client: TestClient, tenant: CreatedTenant
) -> None:
    form = tls_client.get("/console/signin")
    (signin_cookie,) = _set_cookies(form, SECURE_SIGNIN_COOKIE)
    attrs = _attributes(signin_cookie)
    assert "secure" in attrs
    assert attrs["path"] == "/"
    assert "domain" not in attrs
    assert not _set_cookies(form, SIGNIN_COOKIE)

    r = tls_client.post(
        "/console/signin",
        data={"token": tenant.admin_token, "csrf_token": csrf_from(form.text), "next": "/console/"},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    (session_cookie,) = _set_cookies(r, SECURE_COOKIE_NAME)
    attrs = _attributes(session_cookie)
    assert "secure" in attrs
    assert "httponly" in attrs
    assert attrs["samesite"].lower() == "strict"
    assert attrs["path"] == "/"
    assert "domain" not in attrs
    assert not _set_cookies(r, COOKIE_NAME)  # no unprefixed session cookie over TLS
    assert tls_client.cookies.get(SECURE_COOKIE_NAME)

    home = tls_client.get("/console/", follow_redirects=False)
    assert home.status_code == 200
    csrf = csrf_from(home.text)
    refused = tls_client.post("/console/signout", data={"csrf_token": csrf[:-2] + "xx"})
    assert refused.status_code == 403
    out = tls_client.post(
        "/console/signout",
        data={"csrf_token": csrf},
        headers={"Origin": "https://testserver", "Sec-Fetch-Site": "same-origin"},
        follow_redirects=False,
    )
    assert out.status_code == 303
    (cleared,) = _set_cookies(out, SECURE_COOKIE_NAME)
    assert _attributes(cleared)["path"] == "/"
    assert "secure" in _attributes(cleared)
    assert tls_client.get("/console/", follow_redirects=False).status_code == 303


def test_over_tls_an_unprefixed_session_cookie_is_ignored(
    client: TestClient, tls_client: TestClient, tenant: CreatedTenant
) -> None:
    """A cookie planted under the plain name (by any plain-http answer on the path) signs nobody in over TLS."""
    _sign_in(client, tenant.admin_token)
    plain = client.cookies.get(COOKIE_NAME, path="/console")
    assert plain
    assert client.get("/console/", follow_redirects=False).status_code == 200
    tls_client.cookies.set(COOKIE_NAME, plain, path="/console")
    assert tls_client.get("/console/", follow_redirects=False).status_code == 303


def test_over_plain_http_the_cookies_have_no_prefix(client: TestClient, tenant: CreatedTenant) -> None:
    form, _ = _sign_in(client, tenant.admin_token)
    (signin_cookie,) = _set_cookies(form, SIGNIN_COOKIE)
    assert "secure" not in _attributes(signin_cookie)
    assert not _set_cookies(form, SECURE_SIGNIN_COOKIE)
    assert client.cookies.get(COOKIE_NAME, path="/console")
    assert client.cookies.get(SECURE_COOKIE_NAME) is None
    home = client.get("/console/")
    assert home.status_code == 200
    out = client.post("/console/signout", data={"csrf_token": csrf_from(home.text)}, follow_redirects=False)
    assert out.status_code == 303
    assert client.get("/console/", follow_redirects=False).status_code == 303

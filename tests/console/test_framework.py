"""The console framework: sign-in/out, sessions, CSRF, security headers, rendering, paging, charts."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bastion.service.console import __all__ as console_all
from bastion.service.console.charts import bar_chart, sparkline, time_series
from bastion.service.console.deps import safe_next
from bastion.service.console.headers import CSP
from bastion.service.console.paging import PageParams, paginate
from bastion.service.console.session import COOKIE_NAME, ConsoleSettings, hash_session_id
from bastion.service.console.static import STATIC_DIR
from bastion.service.models import AuditEvent, ConsoleSession
from bastion.service.tenants.service import CreatedTenant
from conftest import FakeClock, TestClient, bearer
from console.conftest import csrf_from, sign_in

HTMX_SHA256 = "d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717"


def _actions(session_factory: sessionmaker[Session], tenant_id: str) -> list[tuple[str, str]]:
    with session_factory() as s:
        rows = s.scalars(select(AuditEvent).where(AuditEvent.tenant_id == tenant_id).order_by(AuditEvent.id)).all()
        return [(r.action, r.outcome) for r in rows]


def test_exports() -> None:
    assert console_all == ["console_router"]


def test_not_signed_in_redirects_to_signin_with_next(client: TestClient) -> None:
    r = client.get("/console/?x=1", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/console/signin?next=/console/%3Fx%3D1"
    assert r.headers["content-security-policy"] == CSP


def test_sign_in_sets_a_strict_cookie_and_stores_only_its_hash(
    client: TestClient, tenant: CreatedTenant, session_factory: sessionmaker[Session]
) -> None:
    form = client.get("/console/signin")
    assert form.headers["content-security-policy"] == CSP
    assert form.headers["cache-control"] == "no-store"
    assert form.headers["x-content-type-options"] == "nosniff"
    assert form.headers["referrer-policy"] == "no-referrer"
    assert "<script>" not in form.text.replace('<script src="/console/static/', "")  # no inline script
    assert "style=" not in form.text
    r = client.post(
        "/console/signin",
        data={"token": tenant.admin_token, "csrf_token": csrf_from(form.text), "next": "/console/"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert r.headers["location"] == "/console/"
    set_cookie = next(v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith(COOKIE_NAME + "="))
    lowered = set_cookie.lower()
    assert "httponly" in lowered
    assert "samesite=strict" in lowered
    assert "path=/console" in lowered
    assert "secure" not in lowered  # plain http here; https sets Secure
    cookie = set_cookie.split(";")[0].split("=", 1)[1]
    with session_factory() as s:
        rows = s.scalars(select(ConsoleSession)).all()
    assert len(rows) == 1
    import base64

    raw = base64.urlsafe_b64decode(cookie + "=" * (-len(cookie) % 4))
    assert rows[0].id_hash == hash_session_id(raw) == hashlib.sha256(raw).hexdigest()
    assert cookie not in rows[0].id_hash
    assert tenant.admin_token not in r.text
    assert ("console.signin", "ok") in _actions(session_factory, tenant.tenant_id)


def test_wrong_token_is_refused_without_a_session(client: TestClient, tenant: CreatedTenant) -> None:
    form = client.get("/console/signin")
    bad = tenant.admin_token[:-4] + "AAAA"
    r = client.post("/console/signin", data={"token": bad, "csrf_token": csrf_from(form.text)}, follow_redirects=False)
    assert r.status_code == 401
    assert "not valid" in r.text
    assert bad not in r.text
    assert client.cookies.get(COOKIE_NAME, path="/console") is None


def test_sign_in_without_its_csrf_cookie_value_is_refused(client: TestClient, tenant: CreatedTenant) -> None:
    client.get("/console/signin")
    r = client.post("/console/signin", data={"token": tenant.admin_token, "csrf_token": "forged"})
    assert r.status_code == 403
    assert "CSRF" in r.text
    assert client.cookies.get(COOKIE_NAME, path="/console") is None


def test_post_without_or_with_a_wrong_csrf_token_is_refused_and_recorded(
    client: TestClient, tenant: CreatedTenant, session_factory: sessionmaker[Session]
) -> None:
    csrf = sign_in(client, tenant.admin_token)
    r = client.post("/console/signout", data={})
    assert r.status_code == 403
    assert "no CSRF token" in r.text
    r = client.post("/console/signout", data={"csrf_token": csrf[:-2] + "xx"})
    assert r.status_code == 403
    assert "not this session" in r.text
    r = client.post("/console/signout", data={"csrf_token": csrf}, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    r = client.post("/console/signout", data={"csrf_token": csrf}, headers={"Origin": "null"})
    assert r.status_code == 403  # an opaque origin (a sandboxed frame) without Sec-Fetch-Site: same-origin
    actions = _actions(session_factory, tenant.tenant_id)
    assert actions.count(("console.csrf_refused", "denied")) == 4
    assert client.get("/console/", follow_redirects=False).status_code == 200  # still signed in


def test_sign_out_deletes_the_session_and_clears_the_cookie(
    client: TestClient, tenant: CreatedTenant, session_factory: sessionmaker[Session]
) -> None:
    csrf = sign_in(client, tenant.admin_token)
    cookie = client.cookies.get(COOKIE_NAME, path="/console")
    # What Chromium sends from a no-referrer page: Origin null, with Sec-Fetch-Site same-origin.
    headers = {"Origin": "null", "Sec-Fetch-Site": "same-origin"}
    r = client.post("/console/signout", data={"csrf_token": csrf}, headers=headers, follow_redirects=False)
    assert r.status_code == 303
    with session_factory() as s:
        assert s.scalars(select(ConsoleSession)).all() == []
    client.cookies.set(COOKIE_NAME, cookie or "", path="/console")  # a copy kept by an attacker is dead too
    assert client.get("/console/", follow_redirects=False).status_code == 303


def test_idle_and_absolute_expiry(client: TestClient, tenant: CreatedTenant, clock: FakeClock) -> None:
    settings = ConsoleSettings()
    sign_in(client, tenant.admin_token)
    clock.advance(settings.idle_timeout + dt.timedelta(seconds=1))
    r = client.get("/console/", follow_redirects=False)
    assert r.status_code == 303
    assert "ended=expired" in r.headers["location"]
    page = client.get(r.headers["location"])
    assert "session expired" in page.text
    # Busy, but past the absolute end.
    sign_in(client, tenant.admin_token)
    step = settings.idle_timeout / 2
    elapsed = dt.timedelta(0)
    while elapsed < settings.max_age:
        clock.advance(step)
        elapsed += step
        r = client.get("/console/", follow_redirects=False)
    assert r.status_code == 303
    assert "ended=expired" in r.headers["location"]


def test_session_dies_when_its_token_is_revoked(
    client: TestClient, tenant: CreatedTenant, make_token: Callable[..., str]
) -> None:
    other = make_token(tenant, "admin")
    sign_in(client, other)
    token_id = other.split("_")[1]
    r = client.post(f"/api/v1/tokens/{token_id}/revoke", headers=bearer(tenant.admin_token))
    assert r.status_code == 200
    r = client.get("/console/", follow_redirects=False)
    assert r.status_code == 303
    assert "ended=token_revoked" in r.headers["location"]


def test_safe_next_refuses_open_redirects() -> None:
    for bad in (
        "https://evil.example/",
        "//evil.example/console",
        "/\\evil.example",
        "/console/../x",
        "/console/%2e%2e/api/v1/tokens",
        "/console/%2F%2Fevil.example",
        "/console/.",
        "javascript:alert(1)",
        "/console//evil.example",
        "/consoleevil",
        "/api/v1/tokens",
        "/console/\x00",
        None,
        "",
    ):
        assert safe_next(bad) == "/console/", bad
    assert safe_next("/console/devices?group=a") == "/console/devices?group=a"


def test_paging_bounds_and_links() -> None:
    params = PageParams(offset=2, limit=2)
    rows, pager = paginate(params, [1, 2, 3], "/console/x", {"q": "a b", "none": None})
    assert rows == [1, 2]
    assert pager.prev_url == "/console/x?q=a+b&offset=0&limit=2"
    assert pager.next_url == "/console/x?q=a+b&offset=4&limit=2"
    assert (pager.first, pager.last) == (3, 4)


def test_bad_paging_numbers_fall_back(client: TestClient, tenant: CreatedTenant) -> None:
    sign_in(client, tenant.admin_token)
    assert client.get("/console/?offset=abc&limit=99999999999999999999").status_code == 200


def test_charts_escape_labels_and_use_no_style() -> None:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    svgs = [
        bar_chart([("<script>alert(1)</script>", 2), ("b", 1)], title="<t>"),
        time_series({"<s>": [(now, 1), (now + dt.timedelta(hours=1), 3)], "ok": []}, title="x&y"),
        time_series({}, title="empty"),
        sparkline([1, 3, 2]),
    ]
    for svg in svgs:
        assert "<script>" not in svg
        assert "style=" not in svg
        assert svg.startswith("<svg")
    assert "&lt;script&gt;" in svgs[0]


def test_vendored_htmx_is_the_pinned_release(client: TestClient) -> None:
    body = (Path(STATIC_DIR) / "htmx.min.js").read_bytes()
    assert hashlib.sha256(body).hexdigest() == HTMX_SHA256
    assert HTMX_SHA256 in (Path(STATIC_DIR) / "README.md").read_text()
    r = client.get("/console/static/htmx.min.js")
    assert r.status_code == 200
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.content == body
    assert client.get("/console/static/..%2f..%2fapp.py").status_code == 404
    assert client.get("/console/static/app.py").status_code == 404


def test_htmx_request_without_a_session_moves_the_whole_page(client: TestClient) -> None:
    r = client.get("/console/", headers={"HX-Request": "true"}, follow_redirects=False)
    assert r.status_code == 200
    assert r.headers["hx-redirect"].startswith("/console/signin?next=")


def test_a_tokens_oldest_sessions_end_past_the_bound(
    client: TestClient, tenant: CreatedTenant, session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    client.app.state.console_settings = ConsoleSettings(max_sessions_per_token=2)  # type: ignore[attr-defined]
    browsers = [TestClient(client.app) for _ in range(3)]
    for browser in browsers:
        sign_in(browser, tenant.admin_token)
        clock.advance(dt.timedelta(seconds=1))
    with session_factory() as s:
        assert len(s.scalars(select(ConsoleSession)).all()) == 2
    assert browsers[0].get("/console/", follow_redirects=False).status_code == 303
    assert browsers[2].get("/console/", follow_redirects=False).status_code == 200


def test_settings_from_env_are_bounded() -> None:
    from bastion.service.errors import ConfigError

    got = ConsoleSettings.from_env({"BASTION_CONSOLE_IDLE_TIMEOUT_S": "60", "BASTION_CONSOLE_SESSION_MAX_S": "120"})
    assert (got.idle_timeout, got.max_age) == (dt.timedelta(seconds=60), dt.timedelta(seconds=120))
    for bad in ("0", "-1", "1e3", "x", str(10**9)):
        with pytest.raises(ConfigError):
            ConsoleSettings.from_env({"BASTION_CONSOLE_IDLE_TIMEOUT_S": bad})


def test_console_routes_are_labelled_by_their_full_template(
    client: TestClient, tenant: CreatedTenant, caplog: pytest.LogCaptureFixture
) -> None:
    sign_in(client, tenant.admin_token)
    with caplog.at_level(logging.INFO, logger="bastion.access"):
        client.get("/console/devices/" + "a" * 64)
        client.get("/console/signin")
    routes = {getattr(r, "route", None) for r in caplog.records if r.name == "bastion.access"}
    assert {"/console/devices/{device_id}", "/console/signin"} <= routes

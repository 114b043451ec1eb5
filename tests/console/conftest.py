"""Console test helpers: sign a TestClient in, read a page's CSRF token, make tokens of each role.

In-process tests use the shared ``client``/``app``/``tenant`` fixtures of ``tests/conftest.py``;
browser tests use :mod:`_browser` (Playwright driving Debian's Chromium against a live service).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from bastion.service.auth.service import issue_token
from bastion.service.console.session import COOKIE_NAME
from bastion.service.tenants.service import CreatedTenant
from conftest import FakeClock, TestClient
from console._browser import TIMEOUT_MS, LiveConsole, Shots, launch, require_chromium, start_live_console

__all__ = ["browser_sign_in", "csrf_from", "sign_in"]

_CSRF_RE = re.compile(r'name="csrf_token" value="([^"]*)"')


def csrf_from(html: str) -> str:
    """The first CSRF token in a page's forms."""
    found = _CSRF_RE.search(html)
    if found is None:
        raise AssertionError("no csrf_token field in the page")
    return found.group(1)


def sign_in(client: TestClient, token: str, *, next_path: str = "/console/") -> str:
    """Sign ``client`` in with ``token``; return the session's CSRF token (read from the home page)."""
    form = client.get("/console/signin")
    assert form.status_code == 200, form.text
    r = client.post(
        "/console/signin",
        data={"token": token, "csrf_token": csrf_from(form.text), "next": next_path},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    assert client.cookies.get(COOKIE_NAME, path="/console")
    home = client.get("/console/")
    assert home.status_code == 200, home.text
    return csrf_from(home.text)


@pytest.fixture
def make_token(session_factory: sessionmaker[Session], clock: FakeClock) -> Callable[[CreatedTenant, str], str]:
    """Factory: a new token of ``role`` in ``tenant`` (the raw token string)."""

    def _make(tenant: CreatedTenant, role: str, lifetime: dt.timedelta | None = None) -> str:
        with session_factory() as session:
            minted = issue_token(
                session, tenant.tenant_id, name=f"{role}-test", role=role, now=clock(), lifetime=lifetime
            )
            session.commit()
            return minted.token

    return _make


@pytest.fixture
def add_device(session_factory: sessionmaker[Session], clock: FakeClock) -> Callable[..., str]:
    """Factory: a claimed device row in ``tenant`` (no real chip), returning its ID."""
    import secrets

    from bastion.service.models import Device

    def _add(tenant: CreatedTenant, *, os_version: str = "1.0.0", result: str | None = "ok", **fields: object) -> str:
        device_id = secrets.token_hex(32)
        with session_factory() as session:
            session.add(
                Device(
                    device_id=device_id,
                    tenant_id=tenant.tenant_id,
                    claimed_at=clock(),
                    claimed_by="test",
                    os_version=os_version,
                    last_result=result,
                    last_attested_at=clock() if result else None,
                    **fields,
                )
            )
            session.commit()
        return device_id

    return _add


# --- browser tests (Playwright + Debian's Chromium; see _browser.py) ---


@pytest.fixture(scope="module")
def console_live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveConsole]:
    """A real ``bastion service run`` subprocess with tenant ``acme``, shared by a module's browser tests."""
    require_chromium()
    live = start_live_console(tmp_path_factory.mktemp("console-live"))
    try:
        yield live
    finally:
        live.stack.stop_service()
        live.engine.dispose()


@pytest.fixture(scope="module")
def chromium(console_live: LiveConsole) -> Iterator[Any]:
    """Headless Chromium (``/usr/bin/chromium``), one per module."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def console_page(chromium: Any) -> Iterator[Any]:
    """A fresh browser context (no cookies) and page; console errors and CSP violations are collected."""
    context = chromium.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.console_messages = []  # type: ignore[attr-defined]
    page.on("console", lambda msg: page.console_messages.append(f"{msg.type}: {msg.text}"))
    try:
        yield page
    finally:
        context.close()


@pytest.fixture
def shots(tmp_path: Path) -> Shots:
    """Screenshots under ``tmp_path/screenshots``."""
    return Shots(tmp_path / "screenshots")


def browser_sign_in(page: Any, url: str, token: str) -> None:
    """Sign in through the form, as an operator would (on the sign-in page already shown, keeping its next=)."""
    if "/console/signin" not in page.url:
        page.goto(f"{url}/console/signin")
    page.fill("#token", token)
    with page.expect_navigation():
        page.click("form[action='/console/signin'] button[type=submit]")
    page.wait_for_load_state("load")

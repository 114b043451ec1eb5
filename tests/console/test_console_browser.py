"""The console in real Chromium (Playwright, /usr/bin/chromium) against a real ``bastion service run``.

Screenshots of each page are saved under each test's ``tmp_path/screenshots``.
"""

from __future__ import annotations

import datetime as dt
import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.service.console.headers import CSP
from bastion.service.console.session import COOKIE_NAME
from bastion.service.models import Device, DeviceGroup, Product
from console._browser import LiveConsole, Shots
from console.conftest import browser_sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

XSS = "<script>alert(1)</script>"


def _api(live: LiveConsole, method: str, path: str, token: str, body: dict[str, Any] | None = None) -> int:
    data = json.dumps(body).encode() if body is not None else b""
    request = urllib.request.Request(  # noqa: S310 - loopback URL
        f"{live.url}/api/v1{path}",
        data=data if method == "POST" else None,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback URL
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _no_csp_violation(page: Any) -> None:
    bad = [m for m in page.console_messages if "Content Security Policy" in m or "Refused to" in m]
    assert bad == [], bad


def test_sign_in_find_a_device_and_sign_out(console_live: LiveConsole, console_page: Any, shots: Shots) -> None:
    page = console_page
    wanted = console_live.add_device(os_version="9.9.9")
    for _ in range(3):
        console_live.add_device()
    response = page.goto(f"{console_live.url}/console/devices")
    assert "/console/signin" in page.url  # not signed in: sent to the sign-in page
    assert response is not None
    assert response.headers["content-security-policy"] == CSP
    shots.take(page, "signin")
    browser_sign_in(page, console_live.url, console_live.admin_token)
    assert page.url.endswith("/console/devices")
    cookie = next(c for c in page.context.cookies() if c["name"] == COOKIE_NAME)
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/console"
    assert page.evaluate("document.cookie") == ""  # HttpOnly: no script reads it
    # htmx loaded under the CSP, configured from the meta tag (no eval).
    assert page.evaluate("typeof htmx === 'object' && htmx.config.allowEval === false") is True
    shots.take(page, "devices")
    page.fill("input[name=id]", wanted[:8])
    page.click("#device-filters button[type=submit]")
    page.wait_for_load_state("load")
    rows = page.locator("#devices tbody tr")
    assert rows.count() == 1
    page.click(f"a[href='/console/devices/{wanted}']")
    page.wait_for_load_state("load")
    assert page.locator("h1").inner_text().endswith(wanted)
    assert "9.9.9" in page.inner_text("main")
    shots.take(page, "device")
    _no_csp_violation(page)
    page.click("form[action='/console/signout'] button")
    page.wait_for_load_state("load")
    assert "signed out" in page.inner_text("main")
    assert not [c for c in page.context.cookies() if c["name"] == COOKIE_NAME]
    page.goto(f"{console_live.url}/console/devices")
    assert "/console/signin" in page.url
    assert console_live.admin_token not in console_live.stack.service_log.read_text()  # no token in any log line


def test_revoke_a_token_in_the_browser(console_live: LiveConsole, console_page: Any, shots: Shots) -> None:
    page = console_page
    victim = console_live.token("reader", name="to-revoke")
    assert _api(console_live, "GET", "/whoami", victim) == 200
    browser_sign_in(page, console_live.url, console_live.admin_token)
    page.goto(f"{console_live.url}/console/tokens")
    shots.take(page, "tokens")
    token_id = victim.split("_")[1]
    page.on("dialog", lambda dialog: dialog.accept())  # the confirm step of console.js
    page.click(f"tr[data-token-id='{token_id}'] button")
    page.wait_for_load_state("load")
    assert "revoked" in page.locator(f"tr[data-token-id='{token_id}']").inner_text()
    shots.take(page, "tokens-revoked")
    assert _api(console_live, "GET", "/whoami", victim) == 401
    # Create one: shown once.
    page.fill("#create-token input[name=name]", "made-in-browser")
    page.click("#create-token button[type=submit]")
    page.wait_for_load_state("load")
    minted = page.inner_text("#new-token-value").strip()
    assert minted.startswith("bst_")
    shots.take(page, "token-created")
    assert _api(console_live, "GET", "/whoami", minted) == 200
    page.goto(f"{console_live.url}/console/tokens")
    assert minted not in page.content()
    page.goto(f"{console_live.url}/console/audit?action=token.")
    assert "token.revoke" in page.inner_text("#audit")
    shots.take(page, "audit")
    _no_csp_violation(page)


def test_a_reader_sees_no_write_controls_and_the_api_refuses_anyway(
    console_live: LiveConsole, console_page: Any, shots: Shots
) -> None:
    page = console_page
    device = console_live.add_device()
    reader = console_live.token("reader")
    browser_sign_in(page, console_live.url, reader)
    page.goto(f"{console_live.url}/console/devices/{device}")
    shots.take(page, "device-as-reader")
    assert page.locator("#device-actions").count() == 0
    assert page.locator("form[action$='/revoke']").count() == 0
    assert page.locator("nav.main-nav a[href='/console/tokens']").count() == 0
    # The same write through the API with the reader's token is refused.
    assert _api(console_live, "POST", f"/devices/{device}/revoke", reader) == 403
    # And a hand-made POST from the reader's signed-in page, with its own CSRF token, is refused too.
    status = page.evaluate(
        """async ([path]) => {
            const csrf = document.querySelector("input[name=csrf_token]").value;
            const r = await fetch(path, {method: "POST", headers: {"Content-Type": "application/x-www-form-urlencoded"},
                                         body: "csrf_token=" + encodeURIComponent(csrf)});
            return r.status;
        }""",
        [f"/console/devices/{device}/revoke"],
    )
    assert status == 403
    with Session(console_live.engine) as session:
        row = session.get(Device, device)
        assert row is not None
        assert row.revoked_at is None


def test_csrf_refusal_without_and_with_a_wrong_token(
    console_live: LiveConsole, console_page: Any, shots: Shots
) -> None:
    page = console_page
    device = console_live.add_device()
    browser_sign_in(page, console_live.url, console_live.admin_token)
    page.goto(f"{console_live.url}/console/devices/{device}")
    for value in (None, "wrong-token"):
        page.evaluate(
            """([value]) => {
                const form = document.querySelector("form[action$='/revoke']");
                const field = form.querySelector("input[name=csrf_token]");
                if (value === null) { field.remove(); } else { field.value = value; }
                form.removeAttribute("data-confirm");
                form.submit();
            }""",
            [value],
        )
        page.wait_for_load_state("load")
        assert "Request refused (CSRF)" in page.inner_text("h1")
        assert "Nothing was changed" in page.inner_text("main")
        shots.take(page, f"csrf-refused-{'missing' if value is None else 'wrong'}")
        page.goto(f"{console_live.url}/console/devices/{device}")
    with Session(console_live.engine) as session:
        row = session.get(Device, device)
        assert row is not None
        assert row.revoked_at is None
    page.goto(f"{console_live.url}/console/audit?action=console.csrf")
    assert page.locator("#audit tbody tr").count() >= 2


def test_a_script_name_shows_as_text_under_the_csp(console_live: LiveConsole, console_page: Any, shots: Shots) -> None:
    page = console_page
    now = dt.datetime.now(dt.UTC)
    import uuid

    with Session(console_live.engine) as session:
        pid = str(uuid.uuid4())
        session.add(Product(id=pid, tenant_id=console_live.tenant_id, name=XSS, description="", created_at=now))
        session.flush()  # no ORM relationship orders the two inserts
        gid = str(uuid.uuid4())
        session.add(
            DeviceGroup(
                id=gid,
                tenant_id=console_live.tenant_id,
                product_id=pid,
                name=XSS,
                update_policy="UpdateAll",
                os_feed="retail",
                created_at=now,
                updated_at=now,
            )
        )
        session.commit()
        assert session.scalar(select(DeviceGroup.name).where(DeviceGroup.id == gid)) == XSS
    device = console_live.add_device(os_version=XSS, group_id=gid)
    console_live.token("reader", name=XSS)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    browser_sign_in(page, console_live.url, console_live.admin_token)
    for path in (f"/console/devices?group={gid}", f"/console/devices/{device}", "/console/tokens"):
        response = page.goto(console_live.url + path)
        assert response is not None
        assert response.headers["content-security-policy"] == CSP
        assert XSS in page.inner_text("main")  # shown as text
        shots.take(page, "xss-" + path.strip("/").replace("/", "-").split("?")[0])
    assert dialogs == []
    assert page.evaluate("document.querySelectorAll('main script').length") == 0


def test_an_expired_session_goes_back_to_sign_in(console_live: LiveConsole, console_page: Any, shots: Shots) -> None:
    page = console_page
    browser_sign_in(page, console_live.url, console_live.admin_token)
    page.goto(f"{console_live.url}/console/audit")
    assert "/console/audit" in page.url
    console_live.age_sessions(dt.timedelta(hours=1))  # past the idle timeout (30 min)
    page.goto(f"{console_live.url}/console/audit")
    assert "/console/signin" in page.url
    assert "session expired" in page.inner_text("main")
    shots.take(page, "expired")
    browser_sign_in(page, console_live.url, console_live.admin_token)  # next= brings it back
    assert page.url.endswith("/console/audit")


def _group_with_members(live: LiveConsole) -> tuple[str, str]:
    """A new product (default groups, through the API), devices in its Field Test group: (product, group id)."""
    import secrets

    name = f"Lamp-{secrets.token_hex(3)}"
    assert _api(live, "POST", "/products", live.admin_token, {"name": name}) == 201
    with Session(live.engine) as session:
        gid = session.scalars(
            select(DeviceGroup.id)
            .join(Product, Product.id == DeviceGroup.product_id)
            .where(Product.name == name, DeviceGroup.name == "Field Test")
        ).one()
    for n, (version, result) in enumerate([("1.0.0", "ok")] * 5 + [("1.1.0", "ok")] * 3 + [("1.1.0", "failed")] * 2):
        live.add_device(os_version=version, result=result if n != 9 else None, group_id=gid)
    return name, gid


def test_the_group_page_from_the_products_list(console_live: LiveConsole, console_page: Any, shots: Shots) -> None:
    page = console_page
    product, gid = _group_with_members(console_live)
    browser_sign_in(page, console_live.url, console_live.token("contributor"))
    page.goto(f"{console_live.url}/console/products?name={product}")
    with page.expect_navigation():
        page.click(f"a.group-link[href='/console/groups/{gid}']")
    assert page.url.endswith(f"/console/groups/{gid}")
    assert "Device group Field Test" in page.inner_text("h1")
    assert page.locator("#group-health svg.chart").count() == 2  # standing and OS versions
    assert page.locator("svg.day-window").count() == 1
    assert page.locator("#members tbody tr").count() == 10
    shots.take(page, "group")

    form = page.locator("#group-settings-form")
    form.locator("input[name=window_start]").fill("22:30")
    form.locator("input[name=window_minutes]").fill("180")
    with page.expect_navigation():
        form.locator("button[type=submit]").click()
    assert "group settings saved" in page.inner_text("main")
    assert "22:30-01:30 UTC" in page.inner_text("#group-settings")
    shots.take(page, "group-window-saved")
    page.goto(f"{console_live.url}/console/groups/{gid}?limit=4")
    assert page.locator("#members tbody tr").count() == 4
    with page.expect_navigation():
        page.click("#members ~ nav.pager a[rel=next]")
    assert "offset=4" in page.url
    _no_csp_violation(page)


def test_a_reader_sees_the_group_page_without_write_controls(
    console_live: LiveConsole, console_page: Any, shots: Shots
) -> None:
    page = console_page
    _, gid = _group_with_members(console_live)
    browser_sign_in(page, console_live.url, console_live.token("reader"))
    page.goto(f"{console_live.url}/console/groups/{gid}")
    assert "Device group Field Test" in page.inner_text("h1")
    shots.take(page, "group-as-reader")
    assert page.locator("#group-settings-form").count() == 0
    assert page.locator("form[action$='/delete']").count() == 0
    assert page.locator("main form[method=post]").count() == 0
    _no_csp_violation(page)

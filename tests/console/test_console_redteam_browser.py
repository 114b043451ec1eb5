"""Red team, in Chromium: a hostile site cannot drive a signed-in operator's console, and no page trips the CSP.

The attacker's page is served from another origin on loopback (``localhost`` against the console's
``127.0.0.1``: another site to the browser) and auto-submits forms at the console's write routes.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bastion.service.models import ApiToken, Device
from console._browser import LiveConsole
from console.conftest import browser_sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

_ATTACK = """<!doctype html><html><body>
<form id="mint" method="post" action="{url}/console/tokens" target="f1">
<input name="name" value="pwned"><input name="role" value="admin"><input name="csrf_token" value="x"></form>
<form id="revoke" method="post" action="{url}/console/devices/{device}/revoke" target="f2"></form>
<iframe name="f1"></iframe><iframe name="f2"></iframe>
<script>document.getElementById("mint").submit();document.getElementById("revoke").submit();</script>
</body></html>"""


@pytest.fixture
def attacker_site(console_live: LiveConsole) -> Iterator[tuple[str, list[str]]]:
    pages: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages[0].encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{server.server_address[1]}/", pages
    finally:
        server.shutdown()
        server.server_close()


def _counts(live: LiveConsole, device_id: str) -> tuple[int, object]:
    with Session(live.engine) as session:
        tokens = int(session.scalar(select(func.count()).select_from(ApiToken).where(ApiToken.name == "pwned")) or 0)
        device = session.get(Device, device_id)
        return tokens, None if device is None else device.revoked_at


def test_a_cross_site_form_post_changes_nothing(
    console_live: LiveConsole, console_page: Any, attacker_site: tuple[str, list[str]]
) -> None:
    page = console_page
    device_id = console_live.add_device()
    browser_sign_in(page, console_live.url, console_live.admin_token)
    assert "/console/" in page.url
    url, pages = attacker_site
    pages.append(_ATTACK.format(url=console_live.url, device=device_id))
    sent: list[str] = []
    page.on("request", lambda r: sent.append(f"{r.method} {r.url}") if r.method == "POST" else None)
    page.goto(url)
    page.wait_for_timeout(1500)
    assert console_live.url.startswith("http://127.0.0.1:")  # and the attacker is on localhost: another site
    assert f"POST {console_live.url}/console/tokens" in sent  # the attack really fired
    assert f"POST {console_live.url}/console/devices/{device_id}/revoke" in sent
    assert _counts(console_live, device_id) == (0, None)
    # The operator is still signed in (the attack did not end the session either).
    page.goto(f"{console_live.url}/console/devices/{device_id}")
    assert "/console/signin" not in page.url


def test_no_page_trips_the_csp(console_live: LiveConsole, console_page: Any) -> None:
    page = console_page
    device_id = console_live.add_device()
    browser_sign_in(page, console_live.url, console_live.admin_token)
    for path in (
        "/console/",
        "/console/fleet",
        "/console/devices",
        f"/console/devices/{device_id}",
        "/console/products",
        "/console/deployments",
        "/console/osfeeds",
        "/console/buckets",
        "/console/audit",
        "/console/tokens",
    ):
        response = page.goto(f"{console_live.url}{path}")
        assert response is not None
        assert response.status == 200, path
    bad = [m for m in page.console_messages if "Content Security Policy" in m or "Refused to" in m]
    assert bad == [], bad

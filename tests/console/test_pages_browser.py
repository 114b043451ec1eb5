"""The fleet and deployment pages in real Chromium (Debian's, through Playwright's ``executable_path``).

An operator signs in, sees the fleet, creates a staged deployment from the
deployments page and watches it halt: the page is left open while the rollout gate
halts the rollout on crash data, and the progress fragment (htmx polling) shows the
halt reason without a reload. Screenshots of each page go under ``tmp_path``.

The service is the app served by uvicorn on a loopback port (``live_url``), so the
test can run the gate in-process with an in-memory crash source.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bastion.images.rollout import in_stage
from bastion.service.config import Settings
from bastion.service.fleet.targets import TufPublisher
from bastion.service.models import Device, DeviceUpdateStatus, Rollout
from bastion.service.rollouts.service import evaluate
from bastion.service.tenants.service import CreatedTenant
from conftest import FakeClock
from console._pages_world import FakeHealth, Fleet, device_id

sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
TIMEOUT_MS = 30_000
APP_COMPONENT = "00000000-0000-0000-0000-000000000a11"
#: Enough that the first 20 % stage holds the default minimum sample (10) with near certainty (mean 30).
DEVICES = 150

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"),
]


def _args() -> list[str]:
    # As root (CI), Chromium cannot use its user-namespace sandbox; it loads only this test's loopback service.
    args = ["--disable-dev-shm-usage", "--no-first-run", "--disable-gpu"]
    if os.geteuid() == 0:
        args.append("--no-sandbox")
    return args


def test_an_operator_sees_the_fleet_creates_a_staged_deployment_and_watches_it_halt(  # noqa: PLR0917
    live_url: str,
    tenant: CreatedTenant,
    session_factory: sessionmaker[Session],
    settings: Settings,
    clock: FakeClock,
    tmp_path: Path,
) -> None:
    with httpx.Client(base_url=live_url, timeout=30) as api:
        fleet_api = Fleet(api, tenant.admin_token, session_factory)  # type: ignore[arg-type]
        group = fleet_api.groups["Production"]
        devices = [device_id(n) for n in range(DEVICES)]
        with session_factory() as session:
            session.add_all(
                Device(
                    device_id=d,
                    tenant_id=tenant.tenant_id,
                    claimed_at=clock(),
                    claimed_by="test",
                    group_id=group,
                    os_version="1.0.0",
                    last_attested_at=clock(),
                    last_result="ok",
                )
                for d in devices
            )
            session.commit()
        v1, v2 = fleet_api.app("1.0.0"), fleet_api.app("2.0.0")
        assert fleet_api.deploy(group, str(v1["id"])).status_code == 201

    shots = tmp_path / "shots"
    shots.mkdir()
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=_args(), headless=True)
        try:
            page = browser.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(live_url + "/console/fleet")
            page.fill("#token", tenant.admin_token)
            page.click("button[type=submit]")
            page.wait_for_url("**/console/fleet")
            assert f"{DEVICES} devices" in page.inner_text("h1")
            assert page.locator("svg.chart").count() >= 4
            page.screenshot(path=str(shots / "fleet.png"), full_page=True)

            page.goto(live_url + "/console/deployments")
            form = page.locator("#create-deployment")
            form.locator("input[name=group]").fill(group)
            form.locator("select[name=images]").select_option(str(v2["id"]))
            form.locator("input[name=stages]").fill("20,50,100")
            form.locator("input[name=soak_seconds]").fill("60")
            form.locator("button[type=submit]").click()
            page.wait_for_url("**/console/deployments/*")
            assert page.inner_text("#rollout-state") == "running"
            assert page.locator("#halt-reason").count() == 0
            page.screenshot(path=str(shots / "deployment-running.png"), full_page=True)

            # The stage's devices install v2 and crash; the gate halts the rollout by itself.
            health = FakeHealth()
            with session_factory() as session:
                rollout = session.scalars(select(Rollout)).one()
                stage1 = [d for d in devices if in_stage(d, rollout.seed, percent_bp=int(rollout.stages[0]))]
                assert len(stage1) >= 10
                now = clock() + dt.timedelta(minutes=1)
                for d in stage1:
                    session.add(
                        DeviceUpdateStatus(
                            device_id=d,
                            tenant_id=tenant.tenant_id,
                            group_id=group,
                            os_version="1.0.0",
                            boot_slot="A",
                            installed=[{"component_id": APP_COMPONENT, "version": "2.0.0"}],
                            last_report_iat=0,
                            reported_at=now,
                        )
                    )
                session.commit()
                health.running[(APP_COMPONENT, "2.0.0")] = set(stage1)
                health.crashed[(APP_COMPONENT, "2.0.0")] = set(stage1)
                outcome = evaluate(
                    session, rollout, now=now, settings=settings, publisher=TufPublisher(), health=health
                )
                assert outcome.action == "halted", outcome

            # No reload: the open page's progress fragment (htmx, every 5 s) shows the halt.
            page.wait_for_selector("#halt-reason")
            assert page.inner_text("#rollout-state") == "halted"
            assert "crash_drop" in page.inner_text("#halt-reason")
            assert page.locator("button", has_text="Resume").count() == 1
            page.screenshot(path=str(shots / "deployment-halted.png"), full_page=True)

            for name in ("products", "osfeeds", "buckets"):
                page.goto(f"{live_url}/console/{name}")
                assert page.locator("h1").count() == 1
                page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
        finally:
            browser.close()
    assert sorted(p.name for p in shots.iterdir()) == [
        "buckets.png",
        "deployment-halted.png",
        "deployment-running.png",
        "fleet.png",
        "osfeeds.png",
        "products.png",
    ]

"""The device-group page (/console/groups/{id}): settings, charts, members paged on the server, deployments.

Role-aware like the other pages: a reader sees no write control and is refused a
write (recorded); a contributor changes the policy and window and deletes an
unused group through the API's domain functions (audited with the token).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bastion.service.models import AuditEvent, Deployment, Device, DeviceGroup
from bastion.service.tenants.service import CreatedTenant
from conftest import FakeClock, TestClient
from console._pages_world import XSS, FakeHealth, FakePublisher, device_id, make_product, seed_fleet
from console.conftest import sign_in


@pytest.fixture
def fake_services(app: FastAPI) -> FakeHealth:
    app.state.tuf_publisher = FakePublisher()
    health = FakeHealth()
    app.state.rollout_health = health
    return health


def _audit(sessions: sessionmaker[Session], action: str) -> list[AuditEvent]:
    with sessions() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action)))


def _members(html: str) -> list[str]:
    table = html.split('id="members"', 1)[1].split("</table>", 1)[0]
    return re.findall(r'<a href="/console/devices/([0-9a-f]{64})">', table)


def test_a_reader_sees_the_group_with_charts_paged_members_and_deployments_but_no_controls(
    client: TestClient,
    tenant: CreatedTenant,
    session_factory: sessionmaker[Session],
    clock: FakeClock,
    make_token: Callable[[CreatedTenant, str], str],
) -> None:
    with session_factory() as session:
        seeded = seed_fleet(session, tenant.tenant_id, now=clock())
        session.add(
            Deployment(
                tenant_id=tenant.tenant_id, group_id=seeded.group_ids[1], created_at=clock(), created_by="token:x"
            )
        )
        session.commit()
    first, second = seeded.group_ids
    sign_in(client, make_token(tenant, "reader"))

    products = client.get("/console/products")
    assert f'href="/console/groups/{first}"' in products.text  # linked from the products list

    page = client.get(f"/console/groups/{second}")
    assert page.status_code == 200
    text = page.text
    assert "Device group Production" in text
    assert "02:00-04:00 UTC" in text  # the window, as text
    assert 'class="chart day-window"' in text  # and as a day chart
    assert "Members by attestation standing" in text
    assert "Members by OS version" in text
    assert "UpdateAll" in text
    assert "2 devices" in text
    assert len(_members(text)) == 2
    assert 'href="/console/deployments/' in text.split('id="group-deployments"', 1)[1]
    # The deployment pages link back to it.
    assert f'href="/console/groups/{second}"' in client.get("/console/deployments").text
    (deployment,) = re.findall(r'href="/console/deployments/(\d+)"', text)
    assert f'href="/console/groups/{second}"' in client.get(f"/console/deployments/{deployment}").text
    # A reader: no write control at all.
    assert "/settings" not in text
    assert "Delete group" not in text
    assert 'method="post" action="/console/groups' not in text

    # Members are paged on the server: 7 devices, 3 per page.
    p1 = client.get(f"/console/groups/{first}?limit=3")
    assert len(_members(p1.text)) == 3
    assert f"/console/groups/{first}?offset=3&amp;limit=3" in p1.text
    p3 = client.get(f"/console/groups/{first}?offset=6&limit=3")
    assert len(_members(p3.text)) == 1
    seen = set(_members(p1.text)) | set(_members(client.get(f"/console/groups/{first}?offset=3&limit=3").text))
    seen |= set(_members(p3.text))
    with session_factory() as session:
        expected = set(session.scalars(select(Device.device_id).where(Device.group_id == first)))
    assert seen == expected
    assert client.get(f"/console/groups/{first}?offset=abc&limit=-1").status_code == 200  # bad numbers: defaults


def test_names_are_escaped_and_other_tenants_groups_are_not_found(
    client: TestClient,
    tenant: CreatedTenant,
    make_tenant: Callable[[str], CreatedTenant],
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    other = make_tenant("globex")
    with session_factory() as session:
        _, (mine,) = make_product(session, tenant.tenant_id, now=clock(), name=XSS, groups=(XSS,))
        _, (theirs,) = make_product(session, other.tenant_id, now=clock(), name="theirs", groups=("Night",))
        session.commit()
    sign_in(client, tenant.admin_token)
    page = client.get(f"/console/groups/{mine}")
    assert page.status_code == 200
    assert XSS not in page.text
    assert "&lt;script&gt;" in page.text
    assert "No devices in this group" in page.text
    refused = client.get(f"/console/groups/{theirs}")
    assert refused.status_code == 404
    assert "theirs" not in refused.text
    assert client.get("/console/groups/not%20an%20id").status_code == 400
    assert client.get("/console/groups/" + "a" * 65).status_code == 400


def test_a_contributor_changes_the_policy_and_window(  # noqa: PLR0917 - fixtures
    client: TestClient,
    tenant: CreatedTenant,
    session_factory: sessionmaker[Session],
    clock: FakeClock,
    fake_services: FakeHealth,
    make_token: Callable[[CreatedTenant, str], str],
) -> None:
    with session_factory() as session:
        _, (night,) = make_product(session, tenant.tenant_id, now=clock(), groups=("Night",))
        session.commit()
    reader_csrf = sign_in(client, make_token(tenant, "reader"))
    form = {"update_policy": "NoUpdates", "os_feed": "retail", "window_start": "23:00", "window_minutes": "120"}
    refused = client.post(f"/console/groups/{night}/settings", data={"csrf_token": reader_csrf, **form})
    assert refused.status_code == 403
    assert [e.outcome for e in _audit(session_factory, "console.insufficient_role")] == ["denied"]
    client.cookies.clear()

    csrf = sign_in(client, make_token(tenant, "contributor"))
    page = client.get(f"/console/groups/{night}")
    assert 'id="group-settings-form"' in page.text
    assert "Delete group" in page.text
    assert client.post(f"/console/groups/{night}/settings", data=form).status_code == 403  # no CSRF token
    r = client.post(f"/console/groups/{night}/settings", data={"csrf_token": csrf, **form}, follow_redirects=False)
    assert r.status_code == 303, r.text
    after = client.get(r.headers["location"])
    assert "group settings saved" in after.text
    assert "23:00-01:00 UTC" in after.text  # past midnight
    with session_factory() as session:
        group = session.get(DeviceGroup, night)
        assert group is not None
        assert (group.update_policy, group.window_start, group.window_minutes) == ("NoUpdates", "23:00", 120)
    (update,) = _audit(session_factory, "device_group.update")
    assert update.actor.startswith("token:")

    for bad in ({"window_start": "25:00"}, {"window_minutes": "abc"}, {"update_policy": "Sometimes"}):
        r = client.post(f"/console/groups/{night}/settings", data={"csrf_token": csrf, **form, **bad})
        assert r.status_code == 400, (bad, r.status_code)
    cleared = client.post(
        f"/console/groups/{night}/settings",
        data={"csrf_token": csrf, **form, "window_start": "", "window_minutes": ""},
        follow_redirects=False,
    )
    assert cleared.status_code == 303
    assert "any time" in client.get(f"/console/groups/{night}").text


def test_a_contributor_deletes_an_unused_group_and_is_told_why_a_used_one_stays(  # noqa: PLR0917 - fixtures
    client: TestClient,
    tenant: CreatedTenant,
    session_factory: sessionmaker[Session],
    clock: FakeClock,
    fake_services: FakeHealth,
    make_token: Callable[[CreatedTenant, str], str],
) -> None:
    with session_factory() as session:
        _, (production, night, late) = make_product(
            session, tenant.tenant_id, now=clock(), groups=("Production", "Night", "Late")
        )
        session.add(
            Device(
                device_id=device_id(1), tenant_id=tenant.tenant_id, claimed_at=clock(), claimed_by="t", group_id=night
            )
        )
        session.commit()
    csrf = sign_in(client, make_token(tenant, "contributor"))
    assert "Delete group" not in client.get(f"/console/groups/{production}").text  # a default group stays
    in_use = client.post(f"/console/groups/{night}/delete", data={"csrf_token": csrf})
    assert in_use.status_code == 409
    assert "is in use: it has 1 device" in in_use.text
    gone = client.post(f"/console/groups/{late}/delete", data={"csrf_token": csrf}, follow_redirects=False)
    assert gone.status_code == 303
    assert gone.headers["location"] == "/console/products"
    assert client.get(f"/console/groups/{late}").status_code == 404
    assert [e.outcome for e in _audit(session_factory, "device_group.delete")] == ["refused", "ok"]


def test_the_day_window_chart_wraps_past_midnight_and_shades_the_day_without_a_window() -> None:
    from bastion.service.console.charts import day_window

    wrapped = str(day_window("23:00", 120))
    assert wrapped.count('class="window"') == 2  # 23:00-24:00 and 00:00-01:00
    assert "style=" not in wrapped
    assert str(day_window(None, None)).count('class="window"') == 1  # any time: the whole day
    assert str(day_window("02:00", 120)).count('class="window"') == 1

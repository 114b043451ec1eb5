"""Red team of the device-group page: another tenant's group, reader writes, CSRF, paging and form bounds."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

from bastion.service.models import DeviceGroup
from bastion.service.tenants.service import CreatedTenant
from conftest import FakeClock, TestClient
from console._pages_world import FakeHealth, FakePublisher, make_product
from console.conftest import sign_in


@pytest.fixture
def fake_services(app: FastAPI) -> FakeHealth:
    app.state.tuf_publisher = FakePublisher()
    health = FakeHealth()
    app.state.rollout_health = health
    return health


FORM = {"update_policy": "NoUpdates", "os_feed": "retail", "window_start": "23:00", "window_minutes": "120"}


def test_another_tenants_group_cannot_be_changed_or_deleted(  # noqa: PLR0917 - fixtures
    client: TestClient,
    tenant: CreatedTenant,
    make_tenant: Callable[[str], CreatedTenant],
    session_factory: sessionmaker[Session],
    clock: FakeClock,
    fake_services: FakeHealth,
    make_token: Callable[[CreatedTenant, str], str],
) -> None:
    other = make_tenant("globex")
    with session_factory() as session:
        _, (_, theirs) = make_product(session, other.tenant_id, now=clock(), name="Secret", groups=("Prod", "Night"))
        session.commit()
    csrf = sign_in(client, make_token(tenant, "contributor"))
    for path, data in ((f"/console/groups/{theirs}/settings", FORM), (f"/console/groups/{theirs}/delete", {})):
        r = client.post(path, data={"csrf_token": csrf, **data}, follow_redirects=False)
        assert r.status_code == 404, (path, r.status_code)
        assert "Secret" not in r.text
        assert "Night" not in r.text
    with session_factory() as session:
        group = session.get(DeviceGroup, theirs)
        assert group is not None
        assert group.update_policy != "NoUpdates"


def test_reader_writes_csrf_and_bad_paging_are_4xx(  # noqa: PLR0917 - fixtures
    client: TestClient,
    tenant: CreatedTenant,
    session_factory: sessionmaker[Session],
    clock: FakeClock,
    fake_services: FakeHealth,
    make_token: Callable[[CreatedTenant, str], str],
) -> None:
    with session_factory() as session:
        _, (_, night) = make_product(session, tenant.tenant_id, now=clock(), groups=("Prod", "Night"))
        session.commit()
    reader = sign_in(client, make_token(tenant, "reader"))
    assert client.post(f"/console/groups/{night}/delete", data={"csrf_token": reader}).status_code == 403
    client.cookies.clear()
    csrf = sign_in(client, make_token(tenant, "contributor"))
    for query in ("offset=99999999999999999999", "offset=-5&limit=0", "limit=10000000000", "offset=1e9", "limit=%00"):
        assert client.get(f"/console/groups/{night}?{query}").status_code == 200, query
    cross = client.post(
        f"/console/groups/{night}/delete", data={"csrf_token": csrf}, headers={"Origin": "https://evil.example"}
    )
    assert cross.status_code == 403
    assert client.post(f"/console/groups/{night}/delete", data={"csrf_token": "x" * 43}).status_code == 403
    for bad in (
        {"window_start": "9" * 41},
        {"window_start": "7:5"},
        {"window_start": "-1:00"},
        {"window_minutes": "99999999999999999999"},
        {"window_minutes": "0"},
        {"window_minutes": "100000"},
        {"os_feed": "<script>"},
        {"window_start": "\uff12\uff13:\uff10\uff10"},
    ):
        r = client.post(
            f"/console/groups/{night}/settings", data={"csrf_token": csrf, **FORM, **bad}, follow_redirects=False
        )
        assert 400 <= r.status_code < 500, (bad, r.status_code)
    assert client.get(f"/console/groups/{night}").status_code == 200
    with session_factory() as session:
        assert session.get(DeviceGroup, night) is not None

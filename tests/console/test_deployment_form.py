"""The deployment form offers a select of the tenant's own app images (bounded), and the server still checks them."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bastion.service.console.views import deployments as deployment_views
from bastion.service.models import Deployment, DeploymentImage
from bastion.service.tenants.service import CreatedTenant
from conftest import TestClient
from console._pages_world import FakeHealth, FakePublisher, Fleet
from console.conftest import sign_in

_OPTION = re.compile(r'<option value="(\d+)">')


@pytest.fixture
def fake_services(app: FastAPI) -> FakeHealth:
    app.state.tuf_publisher = FakePublisher()
    health = FakeHealth()
    app.state.rollout_health = health
    return health


def _offered(html: str) -> list[int]:
    select_html = html.split('<select name="images"', 1)[1].split("</select>", 1)[0]
    return [int(v) for v in _OPTION.findall(select_html)]


def test_the_form_offers_only_the_tenants_images_newest_first_and_bounded(  # noqa: PLR0917 - fixtures
    client: TestClient,
    tenant: CreatedTenant,
    make_tenant: Callable[[str], CreatedTenant],
    session_factory: sessionmaker[Session],
    fake_services: FakeHealth,
    make_token: Callable[[CreatedTenant, str], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mine = Fleet(client, tenant.admin_token, session_factory)
    v1, v2, v3 = (int(mine.app(v)["id"]) for v in ("1.0.0", "2.0.0", "3.0.0"))
    other = make_tenant("globex")
    theirs = int(Fleet(client, other.admin_token, session_factory).app("9.0.0")["id"])

    sign_in(client, make_token(tenant, "contributor"))
    page = client.get("/console/deployments")
    assert page.status_code == 200
    assert 'type="text" name="images"' not in page.text  # no free text any more
    offered = _offered(page.text)
    assert set(offered) == {v1, v2, v3}  # never another tenant's
    assert theirs not in offered
    assert "3.0.0" in page.text
    assert "newest" not in page.text  # all of them fit

    monkeypatch.setattr(deployment_views, "MAX_IMAGE_CHOICES", 2)
    bounded = client.get("/console/deployments")
    assert len(_offered(bounded.text)) == 2
    assert "The newest 2 images are offered" in bounded.text


def test_a_reader_gets_no_form_and_no_image_list(
    client: TestClient,
    tenant: CreatedTenant,
    session_factory: sessionmaker[Session],
    fake_services: FakeHealth,
    make_token: Callable[[CreatedTenant, str], str],
) -> None:
    Fleet(client, tenant.admin_token, session_factory).app("1.0.0")
    sign_in(client, make_token(tenant, "reader"))
    page = client.get("/console/deployments")
    assert page.status_code == 200
    assert "<select" not in page.text
    assert "create-deployment" not in page.text


def test_a_tenant_without_images_is_told_how_to_get_one(
    client: TestClient, tenant: CreatedTenant, fake_services: FakeHealth
) -> None:
    sign_in(client, tenant.admin_token)
    page = client.get("/console/deployments")
    assert "no app images yet" in page.text
    assert '<button type="submit" disabled>Deploy</button>' in page.text


def test_the_selected_images_are_deployed_and_the_server_still_checks_them(  # noqa: PLR0917 - fixtures
    client: TestClient,
    tenant: CreatedTenant,
    make_tenant: Callable[[str], CreatedTenant],
    session_factory: sessionmaker[Session],
    fake_services: FakeHealth,
    make_token: Callable[[CreatedTenant, str], str],
) -> None:
    mine = Fleet(client, tenant.admin_token, session_factory)
    group = mine.groups["Production"]
    app_a = int(mine.app("1.0.0")["id"])
    app_b = int(mine.app("1.0.0", component="00000000-0000-0000-0000-000000000b22")["id"])
    theirs = int(Fleet(client, make_tenant("globex").admin_token, session_factory).app("9.0.0")["id"])
    csrf = sign_in(client, make_token(tenant, "contributor"))

    # Two options picked in the select: the form sends the field twice.
    r = client.post(
        "/console/deployments",
        data={"csrf_token": csrf, "group": group, "images": [str(app_a), str(app_b)]},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    deployment_id = int(r.headers["location"].rsplit("/", 1)[1])
    with session_factory() as session:
        chosen = set(
            session.scalars(select(DeploymentImage.image_id).where(DeploymentImage.deployment_id == deployment_id))
        )
    assert chosen == {app_a, app_b}

    # A value the select never offered (a forged form): another tenant's image, garbage, none at all.
    forged = client.post("/console/deployments", data={"csrf_token": csrf, "group": group, "images": str(theirs)})
    assert forged.status_code == 404
    assert "no app image" in forged.text
    garbage = client.post("/console/deployments", data={"csrf_token": csrf, "group": group, "images": "<b>x</b>"})
    assert garbage.status_code == 400
    assert "<b>x</b>" not in garbage.text
    empty = client.post("/console/deployments", data={"csrf_token": csrf, "group": group})
    assert empty.status_code == 400
    too_many = client.post(
        "/console/deployments", data={"csrf_token": csrf, "group": group, "images": [str(app_a)] * 65}
    )
    assert too_many.status_code == 400
    with session_factory() as session:
        assert len(session.scalars(select(Deployment)).all()) == 1

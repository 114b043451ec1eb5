"""Rename and delete products and device groups: refused with 409 while in use, audited, tenant-scoped."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from _opcli_support import add_device, cli_env, new_device_id, run
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bastion.cli.output import CliError
from bastion.service.config import Settings
from bastion.service.models import AuditEvent, Device, DeviceGroup, Product
from bastion.service.tenants.service import CreatedTenant


@pytest.fixture
def acme(
    tmp_path: Path,
    settings: Settings,
    live_url: str,
    monkeypatch: pytest.MonkeyPatch,
    make_tenant: Callable[[str], CreatedTenant],
) -> CreatedTenant:
    cli_env(monkeypatch, tmp_path, settings)
    tenant = make_tenant("acme")
    run("login", "--url", live_url, "--token-stdin", stdin=tenant.admin_token + "\n")
    return tenant


def _audit(sessions: sessionmaker[Session], tenant_id: str, action: str) -> list[tuple[str, str]]:
    with sessions() as session:
        rows = session.scalars(
            select(AuditEvent).where(AuditEvent.tenant_id == tenant_id, AuditEvent.action == action)
        ).all()
        return [(r.outcome, r.detail) for r in rows]


def test_group_rename_and_delete_refused_while_in_use(
    acme: CreatedTenant, session_factory: sessionmaker[Session]
) -> None:
    run("product", "create", "Lamp")
    night = json.loads(run("device-group", "create", "--product", "Lamp", "--name", "Night", "--json"))
    renamed = json.loads(run("device-group", "rename", "Lamp/Night", "Late", "--json"))
    assert renamed["id"] == night["id"]
    assert renamed["name"] == "Late"
    assert _audit(session_factory, acme.tenant_id, "device_group.rename") == [("ok", "name=Night->Late")]
    with pytest.raises(CliError, match="group_exists"):
        run("device-group", "rename", "Lamp/Late", "Production")

    device_id = new_device_id()
    add_device(session_factory, acme.tenant_id, device_id, group_id=night["id"])
    with pytest.raises(CliError) as in_use:
        run("device-group", "delete", "Lamp/Late", "--yes")
    assert "is in use: it has 1 device" in in_use.value.message
    assert "group_in_use, HTTP 409" in in_use.value.message
    assert "already exists" not in str(in_use.value.hint)  # not the generic 409 hint
    with pytest.raises(CliError, match="product_in_use"):
        run("product", "delete", "Lamp", "--yes")
    assert [o for o, _d in _audit(session_factory, acme.tenant_id, "device_group.delete")] == ["refused"]
    with session_factory() as session:
        assert session.get(DeviceGroup, night["id"]) is not None

    run("device", "assign", device_id, "--group", "Lamp/Production")
    assert "deleted device group" in run("device-group", "delete", "Lamp/Late", "--yes")
    with pytest.raises(CliError, match="is in use: its group 'Production' has 1 device"):
        run("product", "delete", "Lamp", "--yes")
    with session_factory() as session:
        assert session.get(DeviceGroup, night["id"]) is None
        assert session.get(Device, device_id) is not None
    assert _audit(session_factory, acme.tenant_id, "device_group.delete")[-1][0] == "ok"


def test_default_groups_go_only_with_their_product(acme: CreatedTenant, session_factory: sessionmaker[Session]) -> None:
    product = json.loads(run("product", "create", "Lamp", "--json"))
    with pytest.raises(CliError, match="default_group"):
        run("device-group", "delete", "Lamp/Field Test", "--yes")
    with pytest.raises(CliError, match="default_group"):
        run("device-group", "rename", "Lamp/Field Test", "Beta")
    renamed = json.loads(run("product", "rename", "Lamp", "Desk Lamp", "--json"))
    assert renamed["id"] == product["id"]
    assert "Field Test" in run("product", "show", "Desk Lamp")
    run("product", "create", "Lamp")
    with pytest.raises(CliError, match="product_exists"):
        run("product", "rename", "Lamp", "Desk Lamp")
    assert "deleted product" in run("product", "delete", "Desk Lamp", "--yes")
    with session_factory() as session:
        assert session.get(Product, product["id"]) is None
        assert not session.scalars(select(DeviceGroup).where(DeviceGroup.product_id == product["id"])).all()
    assert _audit(session_factory, acme.tenant_id, "product.delete") == [("ok", "name=Desk Lamp groups=5")]


def test_another_tenant_and_a_reader_cannot_rename_or_delete(
    acme: CreatedTenant, live_url: str, make_tenant: Callable[[str], CreatedTenant]
) -> None:
    json.loads(run("product", "create", "Lamp", "--json"))
    reader = json.loads(run("token", "create", "--role", "reader", "--json"))["token"]
    other = make_tenant("globex").admin_token
    with httpx.Client(base_url=live_url + "/api/v1") as http:
        for token, status in ((other, 404), (reader, 403)):
            auth = {"Authorization": f"Bearer {token}"}
            assert http.delete("/products/Lamp", headers=auth).status_code == status
            assert http.patch("/products/Lamp", json={"name": "Mine"}, headers=auth).status_code == status
            assert http.delete("/device-groups/Lamp/Production", headers=auth).status_code == status
        bad = http.patch("/products/Lamp", json={"name": ""}, headers={"Authorization": f"Bearer {acme.admin_token}"})
        assert bad.status_code in (400, 422)
    assert "Lamp" in run("product", "list")
